"""Shared fixtures: moto for AWS, a real-HTTP fake of Google on 127.0.0.1, and a forwarder wired to both."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sesmail import names
from sesmail.aws import AwsClients
from sesmail.forwarder import Forwarder, ForwarderSettings
from tests.fakes.google import FakeGoogle

ENV = "test"
REGION = "us-east-1"
BUCKET = "ses-mail-test-inbound"


@pytest.fixture(autouse=True)
def _isolated_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may find real credentials or reach a real endpoint."""
    for key in list(os.environ):
        if key.startswith("AWS_") or key == names.ENV_VAR_GMAIL_API_BASE_URL:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


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
def world(google: FakeGoogle) -> Iterator[World]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        ssm = boto3.client("ssm", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        retry_url = sqs.create_queue(QueueName=names.retry_queue(ENV))["QueueUrl"]
        dlq_url = sqs.create_queue(QueueName=names.inbound_dlq(ENV))["QueueUrl"]
        yield World(google, s3, sqs, ssm, retry_url, dlq_url)
