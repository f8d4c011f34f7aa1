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


class MessageStore:
    """The raw messages SES's S3 action wrote, and their idempotency tags."""

    def __init__(self, s3: Callable[[], Any]) -> None:
        self._s3 = s3

    def tags(self, note: MailNotification) -> list[dict[str, str]]:
        """The object's tag set (one S3 call); ``recorded_gmail_id`` and ``record`` both use it."""
        return list(self._s3().get_object_tagging(Bucket=note.bucket, Key=note.key)["TagSet"])

    def recorded_gmail_id(self, note: MailNotification, tags: list[dict[str, str]] | None = None) -> str | None:
        tags = self.tags(note) if tags is None else tags
        return next((t["Value"] for t in tags if t["Key"] == names.GMAIL_ID_TAG), None)

    def opener(self, note: MailNotification) -> BodyOpener:
        def open_body() -> tuple[Iterable[bytes], int]:
            obj = self._s3().get_object(Bucket=note.bucket, Key=note.key)
            return obj["Body"].iter_chunks(CHUNK_BYTES), int(obj["ContentLength"])

        return open_body

    def record(self, note: MailNotification, gmail_id: str, tags: list[dict[str, str]] | None = None) -> None:
        """Add the Gmail id to the object's tags, keeping the others.

        ``tags`` is the tag set the delivery read before importing, which saves reading it a
        second time (S3 replaces the whole set on a put; nothing else tags these objects).
        """
        s3 = self._s3()
        if tags is None:
            tags = self.tags(note)
        kept = [t for t in tags if t["Key"] != names.GMAIL_ID_TAG]
        s3.put_object_tagging(
            Bucket=note.bucket,
            Key=note.key,
            Tagging={"TagSet": [*kept, {"Key": names.GMAIL_ID_TAG, "Value": gmail_id}]},
        )


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
        tags = self._store.tags(note)
        existing = self._store.recorded_gmail_id(note, tags)
        if existing:
            log.info(
                "already imported; not importing again",
                extra={"event": "delivery.duplicate", "gmailMessageId": existing},
            )
            return Delivery("already-delivered", existing)
        imported = self._importer.import_message(self._store.opener(note), labels_for(note.is_spam, self._extra_labels))
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
