"""Deliver one stored message to Gmail, exactly once in the sequential case.

The S3 object is both the source and the idempotency record: after an import the Gmail id is
written as the object's ``gmail-message-id`` tag, and a delivery that finds the tag reports
``already-delivered`` instead of importing again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sesmail import names
from sesmail.errors import SesMailError, TransientError, classify
from sesmail.events import MailNotification
from sesmail.gmail import BodyOpener, GmailImporter, labels_for
from sesmail.log import get_logger

log = get_logger("sesmail.delivery")

CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Delivery:
    status: Literal["delivered", "already-delivered"]
    gmail_message_id: str


@dataclass(frozen=True)
class StoredMessage:
    """An opened S3 object: its body stream, exact size, and how many tags it carries."""

    body: Any  # botocore StreamingBody
    size: int
    tag_count: int

    def chunks(self) -> Iterable[bytes]:
        return self.body.iter_chunks(CHUNK_BYTES)  # type: ignore[no-any-return]


class MessageStore:
    """The raw messages SES's S3 action wrote, and their idempotency tags."""

    def __init__(self, s3: Callable[[], Any]) -> None:
        self._s3 = s3

    def open(self, note: MailNotification) -> StoredMessage:
        obj = self._s3().get_object(Bucket=note.bucket, Key=note.key)
        return StoredMessage(obj["Body"], int(obj["ContentLength"]), int(obj.get("TagCount") or 0))

    def tags(self, note: MailNotification) -> list[dict[str, str]]:
        return list(self._s3().get_object_tagging(Bucket=note.bucket, Key=note.key)["TagSet"])

    def opener(self, note: MailNotification, first: StoredMessage) -> BodyOpener:
        """Hands out ``first`` (already open) once, then opens the object anew for each retry."""
        pending = [first]

        def open_body() -> tuple[Iterable[bytes], int]:
            message = pending.pop() if pending else self.open(note)
            return message.chunks(), message.size

        return open_body

    def record(self, note: MailNotification, gmail_id: str, tags: list[dict[str, str]]) -> None:
        """Add the Gmail id to the object's tags, keeping the others.

        ``tags`` is the set read before importing (S3 replaces the whole set on a put; nothing
        else tags these objects while the forwarder holds them).
        """
        kept = [t for t in tags if t["Key"] != names.GMAIL_ID_TAG]
        self._s3().put_object_tagging(
            Bucket=note.bucket,
            Key=note.key,
            Tagging={"TagSet": [*kept, {"Key": names.GMAIL_ID_TAG, "Value": gmail_id}]},
        )


def recorded_gmail_id(tags: list[dict[str, str]]) -> str | None:
    return next((t["Value"] for t in tags if t["Key"] == names.GMAIL_ID_TAG), None)


class Deliverer:
    def __init__(
        self,
        store: MessageStore,
        importer: GmailImporter,
        extra_labels: Iterable[str] = (),
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._importer = importer
        self._extra_labels = tuple(extra_labels)
        self._sleep = sleep
        self._clock = clock

    def deliver(self, note: MailNotification, deadline: float) -> Delivery:
        """Import ``note``'s message, retrying transient failures while ``deadline`` allows.

        Raises a classified :class:`SesMailError`; the caller decides what each class means
        on its path (park, dead-letter, or let SQS / Step Functions retry).
        """
        for attempt in range(1, names.INPROCESS_MAX_ATTEMPTS + 1):
            try:
                return self._deliver_once(note)
            except Exception as exc:
                error = classify(exc)
                delay = self._retry_delay(error, attempt, deadline)
                if delay is None:
                    raise error from None
                log.warning(
                    "transient failure; retrying in-process",
                    extra={
                        "event": "delivery.retry",
                        "attempt": attempt,
                        "delaySeconds": delay,
                        "reason": error.reason,
                    },
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _deliver_once(self, note: MailNotification) -> Delivery:
        # GetObject first: its TagCount says whether reading the tags is needed at all, which
        # saves an S3 round trip for every message not delivered before (nearly all of them).
        message = self._store.open(note)
        try:
            tags = self._store.tags(note) if message.tag_count else []
            existing = recorded_gmail_id(tags)
            if existing:
                log.info(
                    "already imported; not importing again",
                    extra={"event": "delivery.duplicate", "gmailMessageId": existing},
                )
                return Delivery("already-delivered", existing)
            labels = labels_for(note.is_spam, self._extra_labels)
            imported = self._importer.import_message(self._store.opener(note, message), labels)
        finally:
            message.body.close()
        log.info("imported into Gmail", extra={"event": "delivery.imported", "gmailMessageId": imported.gmail_id})
        try:
            self._store.record(note, imported.gmail_id, tags)
        except Exception as exc:
            # The mail is in Gmail; failing now would make SQS deliver it a second time.
            log.error(
                "imported, but could not record the Gmail id on the S3 object",
                extra={"event": "delivery.record_failed", "reason": classify(exc).reason},
            )
        return Delivery("delivered", imported.gmail_id)

    def _retry_delay(self, error: SesMailError, attempt: int, deadline: float) -> float | None:
        if not isinstance(error, TransientError) or attempt >= names.INPROCESS_MAX_ATTEMPTS:
            return None
        delay = (
            error.retry_after if error.retry_after is not None else names.INPROCESS_BACKOFF_SECONDS * 2 ** (attempt - 1)
        )
        if delay > names.INPROCESS_MAX_WAIT_SECONDS or self._clock() + delay >= deadline:
            return None
        return delay
