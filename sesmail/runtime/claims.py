"""Delivery claims: at most one import per (message, mailbox), even when deliveries race.

A claim is a small JSON object at ``claims/{messageId}/{mailbox}`` in the mail bucket, written
with S3's conditional writes (DESIGN.md, "Exactly once, even concurrently"):

1. create it with ``If-None-Match: *`` — only one writer can create a key;
2. import into Gmail while holding it (a lease: ``leaseExpiresAt``, epoch seconds);
3. complete it with ``If-Match: <the ETag we wrote>`` as ``{"state": "delivered", "gmailMessageId": ...}``.

Finding a claim already there: ``delivered`` → already delivered; ``claimed`` with a live lease →
another invocation is importing (:class:`ClaimHeldError`, transient: back off, SQS or Step
Functions redeliver); ``released`` or an expired lease → take it over with ``If-Match`` on the
ETag just read, so of two takers only one wins.

Each claim carries a random ``claimId`` (its completion and release derive theirs from it). With
SSE-S3 the ETag is the MD5 of the body, so without it two writes of equal bodies would share an
ETag and ``If-Match`` could not tell them apart. A failed import *releases* the claim by
overwriting it (``state: released``); nothing is ever deleted (the forwarder's role may not).

Races surface as S3 errors that the one classifier would misread: a lost ``If-Match`` on a claim
that vanished meanwhile is ``NoSuchKey``, which :func:`sesmail.runtime.errors.classify` calls permanent
(right for a missing *message*, wrong for a claim). So ``PreconditionFailed`` (412),
``ConditionalRequestConflict`` (409: another conditional write to the key is in progress) and
``NoSuchKey`` on claim keys become :class:`ClaimLostError`, a :class:`TransientError`; every other
failure (AccessDenied, 5xx, timeouts) propagates unchanged for the caller to classify.

moto (5.2) honours ``IfNoneMatch="*"`` and ``IfMatch`` on ``put_object`` with S3's 412 and, for
``If-Match`` on a missing key, ``NoSuchKey``. It differs from S3 in two ways the tests make up for
(``tests/conftest.py``): its check-then-write is not atomic (two threads can both pass; S3
serialises conditional writes of one key), and it never answers 409 ConditionalRequestConflict.

Runtime code: the standard library only, the S3 client is handed in (it ships in the Lambda archive).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from sesmail import names
from sesmail.runtime.errors import MalformedEventError, PermanentError, TransientError, aws_error_code

ClaimState = Literal["claimed", "released", "delivered"]
_STATES: frozenset[str] = frozenset({"claimed", "released", "delivered"})
#: S3 error codes that mean "someone else wrote (or removed) this claim first".
_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"})
CLAIM_FORMAT_VERSION = 1


class ClaimLostError(TransientError):
    """Another delivery wrote the claim between our read and our write: try again later.

    ``code`` is S3's error code (or ``held``), so :meth:`ClaimStore.acquire` can tell the one
    race it resolves itself (412 on the create) from the ones it hands to its caller.
    """

    def __init__(self, reason: str, *, code: str) -> None:
        super().__init__(reason)
        self.code = code


class ClaimHeldError(ClaimLostError):
    """Another invocation holds a live lease on the claim: it is importing this message now."""


@dataclass(frozen=True)
class ClaimRecord:
    """The claim object's content. Unknown fields are ignored, so a later version may add some
    without breaking this reader."""

    state: ClaimState
    message_id: str
    mailbox: str
    holder: str
    claim_id: str
    claimed_at: int
    lease_expires_at: int
    gmail_message_id: str | None = None
    delivered_at: int | None = None
    #: The SES notification the first claimer delivered from, kept so a reconcile can deliver the
    #: message again exactly as announced (recipients, verdicts, receipt time) after every queue
    #: that held it has let it go. Claims written before this field have none.
    notification: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "version": CLAIM_FORMAT_VERSION,
            "state": self.state,
            "messageId": self.message_id,
            "mailbox": self.mailbox,
            "holder": self.holder,
            "claimId": self.claim_id,
            "claimedAt": self.claimed_at,
            "leaseExpiresAt": self.lease_expires_at,
        }
        if self.gmail_message_id is not None:
            document["gmailMessageId"] = self.gmail_message_id
            document["deliveredAt"] = self.delivered_at
        if self.notification is not None:
            document["notification"] = self.notification
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ClaimRecord:
        """Parse a stored claim; ValueError when it is not one this code can act on."""
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("state") not in _STATES:
            raise ValueError("no known state")
        gmail_id = document.get("gmailMessageId")
        notification = document.get("notification")
        if document["state"] == "delivered" and not (isinstance(gmail_id, str) and gmail_id):
            raise ValueError("delivered without a gmailMessageId")
        return cls(
            state=document["state"],
            message_id=str(document.get("messageId", "")),
            mailbox=str(document.get("mailbox", "")),
            holder=str(document.get("holder", "")),
            claim_id=str(document.get("claimId", "")),
            claimed_at=int(document.get("claimedAt", 0)),
            lease_expires_at=int(document.get("leaseExpiresAt", 0)),
            gmail_message_id=gmail_id if isinstance(gmail_id, str) else None,
            delivered_at=int(document["deliveredAt"]) if document.get("deliveredAt") is not None else None,
            notification=notification if isinstance(notification, dict) else None,
        )


@dataclass(frozen=True)
class Claim:
    """A claim this invocation holds: where it is and the ETag of the version it wrote."""

    bucket: str
    key: str
    etag: str
    record: ClaimRecord


@dataclass(frozen=True)
class AlreadyDelivered:
    """The claim says the message is in this mailbox already."""

    gmail_message_id: str


class ClaimStore:
    """Claims in the mail bucket; ``now`` is the wall clock (leases are compared across hosts)."""

    def __init__(
        self,
        s3: Callable[[], Any],
        *,
        now: Callable[[], float] = time.time,
        lease_seconds: float = names.CLAIM_LEASE_SECONDS,
    ) -> None:
        self._s3 = s3
        self.now = now
        self._lease_seconds = lease_seconds

    def acquire(
        self,
        bucket: str,
        message_id: str,
        mailbox: str,
        holder: str,
        *,
        notification: dict[str, Any] | None = None,
    ) -> Claim | AlreadyDelivered:
        """Hold the claim for one import, or learn that the message is already delivered.

        The create is tried first, without a read: it is the common case (a new message) and
        then costs one request. Only when it fails with 412 is the claim read and judged.
        ``notification`` is kept in the claim (a takeover keeps the one stored first).
        """
        key = _claim_key(message_id, mailbox)
        record = replace(self._fresh(message_id, mailbox, holder), notification=notification)
        try:
            return Claim(bucket, key, self._put(bucket, key, record, IfNoneMatch="*"), record)
        except ClaimLostError as lost:
            if lost.code != "PreconditionFailed":
                raise
        current, etag = self._read(bucket, key)
        if current.state == "delivered" and current.gmail_message_id:
            return AlreadyDelivered(current.gmail_message_id)
        if current.state == "claimed" and self.now() < current.lease_expires_at:
            raise ClaimHeldError(
                f"{key} is held by {current.holder or 'another invocation'} until epoch "
                f"{current.lease_expires_at}: it is being imported now; retry later",
                code="held",
            )
        # Released, or its holder died: take it over, but only from the version just read.
        record = replace(record, notification=current.notification or notification)
        return Claim(bucket, key, self._put(bucket, key, record, IfMatch=etag), record)

    def complete(self, claim: Claim, gmail_message_id: str) -> Claim:
        """Record the import on the claim we hold; ClaimLostError if our lease was taken over.

        A 412 can also answer a *retry* of a write that did succeed (its first response was
        lost, and the SDK or the caller sent it again): the stored claim then carries this
        completion's ``claimId`` — derived from our own claim's, so every attempt writes the same
        one and no other writer can — and the completion stands.
        """
        record = replace(
            claim.record,
            state="delivered",
            claim_id=f"{claim.record.claim_id}.delivered",
            gmail_message_id=gmail_message_id,
            delivered_at=int(self.now()),
        )
        try:
            etag = self._put(claim.bucket, claim.key, record, IfMatch=claim.etag)
        except ClaimLostError:
            stored, etag = self._read(claim.bucket, claim.key)
            if stored.claim_id != record.claim_id:
                raise
        return Claim(claim.bucket, claim.key, etag, record)

    def release(self, claim: Claim) -> None:
        """Give the claim up after a failed import, so a redelivery need not wait out the lease."""
        record = replace(
            claim.record, state="released", claim_id=f"{claim.record.claim_id}.released", lease_expires_at=0
        )
        self._put(claim.bucket, claim.key, record, IfMatch=claim.etag)

    def mark(self, bucket: str, message_id: str, mailbox: str, marker: str) -> None:
        """Write the empty marker ``claims/{messageId}/{mailbox}.{marker}`` (names.CLAIM_MARKERS).

        Unconditional and idempotent: a second write of the same marker changes nothing but its
        LastModified, which for ``queued`` is what it should say (when it was last handed over).
        """
        key = names.claim_marker_key(message_id, mailbox, marker)
        self._s3().put_object(Bucket=bucket, Key=key, Body=b"", ContentType="application/octet-stream")

    def notification(self, bucket: str, message_id: str, mailbox: str) -> dict[str, Any] | None:
        """The notification kept in the claim of (message, mailbox); None when it has none."""
        record, _ = self._read(bucket, _claim_key(message_id, mailbox))
        return record.notification

    # --- S3 -------------------------------------------------------------------------------------

    def _fresh(self, message_id: str, mailbox: str, holder: str) -> ClaimRecord:
        now = self.now()
        return ClaimRecord(
            state="claimed",
            message_id=message_id,
            mailbox=mailbox,
            holder=holder,
            claim_id=secrets.token_hex(16),
            claimed_at=int(now),
            lease_expires_at=math.ceil(now + self._lease_seconds),
        )

    def _put(self, bucket: str, key: str, record: ClaimRecord, **condition: str) -> str:
        """One conditional PutObject; the new version's ETag."""
        try:
            response = self._s3().put_object(
                Bucket=bucket, Key=key, Body=record.to_json(), ContentType="application/json", **condition
            )
        except Exception as exc:
            _raise_if_race(exc, key, "write")
            raise
        return str(response["ETag"])

    def _read(self, bucket: str, key: str) -> tuple[ClaimRecord, str]:
        try:
            response = self._s3().get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except Exception as exc:
            _raise_if_race(exc, key, "read")
            raise
        try:
            return ClaimRecord.from_json(data), str(response["ETag"])
        except (ValueError, TypeError) as exc:
            raise PermanentError(
                f"{key} is not a claim this forwarder can read ({exc}); delete it to let the message be delivered"
            ) from None


def _claim_key(message_id: str, mailbox: str) -> str:
    try:
        return names.claim_key(message_id, mailbox)
    except ValueError as exc:
        raise MalformedEventError(str(exc)) from None


def _raise_if_race(exc: Exception, key: str, action: str) -> None:
    """Turn S3's answers to a lost race into ClaimLostError (see the module docstring)."""
    code = aws_error_code(exc)
    if code in _RACE_CODES:
        raise ClaimLostError(f"lost the race for {key} ({action}: {code}); retry later", code=code) from None
