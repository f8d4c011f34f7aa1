"""Where undeliverable mail waits: the retry queue (token dead) and the DLQs (permanent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sesmail import names
from sesmail.errors import SesMailError

#: SQS caps a message at 256 KiB including attributes; keep reasons well inside that.
MAX_REASON_CHARS = 1000


def park_for_retry(
    sqs: Any,
    queue_url: str,
    notification_json: str,
    *,
    error: SesMailError,
    original_timestamp: str,
    attempt_count: int,
    request_id: str,
) -> str:
    """Queue the SES notification for the retry processor; returns the SQS message id."""
    attributes = {
        names.ATTR_ORIGINAL_TIMESTAMP: original_timestamp,
        names.ATTR_ERROR_TYPE: error.failure_class.value,
        names.ATTR_ATTEMPT_COUNT: str(attempt_count),
        names.ATTR_ORIGINAL_REQUEST_ID: request_id,
        names.ATTR_ERROR: error.reason[:MAX_REASON_CHARS],
    }
    response = sqs.send_message(
        QueueUrl=queue_url, MessageBody=notification_json, MessageAttributes=_attributes(attributes)
    )
    return str(response["MessageId"])


def send_to_dlq(sqs: Any, queue_url: str, body: str, *, error: SesMailError, context: Mapping[str, str]) -> str:
    """Dead-letter ``body`` unchanged (so a redrive replays it) with the reason beside it."""
    attributes = {
        names.ATTR_ERROR: error.reason[:MAX_REASON_CHARS],
        names.ATTR_ERROR_TYPE: error.failure_class.value,
        **context,
    }
    response = sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=_attributes(attributes))
    return str(response["MessageId"])


def _attributes(values: Mapping[str, str]) -> dict[str, dict[str, str]]:
    # SQS rejects empty attribute values; an absent attribute says the same thing.
    return {k: {"DataType": "String", "StringValue": v} for k, v in values.items() if v}
