"""Typed views of the events the forwarder receives, and their strict parsing.

Every parser raises :class:`MalformedEventError` with a sentence a human can act on, so a bad
record ends in a DLQ with its reason instead of crashing the batch it arrived in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sesmail import names
from sesmail.runtime.errors import MalformedEventError
from sesmail.runtime.verdicts import FAIL, Verdicts

#: SES sends this once when a topic is attached; it carries no mail.
SUBSCRIPTION_NOTICE = "AmazonSnsSubscriptionSucceeded"
#: When a receipt rule with an S3 action is created, SES writes ``{prefix}AMAZON_SES_SETUP_NOTIFICATION``
#: to test its access to the bucket, and announces it like mail under this message id.
SETUP_NOTIFICATION_ID = "AMAZON_SES_SETUP_NOTIFICATION"


@dataclass(frozen=True)
class MailNotification:
    """One received message, as SES's S3 action announced it."""

    message_id: str
    bucket: str
    key: str
    timestamp: str
    verdicts: Verdicts  # SES's spam, virus, SPF, DKIM and DMARC verdicts (empty when it sent none)
    raw: dict[str, Any]  # the notification itself: what the retry queue stores
    #: ``receipt.recipients``: the envelope recipients (RCPT TO) the receipt rule matched. Mail is
    #: routed to mailboxes by these, never by the To/Cc headers, which the sender writes.
    recipients: tuple[str, ...] = ()

    @property
    def is_spam(self) -> bool:
        """SES's spam or virus verdict is FAIL (sender authentication aside: see :mod:`sesmail.runtime.verdicts`)."""
        return FAIL in (self.verdicts.spam, self.verdicts.virus)

    def to_json(self) -> str:
        return json.dumps(self.raw, separators=(",", ":"))


@dataclass(frozen=True)
class SqsRecord:
    message_id: str
    body: str
    receive_count: int

    @classmethod
    def from_event(cls, record: Any) -> SqsRecord:
        if not isinstance(record, dict) or not isinstance(record.get("messageId"), str):
            raise MalformedEventError("SQS record without a messageId")
        body = record.get("body")
        if not isinstance(body, str):
            raise MalformedEventError("SQS record without a string body")
        attributes = record.get("attributes")
        if not isinstance(attributes, dict):
            attributes = {}
        try:
            receive_count = int(attributes.get("ApproximateReceiveCount", 1))
        except (TypeError, ValueError):
            receive_count = 1
        return cls(record["messageId"], body, receive_count)


def notification_from_sqs_body(body: str) -> dict[str, Any]:
    """Unwrap an SNS envelope (or accept a bare SES notification, for raw message delivery)."""
    document = _json_object(body, "SQS message body")
    if document.get("Type") == "Notification" and "Message" in document:
        message = document["Message"]
        if not isinstance(message, str):
            raise MalformedEventError("SNS envelope whose Message is not a string")
        return _json_object(message, "SNS Message")
    return document


def notification_from_ses_record(record: dict[str, Any], bucket: str | None) -> dict[str, Any]:
    """Turn an SES Lambda-action record into the S3-action notification the rest of the code reads.

    The Lambda action carries no message content; the rule's S3 action (which must run first)
    stored it at ``inbound/{messageId}`` in the forwarder's bucket.
    """
    ses = record.get("ses")
    if not isinstance(ses, dict) or not isinstance(ses.get("mail"), dict) or not isinstance(ses.get("receipt"), dict):
        raise MalformedEventError("SES record without ses.mail and ses.receipt")
    if not bucket:
        raise MalformedEventError(
            f"an SES Lambda-action event needs {names.ENV_VAR_EMAIL_BUCKET} set to the bucket "
            "the rule's S3 action writes to"
        )
    message_id = _string(ses["mail"], "messageId", "mail")
    receipt = dict(ses["receipt"])
    receipt["action"] = {
        "type": "S3",
        "bucketName": bucket,
        "objectKeyPrefix": names.INBOUND_PREFIX,
        "objectKey": f"{names.INBOUND_PREFIX}{message_id}",
    }
    return {"notificationType": "Received", "mail": ses["mail"], "receipt": receipt}


def notification_document(value: Any) -> dict[str, Any]:
    """A notification as the retry processor passes it: a JSON string (the queued body) or an object."""
    if isinstance(value, str):
        value = _json_object(value, "notification")
    if not isinstance(value, dict):
        raise MalformedEventError(f"notification is a {type(value).__name__}, not a JSON object")
    return value


def parse_notification(document: Any, *, expected_bucket: str | None = None) -> MailNotification:
    document = notification_document(document)
    kind = document.get("notificationType")
    if kind != "Received":
        raise MalformedEventError(f"unsupported notificationType {_shown(kind)} (expected 'Received')")
    mail = _object(document, "mail")
    receipt = _object(document, "receipt")
    action = _object(receipt, "action", "receipt")
    if action.get("type") != "S3":
        raise MalformedEventError(
            f"receipt.action.type is {_shown(action.get('type'))}; the forwarder needs the S3 action's notification"
        )
    bucket = _string(action, "bucketName", "receipt.action")
    key = _string(action, "objectKey", "receipt.action")
    if expected_bucket and bucket != expected_bucket:
        raise MalformedEventError(
            f"notification names bucket {_shown(bucket)}; this forwarder reads only {expected_bucket!r}"
        )
    _check_object_key(key, require_prefix=bool(expected_bucket))
    return MailNotification(
        message_id=_string(mail, "messageId", "mail"),
        bucket=bucket,
        key=key,
        timestamp=_text(mail, "timestamp") or _text(receipt, "timestamp"),
        verdicts=Verdicts.from_receipt(receipt),
        raw=document,
        recipients=_recipients(receipt),
    )


def _recipients(receipt: dict[str, Any]) -> tuple[str, ...]:
    """The strings of ``receipt.recipients``; anything else there is ignored (routing then says so)."""
    value = receipt.get("recipients")
    return tuple(r for r in value if isinstance(r, str)) if isinstance(value, list) else ()


def not_mail(document: dict[str, Any]) -> str | None:
    """Why an SES notification announces no mail (acknowledged and dropped), or None for mail."""
    if document.get("notificationType") == SUBSCRIPTION_NOTICE:
        return "SES topic subscription notice"
    mail, receipt = document.get("mail"), document.get("receipt")
    action = receipt.get("action") if isinstance(receipt, dict) else None
    key = action.get("objectKey") if isinstance(action, dict) else None
    if (isinstance(mail, dict) and mail.get("messageId") == SETUP_NOTIFICATION_ID) or (
        isinstance(key, str) and key.rpartition("/")[2] == SETUP_NOTIFICATION_ID
    ):
        return "SES setup notification (SES tested its write access when the receipt rule was created)"
    return None


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        raise MalformedEventError(f"{what} is not JSON") from None
    except RecursionError:
        # A 256 KiB body of "[[[[..." is valid JSON that the stdlib parser cannot nest into;
        # left uncaught it would escape the per-record handling and fail the whole batch.
        raise MalformedEventError(f"{what} is JSON nested too deeply to be a notification") from None
    if not isinstance(value, dict):
        raise MalformedEventError(f"{what} is a JSON {type(value).__name__}, not an object")
    return value


#: S3 refuses keys longer than this many UTF-8 bytes (KeyTooLongError).
S3_MAX_KEY_BYTES = 1024
#: How much of a hostile value a reason quotes: reasons are stored as SQS attributes and
#: returned to Step Functions, whose payloads are size-limited.
_SHOWN_CHARS = 60


def _check_object_key(key: str, *, require_prefix: bool) -> None:
    """Refuse keys S3 (or the forwarder's IAM policy) would refuse, as permanent failures.

    Without this they surface as ``KeyTooLongError``, ``AccessDenied`` (the forwarder may read
    only ``inbound/*``) or an encoding error inside botocore, all of which classify as
    transient: the record would be redelivered five times and reach the DLQ without its reason.
    """
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedEventError("receipt.action.objectKey is not valid Unicode (lone surrogate)") from None
    if size > S3_MAX_KEY_BYTES:
        raise MalformedEventError(f"receipt.action.objectKey is {size} bytes; S3 keys are at most {S3_MAX_KEY_BYTES}")
    if require_prefix and not key.startswith(names.INBOUND_PREFIX):
        raise MalformedEventError(
            f"receipt.action.objectKey {_shown(key)} is outside {names.INBOUND_PREFIX!r}, "
            "where SES stores mail and all this forwarder may read"
        )


def _shown(value: Any) -> str:
    """A short, printable rendering of a hostile value for a failure reason."""
    if isinstance(value, dict):
        return "(a JSON object)"
    if isinstance(value, list):
        return "(a JSON array)"
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return "(a number too long to show)"
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}..."


def _object(parent: dict[str, Any], key: str, where: str = "notification") -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise MalformedEventError(f"{where}.{key} is missing or not an object")
    return value


def _string(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEventError(f"{where}.{key} is missing or not a non-empty string")
    return value


def _text(parent: dict[str, Any], key: str) -> str:
    """An optional string field; anything else (a hand-edited number, object, ...) counts as absent."""
    value = parent.get(key)
    return value if isinstance(value, str) else ""
