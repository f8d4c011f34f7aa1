"""Deliver one stored message to Gmail, at most once per (message, mailbox), even concurrently.

The idempotency record is a delivery claim (:mod:`sesmail.runtime.claims`): ``claims/{messageId}/{mailbox}``
in the mail bucket, created with a conditional write before the import and completed with the
Gmail id after it. Objects delivered before claims existed carry the ``gmail-message-id`` tag
instead; that tag is still read (only when GetObject's ``TagCount`` says the object has tags), so
they stay ``already-delivered``, but it is no longer written.

The one window left: Gmail accepted the import and the claim could not be completed (S3 failed
the write after in-process retries, or the Lambda died in between). The claim then still says
``claimed``; redeliveries back off until its lease ends, and after that one would import again.
Completion is the first thing done after the import and is retried within the invocation's time
to keep that window as small as S3 allows; a failure is logged as ``delivery.record_failed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sesmail import names
from sesmail.runtime.claims import AlreadyDelivered, Claim, ClaimLostError, ClaimStore
from sesmail.runtime.errors import SesMailError, TransientError, classify
from sesmail.runtime.events import MailNotification
from sesmail.runtime.gmail import BodyOpener, GmailImporter, ImportedMessage, labels_for
from sesmail.runtime.log import get_logger
from sesmail.runtime.verdicts import HEADER_PEEK_BYTES, AuthFailures, Placement, Verdicts, place

log = get_logger("sesmail.runtime.delivery")

CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Delivery:
    #: ``rejected``: not imported, by the sender-authentication policy (``authFailures: drop``).
    status: Literal["delivered", "already-delivered", "rejected"]
    gmail_message_id: str | None


@dataclass(frozen=True)
class StoredMessage:
    """An opened S3 object: its body stream, exact size, and how many tags it carries."""

    body: Any  # botocore StreamingBody
    size: int
    tag_count: int

    def chunks(self) -> Iterable[bytes]:
        return self.body.iter_chunks(CHUNK_BYTES)  # type: ignore[no-any-return]


class MessageStore:
    """The raw messages SES's S3 action wrote, and the idempotency tags of older deliveries."""

    def __init__(self, s3: Callable[[], Any]) -> None:
        self.s3 = s3

    def open(self, note: MailNotification) -> StoredMessage:
        obj = self.s3().get_object(Bucket=note.bucket, Key=note.key)
        return StoredMessage(obj["Body"], int(obj["ContentLength"]), int(obj.get("TagCount") or 0))

    def tags(self, note: MailNotification) -> list[dict[str, str]]:
        return list(self.s3().get_object_tagging(Bucket=note.bucket, Key=note.key)["TagSet"])

    def head(self, note: MailNotification) -> bytes:
        """The first bytes of the stored message (one ranged GET): where SES wrote its verdict headers."""
        obj = self.s3().get_object(Bucket=note.bucket, Key=note.key, Range=f"bytes=0-{HEADER_PEEK_BYTES - 1}")
        body = obj["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def tagged_gmail_id(self, note: MailNotification, message: StoredMessage) -> str | None:
        """The Gmail id a delivery before claims recorded as a tag (read only if there are tags)."""
        return recorded_gmail_id(self.tags(note)) if message.tag_count else None

    def opener(self, note: MailNotification, first: StoredMessage) -> BodyOpener:
        """Hands out ``first`` (already open) once, then opens the object anew for each retry."""
        pending = [first]

        def open_body() -> tuple[Iterable[bytes], int]:
            message = pending.pop() if pending else self.open(note)
            return message.chunks(), message.size

        return open_body


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
        claims: ClaimStore | None = None,
        mailbox: str = names.DEFAULT_MAILBOX,
        auth_failures: AuthFailures = AuthFailures.SPAM,
    ) -> None:
        self._auth_failures = auth_failures
        self._store = store
        self._importer = importer
        self._extra_labels = tuple(extra_labels)
        self._sleep = sleep
        self._clock = clock
        self.claims = claims or ClaimStore(store.s3)
        self.mailbox = mailbox

    def deliver(
        self, note: MailNotification, deadline: float, *, holder: str, labels: Sequence[str] | None = None
    ) -> Delivery:
        """Import ``note``'s message, retrying transient failures while ``deadline`` allows.

        ``holder`` names this invocation in the claim (the Lambda request id, as in its log lines).
        ``labels`` replaces the placement (inbox or spam) and the mailbox's labels: exactly these
        (the daily canary, archived under its own label, which no verdict or policy may move).
        Raises a classified :class:`SesMailError`; the caller decides what each class means
        on its path (park, dead-letter, or let SQS / Step Functions retry).
        """
        for attempt in range(1, names.INPROCESS_MAX_ATTEMPTS + 1):
            try:
                return self._deliver_once(note, holder, deadline, labels)
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

    def _deliver_once(
        self, note: MailNotification, holder: str, deadline: float, labels: Sequence[str] | None
    ) -> Delivery:
        # GetObject first: a missing message is a permanent failure before any claim is written,
        # and its TagCount says whether an older delivery's tag must be looked for at all.
        message = self._store.open(note)
        try:
            tagged = self._store.tagged_gmail_id(note, message)
            if tagged:
                return self._already_delivered(note, tagged, "tag")
            if labels is None:
                placement = self._place(note)
                if placement is Placement.REJECTED:
                    self.mark(note, names.CLAIM_MARKER_REJECTED)
                    return Delivery("rejected", None)
                labels = labels_for(placement is Placement.SPAM, self._extra_labels)
            claim = self.claims.acquire(note.bucket, note.message_id, self.mailbox, holder, notification=note.raw)
            if isinstance(claim, AlreadyDelivered):
                return self._already_delivered(note, claim.gmail_message_id, "claim")
            imported = self._import(note, message, claim, list(labels))
        finally:
            message.body.close()
        self._complete(claim, imported, deadline)
        self.mark(note, names.CLAIM_MARKER_DELIVERED)
        log.info("imported into Gmail", extra={"event": "delivery.imported", "gmailMessageId": imported.gmail_id})
        return Delivery("delivered", imported.gmail_id)

    def mark(self, note: MailNotification, marker: str) -> None:
        """Record how (message, this mailbox) ended, for the reconcile; never raises.

        A marker that could not be written costs a later reconcile one look at the claim, which
        then answers (``already-delivered``) and writes it: nothing is delivered twice.
        """
        try:
            self.claims.mark(note.bucket, note.message_id, self.mailbox, marker)
        except Exception as exc:
            log.warning(
                "could not write the claim marker; a reconcile will look at this message again",
                extra={"event": "delivery.mark_failed", "marker": marker, "reason": classify(exc).reason},
            )

    def _already_delivered(self, note: MailNotification, gmail_id: str, record: str) -> Delivery:
        log.info(
            "already imported; not importing again",
            extra={"event": "delivery.duplicate", "gmailMessageId": gmail_id, "record": record},
        )
        self.mark(note, names.CLAIM_MARKER_DELIVERED)
        return Delivery("already-delivered", gmail_id)

    def _place(self, note: MailNotification) -> Placement:
        """Inbox, spam or not at all, by SES's verdicts (from the stored headers when the notification has none).

        Deterministic for a message and a policy, so it needs no record: a redelivery decides the
        same, and the raw message stays in S3 until ``retainDays`` whatever was decided.
        """
        verdicts = note.verdicts if note.verdicts.known else Verdicts.from_headers(self._store.head(note))
        placement, why = place(verdicts, self._auth_failures)
        if placement is not Placement.INBOX:
            event = "delivery.rejected" if placement is Placement.REJECTED else "delivery.spam"
            level = log.warning if placement is Placement.REJECTED else log.info
            level(
                f"sender authentication: {placement.value} ({why})",
                extra={"event": event, "reason": why, "authFailures": self._auth_failures.value, **verdicts.as_log()},
            )
        return placement

    def _import(
        self, note: MailNotification, message: StoredMessage, claim: Claim, labels: list[str]
    ) -> ImportedMessage:
        """One import under the claim; on any failure the claim is released for the next attempt.

        A failure may still hide an import Gmail accepted (its answer lost): the next attempt
        imports again, as it would without claims — Gmail's import has no idempotency key.
        """
        try:
            return self._importer.import_message(self._store.opener(note, message), labels)
        except Exception:
            self._release(claim)
            raise

    def _release(self, claim: Claim) -> None:
        try:
            self.claims.release(claim)
        except Exception as exc:
            # Not worse than a holder that died: the lease ends by itself.
            log.warning(
                "could not release the delivery claim; it frees itself when its lease ends",
                extra={"event": "delivery.release_failed", "claim": claim.key, "reason": classify(exc).reason},
            )

    def _complete(self, claim: Claim, imported: ImportedMessage, deadline: float) -> None:
        """Record the Gmail id on the claim, retrying within the invocation's time.

        Never raises: the mail is in Gmail, and failing now would make SQS deliver it again.
        A lost race (our lease expired and another delivery took the claim over) is not retried.
        """
        for attempt in range(1, names.INPROCESS_MAX_ATTEMPTS + 1):
            try:
                self.claims.complete(claim, imported.gmail_id)
                return
            except Exception as exc:
                error = classify(exc)
            delay = names.INPROCESS_BACKOFF_SECONDS * 2 ** (attempt - 1)
            last = attempt == names.INPROCESS_MAX_ATTEMPTS or self._clock() + delay >= deadline
            if isinstance(error, ClaimLostError) or last:
                log.error(
                    "imported, but could not record the Gmail id on the delivery claim",
                    extra={
                        "event": "delivery.record_failed",
                        "claim": claim.key,
                        "gmailMessageId": imported.gmail_id,
                        "reason": error.reason,
                    },
                )
                return
            self._sleep(delay)

    def _retry_delay(self, error: SesMailError, attempt: int, deadline: float) -> float | None:
        if not isinstance(error, TransientError) or attempt >= names.INPROCESS_MAX_ATTEMPTS:
            return None
        delay = (
            error.retry_after if error.retry_after is not None else names.INPROCESS_BACKOFF_SECONDS * 2 ** (attempt - 1)
        )
        if delay > names.INPROCESS_MAX_WAIT_SECONDS or self._clock() + delay >= deadline:
            return None
        return delay
