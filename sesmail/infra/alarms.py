"""Every CloudWatch alarm of the stack as plain data (pure: no pulumi import).

Names and thresholds come from :mod:`sesmail.names`; the component turns each :class:`AlarmSpec`
into one ``aws.cloudwatch.MetricAlarm`` whose alarm *and* OK actions are the alerts topic.

Missing data is chosen per alarm (``treat_missing_data``):

* ``breaching`` — token expiring: the monitor publishes every 15 minutes, so an hour without
  a value means the monitor (or its schedule) is broken, and silence must never look healthy.
* ``ignore`` (keep the current state) — token critical/expired and TokenMonitoringErrors: a
  monitor outage is already reported by the expiring alarm; it must neither invent an
  "expired" nor clear a real one. TokenMonitoringErrors returns to OK only on a published 0.
* ``notBreaching`` — queue depths and ages, Lambda errors, Step Functions executions: AWS
  publishes nothing for an idle queue (after ~6 h without activity), an uninvoked function or
  a state machine without executions, and idle is healthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sesmail import names
from sesmail.infra.watched import Watched

V = TypeVar("V")

LESS = "LessThanThreshold"
LESS_OR_EQUAL = "LessThanOrEqualToThreshold"
GREATER_OR_EQUAL = "GreaterThanOrEqualToThreshold"

BREACHING = "breaching"
NOT_BREACHING = "notBreaching"
IGNORE = "ignore"


@dataclass(frozen=True)
class AlarmSpec(Generic[V]):
    key: str  # logical-name suffix of the Pulumi resource
    name: str
    description: str
    namespace: str
    metric_name: str
    statistic: str
    period: int
    threshold: float
    comparison_operator: str
    treat_missing_data: str
    #: Values are the watched resources' (Outputs in the graph) or names for per-mailbox queues.
    dimensions: Mapping[str, V | str] = field(default_factory=dict)
    evaluation_periods: int = 1
    datapoints_to_alarm: int = 1
    #: Token alarms: the mailbox whose renewal link :func:`with_renewal_link` appends.
    renewal_mailbox: str | None = None


#: CloudWatch's limit for ``AlarmDescription`` (PutMetricAlarm), in characters.
MAX_DESCRIPTION_CHARS = 1024


def with_renewal_link(description: str, renewal_url: str | None, mailbox: str, *, renewable: bool) -> str:
    """A token alarm's description with the phone renewal link (DESIGN.md: every token alarm carries it).

    CloudWatch puts the description into the e-mail SNS sends, so the link arrives with the alert.
    A mailbox without ``gmailAddress`` cannot be renewed there (the page refuses it), so its
    alarms say how to enable that instead of linking to a refusal.
    """
    if renewal_url is None:
        return description
    if renewable:
        text = f"{description} Or renew from a phone: {names.renewal_link(renewal_url, mailbox)}"
    else:
        text = (
            f"{description} To renew from a phone instead, set this mailbox's gmailAddress in the stack "
            "config (docs/operations.md: Renew from your phone)."
        )
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"alarm description of mailbox {mailbox!r} is {len(text)} characters; CloudWatch allows 1024")
    return text


def alarm_specs(
    env: str, watched: Watched[V], mailboxes: Sequence[str] = (names.DEFAULT_MAILBOX,), *, canary: bool = False
) -> list[AlarmSpec[V]]:
    """The alarms of DESIGN.md "Observability", in the order the runbook lists them.

    Token, retry-queue, retry-DLQ and mailbox-refused alarms exist once per mailbox (named with
    ``-{mailbox}`` except for ``default``); ``watched.retry_queue``/``retry_dlq`` are the primary
    mailbox's queues, the others' are named by :mod:`sesmail.names`.
    """
    primary = names.DEFAULT_MAILBOX if names.DEFAULT_MAILBOX in mailboxes else mailboxes[0]
    per_mailbox = {m: _mailbox_alarms(env, watched, m, primary=m == primary) for m in mailboxes}
    shared = _shared_alarms(env, watched)
    token = [spec for m in mailboxes for spec in per_mailbox[m][:3]]
    queues = [spec for m in mailboxes for spec in per_mailbox[m][3:5]]
    retry_dlqs = [spec for m in mailboxes for spec in per_mailbox[m][5:6]]
    refused = [spec for m in mailboxes for spec in per_mailbox[m][6:]]
    canaries: list[AlarmSpec[V]] = [_canary_alarm(env, m) for m in mailboxes] if canary else []
    # shared: monitor errors, monitor function errors, inbound DLQ, forwarder errors, processor failed/timed out,
    # undelivered mail found
    return [*token, *shared[:2], *queues, shared[2], *retry_dlqs, shared[3], *refused, *shared[4:], *canaries]


def _canary_alarm(env: str, mailbox: str) -> AlarmSpec[V]:
    """No ``CanaryDelivered`` in any of the last 26 hours; missing data is breaching, because
    missing is exactly what a broken path produces (the canary is silence made visible)."""
    hours = names.CANARY_ALARM_HOURS
    of = env if mailbox == names.DEFAULT_MAILBOX else f"mailbox {mailbox} of {env}"
    story = names.log_query(env, names.LOG_QUERY_CANARY_STORY)
    return AlarmSpec(
        key="canary-missing" if mailbox == names.DEFAULT_MAILBOX else f"canary-missing-{mailbox}",
        name=names.canary_alarm(env, mailbox),
        description=(
            f"No daily canary reached the Gmail of {of} for {hours} h: mail may have stopped arriving. The canary "
            "goes through DNS (MX), the SES rule, the bucket, the topic, the inbound queue, the forwarder, the token "
            f"and Gmail. First step: run the saved query {story}; the last step it shows is the last hop that "
            "worked (docs/operations.md, the section of this alarm, says what each missing step means)."
        ),
        namespace=names.metric_namespace(env),
        metric_name=names.METRIC_CANARY_DELIVERED,
        statistic="Sum",
        period=names.CANARY_ALARM_PERIOD_SECONDS,
        threshold=1,
        comparison_operator=LESS,
        treat_missing_data=BREACHING,
        dimensions={names.MAILBOX_DIMENSION: mailbox},
        evaluation_periods=hours,
        datapoints_to_alarm=hours,
    )


def _count(
    key: str, name: str, ns: str, metric: str, dimensions: Mapping[str, V | str], threshold: float, text: str
) -> AlarmSpec[V]:
    return AlarmSpec(
        key=key,
        name=name,
        description=text,
        namespace=ns,
        metric_name=metric,
        statistic="Maximum" if ns == names.AWS_SQS_NAMESPACE else "Sum",
        period=names.ALARM_PERIOD_SECONDS,
        threshold=threshold,
        comparison_operator=GREATER_OR_EQUAL,
        treat_missing_data=NOT_BREACHING,
        dimensions=dimensions,
    )


def _mailbox_alarms(env: str, watched: Watched[V], mailbox: str, *, primary: bool) -> list[AlarmSpec[V]]:
    """Token expiring/critical/expired, retry queue depth/age, retry DLQ, mailbox refused: one mailbox's."""
    namespace = names.metric_namespace(env)
    refresh = names.refresh_command(env, mailbox)
    failures = names.log_query(env, names.LOG_QUERY_FAILURES_BY_CLASS)
    retention_days = names.RETRY_QUEUE_RETENTION_SECONDS // 86400
    age_hours = names.RETRY_QUEUE_AGE_ALARM_SECONDS // 3600
    key = "" if mailbox == names.DEFAULT_MAILBOX else f"-{mailbox}"
    of = env if mailbox == names.DEFAULT_MAILBOX else f"mailbox {mailbox} of {env}"
    by_mailbox: dict[str, V | str] = {names.MAILBOX_DIMENSION: mailbox}
    retry_queue: V | str = watched.retry_queue if primary else names.retry_queue(env, mailbox)
    retry_dlq: V | str = watched.retry_dlq if primary else names.retry_dlq(env, mailbox)
    queue = names.SQS_QUEUE_DIMENSION

    def token(alarm: str, name: str, threshold: float, operator: str, missing: str, text: str) -> AlarmSpec[V]:
        return AlarmSpec(
            key=f"{alarm}{key}",
            name=name,
            description=text,
            namespace=namespace,
            metric_name=names.METRIC_TOKEN_HOURS,
            statistic="Minimum",
            period=names.TOKEN_ALARM_PERIOD_SECONDS,
            threshold=threshold,
            comparison_operator=operator,
            treat_missing_data=missing,
            dimensions=by_mailbox,
            renewal_mailbox=mailbox,
        )

    return [
        token(
            "token-expiring",
            names.token_expiring_alarm(env, mailbox),
            names.TOKEN_EXPIRING_HOURS,
            LESS,
            BREACHING,
            f"The Gmail refresh token of {of} has less than {names.TOKEN_EXPIRING_HOURS} h left, or the token "
            "monitor published nothing for an hour (missing data counts as breaching). Mail still arrives; once the "
            f"token dies it waits in the retry queue. First step: run `{refresh}` (renews the token, clears this "
            "alarm within the hour, delivers whatever queued up).",
        ),
        token(
            "token-critical",
            names.token_critical_alarm(env, mailbox),
            names.TOKEN_CRITICAL_HOURS,
            LESS,
            IGNORE,
            f"The Gmail refresh token of {of} has less than {names.TOKEN_CRITICAL_HOURS} h left. First step: run "
            f"`{refresh}` now.",
        ),
        token(
            "token-expired",
            names.token_expired_alarm(env, mailbox),
            names.TOKEN_EXPIRED_HOURS,
            LESS_OR_EQUAL,
            IGNORE,
            f"The Gmail refresh token of {of} is dead or not configured (<= {names.TOKEN_EXPIRED_HOURS} h): new "
            f"mail is parked in the retry queue, none is lost. First step: run `{refresh}`; it renews the token and "
            "starts the retry processor, which delivers the backlog.",
        ),
        _count(
            f"retry-queue-depth{key}",
            names.retry_queue_depth_alarm(env, mailbox),
            names.AWS_SQS_NAMESPACE,
            names.SQS_MESSAGES_VISIBLE,
            {queue: retry_queue},
            names.RETRY_QUEUE_DEPTH_ALARM_THRESHOLD,
            f"Mail of {of} is waiting in the retry queue, normally because the Gmail token is dead; it is kept "
            f"{retention_days} days. First step: check the token alarms and run `{refresh}` (it starts the retry "
            "processor). If the token is fine, start the retry processor alone.",
        ),
        _count(
            f"retry-queue-age{key}",
            names.retry_queue_age_alarm(env, mailbox),
            names.AWS_SQS_NAMESPACE,
            names.SQS_OLDEST_MESSAGE_AGE,
            {queue: retry_queue},
            names.RETRY_QUEUE_AGE_ALARM_SECONDS,
            f"The oldest message in the retry queue of {of} has waited over {age_hours} h; SQS deletes it after "
            f"{retention_days} days. First step: run `{refresh}`; if the retry processor then fails, see its alarm.",
        ),
        _count(
            f"retry-dlq-depth{key}",
            names.retry_dlq_alarm(env, mailbox),
            names.AWS_SQS_NAMESPACE,
            names.SQS_MESSAGES_VISIBLE,
            {queue: retry_dlq},
            names.DLQ_DEPTH_ALARM_THRESHOLD,
            f"Mail of {of} is in the retry DLQ: the retry processor found it undeliverable, or it stayed in the "
            f"retry queue for {names.RETRY_QUEUE_MAX_RECEIVE_COUNT} processor runs. First step: read the messages' "
            "`error` attribute, fix the cause, redrive to the retry queue and start the retry processor.",
        ),
        _count(
            f"mailbox-refused{key}",
            names.mailbox_refused_alarm(env, mailbox),
            namespace,
            names.METRIC_MAILBOX_REFUSED,
            by_mailbox,
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"Gmail refuses the mailbox or our setup for {of}, not a message and not the token: the Gmail API is "
            "disabled, a domain policy or the account forbids it, a configured label does not exist, the OAuth "
            "client was refused, or the API URL is wrong. Mail waits in the retry queue. First step: run the saved "
            f"query {failures} for the reason, fix it, then start the retry processor (or wait for the monitor).",
        ),
    ]


def _shared_alarms(env: str, watched: Watched[V]) -> list[AlarmSpec[V]]:
    """The alarms of things every mailbox shares: the monitor, the inbound DLQ, the forwarder, the processor."""
    namespace = names.metric_namespace(env)
    refresh = names.refresh_command(env)
    token_events = names.log_query(env, names.LOG_QUERY_TOKEN_EVENTS)
    failures = names.log_query(env, names.LOG_QUERY_FAILURES_BY_CLASS)
    story = names.log_query(env, names.LOG_QUERY_MESSAGE_STORY)
    queue = names.SQS_QUEUE_DIMENSION
    function = names.LAMBDA_FUNCTION_DIMENSION
    machine = names.STATES_STATE_MACHINE_DIMENSION
    return [
        AlarmSpec(
            key="token-monitor-errors",
            name=names.token_monitor_errors_alarm(env),
            description=(
                f"The token monitor of {env} could not tell a token's expiry: an expiry parameter is missing, "
                "a placeholder or unreadable (then it also published 0 hours for that mailbox), or SSM could not be "
                f"read. First step: run the saved query {token_events} (event {names.EVENT_TOKEN_MONITOR_ERROR} has "
                f"the reason and the mailbox); usually `{refresh}` (with `--mailbox NAME`) fixes it."
            ),
            namespace=namespace,
            metric_name=names.METRIC_TOKEN_MONITORING_ERRORS,
            statistic="Maximum",
            period=names.TOKEN_ALARM_PERIOD_SECONDS,
            threshold=names.ERROR_COUNT_ALARM_THRESHOLD,
            comparison_operator=GREATER_OR_EQUAL,
            treat_missing_data=IGNORE,
        ),
        _count(
            "token-monitor-function-errors",
            names.token_monitor_function_errors_alarm(env),
            names.AWS_LAMBDA_NAMESPACE,
            names.LAMBDA_ERRORS,
            {function: watched.token_monitor_function},
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"The token monitor Lambda of {env} failed (crash, timeout or missing permission), so the token metric "
            "may stop; the expiring alarm then fires from missing data. First step: read the newest log lines of "
            f"{names.lambda_log_group(names.token_monitor_function(env))}.",
        ),
        _count(
            "inbound-dlq-depth",
            names.inbound_dlq_alarm(env),
            names.AWS_SQS_NAMESPACE,
            names.SQS_MESSAGES_VISIBLE,
            {queue: watched.inbound_dlq},
            names.DLQ_DEPTH_ALARM_THRESHOLD,
            f"Mail of {env} is in the inbound DLQ: a permanent failure (missing S3 object, malformed notification, "
            "Gmail 400, a recipient no mailbox lists) or transient failures on every receive. First step: read the "
            f"messages' `error` attribute (or the saved query {failures}), fix the cause, then redrive the DLQ to the "
            "inbound queue.",
        ),
        _count(
            "forwarder-errors",
            names.forwarder_errors_alarm(env),
            names.AWS_LAMBDA_NAMESPACE,
            names.LAMBDA_ERRORS,
            {function: watched.forwarder_function},
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"The forwarder Lambda of {env} raised: a crash or timeout (SQS redelivers, nothing is lost), or a "
            "retry-processor delivery that failed (then its alarm fires too). First step: run the saved queries "
            f"{failures} and {story}.",
        ),
        _count(
            "retry-processor-failed",
            names.retry_processor_failed_alarm(env),
            names.AWS_STATES_NAMESPACE,
            names.STATES_EXECUTIONS_FAILED,
            {machine: watched.state_machine_arn},
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"A retry processor execution of {env} failed; nothing was deleted that was not delivered or "
            "dead-lettered. First step: open the failed execution in the Step Functions console (its input names the "
            f"mailbox); TokenExpiredError means that token died again: run `{refresh}` (with `--mailbox NAME`); "
            "MailboxRefusedError: see the mailbox-refused alarm.",
        ),
        _count(
            "retry-processor-timed-out",
            names.retry_processor_timed_out_alarm(env),
            names.AWS_STATES_NAMESPACE,
            names.STATES_EXECUTIONS_TIMED_OUT,
            {machine: watched.state_machine_arn},
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"A retry processor execution of {env} timed out; undelivered mail stays in the retry queue. First "
            "step: open the execution in the Step Functions console to see the stuck state, then start the retry "
            "processor again.",
        ),
        _count(
            "undelivered-mail-found",
            names.undelivered_found_alarm(env),
            namespace,
            names.METRIC_UNDELIVERED_FOUND,
            {},
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"A reconcile of {env} found stored mail older than a day that the inbound path never delivered nor "
            "parked, and delivered it (or handed it to the retry queue): something upstream lost it (the SNS to "
            "SQS subscription, the inbound queue, the forwarder). First step: run the saved query "
            f"{story} for a message of the reconcile.done event's time, and check the inbound topic's "
            "subscription (docs/operations.md, the section of this alarm).",
        ),
    ]
