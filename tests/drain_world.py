"""The retry processor's world: moto with the real state machine definition, Lambda invokes
routed in-process to the real forwarder (one warm forwarder per interpreter thread, as Lambda
runs one container per concurrent invocation), Gmail the fake on 127.0.0.1, and the
interpreter's retry sleeps recorded instead of slept.

The state machine serves three mailboxes (``default``, ``alice``, ``bob``), each with its own retry
queue and DLQ; ``retry_queue_url``/``retry_dlq_url`` are ``default``'s, what an execution without a
``mailbox`` drains. Every forwarder invocation's payload is recorded: a delivery's in ``invocations``,
the reconcile each execution starts with in ``reconciles`` (always the real forwarder, stub or not).

Its ``drain`` fixture is registered by ``tests/conftest.py``; modules import ``DrainWorld`` for types.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from sesmail import names
from sesmail.local.google import FakeGoogle
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.forwarder import Forwarder
from sesmail.runtime.retry_processor import MailboxQueues, build_definition
from tests.conftest import BUCKET, ENV, REGION, FakeContext, World, atomic_s3_conditional_writes, ses_notification

#: The mailboxes of the drain world's deployment.
MAILBOXES = (names.DEFAULT_MAILBOX, "alice", "bob")


class DrainWorld(World):
    retry_dlq_url: str
    state_machine_arn: str
    function_arn: str
    interpreter_sleeps: list[float]
    #: Mailbox -> its retry queue and DLQ (``default``'s are ``retry_queue_url``/``retry_dlq_url``).
    queues: dict[str, MailboxQueues]
    #: Every forwarder invocation's payload for a message, in the order the interpreter made them.
    invocations: list[dict[str, Any]]
    #: The reconcile invocations each execution starts with (answered by the real forwarder).
    reconciles: list[dict[str, Any]]
    #: When set, answers invocations instead of the real forwarder (payload -> answer; what it raises
    #: is reported as the Lambda runtime reports an unhandled exception).
    stub_forwarder: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def park(
        self, message_id: str, *, stored: bool = True, body: str | None = None, mailbox: str = names.DEFAULT_MAILBOX
    ) -> None:
        """What the inbound path does when the token is dead: the notification in the mailbox's retry queue."""
        note = self.store_mail(message_id) if stored else ses_notification(message_id)
        self.sqs.send_message(
            QueueUrl=self.queues[mailbox].queue_url,
            MessageBody=body or json.dumps(note),
            MessageAttributes={names.ATTR_MAILBOX: {"DataType": "String", "StringValue": mailbox}},
        )

    def definition(self, **overrides: Any) -> dict[str, Any]:
        """The definition the world deploys (every mailbox's queues), with ``build_definition`` overrides."""
        values: dict[str, Any] = {
            "env": ENV,
            "partition": "aws",
            "mailboxes": list(self.queues.values()),
            "forwarder_function": self.function_arn,
        }
        return build_definition(**{**values, **overrides})

    def start(self, execution_input: dict[str, Any] | None = None) -> str:
        """Start an execution (input ``{}`` unless given) and return its ARN at once."""
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn: str = sfn.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=f"test-{uuid.uuid4().hex}",
            input=json.dumps(execution_input or {}),
        )["executionArn"]
        return arn

    def run(self, execution_input: dict[str, Any] | None = None, timeout: float = 180.0) -> dict[str, Any]:
        return self.wait(self.start(execution_input), timeout)

    def wait(self, execution_arn: str, timeout: float = 180.0) -> dict[str, Any]:
        return finished_execution(boto3.client("stepfunctions", region_name=REGION), execution_arn, timeout)

    def queue_depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def metric_sums(self) -> dict[str, float]:
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        sums: dict[str, float] = {}
        for metric in cloudwatch.list_metrics(Namespace=names.metric_namespace(ENV))["Metrics"]:
            stats = cloudwatch.get_metric_statistics(
                Namespace=names.metric_namespace(ENV),
                MetricName=metric["MetricName"],
                StartTime=time.time() - 600,
                EndTime=time.time() + 600,
                Period=60,
                Statistics=["Sum"],
            )["Datapoints"]
            sums[metric["MetricName"]] = sum(p["Sum"] for p in stats)
        return sums


def _route_invocations_to_the_forwarder(world: DrainWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    containers = threading.local()
    record = threading.Lock()

    def invoke(
        backend: LambdaSimpleBackend, name: str, qualifier: str | None, body: str, headers: Any, response_headers: Any
    ) -> bytes:
        payload = json.loads(body or "{}")
        reconcile = payload.get("source") == names.RECONCILE_SOURCE
        with record:
            (world.reconciles if reconcile else world.invocations).append(payload)
        try:
            if world.stub_forwarder is not None and not reconcile:
                result = world.stub_forwarder(payload)
            else:
                forwarder = getattr(containers, "forwarder", None)
                if forwarder is None:
                    forwarder = containers.forwarder = Forwarder(
                        world.settings(), AwsClients(), sleep=world.sleeps.append
                    )
                result = forwarder.handle(payload, FakeContext())
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        return json.dumps(result).encode()

    # With use_docker off, moto's "simple" Lambda backend answers invokes: route them here.
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)


def _fake_lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handlers/forwarder.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


@pytest.fixture
def drain(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> Iterator[DrainWorld]:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    config: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    atomic_s3_conditional_writes(monkeypatch)  # the Map delivers two items at once
    with mock_aws(config=config):
        s3, sqs, ssm = (boto3.client(s, region_name=REGION) for s in ("s3", "sqs", "ssm"))
        s3.create_bucket(Bucket=BUCKET)
        world = DrainWorld(
            google,
            s3,
            sqs,
            ssm,
            retry_queue_url=sqs.create_queue(QueueName=names.retry_queue(ENV))["QueueUrl"],
            inbound_dlq_url=sqs.create_queue(QueueName=names.inbound_dlq(ENV))["QueueUrl"],
        )
        world.retry_dlq_url = sqs.create_queue(QueueName=names.retry_dlq(ENV))["QueueUrl"]
        world.queues = {
            names.DEFAULT_MAILBOX: MailboxQueues(names.DEFAULT_MAILBOX, world.retry_queue_url, world.retry_dlq_url)
        }
        for mailbox in MAILBOXES[1:]:
            world.queues[mailbox] = MailboxQueues(
                mailbox,
                sqs.create_queue(QueueName=names.retry_queue(ENV, mailbox))["QueueUrl"],
                sqs.create_queue(QueueName=names.retry_dlq(ENV, mailbox))["QueueUrl"],
            )
        world.invocations = []
        world.reconciles = []
        world.interpreter_sleeps = []
        # The interpreter logs every unmatched IsPresent probe at ERROR level: noise here.
        monkeypatch.setattr(logging.getLogger("moto.stepfunctions.parser"), "level", logging.CRITICAL)
        # Step Functions' Retry waits (30 s, 60 s, ...) are recorded, not slept.
        monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=world.interpreter_sleeps.append))
        role = boto3.client("iam", region_name=REGION).create_role(RoleName="forwarder", AssumeRolePolicyDocument="{}")[
            "Role"
        ]["Arn"]
        function_arn = boto3.client("lambda", region_name=REGION).create_function(
            FunctionName=names.forwarder_function(ENV),
            Runtime="python3.12",
            Role=role,
            Handler="handlers.forwarder.handler",
            Code={"ZipFile": _fake_lambda_zip()},
        )["FunctionArn"]
        world.function_arn = function_arn
        definition = world.definition()
        world.state_machine_arn = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name=names.retry_state_machine(ENV), definition=json.dumps(definition), roleArn=role
        )["stateMachineArn"]
        _route_invocations_to_the_forwarder(world, monkeypatch)
        yield world


def finished_execution(sfn: Any, execution_arn: str, timeout: float = 180.0) -> dict[str, Any]:
    """The execution once moto's interpreter has finished it (it runs in a thread of its own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.02)
    raise AssertionError(f"{execution_arn} still running after {timeout} s")
