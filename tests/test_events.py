"""Event parsing: the typed view, and a clear MalformedEventError for everything else."""

from __future__ import annotations

import json

import pytest

from sesmail.runtime.errors import MalformedEventError
from sesmail.runtime.events import notification_from_ses_record, notification_from_sqs_body, parse_notification
from tests.conftest import BUCKET, ses_notification, sns_envelope


def test_parse_notification_from_sns_envelope() -> None:
    note = parse_notification(notification_from_sqs_body(sns_envelope(ses_notification("abc", spam="FAIL"))))
    assert (note.message_id, note.bucket, note.key) == ("abc", BUCKET, "inbound/abc")
    assert note.timestamp == "2026-11-23T10:00:01.000Z"
    assert note.is_spam
    assert json.loads(note.to_json()) == ses_notification("abc", spam="FAIL")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[]", "not an object"),
        ({"notificationType": "Bounce"}, "unsupported notificationType 'Bounce'"),
        ({"notificationType": "Received", "receipt": {}}, "notification.mail is missing"),
        ({"notificationType": "Received", "mail": {}, "receipt": {}}, "receipt.action is missing"),
        (
            {"notificationType": "Received", "mail": {}, "receipt": {"action": {"type": "Lambda"}}},
            "needs the S3 action",
        ),
        (
            {"notificationType": "Received", "mail": {}, "receipt": {"action": {"type": "S3", "bucketName": "b"}}},
            "receipt.action.objectKey is missing",
        ),
        (7, "is a int"),
    ],
)
def test_malformed_notifications_say_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(MalformedEventError, match=message):
        parse_notification(document)


def test_other_bucket_is_refused() -> None:
    with pytest.raises(MalformedEventError, match="names bucket 'elsewhere'"):
        parse_notification(ses_notification("a", bucket="elsewhere"), expected_bucket=BUCKET)


@pytest.mark.parametrize("body", ["", "nope", "null", json.dumps({"Type": "Notification", "Message": 5})])
def test_bad_sqs_bodies(body: str) -> None:
    with pytest.raises(MalformedEventError):
        notification_from_sqs_body(body)


def test_ses_lambda_record_becomes_an_s3_notification() -> None:
    note = ses_notification("m9")
    record = {"eventSource": "aws:ses", "ses": {"mail": note["mail"], "receipt": {"recipients": ["bob@example.com"]}}}
    parsed = parse_notification(notification_from_ses_record(record, BUCKET))
    assert (parsed.bucket, parsed.key) == (BUCKET, "inbound/m9")
    with pytest.raises(MalformedEventError, match="EMAIL_BUCKET"):
        notification_from_ses_record(record, None)
