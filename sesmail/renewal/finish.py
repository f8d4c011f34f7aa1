"""After a new token is proven: store it, publish its hours, audit, start the drain. Shared by both renewals.

The refresh CLI (``sesmail.cli.refresh``) and the renewal page do the same four steps after the
proof by minting, so they live here once:

1. store, all or nothing (:func:`sesmail.renewal.token_store.store_token`); a failure raises
   (:class:`~sesmail.renewal.token_store.StoreFailed`) and nothing else happens;
2. publish ``TokenHoursUntilExpiration`` for the mailbox so its alarm clears now;
3. write the audit record (who, which mailbox, which Google account, the versions; never the token);
4. start the retry processor for the mailbox (``{"mailbox": m}``).

Steps 2-4 never undo step 1: a failure there is reported in the :class:`Completion` (as the
exception, so each caller words it its own way) and the token monitor covers for it within
15 minutes (it publishes the hours and starts a drain when mail is parked and the token works).

The stored record names the OAuth client that minted the token (``client_id``, DESIGN.md "Values
stored in SSM"): a refresh token only works with its own client, and the page's tokens belong to
the web client, the CLI's to the installed one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sesmail import names
from sesmail.renewal.audit import write_audit_record
from sesmail.renewal.token_store import ProvenToken, StoredToken, store_token
from sesmail.runtime.retry_run import start_retry_processor
from sesmail.runtime.token_metrics import hours_left, publish_token_hours
from sesmail.runtime.tokens import RefreshToken, iso_utc


class ClientSource(Protocol):
    """What :class:`sesmail.runtime.aws.AwsClients` offers: a botocore client per service name."""

    def get(self, service: str) -> Any: ...


def bind_client(proven: ProvenToken) -> ProvenToken:
    """``proven`` with a token that records the client that proved it (unless it already does)."""
    if proven.token.client_id:
        return proven
    return ProvenToken(replace(proven.token, client_id=proven.client.client_id), proven.client)


@dataclass(frozen=True)
class Renewal:
    """Who renewed which mailbox, for the audit record."""

    env: str
    mailbox: str
    #: ``refresh-cli`` or ``renewal-page``.
    source: str
    #: The CLI: the caller's AWS ARN; the page: the Google account that consented.
    who: str
    google_account: str | None
    #: Where the expiry came from (Google's ``refresh_token_expires_in``, or the configured lifetime).
    lifetime_source: str
    #: More fields for the audit record (the CLI's AWS account and tool; the page's request id and client IP).
    audit_fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """What happened after the proof; the ``*_error`` fields hold the exception of a step that failed."""

    token: RefreshToken
    stored: StoredToken
    hours: float
    metric_error: Exception | None = None
    audit_stream: str | None = None
    audit_error: Exception | None = None
    execution_arn: str | None = None
    drain_error: Exception | None = None
    #: True when the drain was not asked for (``--no-retry``) or no state machine is known.
    drain_skipped: bool = False

    @property
    def notes(self) -> tuple[str, ...]:
        """Short codes of the steps after storing that did not work: ``metric``, ``audit``, ``drain``."""
        failed = {"metric": self.metric_error, "audit": self.audit_error, "drain": self.drain_error}
        return tuple(code for code, error in failed.items() if error is not None)


def audit_record(renewal: Renewal, token: RefreshToken, stored: StoredToken, client_id: str) -> dict[str, Any]:
    """The audit record of a stored renewal: who, what, which versions; never the token."""
    token_parameter = names.refresh_token_parameter(renewal.env, renewal.mailbox)
    record: dict[str, Any] = {
        "action": names.AUDIT_ACTION_TOKEN_RENEWED,
        "who": renewal.who,
        "env": renewal.env,
        "mailbox": renewal.mailbox,
        "google_account": renewal.google_account,
        "source": renewal.source,
        "when": iso_utc(token.created_at),
        "client_id": client_id,
        "parameter": token_parameter,
        "version": stored.version_of(token_parameter),
        "parameters": [{"name": p.name, "version": p.version} for p in stored.parameters],
        "expires_at": iso_utc(token.expires_at),
        "lifetime_source": renewal.lifetime_source,
    }
    record.update(renewal.audit_fields)
    return record


def complete_renewal(
    aws: ClientSource,
    proven: ProvenToken,
    renewal: Renewal,
    *,
    state_machine_arn: str | None,
    trigger: str,
    client_json: str | None = None,
    now: datetime | None = None,
    on_stored: Callable[[StoredToken], None] | None = None,
) -> Completion:
    """Steps 1-4 of the module docstring; raises only when storing fails (then nothing was changed).

    ``on_stored`` is called as soon as step 1 succeeded, before the later steps: the CLI prints
    what it wrote at once, and knows, should Ctrl-C interrupt a later step, that the token is stored.
    """
    proven = bind_client(proven)
    token = proven.token
    stored = store_token(aws.get("ssm"), renewal.env, proven, client_json=client_json, mailbox=renewal.mailbox)
    if on_stored is not None:
        on_stored(stored)
    hours = hours_left(token.expiry(), now)

    metric_error: Exception | None = None
    try:
        publish_token_hours(aws.get("cloudwatch"), renewal.env, hours, renewal.mailbox)
    except Exception as exc:
        metric_error = exc

    audit_stream: str | None = None
    audit_error: Exception | None = None
    try:
        record = audit_record(renewal, token, stored, proven.client.client_id)
        audit_stream = write_audit_record(aws.get("logs"), renewal.env, record, now=now)
    except Exception as exc:  # AuditLogGroupMissing included: the caller says how to fix it
        audit_error = exc

    execution_arn: str | None = None
    drain_error: Exception | None = None
    if state_machine_arn:
        try:
            execution_arn = start_retry_processor(
                aws.get("stepfunctions"), state_machine_arn, mailbox=renewal.mailbox, trigger=trigger, now=now
            )
        except Exception as exc:
            drain_error = exc
    return Completion(
        token=token,
        stored=stored,
        hours=hours,
        metric_error=metric_error,
        audit_stream=audit_stream,
        audit_error=audit_error,
        execution_arn=execution_arn,
        drain_error=drain_error,
        drain_skipped=not state_machine_arn,
    )
