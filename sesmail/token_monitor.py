"""The token monitor: turn the stored expiry into the metrics the token alarms watch.

For the hours it reads only the non-secret expiry parameter (``names.refresh_token_expiry_parameter``)
and publishes, in one ``PutMetricData`` call to ``SESMail/{env}`` without dimensions:

* ``TokenHoursUntilExpiration``: hours left (negative once dead); ``names.TOKEN_NO_EXPIRY_HOURS``
  for a token without an expiry (an app "In production"), far above every threshold;
* ``TokenMonitoringErrors``: 0 when the expiry is known, 1 otherwise. It is published on every
  run, the zeros included, so its alarm returns to OK by itself once the cause is fixed.

What is known to be wrong publishes 0 hours *and* an error, so every token alarm fires rather
than going quiet: the parameter does not exist, still holds Pulumi's placeholder, or is not the
JSON the refresh CLI writes. When SSM itself cannot be asked (throttling, network, a missing
permission) the expiry is *unknown*, not zero: only the error is published, so the operator is
told "the monitor is broken" instead of a false "token expired"; should that last a whole alarm
period, the expiring alarm fires anyway because it treats missing data as breaching.

After publishing, each run also looks at the retry queue (DESIGN.md, "Nothing waits forever"):
when mail waits there, no retry-processor execution is running and the stored token mints an
access token, it starts one, so mail parked by a Gmail outage, a quota or a renewal made by hand
is delivered without anyone running a command. That step reads the OAuth parameters (minting is
the only proof that a token works, as in the refresh CLI), never fails the run, and logs one
``retry.autostart*`` line with its decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sesmail import names
from sesmail.errors import MailboxRefusedError, SesMailError, TokenExpiredError, TokenNotConfiguredError, classify
from sesmail.http import HttpClient
from sesmail.log import get_logger
from sesmail.retry_run import recent_failure, running_execution, start_retry_processor, visible_messages
from sesmail.token_metrics import hours_left
from sesmail.tokens import AccessTokenProvider, ParameterReader, RefreshTokenError, TokenExpiry

log = get_logger("sesmail.token_monitor")

#: Keys of the expiry JSON that say when the token dies (``null`` in both means "never").
_EXPIRY_KEYS = frozenset({"expires_at", "expires_at_epoch"})


@dataclass(frozen=True)
class TokenStatus:
    """What one run found. ``hours_left`` is None when nothing could be read (not published)."""

    hours_left: float | None
    error: str | None = None
    expires_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {"hoursLeft": self.hours_left, "error": self.error, "expiresAt": self.expires_at}


def parse_expiry(value: str | None) -> TokenExpiry:
    """The stored expiry; ``RefreshTokenError`` for a placeholder or anything unreadable.

    Stricter than :meth:`TokenExpiry.from_json` on one point: a JSON object that mentions no
    expiry at all (``{}``) is refused rather than read as "never expires", which would silence
    every token alarm.
    """
    expiry = TokenExpiry.from_json(value)
    data = json.loads(value or "")
    if not isinstance(data, dict) or not _EXPIRY_KEYS & data.keys():
        raise RefreshTokenError("the token expiry parameter does not say when the token expires")
    return expiry


def read_status(ssm: Any, env: str, now: datetime | None = None) -> TokenStatus:
    parameter = names.refresh_token_expiry_parameter(env)
    fix = names.refresh_command(env)
    try:
        value = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except Exception as exc:
        error = classify(exc)
        if isinstance(error, TokenNotConfiguredError):  # ParameterNotFound: known to be missing
            return TokenStatus(0.0, f"{parameter} does not exist; run `{names.deploy_command(env)}`, then `{fix}`")
        return TokenStatus(None, f"could not read {parameter}: {error.reason}")
    try:
        expiry = parse_expiry(value)
    except RefreshTokenError as exc:
        return TokenStatus(0.0, f"{exc.reason}; run `{fix}`")
    expires_at = None if expiry.expires_at is None else expiry.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return TokenStatus(hours_left(expiry, now or datetime.now(UTC)), None, expires_at)


def metric_data(status: TokenStatus) -> list[dict[str, Any]]:
    """The datapoints of one run: the hours when known, the error count always."""
    data: list[dict[str, Any]] = []
    if status.hours_left is not None:
        data.append(
            {"MetricName": names.METRIC_TOKEN_HOURS, "Value": status.hours_left, "Unit": names.METRIC_TOKEN_HOURS_UNIT}
        )
    data.append({"MetricName": names.METRIC_TOKEN_MONITORING_ERRORS, "Value": 0 if status.ok else 1, "Unit": "Count"})
    return data


def publish(cloudwatch: Any, env: str, status: TokenStatus) -> None:
    """One call for both metrics; a failure propagates (the Lambda Errors alarm sees it)."""
    cloudwatch.put_metric_data(Namespace=names.metric_namespace(env), MetricData=metric_data(status))


def run(ssm: Any, cloudwatch: Any, env: str, now: datetime | None = None) -> TokenStatus:
    status = read_status(ssm, env, now)
    publish(cloudwatch, env, status)
    if not status.ok:
        published = "no hours" if status.hours_left is None else f"{status.hours_left:g} hours"
        log.error(
            f"token expiry unknown; published {published} and {names.METRIC_TOKEN_MONITORING_ERRORS}=1",
            extra={"event": names.EVENT_TOKEN_MONITOR_ERROR, "reason": status.error, "hoursLeft": status.hours_left},
        )
    else:
        log.info(
            "token hours published",
            extra={
                "event": names.EVENT_TOKEN_MONITORED,
                "hoursLeft": status.hours_left,
                "expiresAt": status.expires_at,
            },
        )
    return status


# --- Nothing waits forever: start the retry processor when parked mail can be delivered ----------

STARTED, SKIPPED, FAILED = "started", "skipped", "failed"
#: Why nothing was started (``reason`` of a ``retry.autostart_skipped`` line).
QUEUE_EMPTY = "queue-empty"
ALREADY_RUNNING = "already-running"
#: The last execution failed less than names.RETRY_AUTOSTART_BACKOFF_SECONDS ago.
RECENT_FAILURE = "recent-failure"
ALREADY_STARTED = "already-started-this-period"
TOKEN_NOT_CONFIGURED = "token-not-configured"
TOKEN_DEAD = "token-dead"
OAUTH_CLIENT_REFUSED = "oauth-client-refused"
#: Why an execution was started (``reason`` of a ``retry.autostart`` line).
MAIL_PARKED = "mail-parked"


@dataclass(frozen=True)
class RetryAutostart:
    """What the monitor needs to start the retry processor: the queue, the machine, a token check."""

    sqs: Any
    sfn: Any
    queue_url: str
    state_machine_arn: str
    #: Mints one access token; raises the token library's classified errors when it cannot.
    prove_token: Callable[[], object]


@dataclass(frozen=True)
class AutostartOutcome:
    """One run's decision. ``waiting`` is the queue's visible messages (None when not read)."""

    action: str
    reason: str
    waiting: int | None = None
    execution_arn: str | None = None
    detail: str | None = None
    failure_class: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "waiting": self.waiting,
            "executionArn": self.execution_arn,
            "detail": self.detail,
        }


def prove_token(env: str, read_parameters: ParameterReader) -> None:
    """Mint one access token from the stored refresh token, exactly as the forwarder would.

    A fresh provider and connection every run: a cached access token only proves the token
    worked when it was minted, and at one run in 15 minutes a cache would save nothing.
    """
    http = HttpClient()
    try:
        AccessTokenProvider(env, read_parameters, http).get()
    finally:
        http.close()


def execution_name(at: datetime) -> str:
    """``token-monitor-20261124T1015Z``: the start of the schedule period ``at`` falls in.

    The ``ListExecutions`` check and the start are two calls, so two monitor runs at once (an
    EventBridge event delivered twice, a Lambda retry of the same event, an invoke by hand) could
    both find nothing running. With one name per period and the same input they cannot start two
    drains: Step Functions returns the running execution again, or refuses the name once it ended.
    """
    period = names.TOKEN_MONITOR_PERIOD_SECONDS
    start = datetime.fromtimestamp(int(at.timestamp()) // period * period, UTC)
    return f"{names.RETRY_TRIGGER_TOKEN_MONITOR}-{start.strftime('%Y%m%dT%H%MZ')}"


def scheduled_time(event: Any) -> datetime | None:
    """EventBridge's ``time`` of a scheduled event: the same in every delivery and retry of it."""
    value = event.get("time") if isinstance(event, dict) else None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def autostart_retry(autostart: RetryAutostart | None, env: str, *, at: datetime | None = None) -> AutostartOutcome:
    """Start the retry processor when mail waits, nothing drains it and the token mints. Never raises.

    A dead or unconfigured token starts nothing and is only logged at INFO: the token alarms and
    the forwarder's parked lines already say so. Anything else that goes wrong is logged at ERROR
    and returned, never raised: the hours are published already, and this step is retried by the
    next run in 15 minutes. It is not a ``TokenMonitoringErrors`` (that metric, and its alarm's
    runbook, mean "the token's expiry is unknown"); the retry-queue age alarm is the backstop.
    """
    if autostart is None:
        outcome = AutostartOutcome(
            FAILED,
            f"{names.ENV_VAR_RETRY_QUEUE_URL} or {names.ENV_VAR_STATE_MACHINE_ARN} is not set: "
            f"deploy the token monitor with the Pulumi program (`{names.deploy_command(env)}`)",
            failure_class="ConfigurationError",
        )
    else:
        try:
            outcome = _decide(autostart, at or datetime.now(UTC))
        except Exception as exc:
            error = classify(exc)
            outcome = AutostartOutcome(FAILED, error.reason, failure_class=error.failure_class.value)
    _log_outcome(outcome)
    return outcome


def _decide(autostart: RetryAutostart, at: datetime) -> AutostartOutcome:
    """Cheapest check first: most runs find an empty queue and read no secret at all.

    Only *visible* messages count. Messages in flight were received by a running execution (which
    the next check finds), or by one that just stopped: they become visible again within the
    queue's visibility timeout, which equals the schedule's period, so the next run sees them.
    The running check comes before minting so that a long drain costs no token request a run.
    """
    waiting = visible_messages(autostart.sqs, autostart.queue_url)
    if waiting == 0:
        return AutostartOutcome(SKIPPED, QUEUE_EMPTY, waiting)
    running = running_execution(autostart.sfn, autostart.state_machine_arn)
    if running is not None:
        return AutostartOutcome(SKIPPED, ALREADY_RUNNING, waiting, running)
    since = at - timedelta(seconds=names.RETRY_AUTOSTART_BACKOFF_SECONDS)
    failed = recent_failure(autostart.sfn, autostart.state_machine_arn, since=since)
    if failed is not None:
        return AutostartOutcome(SKIPPED, RECENT_FAILURE, waiting, failed)
    unusable = _token_unusable(autostart.prove_token)
    if unusable is not None:
        return AutostartOutcome(SKIPPED, _skip_reason(unusable), waiting, detail=unusable.reason)
    try:
        arn = start_retry_processor(
            autostart.sfn,
            autostart.state_machine_arn,
            trigger=names.RETRY_TRIGGER_TOKEN_MONITOR,
            name=execution_name(at),
        )
    except Exception as exc:
        if _error_code(exc) != "ExecutionAlreadyExists":
            raise
        return AutostartOutcome(SKIPPED, ALREADY_STARTED, waiting, detail=execution_name(at))
    return AutostartOutcome(STARTED, MAIL_PARKED, waiting, arn)


def _token_unusable(prove: Callable[[], object]) -> SesMailError | None:
    """The error that says the stored token cannot deliver now, or None when it minted.

    Dead, not configured, or its OAuth client refused: an operator must act, so no drain.
    Anything else (Google or SSM unreachable, throttled, denied) is raised: the answer is unknown.
    """
    try:
        prove()
    except Exception as exc:
        error = classify(exc)
        if isinstance(error, (TokenExpiredError, MailboxRefusedError)):
            return error
        raise error from None
    return None


def _skip_reason(error: SesMailError) -> str:
    if isinstance(error, TokenNotConfiguredError):
        return TOKEN_NOT_CONFIGURED
    if isinstance(error, TokenExpiredError):
        return TOKEN_DEAD
    return OAUTH_CLIENT_REFUSED


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _log_outcome(outcome: AutostartOutcome) -> None:
    fields = {"reason": outcome.reason, "waiting": outcome.waiting, "executionArn": outcome.execution_arn}
    if outcome.action == STARTED:
        log.info(
            f"started the retry processor for {outcome.waiting} parked message(s)",
            extra={"event": names.EVENT_RETRY_AUTOSTART, **fields, "trigger": names.RETRY_TRIGGER_TOKEN_MONITOR},
        )
    elif outcome.action == SKIPPED:
        log.info(
            f"retry processor not started: {outcome.reason}",
            extra={"event": names.EVENT_RETRY_AUTOSTART_SKIPPED, **fields, "detail": outcome.detail},
        )
    else:
        log.error(
            "could not decide whether to start the retry processor; the next run tries again",
            extra={"event": names.EVENT_RETRY_AUTOSTART_FAILED, **fields, "failureClass": outcome.failure_class},
        )


def monitor(
    ssm: Any,
    cloudwatch: Any,
    env: str,
    autostart: RetryAutostart | None,
    *,
    now: datetime | None = None,
    scheduled_at: datetime | None = None,
) -> dict[str, Any]:
    """One scheduled run: publish the token's hours, then start the retry processor if mail can go.

    Neither step stops the other: the autostart never raises, and it still runs when publishing
    failed (that failure then fails the invocation, which its Lambda-errors alarm reports).
    """
    try:
        status = run(ssm, cloudwatch, env, now)
    finally:
        outcome = autostart_retry(autostart, env, at=scheduled_at or now)
    return {**status.as_dict(), "retry": outcome.as_dict()}
