"""What the bucket holds that no queue will deliver: the reconcile's plan (DESIGN.md, "Reconcile").

Queues move mail quickly, but they forget: SQS keeps a message 14 days at most, and a broken
SNS -> SQS subscription never hands the forwarder anything. The raw message stays in S3 for
``retainDays`` (at least 28), so the bucket is the record of what is owed. The plan is made from
two LIST sweeps, never a GET per message:

- ``inbound/{messageId}``: every stored message, with the time SES stored it;
- ``claims/{messageId}/...``: each (message, mailbox)'s claim and its markers (names.CLAIM_MARKERS):
  ``delivered`` and ``rejected`` settle a mailbox; ``queued`` says a queue holds it (for
  RECONCILE_QUEUED_WAIT_SECONDS after its LastModified).

A (message, mailbox) is **owed** when it is older than RECONCILE_MIN_AGE_SECONDS (the inbound path
may still be on it), not settled, and not in a queue. Which mailboxes a message is for comes from
its claims; for a message the forwarder never saw (no key under ``claims/`` at all) from the
headers SES stored (:mod:`sesmail.runtime.stored_recipients`), one ranged GET each.

What the plan cannot know: a mailbox the forwarder never even started on while it settled
another mailbox of the same message (it claims one mailbox after another), when the inbound
message was then lost as well. Delivery goes through the forwarder's normal path
(:class:`sesmail.runtime.forwarder.Forwarder`), so the claims keep a reconcile racing a drain, the
inbound path or another reconcile from importing anything twice.

Runtime code: the standard library only; the S3 client is handed in. The operator's
``--reconcile --dry-run`` prints the same plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sesmail import names
from sesmail.runtime.errors import aws_error_code
from sesmail.runtime.events import SETUP_NOTIFICATION_ID
from sesmail.runtime.mailboxes import MailboxTable
from sesmail.runtime.stored_recipients import StoredRecipients, route_stored, stored_recipients
from sesmail.runtime.verdicts import HEADER_PEEK_BYTES


@dataclass(frozen=True)
class Stored:
    """One raw message under ``inbound/``."""

    message_id: str
    key: str
    stored_at: datetime


@dataclass
class _Outcome:
    """What ``claims/{messageId}/{mailbox}*`` says about one (message, mailbox)."""

    claimed: bool = False
    delivered: bool = False
    rejected: bool = False
    queued_at: datetime | None = None


@dataclass(frozen=True)
class Owed:
    """A (message, mailbox) the reconcile delivers."""

    message: Stored
    mailbox: str
    #: A claim exists: it keeps the notification the forwarder first delivered from.
    claimed: bool
    #: A queue held it once (parked or dead-lettered): known mail, not lost upstream.
    queued: bool
    #: For a message the forwarder never saw: what its stored headers say (else None).
    recipients: StoredRecipients | None = None


@dataclass(frozen=True)
class Plan:
    #: Oldest first: the order the reconcile delivers in.
    owed: tuple[Owed, ...]
    #: Stored messages looked at (setup notification and foreign keys aside).
    scanned: int = 0
    #: (message, mailbox) pairs already delivered, or rejected by the sender-authentication policy.
    settled: int = 0
    #: Pairs a queue still holds: the drain (or the operator, for a DLQ) has them.
    waiting: int = 0
    #: Messages too young to judge: the inbound path may still be delivering them.
    young: int = 0
    #: Messages the forwarder never saw whose headers name no mailbox.
    unroutable: tuple[Stored, ...] = ()
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def lost(self, owed: Sequence[Owed] | None = None) -> int:
        """Pairs (of ``owed``, default all) older than a day that no queue ever held: mail the
        inbound path lost (metric UndeliveredMailFound)."""
        cutoff = self._alarm_cutoff()
        return sum(1 for o in (self.owed if owed is None else owed) if not o.queued and o.message.stored_at <= cutoff)

    def lost_unroutable(self) -> int:
        """Unroutable messages older than a day: lost too, to no mailbox."""
        return sum(1 for s in self.unroutable if s.stored_at <= self._alarm_cutoff())

    def _alarm_cutoff(self) -> datetime:
        return self.now - timedelta(seconds=names.RECONCILE_ALARM_AGE_SECONDS)


class Planner:
    """Makes the plan for some mailboxes of the stack from the mail bucket."""

    def __init__(
        self,
        s3: Callable[[], Any],
        bucket: str,
        table: MailboxTable,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        readers: int = names.RECONCILE_HEAD_READERS,
    ) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._table = table
        self._now = now
        self._readers = readers

    def plan(self, mailboxes: Sequence[str], *, with_unroutable: bool = True) -> Plan:
        """The plan for ``mailboxes`` (names of the table); ``with_unroutable`` reports messages
        no mailbox is for (one reconcile per stack should, not one per mailbox)."""
        now = self._now()
        wanted = [m for m in self._table.names if m in set(mailboxes)]
        young_after = now - timedelta(seconds=names.RECONCILE_MIN_AGE_SECONDS)
        queue_since = now - timedelta(seconds=names.RECONCILE_QUEUED_WAIT_SECONDS)
        claims = self._claims()
        stored = list(self._stored())
        judged = [s for s in stored if s.stored_at <= young_after]
        unseen = [s for s in judged if s.message_id not in claims]
        found = dict(zip((s.message_id for s in unseen), self._recipients(unseen), strict=True))
        owed: list[Owed] = []
        settled = waiting = 0
        unroutable: list[Stored] = []
        for message in judged:
            if message.message_id in found:
                recipients = found[message.message_id]
                targets = route_stored(self._table, recipients)
                if not targets:
                    unroutable.append(message)
                owed.extend(Owed(message, m, False, False, recipients) for m in wanted if m in targets)
                continue
            outcomes = claims[message.message_id]
            for mailbox in wanted:
                outcome = outcomes.get(mailbox)
                if outcome is None:
                    continue
                if outcome.delivered or outcome.rejected:
                    settled += 1
                elif outcome.queued_at is not None and outcome.queued_at > queue_since:
                    waiting += 1
                else:
                    owed.append(Owed(message, mailbox, outcome.claimed, outcome.queued_at is not None))
        owed.sort(key=lambda o: (o.message.stored_at, o.message.message_id, wanted.index(o.mailbox)))
        return Plan(
            owed=tuple(owed),
            scanned=len(stored),
            settled=settled,
            waiting=waiting,
            young=len(stored) - len(judged),
            unroutable=tuple(unroutable) if with_unroutable else (),
            now=now,
        )

    # --- S3 ---------------------------------------------------------------------------------------

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = (
            self._s3()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": names.RECONCILE_LIST_PAGE_SIZE})
        )
        for page in pages:
            yield from page.get("Contents", [])

    def _stored(self) -> Iterator[Stored]:
        for obj in self._objects(names.INBOUND_PREFIX):
            key = str(obj["Key"])
            message_id = key[len(names.INBOUND_PREFIX) :]
            if message_id == SETUP_NOTIFICATION_ID or not _is_message_id(message_id):
                continue
            yield Stored(message_id, key, _utc(obj["LastModified"]))

    def _claims(self) -> dict[str, dict[str, _Outcome]]:
        """message id -> mailbox -> what its claim and markers say."""
        claims: dict[str, dict[str, _Outcome]] = {}
        for obj in self._objects(names.CLAIMS_PREFIX):
            message_id, slash, leaf = str(obj["Key"])[len(names.CLAIMS_PREFIX) :].rpartition("/")
            if not slash:
                continue
            mailbox, dot, marker = leaf.partition(".")
            outcome = claims.setdefault(message_id, {}).setdefault(mailbox, _Outcome())
            if not dot:
                outcome.claimed = True
            elif marker == names.CLAIM_MARKER_DELIVERED:
                outcome.delivered = True
            elif marker == names.CLAIM_MARKER_REJECTED:
                outcome.rejected = True
            elif marker == names.CLAIM_MARKER_QUEUED:
                outcome.queued_at = _utc(obj["LastModified"])
        return claims

    def _recipients(self, unseen: Sequence[Stored]) -> list[StoredRecipients]:
        """What each unseen message's stored headers say, read in parallel (ranged GETs)."""
        if not unseen:
            return []
        with ThreadPoolExecutor(max_workers=self._readers) as pool:
            return list(pool.map(self._head_recipients, unseen))

    def _head_recipients(self, message: Stored) -> StoredRecipients:
        try:
            response = self._s3().get_object(
                Bucket=self.bucket, Key=message.key, Range=f"bytes=0-{HEADER_PEEK_BYTES - 1}"
            )
        except Exception as exc:
            if aws_error_code(exc) in ("NoSuchKey", "404"):
                return StoredRecipients((), ())  # expired meanwhile: nothing to route
            raise
        body = response["Body"]
        try:
            return stored_recipients(bytes(body.read()))
        finally:
            body.close()


def notification_for(owed: Owed, bucket: str) -> dict[str, Any]:
    """An S3-action notification, as SES would have sent it, for a message the forwarder never saw.

    Without SES's verdicts (the deliverer then reads them from the stored headers) and with the
    recipients the headers name: SES's envelope recipients when its Received header has them.
    """
    recipients = owed.recipients or StoredRecipients((), ())
    timestamp = owed.message.stored_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "notificationType": "Received",
        "mail": {"timestamp": timestamp, "messageId": owed.message.message_id},
        "receipt": {
            "timestamp": timestamp,
            "recipients": list(recipients.envelope or recipients.written),
            "action": {
                "type": "S3",
                "bucketName": bucket,
                "objectKeyPrefix": names.INBOUND_PREFIX,
                "objectKey": owed.message.key,
            },
        },
    }


def _is_message_id(message_id: str) -> bool:
    try:
        names.claim_key(message_id)
    except ValueError:
        return False
    return True


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
