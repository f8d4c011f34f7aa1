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

from collections.abc import Mapping
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
    dimensions: Mapping[str, V] = field(default_factory=dict)
    evaluation_periods: int = 1
    datapoints_to_alarm: int = 1


def alarm_specs(env: str, watched: Watched[V]) -> list[AlarmSpec[V]]:
    """The alarms of DESIGN.md "Observability", in the order the runbook lists them."""
    namespace = names.metric_namespace(env)
    refresh = names.refresh_command(env)
    token_events = names.log_query(env, names.LOG_QUERY_TOKEN_EVENTS)
    failures = names.log_query(env, names.LOG_QUERY_FAILURES_BY_CLASS)
    story = names.log_query(env, names.LOG_QUERY_MESSAGE_STORY)
    retention_days = names.RETRY_QUEUE_RETENTION_SECONDS // 86400
    age_hours = names.RETRY_QUEUE_AGE_ALARM_SECONDS // 3600

    def token(key: str, name: str, threshold: float, operator: str, missing: str, text: str) -> AlarmSpec[V]:
        return AlarmSpec(
            key=key,
            name=name,
            description=text,
            namespace=namespace,
            metric_name=names.METRIC_TOKEN_HOURS,
            statistic="Minimum",
            period=names.TOKEN_ALARM_PERIOD_SECONDS,
            threshold=threshold,
            comparison_operator=operator,
            treat_missing_data=missing,
        )

    def count(
        key: str, name: str, ns: str, metric: str, dimensions: Mapping[str, V], threshold: float, text: str
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

    queue = names.SQS_QUEUE_DIMENSION
    function = names.LAMBDA_FUNCTION_DIMENSION
    machine = names.STATES_STATE_MACHINE_DIMENSION
    return [
        token(
            "token-expiring",
            names.token_expiring_alarm(env),
            names.TOKEN_EXPIRING_HOURS,
            LESS,
            BREACHING,
            f"The Gmail refresh token of {env} has less than {names.TOKEN_EXPIRING_HOURS} h left, or the token "
            "monitor published nothing for an hour (missing data counts as breaching). Mail still arrives; once the "
            f"token dies it waits in the retry queue. First step: run `{refresh}` (renews the token, clears this "
            "alarm within the hour, delivers whatever queued up).",
        ),
        token(
            "token-critical",
            names.token_critical_alarm(env),
            names.TOKEN_CRITICAL_HOURS,
            LESS,
            IGNORE,
            f"The Gmail refresh token of {env} has less than {names.TOKEN_CRITICAL_HOURS} h left. First step: run "
            f"`{refresh}` now.",
        ),
        token(
            "token-expired",
            names.token_expired_alarm(env),
            names.TOKEN_EXPIRED_HOURS,
            LESS_OR_EQUAL,
            IGNORE,
            f"The Gmail refresh token of {env} is dead or not configured (<= {names.TOKEN_EXPIRED_HOURS} h): new "
            f"mail is parked in the retry queue, none is lost. First step: run `{refresh}`; it renews the token and "
            "starts the retry processor, which delivers the backlog.",
        ),
        AlarmSpec(
            key="token-monitor-errors",
            name=names.token_monitor_errors_alarm(env),
            description=(
                f"The token monitor of {env} could not tell the token's expiry: the expiry parameter is missing, "
                "a placeholder or unreadable (then it also published 0 hours), or SSM could not be read. First "
                f"step: run the saved query {token_events} (event {names.EVENT_TOKEN_MONITOR_ERROR} has the "
                f"reason); usually `{refresh}` fixes it."
            ),
            namespace=namespace,
            metric_name=names.METRIC_TOKEN_MONITORING_ERRORS,
            statistic="Maximum",
            period=names.TOKEN_ALARM_PERIOD_SECONDS,
            threshold=names.ERROR_COUNT_ALARM_THRESHOLD,
            comparison_operator=GREATER_OR_EQUAL,
            treat_missing_data=IGNORE,
        ),
        count(
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
        count(
            "retry-queue-depth",
            names.retry_queue_depth_alarm(env),
            names.AWS_SQS_NAMESPACE,
            names.SQS_MESSAGES_VISIBLE,
            {queue: watched.retry_queue},
            names.RETRY_QUEUE_DEPTH_ALARM_THRESHOLD,
            f"Mail of {env} is waiting in the retry queue, normally because the Gmail token is dead; it is kept "
            f"{retention_days} days. First step: check the token alarms and run `{refresh}` (it starts the retry "
            "processor). If the token is fine, start the retry processor alone.",
        ),
        count(
            "retry-queue-age",
            names.retry_queue_age_alarm(env),
            names.AWS_SQS_NAMESPACE,
            names.SQS_OLDEST_MESSAGE_AGE,
            {queue: watched.retry_queue},
            names.RETRY_QUEUE_AGE_ALARM_SECONDS,
            f"The oldest message in the retry queue of {env} has waited over {age_hours} h; SQS deletes it after "
            f"{retention_days} days. First step: run `{refresh}`; if the retry processor then fails, see its alarm.",
        ),
        count(
            "inbound-dlq-depth",
            names.inbound_dlq_alarm(env),
            names.AWS_SQS_NAMESPACE,
            names.SQS_MESSAGES_VISIBLE,
            {queue: watched.inbound_dlq},
            names.DLQ_DEPTH_ALARM_THRESHOLD,
            f"Mail of {env} is in the inbound DLQ: a permanent failure (missing S3 object, malformed notification, "
            "Gmail 400) or transient failures on every receive. First step: read the messages' `error` attribute "
            f"(or the saved query {failures}), fix the cause, then redrive the DLQ to the inbound queue.",
        ),
        count(
            "retry-dlq-depth",
            names.retry_dlq_alarm(env),
            names.AWS_SQS_NAMESPACE,
            names.SQS_MESSAGES_VISIBLE,
            {queue: watched.retry_dlq},
            names.DLQ_DEPTH_ALARM_THRESHOLD,
            f"Mail of {env} is in the retry DLQ: the retry processor found it undeliverable, or it stayed in the "
            f"retry queue for {names.RETRY_QUEUE_MAX_RECEIVE_COUNT} processor runs. First step: read the messages' "
            "`error` attribute, fix the cause, redrive to the retry queue and start the retry processor.",
        ),
        count(
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
        count(
            "mailbox-refused",
            names.mailbox_refused_alarm(env),
            namespace,
            names.METRIC_MAILBOX_REFUSED,
            {},
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"Gmail refuses the mailbox or our setup for {env}, not a message and not the token: the Gmail API is "
            "disabled, a domain policy or the account forbids it, a configured label does not exist, the OAuth "
            "client was refused, or the API URL is wrong. Mail waits in the retry queue. First step: run the saved "
            f"query {failures} for the reason, fix it, then start the retry processor (or wait for the monitor).",
        ),
        count(
            "retry-processor-failed",
            names.retry_processor_failed_alarm(env),
            names.AWS_STATES_NAMESPACE,
            names.STATES_EXECUTIONS_FAILED,
            {machine: watched.state_machine_arn},
            names.ERROR_COUNT_ALARM_THRESHOLD,
            f"A retry processor execution of {env} failed; nothing was deleted that was not delivered or "
            "dead-lettered. First step: open the failed execution in the Step Functions console; TokenExpiredError "
            f"means the token died again: run `{refresh}`; MailboxRefusedError: see the mailbox-refused alarm.",
        ),
        count(
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
    ]
