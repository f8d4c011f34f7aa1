"""``TokenHoursUntilExpiration``: the one number the token alarms watch.

Shared by the refresh CLI (which publishes it the moment a new token is stored, so the alarm
clears at once instead of at the monitor's next run) and the token monitor Lambda. Plain
boto3 ``PutMetricData`` rather than an embedded-metric log line: the CLI has no log group
that CloudWatch would extract metrics from, and the value must be visible immediately.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sesmail import names
from sesmail.runtime.tokens import TokenExpiry


def hours_left(expiry: TokenExpiry, now: datetime | None = None) -> float:
    """Hours until the token dies (negative once dead).

    A token without an expiry (an app published "In production") yields
    ``names.TOKEN_NO_EXPIRY_HOURS``, so it never trips an alarm while the metric keeps flowing
    (missing data counts as breaching).
    """
    left = expiry.hours_left(now)
    return float(names.TOKEN_NO_EXPIRY_HOURS) if left is None else round(left, 2)


def mailbox_dimensions(mailbox: str = names.DEFAULT_MAILBOX) -> list[dict[str, str]]:
    """The dimensions of every token metric: ``Mailbox`` = the mailbox's name, ``default`` included."""
    return [{"Name": names.MAILBOX_DIMENSION, "Value": names.check_mailbox(mailbox)}]


def publish_token_hours(cloudwatch: Any, env: str, hours: float, mailbox: str = names.DEFAULT_MAILBOX) -> None:
    """Publish ``TokenHoursUntilExpiration`` of one mailbox to ``SESMail/{env}`` (dimension ``Mailbox``)."""
    cloudwatch.put_metric_data(
        Namespace=names.metric_namespace(env),
        MetricData=[
            {
                "MetricName": names.METRIC_TOKEN_HOURS,
                "Dimensions": mailbox_dimensions(mailbox),
                "Value": hours,
                "Unit": names.METRIC_TOKEN_HOURS_UNIT,
            }
        ],
    )
