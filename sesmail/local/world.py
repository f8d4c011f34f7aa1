"""The deployed system and everything around it, as one object the scenarios (and the demo) drive.

Only edges are driven: SES (mail arrives; what was sent with SES comes back in), Lambda's SQS
poller, EventBridge's schedule, CloudWatch Logs (the handlers' EMF lines become metrics), Google
(revocations, failures) and the operator's terminal (the refresh CLI as a subprocess with a
browser). Everything in between is the product: the handlers from the deployed archive, the
state machine the program defined, the queues, topics and parameters the program created.

:func:`start_system` builds it; tests/e2e/conftest.py calls it from a fixture with pytest's
``monkeypatch``, ``python -m sesmail.demo`` with a :class:`sesmail.local.patches.Patches`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

import sesmail.runtime.canary
import sesmail.runtime.token_monitor
from sesmail import names
from sesmail.local.account import CREDENTIALS, REGION, STACK
from sesmail.local.deploy import Deployment, deploy
from sesmail.local.edges import (
    AlarmReading,
    AlarmView,
    E2EFakeGoogle,
    EmfExtraction,
    EventSourceMapping,
    Scheduler,
    SimulatedClock,
    SimulatedSes,
    put_emf_metrics,
)
from sesmail.local.lambda_runtime import LambdaRuntime
from sesmail.local.moto_server import InProcessMotoServer, atomic_s3_conditional_writes
from sesmail.local.operator import Cli, CliResult
from sesmail.local.patches import Patcher

ENV = STACK
ESM_TYPE = "aws:lambda/eventSourceMapping:EventSourceMapping"
#: What an operator's shell does not have: the Lambda functions' variables this process exports.
_NOT_IN_OPERATOR_SHELL = (
    names.ENV_VAR_ENV,
    names.ENV_VAR_RETRY_QUEUE_URL,
    names.ENV_VAR_INBOUND_DLQ_URL,
    names.ENV_VAR_EMAIL_BUCKET,
    names.ENV_VAR_GMAIL_LABELS,
    names.ENV_VAR_GMAIL_API_BASE_URL,
    names.ENV_VAR_STATE_MACHINE_ARN,
    names.ENV_VAR_MAILBOXES,
    names.ENV_VAR_CANARY_ADDRESS,
    names.ENV_VAR_GMAIL_ADDRESS,
    names.ENV_VAR_TOKEN_LIFETIME_DAYS,
    "MOTO_PORT",
)


@dataclass
class System:
    server: InProcessMotoServer
    deployment: Deployment
    google: E2EFakeGoogle
    runtime: LambdaRuntime
    clock: SimulatedClock
    ses: SimulatedSes
    inbound: EventSourceMapping
    scheduler: Scheduler
    cli: Cli
    client_secret_file: Path
    #: Step Functions Retry waits (seconds), recorded instead of slept.
    interpreter_sleeps: list[float] = field(default_factory=list)
    _clients: dict[str, Any] = field(default_factory=dict)
    _last_token_metric: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))
    #: Where the last token monitor run's datapoints begin (for readings that span several publishers).
    last_monitor_window: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))
    #: The newest datapoint :meth:`ship_metrics` put (EMF timestamps are real time).
    _last_shipped_metric: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))

    # --- AWS, as anyone with the account's credentials sees it ----------------------------------

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, endpoint_url=self.server.url, region_name=REGION, **CREDENTIALS
            )
        return self._clients[service]

    def output(self, key: str) -> Any:
        return self.deployment.output(key)

    def depth(self, queue_url: str) -> int:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def read_queue(self, queue_url: str, *, put_back: bool = False) -> list[dict[str, Any]]:
        """Every message in the queue with its attributes, as the console's "poll for messages" shows them.

        Receiving hides them; ``put_back`` makes them visible again at once (as a console user
        would before leaving), otherwise they stay hidden for a minute. Either way each receive
        counts towards the queue's ``maxReceiveCount``, as it does in SQS.
        """
        sqs, found = self.client("sqs"), []
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                VisibilityTimeout=60,
            ).get("Messages", [])
            if not batch:
                break
            found.extend(batch)
        if put_back:
            for message in found:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        return found

    def object_tags(self, bucket: str, key: str) -> dict[str, str]:
        tags = self.client("s3").get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        return {t["Key"]: t["Value"] for t in tags}

    def delivered_gmail_id(self, bucket: str, message_id: str) -> str | None:
        """The Gmail id the message's delivery claim records (default mailbox), or None."""
        s3 = self.client("s3")
        try:
            body = s3.get_object(Bucket=bucket, Key=names.claim_key(message_id))["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        claim = json.loads(body)
        return claim.get("gmailMessageId") if claim.get("state") == "delivered" else None

    def metric_sum(self, metric: str) -> float:
        """Sum of the metric's datapoints in ``SESMail/{env}`` over the last hour (the whole test)."""
        now = datetime.now(UTC)
        points = self.client("cloudwatch").get_metric_statistics(
            Namespace=names.metric_namespace(ENV),
            MetricName=metric,
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=1),
            Period=3660,
            Statistics=["Sum"],
        )["Datapoints"]
        return float(sum(p["Sum"] for p in points))

    # --- the outside world --------------------------------------------------------------------

    def run_token_monitor(self, mailbox: str = names.DEFAULT_MAILBOX) -> tuple[dict[str, Any], AlarmReading]:
        """EventBridge fires the monitor's schedule now (simulated clock); ``mailbox``'s expiring alarm's view of it."""
        since = self.last_monitor_window = self.fresh_metric_window()
        [result] = self.scheduler.fire(names.token_monitor_schedule_rule(ENV))
        self._last_token_metric = datetime.now(UTC)
        return result, self.expiring_alarm(mailbox).reading(since)

    def expiring_alarm(self, mailbox: str = names.DEFAULT_MAILBOX) -> AlarmView:
        return AlarmView(self.client("cloudwatch"), names.token_expiring_alarm(ENV, mailbox))

    def canary_alarm(self, mailbox: str = names.DEFAULT_MAILBOX) -> AlarmView:
        return AlarmView(self.client("cloudwatch"), names.canary_alarm(ENV, mailbox))

    def ship_metrics(self, output: str) -> EmfExtraction:
        """CloudWatch Logs extracts the EMF lines of the handlers' ``output`` into metrics in moto.

        Pass each captured output once (``capfd.readouterr()`` hands out each line once): a line
        shipped twice would count twice, as a log line written twice would in CloudWatch.
        """
        extraction = put_emf_metrics(self.client("cloudwatch"), output)
        latest = extraction.latest()
        if latest is not None:
            self._last_shipped_metric = max(self._last_shipped_metric, latest)
        return extraction

    def fresh_metric_window(self) -> datetime:
        """A window start after the last datapoint (the token metrics, the EMF lines shipped): CloudWatch
        windows start on a whole second, so this waits for the next second when the last datapoint is
        in the current one."""
        last = max(self._last_token_metric, self._last_shipped_metric)
        boundary = last.replace(microsecond=0) + timedelta(seconds=1)
        wait = (boundary - datetime.now(UTC)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        return max(boundary, datetime.now(UTC).replace(microsecond=0))

    def refresh(self, *args: str) -> CliResult:
        """The operator runs the refresh CLI in a terminal; the fake browser clicks "Allow"."""
        try:
            return self.cli.run(*args, env=dict.fromkeys(_NOT_IN_OPERATOR_SHELL))
        finally:
            self._last_token_metric = datetime.now(UTC)  # it publishes TokenHoursUntilExpiration

    # --- what the checks read --------------------------------------------------------------------

    def executions(self) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        listed = sfn.list_executions(stateMachineArn=self.output("stateMachineArn"))["executions"]
        return [sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]

    def execution_histories(self) -> str:
        sfn = self.client("stepfunctions")
        return "\n".join(
            json.dumps(sfn.get_execution_history(executionArn=e["executionArn"], maxResults=1000), default=str)
            for e in self.executions()
        )

    def audit_records(self) -> list[dict[str, Any]]:
        events = self.client("logs").filter_log_events(logGroupName=names.audit_log_group(ENV))["events"]
        return [json.loads(e["message"]) for e in events]

    def secrets(self) -> list[str]:
        return self.google.secrets()


def start_system(
    server: InProcessMotoServer,
    google: E2EFakeGoogle,
    patcher: Patcher,
    work_dir: Path,
    config: Mapping[str, Any] | None = None,
) -> System:
    """``pulumi up`` (of the example stack, or ``config``) into the empty moto, then wire the edges to it.

    Call it inside ``server.session()``. Every change to this process (environment variables, moto's
    Lambda backend, the modules' clocks) goes through ``patcher``, which undoes them; ``work_dir``
    (empty, the caller's) receives the unpacked archives, the client JSON and the browser's log.
    """
    # The handlers in this process reach AWS (moto) and Google (the fake) the way Lambda would.
    patcher.setenv("AWS_ENDPOINT_URL", server.url)
    patcher.setenv(names.ENV_VAR_GMAIL_API_BASE_URL, google.base_url)
    runtime = LambdaRuntime(work_dir / "lambda")
    runtime.install(patcher)
    interpreter_sleeps: list[float] = []
    atomic_s3_conditional_writes(patcher)  # the moto server runs in this process
    # Step Functions' Retry backoff (30 s, 60 s, 120 s) is recorded, not slept.
    patcher.setattr(retrier_decl, "time", SimpleNamespace(sleep=interpreter_sleeps.append))

    deployment = deploy(server.url, config)
    clock = SimulatedClock()
    patcher.setattr(sesmail.runtime.token_monitor, "datetime", clock.datetime_class())
    patcher.setattr(sesmail.runtime.canary, "datetime", clock.datetime_class())  # the canary signs its send time

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=server.url, region_name=REGION, **CREDENTIALS)

    lambda_client = client("lambda")
    runtime.export_environment(lambda_client, patcher)
    account_id = client("sts").get_caller_identity()["Account"]
    ses = SimulatedSes(client("s3"), client("sns"), client("ses"), clock, account_id=account_id)
    ses.announce_topics()
    inbound = EventSourceMapping(deployment.one(ESM_TYPE).inputs, client("sqs"), lambda_client)
    client_secret_file = work_dir / "client_secret.json"
    client_secret_file.write_text(json.dumps(google.client_json()), encoding="utf-8")
    return System(
        server=server,
        deployment=deployment,
        google=google,
        runtime=runtime,
        clock=clock,
        ses=ses,
        inbound=inbound,
        scheduler=Scheduler(client("events"), lambda_client, clock),
        cli=Cli(server, work_dir),
        client_secret_file=client_secret_file,
        interpreter_sleeps=interpreter_sleeps,
    )


#: Noise: werkzeug's line per request, and moto's interpreter's ERROR line per unmatched IsPresent probe.
QUIET_LOGGERS = {"werkzeug": logging.WARNING, "moto.stepfunctions.parser": logging.CRITICAL}


@contextlib.contextmanager
def quiet(levels: Mapping[str, int] = QUIET_LOGGERS) -> Iterator[None]:
    """Raise these loggers' levels while the world runs; put them back afterwards."""
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    previous = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in previous.items():
            logger.setLevel(level)


def log_records(output: str) -> list[dict[str, Any]]:
    """The handlers' structured log lines (one JSON object a line) among everything on stdout."""
    return [r for r in _json_lines(output) if str(r.get("logger", "")).startswith("sesmail")]


def _json_lines(output: str) -> list[dict[str, Any]]:
    documents = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if isinstance(document, dict):
                documents.append(document)
    return documents


def events(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == event]


def emf_counts(output: str, env: str = ENV) -> Counter[str]:
    """The counts the handlers' Embedded Metric Format lines carry for ``SESMail/{env}``.

    In Lambda, CloudWatch Logs turns these lines into metrics; here they are summed from stdout.
    """
    counts: Counter[str] = Counter()
    for document in _json_lines(output):
        if "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            if directive["Namespace"] == names.metric_namespace(env):
                for metric in directive["Metrics"]:
                    counts[metric["Name"]] += document[metric["Name"]]
    return counts


def assert_no_secret_anywhere(system: System, sinks: dict[str, str]) -> None:
    """No refresh token, access token or client secret in any output, log, audit record or history.

    Also no ``[REDACTED]``: the logging safety net masks a registered secret, so finding the mask
    would mean some code path tried to print one.
    """
    everything = {
        **sinks,
        "audit log": json.dumps(system.audit_records()),
        "step functions histories": system.execution_histories(),
    }
    secrets = system.secrets()
    assert len(secrets) >= 3  # at least one refresh token, one access token and the client secret
    for sink, text in everything.items():
        for secret in secrets:
            assert secret not in text, f"a secret reached the {sink}"
        assert "[REDACTED]" not in text, f"something tried to write a secret to the {sink}"
