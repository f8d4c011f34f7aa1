"""Cost: what the stack costs a month with no mail at all, and per 1,000 messages, at AWS list prices.

    .venv/bin/python -m benchmarks.cost [--ms-per-message 300] [--message-kb 50] [--smoke]

Nothing here is a bill; it is arithmetic over three kinds of input, each row saying which:

* **graph** — what the Pulumi program creates, counted from the resource graph run under the infra
  tests' mocks (``sesmail.local.program.run_program``, the example stack ``Pulumi.test.yaml``: one
  mailbox, canary on; and the same with three mailboxes): alarms, dashboards and their metrics,
  KMS keys, schedules, functions and their memory, log retention, the mail's retention.
* **measured** — AWS requests and log bytes, counted by running the real code in moto (in-process):
  the token monitor's 15-minute run and its daily-reconcile run, the canary's send, the forwarder
  on single-message SQS batches (the requests ``benchmarks/throughput.py`` counts: 1 GetObject and
  3 PutObject a message) and the forwarder's reconcile; the retry processor's idle path is walked
  through ``build_definition``.
* **assumed** — what moto cannot tell: Lambda durations on AWS (``--ms-per-message``, ...), the
  message size, how often a function starts cold, how Lambda polls the inbound queue, what SNS
  asks of KMS. Each constant below says why it has its value.

Prices are us-east-1 list prices as of ``PRICES_AS_OF``, each constant with the page it comes from.
A month is 730 hours (AWS's convention; 30.4 days, 2,920 token-monitor runs). Idle rows are
given at list price and with AWS's always-free allowances (assuming this stack is the account's
only user of them); the per-1,000-messages rows are list prices.

The reference forwarder (``benchmarks/reference``) is one Lambda behind the same SES -> S3 -> SNS
-> SQS front, with no monitor, alarms, dashboard, canary, claims or KMS key: its idle cost is what
Lambda's pollers cost on an empty queue, and its per-message cost has a bigger function (X-Ray,
a token refresh per message, the message base64 in JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

from benchmarks import common
from sesmail import names

PRICES_AS_OF = "2026-12-01"

# --- AWS list prices, us-east-1 ---------------------------------------------------------------------

CLOUDWATCH = "https://aws.amazon.com/cloudwatch/pricing/"
KMS = "https://aws.amazon.com/kms/pricing/"
LAMBDA = "https://aws.amazon.com/lambda/pricing/"
SQS = "https://aws.amazon.com/sqs/pricing/"
SNS = "https://aws.amazon.com/sns/pricing/"
SES = "https://aws.amazon.com/ses/pricing/"
S3 = "https://aws.amazon.com/s3/pricing/"
STEP_FUNCTIONS = "https://aws.amazon.com/step-functions/pricing/"
XRAY = "https://aws.amazon.com/xray/pricing/"

#: AWS prices monthly items over 730 hours.
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
GIB = 1024**3


@dataclass(frozen=True)
class Meter:
    """One priced unit: USD per unit, and the always-free units a month (0: none)."""

    key: str
    unit: str
    price: float
    free: float
    source: str


METERS: dict[str, Meter] = {
    m.key: m
    for m in (
        # CloudWatch: $0.10 per standard-resolution alarm metric a month; 10 free.
        Meter("cw_alarm", "alarm-months", 0.10, 10, CLOUDWATCH),
        # $3.00 per dashboard a month; 3 dashboards of up to 50 metrics free.
        Meter("cw_dashboard", "dashboard-months", 3.00, 3, CLOUDWATCH),
        # $0.30 per custom metric a month (first 10,000), prorated by the hour and metered only in
        # the hours it is sent: a metric sent once a day costs 1/24 of that. 10 free.
        Meter("cw_metric", "metric-months", 0.30, 10, CLOUDWATCH),
        # PutMetricData and the other API requests: $0.01 per 1,000; 1 million free.
        Meter("cw_api", "requests", 0.01 / 1000, 1_000_000, CLOUDWATCH),
        # Logs, Standard class: $0.50 per GB ingested, $0.03 per GB-month stored; 5 GB free (AWS
        # counts ingestion, storage and Logs Insights scans together: all of it is put on ingestion).
        Meter("logs_ingest", "GB", 0.50, 5, CLOUDWATCH),
        Meter("logs_store", "GB-months", 0.03, 0, CLOUDWATCH),
        # KMS: $1 per customer managed key a month (each of the first two automatic rotations adds
        # $1 a month; later ones are free); $0.03 per 10,000 requests, 20,000 free.
        Meter("kms_key", "key-months", 1.00, 0, KMS),
        Meter("kms_request", "requests", 0.03 / 10_000, 20_000, KMS),
        # Lambda, arm64: $0.20 per million requests, $0.0000133334 per GB-second; 1 million
        # requests and 400,000 GB-s free. Since August 2025 the INIT phase is billed too.
        Meter("lambda_request", "requests", 0.20 / 1_000_000, 1_000_000, LAMBDA),
        Meter("lambda_gbs", "GB-s", 0.0000133334, 400_000, LAMBDA),
        # SQS standard: $0.40 per million requests (each 64 KB chunk of a payload is one); 1 million free.
        Meter("sqs_request", "requests", 0.40 / 1_000_000, 1_000_000, SQS),
        # SNS standard topics: $0.50 per million publishes (64 KB chunks); 1 million free.
        # Deliveries to SQS are free.
        Meter("sns_publish", "publishes", 0.50 / 1_000_000, 1_000_000, SNS),
        # SES: receiving $0.10 per 1,000 mails and $0.09 per 1,000 incoming 256 KB chunks;
        # sending $0.10 per 1,000. Its free tier is for a new account's first 12 months only.
        Meter("ses_receive", "mails", 0.10 / 1000, 0, SES),
        Meter("ses_chunk", "256 KB chunks", 0.09 / 1000, 0, SES),
        Meter("ses_send", "mails", 0.10 / 1000, 0, SES),
        # S3 Standard: PUT, COPY, POST, LIST $0.005 per 1,000; GET (and HEAD) $0.0004 per 1,000;
        # $0.023 per GB-month. Its free tier is for a new account's first 12 months only.
        Meter("s3_put", "requests", 0.005 / 1000, 0, S3),
        Meter("s3_get", "requests", 0.0004 / 1000, 0, S3),
        Meter("s3_storage", "GB-months", 0.023, 0, S3),
        # Step Functions standard workflows: $0.025 per 1,000 state transitions; 4,000 free.
        Meter("sfn_transition", "transitions", 0.025 / 1000, 4_000, STEP_FUNCTIONS),
        # X-Ray: $5.00 per million traces recorded; 100,000 free.
        Meter("xray_trace", "traces", 5.00 / 1_000_000, 100_000, XRAY),
    )
}

#: What the stack creates that has no price of its own (its usage, if any, is counted elsewhere):
#: Standard-tier SSM parameters at standard throughput, scheduled EventBridge rules, SNS topics
#: (publishes are counted), SES receipt rules, IAM roles, saved Logs Insights queries, function
#: URLs, event source mappings.
FREE_RESOURCES = {
    "aws:ssm/parameter:Parameter": "SSM parameters",
    "aws:cloudwatch/eventRule:EventRule": "schedules",
    "aws:sns/topic:Topic": "SNS topics",
    "aws:ses/receiptRule:ReceiptRule": "receipt rule",
    "aws:iam/role:Role": "roles",
    "aws:cloudwatch/queryDefinition:QueryDefinition": "saved queries",
    "aws:lambda/functionUrl:FunctionUrl": "function URL",
    "aws:lambda/eventSourceMapping:EventSourceMapping": "event source mapping",
}

# --- assumptions (what moto cannot tell) ----------------------------------------------------------


@dataclass(frozen=True)
class Assumptions:
    #: Forwarder time per message on AWS, besides its cold start: Gmail's messages.import of a 50 KB
    #: message (a few hundred ms) dominates; moto's 7 ms (benchmarks/throughput.py) is not it.
    ms_per_message: float = 300.0
    #: The reference: the same import plus a token refresh per message (one more round trip to
    #: Google) and X-Ray's patching of every call.
    reference_ms_per_message: float = 400.0
    #: The reference holds the whole message, its base64 and its JSON at once: forwarding a 39 MiB
    #: message took idle + 247 MiB (benchmarks/memory.py), so it needs a 512 MB function where ours
    #: runs in names.FORWARDER_MEMORY_MB (256).
    reference_memory_mb: int = 512
    #: Cold start (import + first invocation), median of 21 fresh processes on the benchmark machine
    #: (benchmarks/cold_start.py; docs/performance.md): billed since Lambda bills INIT.
    cold_start_ms: float = 281.0
    reference_cold_start_ms: float = 396.0
    #: Share of invocations that start cold. A personal mailbox gets a message every few minutes at
    #: most, and Lambda keeps an idle environment only minutes: every one, to be safe.
    cold_share: float = 1.0
    #: Average message size (and so S3 storage and SES's 256 KB chunks).
    message_kb: float = 50.0
    #: Messages in one SQS batch: mail arrives one at a time, so each is its own batch.
    messages_per_invocation: int = 1
    #: Token monitor, canary and the forwarder's daily reconcile: one cold run each, 128 MB (256 MB
    #: for the forwarder) with a few AWS round trips: 1 s billed, generously.
    monitor_ms: float = 1000.0
    canary_ms: float = 1000.0
    reconcile_ms: float = 1000.0
    #: Lambda's SQS pollers: "When traffic is low, Lambda scales back the processing to five
    #: concurrent batches, and can optimize to as few as 2 ... this optimization is not available
    #: when you enable the maximum concurrency setting" (Lambda guide, "Configuring scaling
    #: behavior for SQS event source mappings"); ours sets maximum concurrency, so 5. Each polls
    #: with a 20 s long poll, and every empty receive is a billed ReceiveMessage (AWS Knowledge
    #: Center, "Why are my Amazon SQS charges higher than expected?").
    pollers: int = 5
    long_poll_seconds: float = 20.0
    #: SES publishing to the KMS-encrypted inbound topic and SNS delivering to SQS: at most one
    #: GenerateDataKey and one Decrypt a message (SNS may reuse data keys; an upper bound).
    kms_requests_per_message: int = 2


#: Lambda's START / END / REPORT lines of one invocation (text format), e.g.
#: "REPORT RequestId: <uuid>\tDuration: 312.45 ms\tBilled Duration: 313 ms\tMemory Size: 256 MB\t..."
LAMBDA_PLATFORM_LINES = 3
LAMBDA_PLATFORM_BYTES = 290
#: PutLogEvents counts every event as its UTF-8 bytes plus 26: an upper bound for what is ingested.
LOG_EVENT_OVERHEAD_BYTES = 26

# --- custom metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSeries:
    """One metric of ``SESMail/{env}``; CloudWatch bills each (name, dimensions) series it is sent for."""

    name: str
    per_mailbox: bool  # dimension Mailbox (one series per mailbox), else none
    publisher: str
    #: Hours a day it is sent in with no mail: 24 for the monitor's every-15-minute metrics, 1 for
    #: what the daily canary and reconcile publish, 0 for what only a failure or real mail sends.
    idle_hours_per_day: float
    canary_only: bool = False


METRICS: tuple[MetricSeries, ...] = (
    MetricSeries(names.METRIC_TOKEN_HOURS, True, "token monitor, every run", 24),
    MetricSeries(names.METRIC_TOKEN_MONITORING_ERRORS, False, "token monitor, every run (zeros too)", 24),
    MetricSeries(names.METRIC_CANARY_DELIVERED, True, "forwarder, the daily canary", 1, canary_only=True),
    MetricSeries(names.METRIC_FORWARDED, False, "forwarder, each import (the canary's daily)", 1, canary_only=True),
    MetricSeries(names.METRIC_UNDELIVERED_FOUND, False, "forwarder, each reconcile (0 included)", 1),
    MetricSeries(names.METRIC_RETRY_DELIVERED, False, "retry processor, each execution", 1),
    MetricSeries(names.METRIC_RETRY_FAILED, False, "retry processor, each execution", 1),
    MetricSeries(names.METRIC_RETRY_COMPLETED, False, "retry processor, each completed execution", 1),
    MetricSeries(names.METRIC_ALREADY_DELIVERED, False, "forwarder, a redelivery", 0),
    MetricSeries(names.METRIC_PARKED, False, "forwarder, a parked message", 0),
    MetricSeries(names.METRIC_FAILED, False, "forwarder, a failed message", 0),
    MetricSeries(names.METRIC_REJECTED, False, "forwarder, a policy refusal", 0),
    MetricSeries(names.METRIC_MAILBOX_REFUSED, True, "forwarder, Gmail refusing a mailbox", 0),
)


def metric_constants() -> set[str]:
    """Every metric name :mod:`sesmail.names` defines (the test checks :data:`METRICS` has them all)."""
    return {
        value
        for key, value in vars(names).items()
        if key.startswith("METRIC_") and not key.endswith("_UNIT") and isinstance(value, str)
    }


def idle_metrics(mailboxes: int, canary: bool) -> dict[str, tuple[int, float]]:
    """Each metric sent with no mail: its series (one per mailbox, or one), and the share of a month each is billed."""
    sent: dict[str, tuple[int, float]] = {}
    for metric in METRICS:
        if metric.idle_hours_per_day == 0 or (metric.canary_only and not canary):
            continue
        share = min(1.0, metric.idle_hours_per_day * DAYS_PER_MONTH / HOURS_PER_MONTH)
        sent[metric.name] = (mailboxes if metric.per_mailbox else 1, share)
    return sent


# --- the resource graph ---------------------------------------------------------------------------

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
KMS_KEY = "aws:kms/key:Key"
FUNCTION = "aws:lambda/function:Function"
RULE = "aws:cloudwatch/eventRule:EventRule"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
PARAMETER = "aws:ssm/parameter:Parameter"
SECRET = "aws:secretsmanager/secret:Secret"
BUCKET = "aws:s3/bucket:Bucket"
QUEUE = "aws:sqs/queue:Queue"
STATE_MACHINE = "aws:sfn/stateMachine:StateMachine"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
ESM = "aws:lambda/eventSourceMapping:EventSourceMapping"

#: The three mailboxes of the second variant (no ``default``: a stack with ``ses-mail:mailboxes``).
THREE_MAILBOXES = ("alice", "bob", "carol")


@dataclass(frozen=True)
class Graph:
    """What one stack config creates, counted from the Pulumi program's registrations."""

    mailboxes: tuple[str, ...]
    canary: bool
    by_type: dict[str, int]
    alarms: int
    dashboards: int
    dashboard_metrics: int
    kms_keys: int
    kms_rotation: bool
    advanced_parameters: int
    secrets: int
    functions: dict[str, int]  # physical name -> memory MB
    schedules: dict[str, float]  # rule name -> runs a day
    log_retention_days: dict[str, int]
    retain_days: int
    state_machine_tracing: bool
    inbound_max_concurrency: int | None

    def count(self, type_: str) -> int:
        return self.by_type.get(type_, 0)


def _mailbox_config(mailboxes: Sequence[str]) -> list[dict[str, Any]] | None:
    if tuple(mailboxes) == (names.DEFAULT_MAILBOX,):
        return None
    domain = "example.com"
    return [
        {"name": m, "recipients": [f"{m}@{domain}"] if i else [domain], "gmailAddress": f"{m}@gmail.com"}
        for i, m in enumerate(mailboxes)
    ]


def runs_per_day(expression: str) -> float:
    """``rate(15 minutes)`` -> 96, ``rate(1 day)`` -> 1, a daily ``cron(M H * * ? *)`` -> 1."""
    body = expression[expression.index("(") + 1 : expression.rindex(")")].split()
    if expression.startswith("rate("):
        value, unit = float(body[0]), body[1].rstrip("s")
        per_day = {"minute": 1440.0, "hour": 24.0, "day": 1.0}[unit]
        return per_day / value
    if expression.startswith("cron(") and len(body) == 6 and body[2:5] in (["*", "*", "?"], ["?", "*", "*"]):
        minutes, hours = body[0].split(","), body[1].split(",")
        if all(x.isdigit() for x in minutes + hours):
            return float(len(minutes) * len(hours))
    raise ValueError(f"cannot count the runs of schedule {expression!r}")


def resource_graph(mailboxes: Sequence[str] = (names.DEFAULT_MAILBOX,), *, canary: bool = True) -> Graph:
    """Run the Pulumi program under the infra tests' mocks and count what costs."""
    from sesmail.local.program import PROVIDER_TYPE_PREFIX, run_program, stack_config

    run = run_program(stack_config(mailboxes=_mailbox_config(mailboxes), canary=canary))
    resources = [r for r in run.custom_resources if not r.type.startswith(PROVIDER_TYPE_PREFIX)]
    by_type = Counter(r.type for r in resources)
    dashboard_metrics = 0
    for dashboard in run.of_type(DASHBOARD):
        for widget in json.loads(dashboard.inputs["dashboardBody"])["widgets"]:
            if widget["type"] == "metric":
                dashboard_metrics += len(widget["properties"]["metrics"])
    expirations = {
        int(rule["expiration"]["days"]) for lifecycle in run.of_type(LIFECYCLE) for rule in lifecycle.inputs["rules"]
    }
    [esm] = run.of_type(ESM)
    concurrency = (esm.inputs.get("scalingConfig") or {}).get("maximumConcurrency")
    return Graph(
        mailboxes=tuple(mailboxes),
        canary=canary,
        by_type=dict(by_type),
        alarms=by_type[ALARM],
        dashboards=by_type[DASHBOARD],
        dashboard_metrics=dashboard_metrics,
        kms_keys=by_type[KMS_KEY],
        kms_rotation=any(k.inputs.get("enableKeyRotation") for k in run.of_type(KMS_KEY)),
        advanced_parameters=sum(1 for p in run.of_type(PARAMETER) if p.inputs.get("tier") not in (None, "Standard")),
        secrets=by_type.get(SECRET, 0),
        functions={f.inputs["name"]: int(f.inputs["memorySize"]) for f in run.of_type(FUNCTION)},
        schedules={r.inputs["name"]: runs_per_day(r.inputs["scheduleExpression"]) for r in run.of_type(RULE)},
        log_retention_days={g.inputs["name"]: int(g.inputs["retentionInDays"]) for g in run.of_type(LOG_GROUP)},
        retain_days=max(expirations),
        state_machine_tracing=any(
            (m.inputs.get("tracingConfiguration") or {}).get("enabled") for m in run.of_type(STATE_MACHINE)
        ),
        inbound_max_concurrency=int(concurrency) if concurrency else None,
    )


# --- measuring AWS requests and log bytes in moto -----------------------------------------------------


@dataclass
class Calls:
    """AWS API calls by ``Service:Operation``, with the parameters of the ones whose price depends on them."""

    counts: Counter[str] = field(default_factory=Counter)
    decrypted_parameters: int = 0  # names read WithDecryption (each a KMS Decrypt of aws/ssm)
    metric_series: set[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=set)

    def record(self, service: str, operation: str, params: Mapping[str, Any]) -> None:
        self.counts[f"{service}:{operation}"] += 1
        if service == "SSM" and params.get("WithDecryption"):
            self.decrypted_parameters += len(params.get("Names") or [params.get("Name")])
        if operation == "PutMetricData":
            for datum in params.get("MetricData", []):
                dimensions = tuple(sorted((d["Name"], d["Value"]) for d in datum.get("Dimensions", [])))
                self.metric_series.add((datum["MetricName"], dimensions))

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(sorted(self.counts.items())),
            "decrypted_parameters": self.decrypted_parameters,
            "metric_series": sorted(f"{n}{dict(d) if d else ''}" for n, d in self.metric_series),
        }


@contextlib.contextmanager
def _counting() -> Iterator[Calls]:
    """Every botocore API call of the process (moto answers below this layer)."""
    from botocore.client import BaseClient

    calls = Calls()
    original = BaseClient._make_api_call

    def counted(self: Any, operation_name: str, api_params: Mapping[str, Any]) -> Any:
        calls.record(str(self.meta.service_model.service_id), operation_name, api_params)
        return original(self, operation_name, api_params)

    with patch.object(BaseClient, "_make_api_call", counted):
        yield calls


@dataclass
class Logged:
    lines: int = 0
    bytes: int = 0

    def billed_bytes(self, invocations: int = 1) -> int:
        """What CloudWatch Logs ingests: our lines plus Lambda's own, each event with its overhead."""
        events = self.lines + LAMBDA_PLATFORM_LINES * invocations
        return self.bytes + LAMBDA_PLATFORM_BYTES * invocations + LOG_EVENT_OVERHEAD_BYTES * events


@contextlib.contextmanager
def _capturing() -> Iterator[Logged]:
    """stdout (our JSON lines and EMF documents go there; Lambda ships it to CloudWatch Logs)."""
    logged = Logged()
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield logged
    finally:
        text = buffer.getvalue()
        logged.lines = len(text.splitlines())
        logged.bytes = len(text.encode("utf-8"))


class _Context:
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


HELD_EXECUTIONS: Any = {"stepfunctions": {"execute_state_machine": False}}
CANARY_DOMAIN = "example.com"


def measure_monitor(mailboxes: Sequence[str]) -> dict[str, Any]:
    """The token monitor's handler, cold, on its 15-minute event and on the daily-reconcile event.

    Tokens valid for days, empty retry queues, no execution running: the idle case. moto holds the
    executions the daily run starts (they do not run here; the execution is walked below).
    """
    from moto import mock_aws

    from handlers import token_monitor as monitor_handler
    from sesmail.runtime.mailboxes import Mailbox, MailboxTable
    from sesmail.runtime.tokens import TokenExpiry

    common.isolate_aws_environ()
    now = datetime.now(UTC)
    expiry = TokenExpiry(now, now + timedelta(days=5)).to_json()
    with mock_aws(config=HELD_EXECUTIONS), common.BenchGoogle(store_bodies=False) as google:
        world = common.AwsWorld().create()
        queue_urls = []
        for mailbox in mailboxes:
            world.install_token(google, mailbox=mailbox)
            world.ssm.put_parameter(
                Name=names.refresh_token_expiry_parameter(common.ENV, mailbox), Value=expiry, Type="String"
            )
            queue_urls.append(world.sqs.create_queue(QueueName=names.retry_queue(common.ENV, mailbox))["QueueUrl"])
        import boto3

        machine = boto3.client("stepfunctions", region_name=common.REGION).create_state_machine(
            name=names.retry_state_machine(common.ENV),
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}),
            roleArn=f"arn:aws:iam::{common.ACCOUNT}:role/bench",
        )["stateMachineArn"]
        environ = {
            names.ENV_VAR_ENV: common.ENV,
            names.ENV_VAR_RETRY_QUEUE_URL: queue_urls[0],
            names.ENV_VAR_STATE_MACHINE_ARN: machine,
        }
        if tuple(mailboxes) != (names.DEFAULT_MAILBOX,):
            table = MailboxTable(tuple(Mailbox(m, (f"{m}@{CANARY_DOMAIN}",)) for m in mailboxes), configured=True)
            environ[names.ENV_VAR_MAILBOXES] = table.to_json()
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        events = {
            "scheduled": {"source": "aws.events", "detail-type": "Scheduled Event", "time": stamp},
            "daily": {"action": names.RETRY_TRIGGER_DAILY_RECONCILE, "time": stamp},
        }
        runs: dict[str, Any] = {}
        with patch.dict(os.environ, environ):
            for kind, event in events.items():
                monitor_handler.reset()
                with _counting() as calls, _capturing() as logged:
                    result = monitor_handler.handler(event, _Context(names.TOKEN_MONITOR_TIMEOUT_SECONDS))
                monitor_handler.reset()
                actions = {m: r["retry"]["action"] for m, r in result["mailboxes"].items()}
                expected = "started" if kind == "daily" else "skipped"
                if set(actions.values()) != {expected} or any(r["error"] for r in result["mailboxes"].values()):
                    raise RuntimeError(f"the monitor's {kind} run was not the idle case: {result}")
                runs[kind] = {**calls.as_dict(), "log_lines": logged.lines, "log_bytes": logged.bytes}
    return runs


def measure_canary() -> dict[str, Any]:
    """The canary's handler, cold: its key read and one SES send; and the size of the message it sends."""
    from moto import mock_aws

    from handlers import canary as canary_handler
    from sesmail.runtime import canary

    common.isolate_aws_environ()
    address = names.canary_address(CANARY_DOMAIN)
    key = "k" * 64
    with mock_aws():
        import boto3

        boto3.client("ses", region_name=common.REGION).verify_domain_identity(Domain=CANARY_DOMAIN)
        boto3.client("ssm", region_name=common.REGION).put_parameter(
            Name=names.canary_key_parameter(common.ENV), Value=key, Type="SecureString"
        )
        environ = {names.ENV_VAR_ENV: common.ENV, names.ENV_VAR_CANARY_ADDRESS: address}
        with patch.dict(os.environ, environ):
            canary_handler.reset()
            with _counting() as calls, _capturing() as logged:
                canary_handler.handler({"source": "aws.events"}, _Context(names.CANARY_TIMEOUT_SECONDS))
            canary_handler.reset()
    _, raw = canary.build_message(address, key.encode(), datetime.now(UTC))
    return {**calls.as_dict(), "log_lines": logged.lines, "log_bytes": logged.bytes, "message_bytes": len(raw)}


def measure_forwarder(messages: int, message_bytes: int, batch: int) -> dict[str, Any]:
    """The forwarder on SQS batches of ``batch`` messages, Google the zero-latency stand-in.

    The first invocation (cold: it reads the token) is counted apart from the others; then one
    reconcile of the mailbox (the daily execution's first step) over what was delivered.
    """
    from moto import mock_aws

    from benchmarks.throughput import ZeroLatencyGoogle
    from sesmail.runtime.aws import AwsClients
    from sesmail.runtime.forwarder import Forwarder, ForwarderSettings

    common.isolate_aws_environ()
    with mock_aws(), common.BenchGoogle(store_bodies=False) as google:
        world = common.AwsWorld().create()
        world.install_token(google)
        ids = [f"cost-{i:05d}" for i in range(messages + batch)]
        for message_id in ids:
            world.store(message_id, common.raw_message(message_id, message_bytes))
        events = [common.sqs_event(ids[i : i + batch]) for i in range(0, len(ids), batch)]
        http = ZeroLatencyGoogle()
        forwarder = Forwarder(ForwarderSettings.from_environ(world.forwarder_environ(google)), AwsClients(), http=http)
        with _counting() as cold, _capturing():
            failures = forwarder.handle(events[0], None)["batchItemFailures"]
        with _counting() as warm, _capturing() as warm_logged:
            for event in events[1:]:
                failures += forwarder.handle(event, None)["batchItemFailures"]
        if failures or http.imports != len(ids):
            raise RuntimeError(f"{len(failures)} failed, {http.imports} of {len(ids)} imported")
        with _counting() as reconcile, _capturing() as reconcile_logged:
            answer = forwarder.handle(
                {"source": names.RECONCILE_SOURCE, "mailbox": names.DEFAULT_MAILBOX},
                _Context(names.FORWARDER_TIMEOUT_SECONDS),
            )
        if answer.get("status") != "complete":
            raise RuntimeError(f"the reconcile did not complete: {answer}")
        claims = world.s3.list_objects_v2(Bucket=common.BUCKET, Prefix=names.CLAIMS_PREFIX).get("Contents", [])
        claim_bytes = sum(int(c["Size"]) for c in claims) / len(ids)
    invocations = len(events) - 1
    per_message = {op: n / messages for op, n in warm.counts.items()}
    cold_extra = {op: n - warm.counts[op] / invocations for op, n in cold.counts.items()}
    return {
        "messages": messages,
        "messages_per_invocation": batch,
        "message_bytes": message_bytes,
        "notification_bytes": len(events[1]["Records"][0]["body"].encode()),
        "calls_per_message": per_message,
        "cold_start_extra_calls": {op: n for op, n in cold_extra.items() if n > 0.01},
        "cold_start_decrypted_parameters": cold.decrypted_parameters,
        "log_lines_per_message": warm_logged.lines / messages,
        "log_bytes_per_message": warm_logged.bytes / messages,
        "claim_bytes_per_message": round(claim_bytes, 1),
        "reconcile": {**reconcile.as_dict(), "log_lines": reconcile_logged.lines, "log_bytes": reconcile_logged.bytes},
        "reconcile_answer": {k: answer[k] for k in ("status", "scanned", "owed") if k in answer},
    }


#: The branch each Choice takes in a daily execution with nothing owed and nothing parked.
IDLE_CHOICES = {
    "ReconcileFirst": "Reconcile",
    "CheckReconciled": "CountReconciled",
    "MoreToReconcile": "Receive",
    "AnyMessages": "PublishMetrics",
    "HandOverIfCapped": "Done",
}


def retry_definition(mailbox: str = names.DEFAULT_MAILBOX) -> dict[str, Any]:
    from sesmail.runtime.retry_processor import MailboxQueues, build_definition

    queues = MailboxQueues(mailbox, "https://sqs.invalid/retry", "https://sqs.invalid/retry-dlq")
    return build_definition(
        env=common.ENV, partition="aws", mailboxes=[queues], forwarder_function=names.forwarder_function(common.ENV)
    )


def idle_execution(definition: Mapping[str, Any], mailbox: str = names.DEFAULT_MAILBOX) -> list[str]:
    """The states a daily-reconcile execution enters when nothing is owed or parked (each one billed)."""
    from sesmail.runtime.retry_processor import target_state

    states = definition["States"]
    choices = {"SelectMailbox": target_state(mailbox), **IDLE_CHOICES}
    path = [definition["StartAt"]]
    while len(path) < 100:
        state = states[path[-1]]
        if state["Type"] == "Choice":
            chosen = choices[path[-1]]
            if chosen not in {c["Next"] for c in state["Choices"]} | {state.get("Default")}:
                raise ValueError(f"{path[-1]} has no branch to {chosen}")
            path.append(chosen)
        elif state["Type"] in ("Succeed", "Fail") or state.get("End"):
            return path
        else:
            path.append(state["Next"])
    raise ValueError(f"the idle path does not end: {path}")


def execution_requests(definition: Mapping[str, Any], path: Sequence[str]) -> dict[str, int]:
    """The service integrations the path calls, by kind: lambda (the reconcile), sqs (a receive), cloudwatch."""
    kinds: Counter[str] = Counter()
    for name in path:
        resource = definition["States"][name].get("Resource", "")
        for kind, marker in (("lambda", ":lambda:invoke"), ("sqs", ":aws-sdk:sqs:"), ("cloudwatch", ":cloudwatch:")):
            if marker in resource:
                kinds[kind] += 1
    return dict(kinds)


# --- the model ----------------------------------------------------------------------------------------


@dataclass
class Item:
    """One row: units of each meter it uses (a month, or per 1,000 messages), and how they were found."""

    name: str
    usage: dict[str, float]
    basis: str
    note: str = ""

    def cost(self) -> float:
        return sum(units * METERS[key].price for key, units in self.usage.items())


def free_tier_costs(items: Sequence[Item]) -> list[float]:
    """Each item's cost after the always-free allowances, shared pro rata by the items using a meter."""
    totals = _add(*(item.usage for item in items))
    billable = {key: max(0.0, total - METERS[key].free) / total if total else 0.0 for key, total in totals.items()}
    return [sum(units * METERS[key].price * billable[key] for key, units in item.usage.items()) for item in items]


_S3_GET_CLASS = {"GetObject", "HeadObject", "GetObjectTagging", "GetObjectAttributes"}
_FREE_OPERATIONS = {"S3:DeleteObject", "S3:DeleteObjects"}
_SERVICE_METERS = {"SQS": "sqs_request", "CloudWatch": "cw_api", "SES": "ses_send", "Lambda": "lambda_request"}


def calls_usage(counts: Mapping[str, float], decrypted_parameters: float = 0.0) -> dict[str, float]:
    """Meters of AWS API calls (``Service:Operation`` -> count); Step Functions and SSM Standard calls are free."""
    usage: dict[str, float] = {}
    for op, n in counts.items():
        service, operation = op.split(":", 1)
        if op in _FREE_OPERATIONS or service in ("SSM", "SFN", "STS"):
            continue  # SSM Standard parameters at standard throughput: free; Step Functions bills transitions
        if service == "S3":
            key = "s3_get" if operation in _S3_GET_CLASS else "s3_put"
        elif service in _SERVICE_METERS:
            key = _SERVICE_METERS[service]
        else:
            raise ValueError(f"no price for {op}")
        usage[key] = usage.get(key, 0.0) + n
    if decrypted_parameters:  # SecureStrings under aws/ssm: one KMS Decrypt each
        usage["kms_request"] = usage.get("kms_request", 0.0) + decrypted_parameters
    return usage


def _scaled(usage: Mapping[str, float], factor: float) -> dict[str, float]:
    return {key: units * factor for key, units in usage.items()}


def _add(*usages: Mapping[str, float]) -> dict[str, float]:
    total: dict[str, float] = {}
    for usage in usages:
        for key, units in usage.items():
            total[key] = total.get(key, 0.0) + units
    return total


def _lambda(invocations: float, ms: float, memory_mb: int) -> dict[str, float]:
    return {"lambda_request": invocations, "lambda_gbs": invocations * ms / 1000 * memory_mb / 1024}


def _logs(billed_bytes: float, retention_days: int) -> dict[str, float]:
    """Ingestion, and the steady-state storage of ``retention_days`` of it (uncompressed: an upper bound)."""
    gb = billed_bytes / GIB
    return {"logs_ingest": gb, "logs_store": gb * retention_days / DAYS_PER_MONTH}


@dataclass(frozen=True)
class Measured:
    monitor: dict[str, Any]
    canary: dict[str, Any]
    forwarder: dict[str, Any]
    execution_states: list[str]
    execution_requests: dict[str, int]


def forwarder_items(graph: Graph, measured: Measured, a: Assumptions, *, size_bytes: float) -> list[Item]:
    """Ours, per 1,000 messages of ``size_bytes``, by part: SES, S3, SNS, KMS, SQS, the forwarder, logs, storage."""
    f = measured.forwarder
    batch = a.messages_per_invocation
    forwarder = names.forwarder_function(_stack_env())
    memory = graph.functions[forwarder]
    retention = graph.log_retention_days[names.lambda_log_group(forwarder)]
    chunks = math.ceil(f["notification_bytes"] / 65536)
    k = 1000
    ms = a.ms_per_message * batch + a.cold_start_ms * a.cold_share
    log_bytes = (
        f["log_bytes_per_message"]
        + LOG_EVENT_OVERHEAD_BYTES * f["log_lines_per_message"]
        + (LAMBDA_PLATFORM_BYTES + LOG_EVENT_OVERHEAD_BYTES * LAMBDA_PLATFORM_LINES) / batch
    )
    cold_calls = calls_usage(f["cold_start_extra_calls"], f["cold_start_decrypted_parameters"])
    # The mail, its claim and its delivered marker, listed by every mailbox's daily reconcile.
    stored_keys = 3
    calls = ", ".join(f"{op.split(':')[1]} {n:.0f}" for op, n in sorted(f["calls_per_message"].items()))
    return [
        Item(
            "SES receiving",
            {"ses_receive": k, "ses_chunk": k * math.ceil(size_bytes / (256 * 1024))},
            "assumed",
            f"{size_bytes / 1024:,.0f} KB messages",
        ),
        Item("S3 PutObject by SES", {"s3_put": k}, "graph", "the receipt rule's S3 action"),
        Item(
            "SNS publish, KMS-encrypted topic",
            {"sns_publish": k * chunks, "kms_request": k * a.kms_requests_per_message},
            "assumed",
            f"{a.kms_requests_per_message} KMS requests a message at most",
        ),
        Item(
            "SQS: SNS delivery, receive, delete",
            {"sqs_request": k * (chunks + 2 / batch)},
            "assumed",
            f"{batch} message(s) a batch",
        ),
        Item(
            "forwarder Lambda",
            _lambda(k / batch, ms, memory),
            "assumed",
            f"{a.ms_per_message:g} ms a message + {a.cold_start_ms:g} ms cold start x {a.cold_share:g}, {memory} MB",
        ),
        Item("forwarder's S3 requests", _scaled(calls_usage(f["calls_per_message"]), k), "measured", calls),
        Item(
            "forwarder's cold-start reads",
            _scaled(cold_calls, k / batch * a.cold_share),
            "measured",
            "SSM GetParameters of the OAuth clients and the token: a KMS Decrypt each",
        ),
        Item(
            "forwarder's logs",
            _logs(k * log_bytes, retention),
            "measured",
            f"{log_bytes:,.0f} bytes a message with Lambda's lines, kept {retention} days",
        ),
        Item(
            "S3 storage of mail and claims",
            {"s3_storage": k * (size_bytes + f["claim_bytes_per_message"]) / GIB * graph.retain_days / DAYS_PER_MONTH},
            "graph",
            f"retainDays {graph.retain_days}; claim {f['claim_bytes_per_message']:,.0f} bytes",
        ),
        Item(
            "daily reconcile's LISTs over it",
            {"s3_put": k * stored_keys / names.RECONCILE_LIST_PAGE_SIZE * graph.retain_days * len(graph.mailboxes)},
            "measured",
            "a LIST a day per 1,000 keys kept (benchmarks/reconcile.py: 30 for 10,000 messages)",
        ),
    ]


def per_thousand_items(graph: Graph, measured: Measured, a: Assumptions) -> list[Item]:
    """Ours, per 1,000 messages of the assumed size."""
    return forwarder_items(graph, measured, a, size_bytes=a.message_kb * 1024)


def reference_items(graph: Graph, measured: Measured, a: Assumptions) -> list[Item]:
    """The reference forwarder behind the same front, per 1,000 messages."""
    size = a.message_kb * 1024
    batch = a.messages_per_invocation
    k = 1000
    chunks = math.ceil(measured.forwarder["notification_bytes"] / 65536)
    line = len(json.dumps(REFERENCE_LOG_LINE).encode()) + 1 + LOG_EVENT_OVERHEAD_BYTES
    log_bytes = line + (LAMBDA_PLATFORM_BYTES + LOG_EVENT_OVERHEAD_BYTES * LAMBDA_PLATFORM_LINES) / batch
    ms = a.reference_ms_per_message * batch + a.reference_cold_start_ms * a.cold_share
    return [
        Item("SES receiving", {"ses_receive": k, "ses_chunk": k * math.ceil(size / (256 * 1024))}, "assumed"),
        Item("S3 PutObject by SES", {"s3_put": k}, "assumed"),
        Item("SNS publish (unencrypted topic)", {"sns_publish": k * chunks}, "assumed"),
        Item("SQS: SNS delivery, receive, delete", {"sqs_request": k * (chunks + 2 / batch)}, "assumed"),
        Item(
            "reference Lambda",
            _lambda(k / batch, ms, a.reference_memory_mb),
            "assumed",
            f"{a.reference_ms_per_message:g} ms a message + {a.reference_cold_start_ms:g} ms cold start x "
            f"{a.cold_share:g}, {a.reference_memory_mb} MB",
        ),
        Item("its S3 GetObject", {"s3_get": k}, "assumed", "the whole message, read once"),
        Item(
            "its cold-start reads",
            {"kms_request": 2 * k / batch * a.cold_share},
            "assumed",
            "two SecureStrings at import",
        ),
        Item("X-Ray traces", {"xray_trace": k / batch}, "assumed", "patch_all(): one trace an invocation"),
        Item("its logs", _logs(k * log_bytes, 30), "assumed", f"one Powertools line, ~{log_bytes:.0f} bytes"),
        Item(
            "S3 storage of mail",
            {"s3_storage": k * size / GIB * graph.retain_days / DAYS_PER_MONTH},
            "assumed",
            f"same retention ({graph.retain_days} days)",
        ),
    ]


#: The reference's one log line a message: a Powertools ``Logger`` with ``inject_lambda_context``
#: (its fields as Powertools writes them; representative values).
REFERENCE_LOG_LINE = {
    "level": "INFO",
    "location": "forward:96",
    "message": "imported",
    "timestamp": "2026-11-23 10:00:02,123+0000",
    "service": "gmail-forwarder",
    "cold_start": True,
    "function_name": "ses-mail-gmail-forwarder-test",
    "function_memory_size": "512",
    "function_arn": "arn:aws:lambda:us-east-1:123456789012:function:ses-mail-gmail-forwarder-test",
    "function_request_id": "c6af9ac6-7b61-11e6-9a41-93e812345678",
    "message_id": "0100019a2b3c4d5e-6f708192-a3b4-c5d6-e7f8-091a2b3c4d5e-000000",
    "gmail_id": "19a2b3c4d5e6f708",
    "xray_trace_id": "1-5759e988-bd862e3fe1be46a994272793",
}


def _stack_env() -> str:
    from sesmail.local.account import STACK

    return STACK


def idle_items(graph: Graph, measured: Measured, a: Assumptions) -> list[Item]:
    """What the stack costs a month with no mail: its fixed prices and what its schedules run."""
    env = _stack_env()
    m = len(graph.mailboxes)
    monitor_fn = names.token_monitor_function(env)
    monitor_runs = graph.schedules[names.token_monitor_schedule_rule(env)] * DAYS_PER_MONTH
    daily_runs = graph.schedules[names.daily_reconcile_rule(env)] * DAYS_PER_MONTH
    scheduled, daily = measured.monitor["scheduled"], measured.monitor["daily"]
    monitor_retention = graph.log_retention_days[names.lambda_log_group(monitor_fn)]
    metrics = idle_metrics(m, graph.canary)
    monthly = sum(n for n, share in metrics.values() if share == 1)
    daily_series = sum(n for n, share in metrics.values() if share < 1)
    polls = a.pollers * 60 / a.long_poll_seconds * 60 * HOURS_PER_MONTH
    rotation = " (+$1 after each of its first two yearly rotations)" if graph.kms_rotation else ""

    items = [
        Item(
            "CloudWatch dashboard",
            {"cw_dashboard": graph.dashboards},
            "graph",
            f"{graph.dashboards} dashboard, {graph.dashboard_metrics} metrics (free tier: 3 of up to 50)",
        ),
        Item("CloudWatch alarms", {"cw_alarm": graph.alarms}, "graph", f"{graph.alarms} standard-resolution alarms"),
        Item("KMS key (the SNS topics')", {"kms_key": graph.kms_keys}, "graph", f"{graph.kms_keys} key{rotation}"),
        Item(
            "custom metrics",
            {"cw_metric": sum(n * share for n, share in metrics.values())},
            "graph",
            f"{monthly} series sent all month, {daily_series} once a day (1/24 each)",
        ),
        Item(
            "inbound queue: pollers' empty receives",
            {"sqs_request": polls},
            "assumed",
            f"{a.pollers} pollers x a {a.long_poll_seconds:g} s long poll (maximum concurrency "
            f"{graph.inbound_max_concurrency}: AWS's low-traffic 2 is off)",
        ),
        Item(
            "token monitor: Lambda",
            _lambda(monitor_runs, a.monitor_ms, graph.functions[monitor_fn]),
            "assumed",
            f"{monitor_runs:,.0f} runs x {a.monitor_ms:g} ms, {graph.functions[monitor_fn]} MB",
        ),
        Item(
            "token monitor: AWS requests",
            _scaled(calls_usage(scheduled["calls"], scheduled["decrypted_parameters"]), monitor_runs),
            "measured",
            ", ".join(f"{op} {n}" for op, n in sorted(scheduled["calls"].items())) + " a run",
        ),
        Item(
            "token monitor: logs",
            _logs(
                Logged(scheduled["log_lines"], scheduled["log_bytes"]).billed_bytes() * monitor_runs, monitor_retention
            ),
            "measured",
            f"{scheduled['log_lines']} lines, {scheduled['log_bytes']} bytes a run + Lambda's",
        ),
    ]
    items.append(_daily_reconcile(graph, measured, a, daily_runs, daily))
    if graph.canary:
        items.append(_canary(graph, measured, a))
    return items


def _daily_reconcile(
    graph: Graph,
    measured: Measured,
    a: Assumptions,
    days: float,
    daily: Mapping[str, Any],
) -> Item:
    """Each day: the monitor's daily run (a full run, a token minted and an execution started per
    mailbox), then each execution: the reconcile, an empty receive, the metrics."""
    env = _stack_env()
    m = len(graph.mailboxes)
    forwarder, monitor_fn = names.forwarder_function(env), names.token_monitor_function(env)
    f = measured.forwarder
    requests = measured.execution_requests
    retained = graph.retain_days if graph.canary else 0  # the canaries the bucket keeps
    lists = max(1, math.ceil(retained / names.RECONCILE_LIST_PAGE_SIZE)) + max(
        1, math.ceil(2 * m * retained / names.RECONCILE_LIST_PAGE_SIZE)
    )
    reconcile_log = Logged(f["reconcile"]["log_lines"], f["reconcile"]["log_bytes"]).billed_bytes()
    per_execution = _add(
        {"sfn_transition": len(measured.execution_states), "xray_trace": 1 if graph.state_machine_tracing else 0},
        _lambda(requests.get("lambda", 0), a.reconcile_ms, graph.functions[forwarder]),
        {"sqs_request": requests.get("sqs", 0), "cw_api": requests.get("cloudwatch", 0), "s3_put": lists},
        _logs(reconcile_log, graph.log_retention_days[names.lambda_log_group(forwarder)]),
    )
    monitor = _add(
        _lambda(1, a.monitor_ms, graph.functions[monitor_fn]),
        calls_usage(daily["calls"], daily["decrypted_parameters"]),
        _logs(
            Logged(daily["log_lines"], daily["log_bytes"]).billed_bytes(),
            graph.log_retention_days[names.lambda_log_group(monitor_fn)],
        ),
    )
    return Item(
        "daily reconcile",
        _scaled(_add(monitor, _scaled(per_execution, m)), days),
        "measured",
        f"{m} execution(s) a day, {len(measured.execution_states)} transitions and {lists} LISTs each",
    )


def _canary(graph: Graph, measured: Measured, a: Assumptions) -> Item:
    """Each day: the canary's run and its SES send, then its message through the whole path."""
    env = _stack_env()
    canary_fn = names.canary_function(env)
    c = measured.canary
    days = graph.schedules[names.canary_schedule_rule(env)] * DAYS_PER_MONTH
    own = _add(
        _lambda(1, a.canary_ms, graph.functions[canary_fn]),
        calls_usage(c["calls"], c["decrypted_parameters"]),
        _logs(
            Logged(c["log_lines"], c["log_bytes"]).billed_bytes(),
            graph.log_retention_days[names.lambda_log_group(canary_fn)],
        ),
    )
    one = replace(a, messages_per_invocation=1)
    path = _scaled(_add(*(i.usage for i in forwarder_items(graph, measured, one, size_bytes=c["message_bytes"]))), 1e-3)
    return Item(
        "canary",
        _scaled(_add(own, path), days),
        "measured",
        f"a send, a receive, an import a day ({c['message_bytes']:,} bytes, kept {graph.retain_days} days)",
    )


def reference_idle_items(a: Assumptions) -> list[Item]:
    polls = a.pollers * 60 / a.long_poll_seconds * 60 * HOURS_PER_MONTH
    return [
        Item(
            "inbound queue: pollers' empty receives",
            {"sqs_request": polls},
            "assumed",
            f"{a.pollers} pollers (without maximum concurrency AWS may drop to 2: -60 %)",
        )
    ]


# --- measure, report, summary -------------------------------------------------------------------------


def measure(smoke: bool = False, assumptions: Assumptions | None = None) -> dict[str, Any]:
    a = assumptions or Assumptions()
    started = time.perf_counter()
    graphs = {1: resource_graph(), 3: resource_graph(THREE_MAILBOXES)}
    definition = retry_definition()
    states = idle_execution(definition)
    requests = execution_requests(definition, states)
    measured_by: dict[int, Measured] = {}
    forwarder = measure_forwarder(5 if smoke else 40, int(a.message_kb * 1024), a.messages_per_invocation)
    canary = measure_canary()
    for count, graph in graphs.items():
        monitor = measure_monitor(graph.mailboxes)
        measured_by[count] = Measured(monitor, canary, forwarder, states, requests)
    variants: dict[str, Any] = {}
    for count, graph in graphs.items():
        measured = measured_by[count]
        idle = idle_items(graph, measured, a)
        free = free_tier_costs(idle)
        ours = per_thousand_items(graph, measured, a)
        variants[f"{count} mailbox{'es' if count > 1 else ''}"] = {
            "graph": _graph_dict(graph),
            "idle": [_item_dict(i, f) for i, f in zip(idle, free, strict=True)],
            "idle_total": sum(i.cost() for i in idle),
            "idle_total_free_tier": sum(free),
            "per_1000": [_item_dict(i) for i in ours],
            "per_1000_total": sum(i.cost() for i in ours),
            "monitor": measured.monitor,
        }
    graph = graphs[1]
    reference = reference_items(graph, measured_by[1], a)
    reference_idle = reference_idle_items(a)
    reference_free = free_tier_costs(reference_idle)
    return {
        "prices_as_of": PRICES_AS_OF,
        "assumptions": a.__dict__,
        "execution_states": states,
        "forwarder": forwarder,
        "canary": canary,
        "variants": variants,
        "reference": {
            "idle": [_item_dict(i, f) for i, f in zip(reference_idle, reference_free, strict=True)],
            "idle_total": sum(i.cost() for i in reference_idle),
            "idle_total_free_tier": sum(reference_free),
            "per_1000": [_item_dict(i) for i in reference],
            "per_1000_total": sum(i.cost() for i in reference),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def _graph_dict(graph: Graph) -> dict[str, Any]:
    return {**graph.__dict__, "mailboxes": list(graph.mailboxes)}


def _item_dict(item: Item, free_tier: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": item.name,
        "usage": {k: round(v, 9) for k, v in item.usage.items() if v},
        "basis": item.basis,
        "note": item.note,
        "dollars": item.cost(),
    }
    if free_tier is not None:
        row["dollars_free_tier"] = free_tier
    return row


def _usd(value: float) -> str:
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def largest(rows: Sequence[Mapping[str, Any]], key: str = "dollars") -> Mapping[str, Any]:
    return max(rows, key=lambda r: r[key])


def _graph_line(g: Mapping[str, Any]) -> str:
    by_type = g["by_type"]
    schedules = ", ".join(f"{n:g}" for n in sorted(g["schedules"].values(), reverse=True))
    free = ", ".join(f"{by_type[t]} {label}" for t, label in FREE_RESOURCES.items() if by_type.get(t))
    return (
        f"resource graph (Pulumi mocks), {sum(by_type.values())} AWS resources. Priced: {g['alarms']} alarms, "
        f"{g['dashboards']} dashboard ({g['dashboard_metrics']} metrics), {g['kms_keys']} KMS key (rotation "
        f"{'on' if g['kms_rotation'] else 'off'}), {len(g['functions'])} functions, {by_type.get(QUEUE, 0)} queues, "
        f"{by_type.get(BUCKET, 0)} bucket (retainDays {g['retain_days']}), {by_type.get(STATE_MACHINE, 0)} state "
        f"machine (X-Ray {'on' if g['state_machine_tracing'] else 'off'}), {len(g['log_retention_days'])} log "
        f"groups; {g['secrets']} Secrets Manager secrets, {g['advanced_parameters']} Advanced-tier parameters. "
        f"No charge of their own: {free} (schedules: {schedules} runs a day)"
    )


def report(result: Mapping[str, Any]) -> str:
    a = result["assumptions"]
    lines = [f"Cost at AWS list prices (us-east-1, as of {result['prices_as_of']}); a month is {HOURS_PER_MONTH} hours"]
    for variant, v in result["variants"].items():
        g = v["graph"]
        lines += [
            "",
            f"[{variant}: {', '.join(g['mailboxes'])}; canary {'on' if g['canary'] else 'off'}] {_graph_line(g)}",
            "",
            "idle, a month (no mail; sorted by list price):",
        ]
        rows = sorted(v["idle"], key=lambda r: r["dollars"], reverse=True)
        lines.append(
            common.table(
                ["item", "list $/month", "free tier $/month", "basis", "what"],
                [[r["name"], _usd(r["dollars"]), _usd(r["dollars_free_tier"]), r["basis"], r["note"]] for r in rows],
                align_numbers=False,
            )
        )
        lines.append(
            f"idle total: {_usd(v['idle_total'])}/month at list price, {_usd(v['idle_total_free_tier'])} with the "
            "always-free tier (this stack the account's only user)"
        )
        top, top_free = largest(v["idle"]), largest(v["idle"], "dollars_free_tier")
        lines.append(
            f"largest idle cost: {top['name']} {_usd(top['dollars'])}/month"
            f" ({top['dollars'] / v['idle_total']:.0%}); with the free tier: {top_free['name']} "
            f"{_usd(top_free['dollars_free_tier'])}"
        )
    one = next(iter(result["variants"].values()))
    ref = result["reference"]
    lines += [
        "",
        f"per 1,000 messages ({a['message_kb']:g} KB, {a['messages_per_invocation']} a batch, list prices): ours",
        common.table(
            ["item", "$ per 1,000", "basis", "what"],
            [[r["name"], _usd(r["dollars"]), r["basis"], r["note"]] for r in one["per_1000"]],
            align_numbers=False,
        ),
        f"ours: {_usd(one['per_1000_total'])} per 1,000 messages",
        "",
        "the reference forwarder, per 1,000 messages:",
        common.table(
            ["item", "$ per 1,000", "basis", "what"],
            [[r["name"], _usd(r["dollars"]), r["basis"], r["note"]] for r in ref["per_1000"]],
            align_numbers=False,
        ),
        f"reference: {_usd(ref['per_1000_total'])} per 1,000 messages; idle {_usd(ref['idle_total'])}/month "
        f"({_usd(ref['idle_total_free_tier'])} with the free tier): only its queue's pollers",
        "",
        common.table(
            ["", "idle $/month (list)", "idle, free tier", "$ per 1,000 messages"],
            [
                *(
                    [
                        f"ses-mail, {name}",
                        _usd(v["idle_total"]),
                        _usd(v["idle_total_free_tier"]),
                        _usd(v["per_1000_total"]),
                    ]
                    for name, v in result["variants"].items()
                ),
                ["reference", _usd(ref["idle_total"]), _usd(ref["idle_total_free_tier"]), _usd(ref["per_1000_total"])],
            ],
            align_numbers=False,
        ),
        f"({result['seconds']} s)",
    ]
    return "\n".join(lines)


def summary(result: Mapping[str, Any]) -> common.Summary:
    one = next(iter(result["variants"].values()))
    ref = result["reference"]
    top = largest(one["idle"])
    return common.Summary(
        "cost (list prices)",
        f"${one['idle_total']:.2f}/month idle (${one['idle_total_free_tier']:.2f} free tier), "
        f"${one['per_1000_total']:.2f} per 1,000 msgs",
        f"${ref['idle_total']:.2f}/month idle, ${ref['per_1000_total']:.2f} per 1,000 msgs",
        "report",
        None,
        f"largest idle: {top['name']} ${top['dollars']:.2f}",
    )


def run(smoke: bool = False, assumptions: Assumptions | None = None) -> common.Summary:
    result = measure(smoke, assumptions)
    print(report(result), flush=True)
    if not smoke:
        common.save_result("cost", result)
    return summary(result)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Assumptions()
    parser.add_argument("--ms-per-message", type=float, default=d.ms_per_message, help="forwarder ms a message on AWS")
    parser.add_argument("--reference-ms-per-message", type=float, default=d.reference_ms_per_message)
    parser.add_argument("--message-kb", type=float, default=d.message_kb, help="average message size")
    parser.add_argument("--cold-share", type=float, default=d.cold_share, help="share of invocations that start cold")
    parser.add_argument("--batch", type=int, default=d.messages_per_invocation, help="messages an invocation")
    parser.add_argument("--smoke", action="store_true", help="fewer messages measured, a few seconds")
    args = parser.parse_args(argv)
    assumptions = replace(
        d,
        ms_per_message=args.ms_per_message,
        reference_ms_per_message=args.reference_ms_per_message,
        message_kb=args.message_kb,
        cold_share=args.cold_share,
        messages_per_invocation=args.batch,
    )
    run(args.smoke, assumptions)


if __name__ == "__main__":
    main(sys.argv[1:])
