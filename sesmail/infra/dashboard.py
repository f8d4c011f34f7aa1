"""The CloudWatch dashboard body as a plain dict (pure: no pulumi import).

The component dumps it as JSON once the watched resources' names are known. Every metric shown
is one a component of this stack publishes (the forwarder's embedded metrics, the token
monitor, the retry processor's PutMetricData) or one AWS publishes for our queues, functions
and state machine; ``tests/infra/test_infra_monitoring.py`` cross-checks that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sesmail import names
from sesmail.infra.watched import Watched

WIDTH = 24  # the dashboard grid is 24 units wide
HALF = WIDTH // 2
THIRD = WIDTH // 3
HEIGHT = 6
#: Counts per hour: the forwarder's and the retry processor's metrics are summed over this.
HOURLY = 3600
#: The token monitor runs every 15 minutes; one point per run.
MONITOR_PERIOD = 15 * 60

Metric = list[Any]


def _metric(namespace: str, name: str, *dimensions: str, **options: Any) -> Metric:
    """A metric line: ``[namespace, name, dim1, value1, ..., {options}]``."""
    return [namespace, name, *dimensions, options]


def _graph(title: str, region: str, metrics: Sequence[Metric], **properties: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "properties": {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": False,
            "metrics": list(metrics),
            **properties,
        },
    }


def dashboard_body(
    env: str,
    region: str,
    watched: Watched[str],
    alarm_arns: Sequence[str],
    mailboxes: Sequence[str] = (names.DEFAULT_MAILBOX,),
) -> dict[str, Any]:
    """Text and alarms, then one row per mailbox (token, retry queue, retry DLQ), then the shared graphs."""
    ns = names.metric_namespace(env)
    sqs, lam, states = names.AWS_SQS_NAMESPACE, names.AWS_LAMBDA_NAMESPACE, names.AWS_STATES_NAMESPACE
    queue, function = names.SQS_QUEUE_DIMENSION, names.LAMBDA_FUNCTION_DIMENSION
    machine = names.STATES_STATE_MACHINE_DIMENSION
    five_minutes = names.ALARM_PERIOD_SECONDS

    intro = (
        f"# ses-mail `{env}`\n"
        f"Token dying or dead: run `{names.refresh_command(env)}`; it renews the token and delivers what queued "
        "up. What each alarm means and what to do: docs/operations.md. Saved Logs Insights queries: "
        f"`{names.log_query(env, '')}*` (one message's story: `{names.LOG_QUERY_MESSAGE_STORY}`)."
    )
    full_rows: list[dict[str, Any]] = [
        {"type": "text", "height": 3, "properties": {"markdown": intro}},
        {"type": "alarm", "height": 4, "properties": {"title": "Alarms", "alarms": sorted(alarm_arns)}},
    ]
    graphs: list[dict[str, Any]] = [
        _graph(
            "Token monitor errors",
            region,
            [
                _metric(
                    ns, names.METRIC_TOKEN_MONITORING_ERRORS, stat="Maximum", period=MONITOR_PERIOD, label="errors"
                ),
                _metric(
                    lam,
                    names.LAMBDA_ERRORS,
                    function,
                    watched.token_monitor_function,
                    stat="Sum",
                    period=MONITOR_PERIOD,
                    label="monitor Lambda errors",
                ),
            ],
        ),
        _graph(
            "Mail per hour",
            region,
            [
                _metric(ns, names.METRIC_FORWARDED, stat="Sum", period=HOURLY, label="forwarded"),
                _metric(ns, names.METRIC_ALREADY_DELIVERED, stat="Sum", period=HOURLY, label="already delivered"),
                _metric(ns, names.METRIC_PARKED, stat="Sum", period=HOURLY, label="parked for retry"),
                _metric(ns, names.METRIC_FAILED, stat="Sum", period=HOURLY, label="failed"),
            ],
        ),
        _graph(
            "Inbound dead-letter queue",
            region,
            [
                _metric(
                    sqs,
                    names.SQS_MESSAGES_VISIBLE,
                    queue,
                    watched.inbound_dlq,
                    stat="Maximum",
                    period=five_minutes,
                    label="inbound DLQ",
                )
            ],
        ),
        _graph(
            "Retry processor",
            region,
            [
                _metric(ns, names.METRIC_RETRY_DELIVERED, stat="Sum", period=HOURLY, label="delivered"),
                _metric(ns, names.METRIC_RETRY_FAILED, stat="Sum", period=HOURLY, label="failed"),
                _metric(ns, names.METRIC_RETRY_COMPLETED, stat="Sum", period=HOURLY, label="runs completed"),
                _metric(
                    states,
                    names.STATES_EXECUTIONS_FAILED,
                    machine,
                    watched.state_machine_arn,
                    stat="Sum",
                    period=HOURLY,
                    label="executions failed",
                ),
                _metric(
                    states,
                    names.STATES_EXECUTIONS_TIMED_OUT,
                    machine,
                    watched.state_machine_arn,
                    stat="Sum",
                    period=HOURLY,
                    label="executions timed out",
                ),
            ],
        ),
        _graph(
            "Forwarder duration (ms)",
            region,
            [
                _metric(
                    lam,
                    names.LAMBDA_DURATION,
                    function,
                    watched.forwarder_function,
                    stat=stat,
                    period=five_minutes,
                    label=stat,
                )
                for stat in ("p50", "p99")
            ],
        ),
        _graph(
            "Forwarder errors",
            region,
            [
                _metric(
                    lam,
                    names.LAMBDA_ERRORS,
                    function,
                    watched.forwarder_function,
                    stat="Sum",
                    period=five_minutes,
                    label="errors",
                )
            ],
        ),
    ]

    widgets: list[dict[str, Any]] = []
    y = 0
    for widget in full_rows:
        widgets.append({**widget, "x": 0, "y": y, "width": WIDTH})
        y += int(widget["height"])
    primary = names.DEFAULT_MAILBOX if names.DEFAULT_MAILBOX in mailboxes else mailboxes[0]
    for mailbox in mailboxes:
        mailbox_row = _mailbox_row(env, region, watched, mailbox, primary=mailbox == primary, titled=len(mailboxes) > 1)
        for index, widget in enumerate(mailbox_row):
            widgets.append({**widget, "x": index * THIRD, "y": y, "width": THIRD, "height": HEIGHT})
        y += HEIGHT
    for index, widget in enumerate(graphs):
        row, column = divmod(index, 2)
        widgets.append({**widget, "x": column * HALF, "y": y + row * HEIGHT, "width": HALF, "height": HEIGHT})
    return {"start": "-PT24H", "periodOverride": "inherit", "widgets": widgets}


def _mailbox_row(
    env: str, region: str, watched: Watched[str], mailbox: str, *, primary: bool, titled: bool
) -> list[dict[str, Any]]:
    """One mailbox: its token's hours, its retry queue, its retry DLQ and Gmail's refusals."""
    ns = names.metric_namespace(env)
    sqs, queue = names.AWS_SQS_NAMESPACE, names.SQS_QUEUE_DIMENSION
    five_minutes = names.ALARM_PERIOD_SECONDS
    by_mailbox = (names.MAILBOX_DIMENSION, mailbox)
    retry_queue = watched.retry_queue if primary else names.retry_queue(env, mailbox)
    retry_dlq = watched.retry_dlq if primary else names.retry_dlq(env, mailbox)
    suffix = f" ({mailbox})" if titled else ""
    return [
        _graph(
            f"Token hours left{suffix}",
            region,
            [
                _metric(
                    ns, names.METRIC_TOKEN_HOURS, *by_mailbox, stat="Minimum", period=MONITOR_PERIOD, label="hours left"
                )
            ],
            annotations={
                "horizontal": [
                    {"label": f"expiring (< {names.TOKEN_EXPIRING_HOURS} h)", "value": names.TOKEN_EXPIRING_HOURS},
                    {
                        "label": f"critical (< {names.TOKEN_CRITICAL_HOURS} h)",
                        "value": names.TOKEN_CRITICAL_HOURS,
                        "color": "#d62728",
                    },
                ]
            },
        ),
        _graph(
            f"Retry queue{suffix}",
            region,
            [
                _metric(
                    sqs,
                    names.SQS_MESSAGES_VISIBLE,
                    queue,
                    retry_queue,
                    stat="Maximum",
                    period=five_minutes,
                    label="messages waiting",
                ),
                _metric(
                    sqs,
                    names.SQS_OLDEST_MESSAGE_AGE,
                    queue,
                    retry_queue,
                    stat="Maximum",
                    period=five_minutes,
                    label="oldest message age (s)",
                    yAxis="right",
                ),
            ],
            annotations={
                "horizontal": [
                    {
                        "label": f"age alarm ({names.RETRY_QUEUE_AGE_ALARM_SECONDS // 3600} h)",
                        "value": names.RETRY_QUEUE_AGE_ALARM_SECONDS,
                        "yAxis": "right",
                    }
                ]
            },
        ),
        _graph(
            f"Retry DLQ and Gmail refusals{suffix}",
            region,
            [
                _metric(
                    sqs,
                    names.SQS_MESSAGES_VISIBLE,
                    queue,
                    retry_dlq,
                    stat="Maximum",
                    period=five_minutes,
                    label="retry DLQ",
                ),
                _metric(
                    ns, names.METRIC_MAILBOX_REFUSED, *by_mailbox, stat="Sum", period=HOURLY, label="mailbox refused"
                ),
            ],
        ),
    ]


def metric_lines(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """``(namespace, metric, dimensions, options)`` of every metric the body shows (tests use it)."""
    lines: list[tuple[str, str, dict[str, str], dict[str, Any]]] = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        for line in widget["properties"]["metrics"]:
            options = line[-1] if isinstance(line[-1], dict) else {}
            parts = line[:-1] if isinstance(line[-1], dict) else line
            namespace, metric, *pairs = parts
            lines.append((namespace, metric, dict(zip(pairs[::2], pairs[1::2], strict=True)), options))
    return lines
