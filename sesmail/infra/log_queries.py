"""Saved CloudWatch Logs Insights queries (pure: no pulumi import).

They read the structured JSON lines of ``sesmail.runtime.log`` (fields ``level``, ``event``,
``messageId``, ``failureClass``, ``reason``, ``requestId``, ...) and the refresh CLI's audit
records (``action``). In the console they appear under Logs Insights → Saved queries, in the
folder ``ses-mail-{env}``; pick one, adjust the time range, run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from sesmail import names
from sesmail.infra.watched import Watched

V = TypeVar("V")

#: Logs Insights' default is 1,000 rows at most; these keep answers readable.
RECENT_ROWS = 200


@dataclass(frozen=True)
class QuerySpec(Generic[V]):
    key: str  # logical-name suffix of the Pulumi resource
    name: str
    query_string: str
    log_groups: tuple[V, ...]


def _regex(prefix: str) -> str:
    """An Insights regex literal matching values that start with ``prefix`` (dots escaped)."""
    return "/^" + prefix.replace(".", r"\.") + "/"


def token_events_query() -> str:
    """Everything about the token: minted/reloaded (forwarder), monitored (monitor), renewed (audit)."""
    return "\n".join(
        [
            "fields @timestamp, @log, coalesce(event, action) as what, level, message, hoursLeft, expiresAt, reason,"
            " who, expires_at, requestId",
            f'| filter event like {_regex(names.EVENT_PREFIX_TOKEN)} or action = "{names.AUDIT_ACTION_TOKEN_RENEWED}"',
            "| sort @timestamp desc",
            f"| limit {RECENT_ROWS}",
        ]
    )


def parked_for_retry_query() -> str:
    """Mail the forwarder parked in the retry queue (token dead), newest first."""
    return "\n".join(
        [
            "fields @timestamp, messageId, failureClass, reason, retryMessageId, sqsMessageId, requestId",
            f'| filter event = "{names.EVENT_DELIVERY_PARKED}"',
            "| sort @timestamp desc",
            f"| limit {RECENT_ROWS}",
        ]
    )


def failures_by_class_query() -> str:
    """How many delivery failures of each class (and event), inbound and retry paths together.

    Lines without a class (in-process retries, a failed park or DLQ send) form their own rows
    with an empty ``failureClass``; ``event`` tells them apart. The token monitor's log group is
    read too: a run that could not start the retry processor logs ``retry.autostart_failed``.
    """
    delivery = _regex(names.EVENT_PREFIX_DELIVERY)
    retry = _regex(names.EVENT_PREFIX_RETRY)
    return "\n".join(
        [
            f'filter (level = "ERROR" or level = "WARNING") and (event like {delivery} or event like {retry})',
            "| stats count(*) as failures, latest(reason) as lastReason by failureClass, event",
            "| sort failures desc",
        ]
    )


def message_story_query(message_id: str = names.LOG_QUERY_MESSAGE_ID_PLACEHOLDER) -> str:
    """Every line about one SES message id, oldest first: received, imported/parked/retried/dead-lettered.

    Saved with ``REPLACE-ME``: open it, put the SES message id (the S3 key after ``inbound/``,
    ``mail.messageId`` of a queued notification, or ``messageId`` of any log line) in its place.
    """
    return "\n".join(
        [
            "fields @timestamp, level, event, message, failureClass, reason, gmailMessageId, sqsMessageId,"
            " retryMessageId, dlqMessageId, requestId",
            f'| filter messageId = "{message_id}"',
            "| sort @timestamp asc",
            "| limit 1000",
        ]
    )


def canary_story_query() -> str:
    """The newest canaries' steps, newest first: sent (the canary), recognised, then per mailbox
    imported or parked (the forwarder binds ``canaryId`` to every line about a canary)."""
    return "\n".join(
        [
            "fields @timestamp, event, canaryId, mailbox, messageId, failureClass, reason, sesMessageId",
            "| filter ispresent(canaryId)",
            "| sort @timestamp desc",
            "| limit 200",
        ]
    )


def query_specs(env: str, watched: Watched[V], canary_log_group: V | None = None) -> list[QuerySpec[V]]:
    """The saved queries; "canary-story" only when the canary is deployed (``canary_log_group``)."""
    forwarder = watched.forwarder_log_group
    specs = [
        QuerySpec(
            "token-events",
            names.log_query(env, names.LOG_QUERY_TOKEN_EVENTS),
            token_events_query(),
            (forwarder, watched.token_monitor_log_group, watched.audit_log_group),
        ),
        QuerySpec(
            "parked-for-retry",
            names.log_query(env, names.LOG_QUERY_PARKED_FOR_RETRY),
            parked_for_retry_query(),
            (forwarder,),
        ),
        QuerySpec(
            "failures-by-class",
            names.log_query(env, names.LOG_QUERY_FAILURES_BY_CLASS),
            failures_by_class_query(),
            (forwarder, watched.token_monitor_log_group),
        ),
        QuerySpec(
            "message-story",
            names.log_query(env, names.LOG_QUERY_MESSAGE_STORY),
            message_story_query(),
            (forwarder,),
        ),
    ]
    if canary_log_group is not None:
        story = names.log_query(env, names.LOG_QUERY_CANARY_STORY)
        specs.append(QuerySpec("canary-story", story, canary_story_query(), (canary_log_group, forwarder)))
    return specs
