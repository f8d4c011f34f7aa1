"""The token monitor: turn each mailbox's stored expiry into the metrics the token alarms watch.

For the hours it reads only each mailbox's non-secret expiry parameter
(``names.refresh_token_expiry_parameter(env, mailbox)``) and publishes, in one ``PutMetricData``
call to ``SESMail/{env}``:

* ``TokenHoursUntilExpiration`` for every mailbox, with the dimension ``Mailbox`` = its name
  (``default`` included, DESIGN.md "Mailboxes"): hours left (negative once dead);
  ``names.TOKEN_NO_EXPIRY_HOURS`` for a token without an expiry (an app "In production"), far
  above every threshold;
* ``TokenMonitoringErrors``, once, without dimension (the monitor and its alarm are shared): how
  many mailboxes' expiry is unknown, 0 when all are known. It is published on every run, the
  zeros included, so its alarm returns to OK by itself once the cause is fixed.

What is known to be wrong publishes 0 hours *and* an error, so every token alarm fires rather
than going quiet: the parameter does not exist, still holds Pulumi's placeholder, or is not the
JSON the refresh CLI writes. When SSM itself cannot be asked (throttling, network, a missing
permission) the expiry is *unknown*, not zero: only the error is published, so the operator is
told "the monitor is broken" instead of a false "token expired"; should that last a whole alarm
period, the expiring alarm fires anyway because it treats missing data as breaching. Each
mailbox is read on its own: one broken parameter never keeps another mailbox's hours from the alarms.

After publishing, each run also looks at every mailbox's retry queue (DESIGN.md, "Nothing waits
forever"): when mail waits there, no retry-processor execution for that mailbox is running and
the mailbox's stored token mints an access token, it starts one for that mailbox, so mail parked
by a Gmail outage, a quota or a renewal made by hand is delivered without anyone running a
command. That step reads the OAuth parameters (minting is the only proof that a token works, as
in the refresh CLI), never fails the run, and logs one ``retry.autostart*`` line per mailbox
(field ``mailbox``) with its decision; one mailbox that cannot be decided never stops another.

Once a day a second rule invokes the monitor with ``{"action": "daily-reconcile", "time": ...}``
(DESIGN.md, "Reconcile: S3 is the source of truth"): a full run, hours included, whose autostart
does not skip an empty queue. Every mailbox whose token mints and that no execution drains (and
none failed within the backoff) gets one execution named ``daily-reconcile[-{mailbox}]-YYYYMMDD``
with trigger ``daily-reconcile``; it reconciles first, so mail the bucket holds but no queue does
is delivered, then drains whatever waits in the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sesmail import names
from sesmail.runtime.errors import (
    MailboxRefusedError,
    SesMailError,
    TokenExpiredError,
    TokenNotConfiguredError,
    aws_error_code,
    classify,
)
from sesmail.runtime.http import HttpClient
from sesmail.runtime.log import get_logger
from sesmail.runtime.retry_run import (
    MailboxOf,
    cached_mailbox_of,
    inputs_tell_mailboxes_apart,
    recent_failure,
    running_execution,
    start_retry_processor,
    visible_messages,
)
from sesmail.runtime.token_metrics import hours_left, mailbox_dimensions
from sesmail.runtime.tokens import AccessTokenProvider, ParameterReader, RefreshTokenError, TokenExpiry

log = get_logger("sesmail.runtime.token_monitor")

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


def read_status(ssm: Any, env: str, now: datetime | None = None, mailbox: str = names.DEFAULT_MAILBOX) -> TokenStatus:
    """One mailbox's expiry, read with one ``GetParameter``; never raises for what SSM answers."""
    parameter = names.refresh_token_expiry_parameter(env, mailbox)
    fix = names.refresh_command(env, mailbox)
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


def metric_data(status: TokenStatus, mailbox: str = names.DEFAULT_MAILBOX) -> list[dict[str, Any]]:
    """One mailbox's datapoint: its token's hours when known (dimension ``Mailbox``)."""
    if status.hours_left is None:
        return []
    return [
        {
            "MetricName": names.METRIC_TOKEN_HOURS,
            "Dimensions": mailbox_dimensions(mailbox),
            "Value": status.hours_left,
            "Unit": names.METRIC_TOKEN_HOURS_UNIT,
        }
    ]


def errors_datum(statuses: Mapping[str, TokenStatus]) -> dict[str, Any]:
    """``TokenMonitoringErrors``: how many mailboxes' expiry is unknown this run, without dimension.

    The monitor is one thing shared by every mailbox, and so is its alarm: its ``token.monitor_error``
    log line names the mailbox. Published on every run, zeros included, so the alarm returns to OK
    by itself once the cause is fixed.
    """
    return {
        "MetricName": names.METRIC_TOKEN_MONITORING_ERRORS,
        "Value": sum(1 for status in statuses.values() if not status.ok),
        "Unit": "Count",
    }


#: ``PutMetricData`` takes at most 1000 datapoints a call; a run publishes one per mailbox and one more.
_MAX_DATAPOINTS_PER_CALL = 1000


def publish(cloudwatch: Any, env: str, statuses: Mapping[str, TokenStatus]) -> None:
    """Every mailbox's metrics in one call; a failure propagates (the Lambda Errors alarm sees it)."""
    data = [datum for mailbox, status in statuses.items() for datum in metric_data(status, mailbox)]
    data.append(errors_datum(statuses))
    for start in range(0, len(data), _MAX_DATAPOINTS_PER_CALL):
        chunk = data[start : start + _MAX_DATAPOINTS_PER_CALL]
        cloudwatch.put_metric_data(Namespace=names.metric_namespace(env), MetricData=chunk)


def run(
    ssm: Any,
    cloudwatch: Any,
    env: str,
    now: datetime | None = None,
    *,
    mailboxes: Sequence[str] = (names.DEFAULT_MAILBOX,),
) -> dict[str, TokenStatus]:
    """Read every mailbox's expiry, publish them all, log one ``token.*`` line per mailbox."""
    statuses = {mailbox: read_status(ssm, env, now, mailbox) for mailbox in mailboxes}
    publish(cloudwatch, env, statuses)
    for mailbox, status in statuses.items():
        if not status.ok:
            published = "no hours" if status.hours_left is None else f"{status.hours_left:g} hours"
            log.error(
                f"token expiry of mailbox {mailbox} unknown; "
                f"published {published} and {names.METRIC_TOKEN_MONITORING_ERRORS}=1",
                extra={
                    "event": names.EVENT_TOKEN_MONITOR_ERROR,
                    "mailbox": mailbox,
                    "reason": status.error,
                    "hoursLeft": status.hours_left,
                },
            )
        else:
            log.info(
                "token hours published",
                extra={
                    "event": names.EVENT_TOKEN_MONITORED,
                    "mailbox": mailbox,
                    "hoursLeft": status.hours_left,
                    "expiresAt": status.expires_at,
                },
            )
    return statuses


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
#: The daily run started it, queue empty or not: it reconciles the mailbox, then drains its queue.
DAILY_RECONCILE = "daily-reconcile"


@dataclass(frozen=True)
class RetryAutostart:
    """What the monitor needs to start the retry processor: each mailbox's queue, the machine, a token check."""

    sqs: Any
    sfn: Any
    #: Mailbox name → its retry queue URL, in the mailbox table's order: the mailboxes looked at.
    queue_urls: Mapping[str, str]
    state_machine_arn: str
    #: Mints one access token with the named mailbox's refresh token; raises the token library's
    #: classified errors when it cannot.
    prove_token: Callable[[str], object]

    @property
    def mailboxes(self) -> tuple[str, ...]:
        return tuple(self.queue_urls)


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


def prove_token(env: str, read_parameters: ParameterReader, mailbox: str = names.DEFAULT_MAILBOX) -> None:
    """Mint one access token from a mailbox's stored refresh token, exactly as the forwarder would.

    A fresh provider and connection every run: a cached access token only proves the token
    worked when it was minted, and at one run in 15 minutes a cache would save nothing.
    """
    http = HttpClient()
    try:
        AccessTokenProvider(env, read_parameters, http, mailbox=mailbox).get()
    finally:
        http.close()


def execution_name(at: datetime, mailbox: str = names.DEFAULT_MAILBOX) -> str:
    """``token-monitor-20261124T1015Z``: the start of the schedule period ``at`` falls in.

    ``token-monitor-{mailbox}-20261124T1015Z`` for a mailbox other than ``default``, so every
    mailbox gets its own name in a period (at most 14 + 21 + 14 = 49 of the 80 characters allowed).

    The ``ListExecutions`` check and the start are two calls, so two monitor runs at once (an
    EventBridge event delivered twice, a Lambda retry of the same event, an invoke by hand) could
    both find nothing running. With one name per period and the same input they cannot start two
    drains: Step Functions returns the running execution again, or refuses the name once it ended.
    """
    period = names.TOKEN_MONITOR_PERIOD_SECONDS
    start = datetime.fromtimestamp(int(at.timestamp()) // period * period, UTC)
    prefix = names.RETRY_TRIGGER_TOKEN_MONITOR
    if mailbox != names.DEFAULT_MAILBOX:
        prefix = f"{prefix}-{names.check_mailbox(mailbox)}"
    return f"{prefix}-{start.strftime('%Y%m%dT%H%MZ')}"


def daily_execution_name(at: datetime, mailbox: str = names.DEFAULT_MAILBOX) -> str:
    """``daily-reconcile-20261124``: the UTC day of ``at`` (the daily event's scheduled time).

    ``daily-reconcile-{mailbox}-20261124`` for a mailbox other than ``default`` (at most
    15 + 21 + 9 = 45 of the 80 characters allowed). One name a day and mailbox: an EventBridge
    retry or a second delivery of the day's event cannot start a second execution
    (:func:`execution_name` says how).
    """
    prefix = names.RETRY_TRIGGER_DAILY_RECONCILE
    if mailbox != names.DEFAULT_MAILBOX:
        prefix = f"{prefix}-{names.check_mailbox(mailbox)}"
    return f"{prefix}-{at.astimezone(UTC).strftime('%Y%m%d')}"


def is_daily_reconcile(event: Any) -> bool:
    """Whether the event is the daily rule's ``{"action": "daily-reconcile", "time": ...}``."""
    return isinstance(event, dict) and event.get("action") == names.RETRY_TRIGGER_DAILY_RECONCILE


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


def autostart_retry(
    autostart: RetryAutostart | None,
    env: str,
    *,
    at: datetime | None = None,
    mailboxes: Sequence[str] | None = None,
    daily: bool = False,
) -> dict[str, AutostartOutcome]:
    """For each mailbox, start the retry processor when its mail waits, nothing drains it and its
    token mints. Never raises; returns each mailbox's outcome, in order.

    ``daily`` (the daily reconcile): an empty queue is no reason to skip, and the execution is
    the day's (:func:`daily_execution_name`, trigger ``daily-reconcile``): it reconciles first.

    ``mailboxes`` defaults to ``autostart``'s (those it has a retry queue URL for). A dead or
    unconfigured token starts nothing and is only logged at INFO: the token alarms and the
    forwarder's parked lines already say so. Anything else that goes wrong is logged at ERROR and
    returned, never raised: the hours are published already, and this step is retried by the next
    run in 15 minutes. It is not a ``TokenMonitoringErrors`` (that metric, and its alarm's runbook,
    mean "the token's expiry is unknown"); the retry-queue age alarm is the backstop. One
    mailbox's failure never keeps another's mail waiting.
    """
    served = _served(autostart, mailboxes)
    when = at or datetime.now(UTC)
    started: dict[str, str] = {}  # execution ARN → mailbox, of the executions this run starts
    mailbox_of = None if autostart is None else _mailbox_of(autostart, started)
    outcomes: dict[str, AutostartOutcome] = {}
    for mailbox in served:
        if autostart is None or mailbox_of is None or mailbox not in autostart.queue_urls:
            outcome = AutostartOutcome(
                FAILED,
                f"{names.ENV_VAR_RETRY_QUEUE_URL} or {names.ENV_VAR_STATE_MACHINE_ARN} is not set (or names no "
                f"retry queue of this mailbox): deploy the token monitor with the Pulumi program "
                f"(`{names.deploy_command(env)}`)",
                failure_class="ConfigurationError",
            )
        else:
            try:
                outcome = _decide(autostart, mailbox, when, mailbox_of, daily=daily)
            except Exception as exc:
                error = classify(exc)
                outcome = AutostartOutcome(FAILED, error.reason, failure_class=error.failure_class.value)
            if outcome.execution_arn and outcome.action == STARTED:
                started[outcome.execution_arn] = mailbox  # the next mailboxes need not describe it
        _log_outcome(outcome, mailbox)
        outcomes[mailbox] = outcome
    return outcomes


def _served(autostart: RetryAutostart | None, mailboxes: Sequence[str] | None) -> tuple[str, ...]:
    if mailboxes:
        return tuple(mailboxes)
    return autostart.mailboxes if autostart is not None else (names.DEFAULT_MAILBOX,)


def _mailbox_of(autostart: RetryAutostart, known: dict[str, str]) -> MailboxOf:
    """Which mailbox an execution drains: its input, described once a run for all mailboxes (``known``
    holds those the run started); or, where ``default`` is the only mailbox, ``default`` without a
    call (every execution drains it)."""
    if inputs_tell_mailboxes_apart(autostart.mailboxes):
        return cached_mailbox_of(autostart.sfn, known)
    return lambda _execution_arn: names.DEFAULT_MAILBOX


def _decide(
    autostart: RetryAutostart, mailbox: str, at: datetime, mailbox_of: MailboxOf, *, daily: bool = False
) -> AutostartOutcome:
    """Cheapest check first: most runs find an empty queue and read no secret at all.

    Only *visible* messages count. Messages in flight were received by a running execution (which
    the next check finds), or by one that just stopped: they become visible again within the
    queue's visibility timeout, which equals the schedule's period, so the next run sees them.
    The running check comes before minting so that a long drain costs no token request a run.
    Executions are listed (and, with several mailboxes, described) only while mail waits.

    ``daily``: the same checks but the first; the queue is still read, for the log line.
    """
    waiting = visible_messages(autostart.sqs, autostart.queue_urls[mailbox])
    if waiting == 0 and not daily:
        return AutostartOutcome(SKIPPED, QUEUE_EMPTY, waiting)
    machine = autostart.state_machine_arn
    running = running_execution(autostart.sfn, machine, mailbox, mailbox_of=mailbox_of)
    if running is not None:
        return AutostartOutcome(SKIPPED, ALREADY_RUNNING, waiting, running)
    since = at - timedelta(seconds=names.RETRY_AUTOSTART_BACKOFF_SECONDS)
    failed = recent_failure(autostart.sfn, machine, since=since, mailbox=mailbox, mailbox_of=mailbox_of)
    if failed is not None:
        return AutostartOutcome(SKIPPED, RECENT_FAILURE, waiting, failed)
    unusable = _token_unusable(lambda: autostart.prove_token(mailbox))
    if unusable is not None:
        return AutostartOutcome(SKIPPED, _skip_reason(unusable), waiting, detail=unusable.reason)
    if daily:
        name, trigger, reason = daily_execution_name(at, mailbox), names.RETRY_TRIGGER_DAILY_RECONCILE, DAILY_RECONCILE
    else:
        name, trigger, reason = execution_name(at, mailbox), names.RETRY_TRIGGER_TOKEN_MONITOR, MAIL_PARKED
    try:
        arn = start_retry_processor(autostart.sfn, machine, trigger=trigger, name=name, mailbox=mailbox)
    except Exception as exc:
        if aws_error_code(exc) != "ExecutionAlreadyExists":
            raise
        return AutostartOutcome(SKIPPED, ALREADY_STARTED, waiting, detail=name)
    return AutostartOutcome(STARTED, reason, waiting, arn)


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


def _log_outcome(outcome: AutostartOutcome, mailbox: str) -> None:
    fields = {
        "mailbox": mailbox,
        "reason": outcome.reason,
        "waiting": outcome.waiting,
        "executionArn": outcome.execution_arn,
    }
    if outcome.action == STARTED and outcome.reason == DAILY_RECONCILE:
        log.info(
            f"started the daily reconcile of mailbox {mailbox} ({outcome.waiting} message(s) in its retry queue)",
            extra={"event": names.EVENT_RETRY_AUTOSTART, **fields, "trigger": names.RETRY_TRIGGER_DAILY_RECONCILE},
        )
    elif outcome.action == STARTED:
        log.info(
            f"started the retry processor for {outcome.waiting} parked message(s) of mailbox {mailbox}",
            extra={"event": names.EVENT_RETRY_AUTOSTART, **fields, "trigger": names.RETRY_TRIGGER_TOKEN_MONITOR},
        )
    elif outcome.action == SKIPPED:
        log.info(
            f"retry processor not started for mailbox {mailbox}: {outcome.reason}",
            extra={"event": names.EVENT_RETRY_AUTOSTART_SKIPPED, **fields, "detail": outcome.detail},
        )
    else:
        log.error(
            f"could not decide whether to start the retry processor for mailbox {mailbox}; the next run tries again",
            extra={"event": names.EVENT_RETRY_AUTOSTART_FAILED, **fields, "failureClass": outcome.failure_class},
        )


def monitor(
    ssm: Any,
    cloudwatch: Any,
    env: str,
    autostart: RetryAutostart | None,
    *,
    mailboxes: Sequence[str] | None = None,
    now: datetime | None = None,
    scheduled_at: datetime | None = None,
    daily: bool = False,
) -> dict[str, Any]:
    """One scheduled run: publish every mailbox's hours, then start the retry processor where mail can go.

    ``daily``: the daily reconcile's run; every mailbox whose token works gets the day's execution,
    an empty queue included (:func:`autostart_retry`).

    ``mailboxes`` defaults to ``autostart``'s, else ``default`` alone. Neither step stops the
    other: the autostart never raises, and it still runs when publishing failed (that failure
    then fails the invocation, which its Lambda-errors alarm reports).

    Returns ``{"mailboxes": {name: {"hoursLeft", "error", "expiresAt", "retry": {...}}}}`` and, at
    the top level, the primary mailbox's fields (``default`` when there is one, else the first):
    what a stack without ``ses-mail:mailboxes`` returned before there were mailboxes.
    """
    served = _served(autostart, mailboxes)
    try:
        statuses = run(ssm, cloudwatch, env, now, mailboxes=served)
    finally:
        outcomes = autostart_retry(autostart, env, at=scheduled_at or now, mailboxes=served, daily=daily)
    results = {mailbox: {**statuses[mailbox].as_dict(), "retry": outcomes[mailbox].as_dict()} for mailbox in served}
    primary = names.DEFAULT_MAILBOX if names.DEFAULT_MAILBOX in results else served[0]
    return {**results[primary], "mailboxes": results}
