"""Where undeliverable mail waits: the retry queue (token dead) and the DLQs (permanent)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sesmail import names
from sesmail.runtime.errors import SesMailError

#: SQS caps a message at 256 KiB including attributes; keep reasons well inside that.
MAX_REASON_CHARS = 1000
#: Characters SQS refuses in a message attribute value (anything outside #x9 | #xA | #xD |
#: #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF): a NUL in a hand-edited messageId, a control
#: byte or a lone surrogate in a Gmail error body would make SendMessage fail with
#: InvalidParameterValue, so the message could be neither parked nor dead-lettered.
_SQS_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def park_for_retry(
    sqs: Any,
    queue_url: str,
    notification_json: str,
    *,
    error: SesMailError,
    original_timestamp: str,
    attempt_count: int,
    request_id: str,
    mailbox: str = names.DEFAULT_MAILBOX,
) -> str:
    """Queue the SES notification in ``mailbox``'s retry queue; returns the SQS message id."""
    attributes = {
        names.ATTR_MAILBOX: mailbox,
        names.ATTR_ORIGINAL_TIMESTAMP: original_timestamp,
        names.ATTR_ERROR_TYPE: error.failure_class.value,
        names.ATTR_ATTEMPT_COUNT: str(attempt_count),
        names.ATTR_ORIGINAL_REQUEST_ID: request_id,
        names.ATTR_ERROR: error.reason,
    }
    response = sqs.send_message(
        QueueUrl=queue_url, MessageBody=notification_json, MessageAttributes=_attributes(attributes)
    )
    return str(response["MessageId"])


def send_to_dlq(sqs: Any, queue_url: str, body: str, *, error: SesMailError, context: Mapping[str, str]) -> str:
    """Dead-letter ``body`` unchanged (so a redrive replays it) with the reason beside it."""
    attributes = {
        names.ATTR_ERROR: error.reason,
        names.ATTR_ERROR_TYPE: error.failure_class.value,
        **context,
    }
    response = sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=_attributes(attributes))
    return str(response["MessageId"])


def attribute_value(value: str) -> str:
    """``value`` as SQS accepts it in a String attribute: valid characters only, bounded length."""
    return _SQS_INVALID_CHARS.sub("\ufffd", value[:MAX_REASON_CHARS])


def _attributes(values: Mapping[str, str]) -> dict[str, dict[str, str]]:
    # SQS rejects empty attribute values; an absent attribute says the same thing. Every value
    # may carry text from outside (a reason quoting Gmail, a hand-edited notification's ids).
    return {k: {"DataType": "String", "StringValue": attribute_value(v)} for k, v in values.items() if v}
