"""Shared fixtures: moto for AWS, a real-HTTP fake of Google on 127.0.0.1, and a forwarder wired to both."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from sesmail import names
from sesmail.local.google import FakeGoogle
from sesmail.local.moto_server import atomic_s3_conditional_writes, isolated_aws_environment
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.forwarder import Forwarder, ForwarderSettings

#: The retry processor's world (moto's Step Functions interpreter, in-process Lambda routing)
#: lives in its own module; as a plugin its ``drain`` fixture serves every test module.
pytest_plugins = ["tests.drain_world"]

ENV = "test"
REGION = "us-east-1"
BUCKET = "ses-mail-test-inbound"


@pytest.fixture(autouse=True)
def _isolated_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may find real credentials or reach a real endpoint."""
    isolated_aws_environment(monkeypatch)


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


class FakeContext:
    """The parts of the Lambda context object the forwarder reads."""

    def __init__(self, remaining_seconds: float = 120.0, request_id: str = "req-0001") -> None:
        self.remaining_seconds = remaining_seconds
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_seconds * 1000)


def raw_message(message_id: str, *, subject: str = "Hello", body: bytes = b"Hi there.\r\n") -> bytes:
    return (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: {subject}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + body


def ses_notification(
    message_id: str, *, bucket: str = BUCKET, spam: str = "PASS", virus: str = "PASS"
) -> dict[str, Any]:
    """An SES S3-action notification, shaped as SES publishes it."""
    return {
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-11-23T10:00:01.000Z",
            "source": "alice@example.org",
            "messageId": message_id,
            "destination": ["bob@example.com"],
            "headersTruncated": False,
            "headers": [{"name": "Subject", "value": "Hello"}],
            "commonHeaders": {"from": ["Alice <alice@example.org>"], "to": ["bob@example.com"], "subject": "Hello"},
        },
        "receipt": {
            "timestamp": "2026-11-23T10:00:01.000Z",
            "processingTimeMillis": 321,
            "recipients": ["bob@example.com"],
            "spamVerdict": {"status": spam},
            "virusVerdict": {"status": virus},
            "spfVerdict": {"status": "PASS"},
            "dkimVerdict": {"status": "PASS"},
            "dmarcVerdict": {"status": "PASS"},
            "action": {
                "type": "S3",
                "topicArn": f"arn:aws:sns:{REGION}:123456789012:ses-mail-inbound-{ENV}",
                "bucketName": bucket,
                "objectKeyPrefix": names.INBOUND_PREFIX,
                "objectKey": f"{names.INBOUND_PREFIX}{message_id}",
            },
        },
    }


def sns_envelope(notification: dict[str, Any]) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "5a1c0b7e-0000-4000-8000-000000000000",
            "TopicArn": f"arn:aws:sns:{REGION}:123456789012:ses-mail-inbound-{ENV}",
            "Subject": "Amazon SES Email Receipt Notification",
            "Message": json.dumps(notification),
            "Timestamp": "2026-11-23T10:00:02.000Z",
        }
    )


def emitted_metrics(out: str) -> dict[str, float]:
    """Every EMF metric in captured stdout (what CloudWatch would extract), summed by name."""
    found: dict[str, float] = {}
    for line in out.splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                found[metric["Name"]] = found.get(metric["Name"], 0) + record[metric["Name"]]
    return found


def sqs_record(body: str, message_id: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{names.inbound_queue(ENV)}",
        "awsRegion": REGION,
    }


@dataclass
class World:
    """moto's AWS with the forwarder's resources, the fake Google, and a warm forwarder."""

    google: FakeGoogle
    s3: Any
    sqs: Any
    ssm: Any
    retry_queue_url: str
    inbound_dlq_url: str
    sleeps: list[float] = field(default_factory=list)
    forwarder: Forwarder | None = None
    refresh_token: str = ""

    def settings(self, **overrides: Any) -> ForwarderSettings:
        values: dict[str, Any] = {
            "env": ENV,
            "retry_queue_url": self.retry_queue_url,
            "inbound_dlq_url": self.inbound_dlq_url,
            "gmail_api_base_url": self.google.base_url,
            "email_bucket": BUCKET,
        }
        return ForwarderSettings(**{**values, **overrides})

    def cold_start(self, **overrides: Any) -> Forwarder:
        self.forwarder = Forwarder(self.settings(**overrides), AwsClients(), sleep=self.sleeps.append)
        return self.forwarder

    def install_token(self, token: str | None = None) -> str:
        """What the refresh CLI leaves in SSM: the client JSON and a refresh token."""
        self.refresh_token = token or self.google.issue_refresh_token()
        self.ssm.put_parameter(
            Name=names.client_credentials_parameter(ENV),
            Value=json.dumps(self.google.client_json()),
            Type="SecureString",
            Overwrite=True,
        )
        self.ssm.put_parameter(
            Name=names.refresh_token_parameter(ENV),
            Value=json.dumps(
                {
                    "token": self.refresh_token,
                    "created_at": "2026-11-20T00:00:00Z",
                    "expires_at": "2026-11-27T00:00:00Z",
                    "scopes": [names.GMAIL_SCOPE],
                }
            ),
            Type="SecureString",
            Overwrite=True,
        )
        return self.refresh_token

    def store_mail(self, message_id: str, raw: bytes | None = None, **kwargs: Any) -> dict[str, Any]:
        """What SES's S3 action does: the raw message at inbound/{id}, then the notification."""
        self.s3.put_object(
            Bucket=BUCKET, Key=f"{names.INBOUND_PREFIX}{message_id}", Body=raw or raw_message(message_id)
        )
        return ses_notification(message_id, **kwargs)

    def sqs_event(self, *notifications: dict[str, Any]) -> dict[str, Any]:
        return {"Records": [sqs_record(sns_envelope(n), f"sqs-{i}") for i, n in enumerate(notifications)]}

    def handle(self, event: Any, context: FakeContext | None = None) -> Any:
        forwarder = self.forwarder or self.cold_start()
        return forwarder.handle(event, context or FakeContext())

    def claim(self, message_id: str, mailbox: str = names.DEFAULT_MAILBOX) -> dict[str, Any] | None:
        """The delivery claim of ``(message_id, mailbox)`` as stored, or None."""
        try:
            body = self.s3.get_object(Bucket=BUCKET, Key=names.claim_key(message_id, mailbox))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        claim: dict[str, Any] = json.loads(body)
        return claim

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
            ).get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            messages.extend(batch)


@pytest.fixture
def world(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    atomic_s3_conditional_writes(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        ssm = boto3.client("ssm", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        retry_url = sqs.create_queue(QueueName=names.retry_queue(ENV))["QueueUrl"]
        dlq_url = sqs.create_queue(QueueName=names.inbound_dlq(ENV))["QueueUrl"]
        yield World(google, s3, sqs, ssm, retry_url, dlq_url)


# --- fault injection (tests of hostile input and AWS faults) ---------------------------------------


@dataclass
class InjectedFault:
    """An AWS error a client raises for one operation, through botocore's own event system."""

    service: str
    operation: str
    code: str
    status: int = 500
    message: str = "injected"
    times: int | None = None  # None: every call
    skip: int = 0  # let this many calls through first
    calls: int = 0  # calls seen
    raised: int = 0

    def __call__(self, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls <= self.skip or (self.times is not None and self.raised >= self.times):
            return
        self.raised += 1
        raise ClientError(
            {
                "Error": {"Code": self.code, "Message": self.message},
                "ResponseMetadata": {"HTTPStatusCode": self.status, "RequestId": f"injected-{self.raised}"},
            },
            self.operation,
        )


def inject_aws_fault(
    client: Any,
    operation: str,
    code: str,
    *,
    status: int = 500,
    times: int | None = None,
    skip: int = 0,
    message: str = "injected",
) -> InjectedFault:
    """Make ``client.<operation>`` fail with ``code``: ``times`` calls (None: all) after ``skip`` good ones.

    Registered on ``before-call``, so botocore raises the ``ClientError`` before any request
    leaves, exactly where a real error response would surface, and its own retries stay out.
    """
    service = client.meta.service_model.service_id.hyphenize()
    fault = InjectedFault(service, operation, code, status, message, times, skip)
    client.meta.events.register(f"before-call.{service}.{operation}", fault)
    return fault


#: What SQS accepts in a message body or String attribute (its documented character set).
_SQS_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def strict_sqs(client: Any) -> None:
    """Refuse SendMessage as real SQS does when a body or attribute holds a forbidden character.

    moto stores anything; SQS answers InvalidParameterValue for e.g. a NUL or a lone surrogate.
    """

    def check(params: dict[str, Any], **kwargs: Any) -> None:
        values = [params.get("MessageBody", "")]
        values += [a.get("StringValue", "") for a in (params.get("MessageAttributes") or {}).values()]
        for value in values:
            if _SQS_INVALID.search(value):
                raise ClientError(
                    {
                        "Error": {"Code": "InvalidParameterValue", "Message": "Invalid characters found."},
                        "ResponseMetadata": {"HTTPStatusCode": 400},
                    },
                    "SendMessage",
                )

    # before-parameter-build sees the API parameters (before-call sees the serialised request).
    client.meta.events.register("before-parameter-build.sqs.SendMessage", check)


class InboundQueue:
    """The inbound SQS queue (moto, with its redrive policy) and a faithful event source mapping.

    ``poll`` does what Lambda's SQS poller does: receive up to 10 messages with the queue's
    visibility timeout, invoke the handler with them, delete everything not reported in
    ``batchItemFailures`` (an unknown identifier or an exception fails the whole batch). Failed
    messages stay invisible until ``pass_visibility_timeout`` (which also moves the fake
    Google's clock by the same 720 s); SQS's own redrive moves a message to the inbound DLQ
    when it is received more than ``INBOUND_QUEUE_MAX_RECEIVE_COUNT`` times.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        dlq_arn = world.sqs.get_queue_attributes(QueueUrl=world.inbound_dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.url = world.sqs.create_queue(
            QueueName=names.inbound_queue(ENV),
            Attributes={
                "VisibilityTimeout": str(names.INBOUND_QUEUE_VISIBILITY_SECONDS),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": names.INBOUND_QUEUE_MAX_RECEIVE_COUNT}
                ),
            },
        )["QueueUrl"]
        self.max_receive_count = 0
        self.invocations = 0
        self._in_flight: list[str] = []

    def send(self, notification: dict[str, Any]) -> None:
        """What SNS does with SES's notification: an envelope in the queue."""
        self.world.sqs.send_message(QueueUrl=self.url, MessageBody=sns_envelope(notification))

    def depth(self) -> int:
        attributes = self.world.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def poll(self, forwarder: Forwarder | None = None, context: FakeContext | None = None) -> list[str] | None:
        """One invocation; the ids of the records left in the queue, or None if none was visible."""
        received = self.world.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=names.SQS_BATCH_SIZE, AttributeNames=["All"]
        ).get("Messages", [])
        if not received:
            return None
        self.invocations += 1
        records = [
            {
                **sqs_record(m["Body"], m["MessageId"]),
                "receiptHandle": m["ReceiptHandle"],
                "attributes": m["Attributes"],
            }
            for m in received
        ]
        counts = [int(m["Attributes"]["ApproximateReceiveCount"]) for m in received]
        self.max_receive_count = max(self.max_receive_count, *counts)
        target = forwarder or self.world.forwarder or self.world.cold_start()
        ids = {m["MessageId"] for m in received}
        try:
            answer = target.handle({"Records": records}, context or FakeContext())
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
        except Exception:
            failed = set(ids)
        if not failed <= ids:  # Lambda: an identifier it does not know fails the whole batch
            failed = set(ids)
        for message in received:
            if message["MessageId"] in failed:
                self._in_flight.append(message["ReceiptHandle"])
            else:
                self.world.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return sorted(failed)

    def pass_visibility_timeout(self) -> None:
        """The failed messages' visibility timeout ends: they are receivable again."""
        handles, self._in_flight = self._in_flight, []
        for handle in handles:
            self.world.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=handle, VisibilityTimeout=0)
        self.world.google.advance_time(names.INBOUND_QUEUE_VISIBILITY_SECONDS)

    def run(self, forwarder: Forwarder | None = None, *, rounds: int = 10) -> None:
        """Poll until the queue is empty, letting the visibility timeout pass between rounds."""
        for _ in range(rounds):
            while self.poll(forwarder) is not None:
                pass
            if not self.depth():
                return
            self.pass_visibility_timeout()


class AdvancingSleep:
    """A ``sleep`` that records its calls and moves the fake Google's clock instead of waiting."""

    def __init__(self, google: FakeGoogle) -> None:
        self.google = google
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.google.advance_time(seconds)

    # ``world.sleeps.append`` is how the existing harnesses hand a sleep to the forwarder.
    append = __call__
