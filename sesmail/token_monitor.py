"""The token monitor: turn the stored expiry into the metrics the token alarms watch.

It reads only the non-secret expiry parameter (``names.refresh_token_expiry_parameter``) and
publishes, in one ``PutMetricData`` call to ``SESMail/{env}`` without dimensions:

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sesmail import names
from sesmail.errors import TokenNotConfiguredError, classify
from sesmail.log import get_logger
from sesmail.token_metrics import hours_left
from sesmail.tokens import RefreshTokenError, TokenExpiry

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
