"""The reconcile: what the bucket says is owed, and how the forwarder delivers it (moto, the fake Gmail).

Stored mail gets its age from moto's own clock (``stored_at`` patches it), the reconcile's "now"
from ``sesmail.runtime.reconcile.datetime``; everything else runs as it does in Lambda.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import moto.s3.models
import pytest

import sesmail.runtime.reconcile
from sesmail import names
from sesmail.local.edges import SimulatedClock
from sesmail.runtime.errors import TokenExpiredError
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from sesmail.runtime.reconcile import Planner
from tests.conftest import BUCKET, FakeContext, World, emitted_metrics, raw_message

NOW = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
#: The head SES writes above the sender's headers: its own Received line names the envelope recipient.
SES_RECEIVED = (
    b"Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n"
    b" by inbound-smtp.eu-west-1.amazonaws.com with SMTP id abc123\r\n"
    b" for %s;\r\n Sun, 20 Dec 2026 10:00:00 +0000 (UTC)\r\n"
)


@contextmanager
def stored_at(when: datetime) -> Iterator[None]:
    """Objects written in this block carry ``when`` as their LastModified (moto's S3 clock)."""
    with patch.object(moto.s3.models, "utcnow", lambda: when.astimezone(UTC).replace(tzinfo=None)):
        yield


@contextmanager
def reconciling_at(when: datetime) -> Iterator[None]:
    """The reconcile's clock."""
    with patch.object(sesmail.runtime.reconcile, "datetime", SimulatedClock(when).datetime_class()):
        yield


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def store(world: World, message_id: str, when: datetime, *, recipient: bytes | None = None) -> None:
    raw = raw_message(message_id)
    if recipient is not None:
        raw = SES_RECEIVED % recipient + raw
    with stored_at(when):
        world.s3.put_object(Bucket=BUCKET, Key=f"{names.INBOUND_PREFIX}{message_id}", Body=raw)


def mark(world: World, message_id: str, when: datetime, *leaves: str) -> None:
    """Claim objects and markers: ``default`` is the claim, ``default.delivered`` a marker."""
    with stored_at(when):
        for leaf in leaves:
            world.s3.put_object(Bucket=BUCKET, Key=f"{names.CLAIMS_PREFIX}{message_id}/{leaf}", Body=b"")


class S3Calls:
    """Counts the S3 requests a client makes, by operation."""

    def __init__(self, client: Any) -> None:
        self.counts: dict[str, int] = {}
        client.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] = self.counts.get(model.name, 0) + 1


def test_the_plan_comes_from_two_listings_and_one_read_per_message_never_seen(world: World) -> None:
    store(world, "m-settled", ago(days=9))
    mark(world, "m-settled", ago(days=9), "default", "default.delivered")
    store(world, "m-rejected", ago(days=8))
    mark(world, "m-rejected", ago(days=8), "default.rejected")
    store(world, "m-queued", ago(days=7))
    mark(world, "m-queued", ago(days=7), "default", "default.queued")
    store(world, "m-expired", ago(days=20))
    mark(world, "m-expired", ago(days=20), "default", "default.queued")
    store(world, "m-released", ago(days=3))
    mark(world, "m-released", ago(days=3), "default")
    store(world, "m-unseen", ago(days=2), recipient=b"bob@example.com")
    store(world, "m-young", ago(minutes=10))
    store(world, "AMAZON_SES_SETUP_NOTIFICATION", ago(days=30))  # SES's write test, not mail
    calls = S3Calls(world.s3)

    plan = Planner(lambda: world.s3, BUCKET, MailboxTable.single(), now=lambda: NOW).plan([names.DEFAULT_MAILBOX])

    assert [(o.message.message_id, o.claimed, o.queued) for o in plan.owed] == [
        ("m-expired", True, True),  # a queue held it for 14 days and let it go
        ("m-released", True, False),  # claimed, never queued: the inbound message was lost
        ("m-unseen", False, False),  # never reached the forwarder
    ]
    assert (plan.scanned, plan.settled, plan.waiting, plan.young) == (7, 2, 1, 1)
    unseen = plan.owed[2].recipients
    assert unseen is not None and unseen.envelope == ("bob@example.com",)
    assert calls.counts == {"ListObjectsV2": 2, "GetObject": 1}
    # Lost upstream, older than a day, never queued: m-released and m-unseen.
    assert plan.lost() == 2


def test_each_mailbox_plans_only_its_own_mail_and_unroutable_mail_is_reported_once(world: World) -> None:
    table = MailboxTable(
        (Mailbox("alice", ("alice@example.com",)), Mailbox("bob", ("bob@example.com",))), configured=True
    )
    store(world, "m-alice", ago(days=2), recipient=b"alice@example.com")
    store(world, "m-carol", ago(days=2), recipient=b"carol@example.com")  # no mailbox lists her
    store(world, "m-both", ago(days=3))
    mark(world, "m-both", ago(days=3), "alice", "alice.delivered", "bob")
    planner = Planner(lambda: world.s3, BUCKET, table, now=lambda: NOW)

    alice, bob = planner.plan(["alice"]), planner.plan(["bob"], with_unroutable=False)

    assert [(o.message.message_id, o.mailbox) for o in alice.owed] == [("m-alice", "alice")]
    assert [s.message_id for s in alice.unroutable] == ["m-carol"]
    assert [(o.message.message_id, o.mailbox) for o in bob.owed] == [("m-both", "bob")]
    assert bob.unroutable == ()


# --- the forwarder's reconcile ------------------------------------------------------------------------


def reconcile(world: World, *, at: datetime = NOW, context: FakeContext | None = None) -> dict[str, Any]:
    """One reconcile run at ``at``: what it writes to S3 is dated then too."""
    with reconciling_at(at), stored_at(at):
        answer: dict[str, Any] = world.handle({"source": names.RECONCILE_SOURCE}, context)
    return answer


def keys(world: World, prefix: str) -> set[str]:
    listed = world.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {str(o["Key"]) for o in listed}


def test_mail_the_forwarder_never_saw_is_delivered_oldest_first_once(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.install_token()
    for stored_id, days in (("m-2", 2), ("m-3", 3), ("m-1", 1.5)):
        store(world, stored_id, ago(days=days), recipient=b"bob@example.com")
    capsys.readouterr()

    first = reconcile(world)

    assert first["status"] == "complete" and (first["owed"], first["delivered"], first["lost"]) == (3, 3, 3)
    assert [message_id(m.raw) for m in world.google.messages] == [b"m-3", b"m-2", b"m-1"]
    assert all(m.label_ids == ["INBOX", "UNREAD"] for m in world.google.messages)
    assert {f"claims/{m}/default.delivered" for m in ("m-1", "m-2", "m-3")} <= keys(world, names.CLAIMS_PREFIX)
    assert emitted_metrics(capsys.readouterr().out)[names.METRIC_UNDELIVERED_FOUND] == 3

    again = reconcile(world, at=NOW + timedelta(days=1))

    assert (again["owed"], again["delivered"], again["lost"]) == (0, 0, 0)
    assert len(world.google.messages) == 3


def test_parked_mail_keeps_its_notification_in_the_claim_and_is_delivered_with_it(world: World) -> None:
    """SES said spam: the notification kept with the claim still says so when the queue has long let go."""
    token = world.install_token()
    world.google.revoke(token)
    note = world.store_mail("m-spam", spam="FAIL")
    world.handle(world.sqs_event(note))
    assert len(world.drain(world.retry_queue_url)) == 1  # parked, then lost: the queue forgot it
    claim = world.claim("m-spam")
    assert claim is not None and claim["state"] == "released" and claim["notification"] == note
    world.install_token()

    answer = reconcile(world, at=datetime.now(UTC) + timedelta(days=15))

    assert (answer["delivered"], answer["lost"]) == (1, 0)  # a queue held it: known, not lost upstream
    [message] = world.google.messages
    assert message.label_ids == ["SPAM"]


def test_mail_still_in_a_queue_is_left_to_the_drain(world: World) -> None:
    token = world.install_token()
    world.google.revoke(token)
    world.handle(world.sqs_event(world.store_mail("m-parked")))
    world.install_token()

    answer = reconcile(world, at=datetime.now(UTC) + timedelta(days=2))

    assert (answer["owed"], answer["waiting"], answer["delivered"]) == (0, 1, 0)
    assert world.google.messages == []


def test_a_dead_token_stops_the_reconcile_as_it_stops_a_drain(world: World) -> None:
    world.google.revoke(world.install_token())
    store(world, "m-1", ago(days=2))

    with pytest.raises(TokenExpiredError) as raised:
        reconcile(world)

    assert type(raised.value) is TokenExpiredError  # the contract name Step Functions matches
    assert world.drain(world.retry_queue_url) == []  # nothing parked: the bucket still owes it
    assert f"{names.CLAIMS_PREFIX}m-1/default.delivered" not in keys(world, names.CLAIMS_PREFIX)


def test_out_of_time_it_answers_partial_and_the_next_run_goes_on(world: World) -> None:
    world.install_token()
    for n in range(3):
        store(world, f"m-{n}", ago(days=3 - n), recipient=b"bob@example.com")
    no_time = FakeContext(remaining_seconds=names.INVOCATION_RESERVE_SECONDS)

    runs = [reconcile(world, context=no_time) for _ in range(4)]

    assert [(r["status"], r["handled"]) for r in runs] == [
        ("partial", 1),
        ("partial", 1),
        ("complete", 1),
        ("complete", 0),
    ]
    assert len(world.google.messages) == 3


def test_a_message_gmail_refuses_is_handed_to_the_retry_queue_with_its_reason(world: World) -> None:
    world.install_token()
    store(world, "m-bad", ago(days=2), recipient=b"bob@example.com")
    world.google.fail_gmail(400, {"error": {"code": 400, "message": "Invalid message", "status": "INVALID_ARGUMENT"}})

    answer = reconcile(world)

    [parked] = world.drain(world.retry_queue_url)
    assert names.ATTR_ERROR in parked["MessageAttributes"]
    assert json.loads(parked["Body"])["receipt"]["action"]["objectKey"] == "inbound/m-bad"
    assert answer["delivered"] == 0
    assert reconcile(world)["waiting"] == 1  # the drain that follows has it now


def test_a_reconcile_racing_a_drain_imports_the_message_once(world: World) -> None:
    """The drain holds the claim mid-import; the reconcile finds it held and hands the message on."""
    world.install_token()
    note = world.store_mail("m-race")
    release = threading.Event()
    world.google.hold_imports(release)
    drain = threading.Thread(
        target=world.cold_start().handle,
        args=({"source": names.RETRY_PROCESSOR_SOURCE, "notification": json.dumps(note)}, FakeContext()),
    )
    drain.start()
    try:
        while world.claim("m-race") is None:
            threading.Event().wait(0.01)
        answer = reconcile(world, at=datetime.now(UTC) + timedelta(days=1))
    finally:
        release.set()
        drain.join()

    assert len(world.google.messages) == 1
    assert answer["delivered"] == 0
    # The reconcile found the claim held and parked the message; its redelivery is a duplicate.
    [parked] = world.drain(world.retry_queue_url)
    again = world.handle({"source": names.RETRY_PROCESSOR_SOURCE, "notification": parked["Body"]})
    assert again["status"] == "already-delivered" and len(world.google.messages) == 1


def message_id(raw: bytes | None) -> bytes:
    return (raw or b"").split(b"Message-ID: <")[1].split(b"@")[0]
