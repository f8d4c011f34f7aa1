"""Delivery claims (``sesmail.runtime.claims``): the protocol against moto's S3, then through the forwarder.

What moto does for the conditional writes the claims rely on is pinned first, so a moto upgrade
that changes it fails here, by name, rather than somewhere in a race. Where moto is weaker than
S3 (the check and the write are not one step; no 409 ConditionalRequestConflict) the fixtures
serialise PutObject and the tests inject the 409.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from sesmail import names
from sesmail.runtime import gmail
from sesmail.runtime.claims import AlreadyDelivered, Claim, ClaimHeldError, ClaimLostError, ClaimStore
from sesmail.runtime.errors import MalformedEventError, PermanentError, TransientError
from tests.conftest import BUCKET, REGION, InboundQueue, World, inject_aws_fault, raw_message

KEY = "claims/m1/default"


class Clock:
    """A wall clock the test moves (leases are epoch seconds)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _store(world: World, clock: Clock | None = None) -> ClaimStore:
    """A claim store with its own S3 client, as another Lambda container would have."""
    client = boto3.client("s3", region_name=REGION)
    return ClaimStore(lambda: client, now=clock or Clock())


def _holds(result: Claim | AlreadyDelivered) -> Claim:
    assert isinstance(result, Claim), result
    return result


def _stored(world: World) -> dict[str, Any]:
    claim = world.claim("m1")
    assert claim is not None
    return claim


# --- what moto enforces ---------------------------------------------------------------------------


def test_moto_enforces_if_none_match_and_if_match_on_put_object(world: World) -> None:
    first = world.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exists:
        world.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"2", IfNoneMatch="*")
    assert (exists.value.response["Error"]["Code"], exists.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (
        "PreconditionFailed",
        412,
    )
    with pytest.raises(ClientError) as stale:
        world.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"2", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert stale.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as missing:  # S3 too: If-Match on a key that does not exist
        world.s3.put_object(Bucket=BUCKET, Key="claims/none/default", Body=b"2", IfMatch=first["ETag"])
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    second = world.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"2", IfMatch=first["ETag"])
    assert second["ETag"] != first["ETag"]
    assert world.s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == b"2"


# --- the lease ---------------------------------------------------------------------------------------


def test_the_lease_covers_a_whole_invocation_and_ends_before_the_retries_give_up() -> None:
    assert names.CLAIM_LEASE_SECONDS == names.FORWARDER_TIMEOUT_SECONDS + names.CLAIM_CLOCK_SKEW_SECONDS
    assert names.CLAIM_LEASE_SECONDS > gmail.UPLOAD_TIMEOUT_SECONDS
    step_functions_patience = sum(
        names.RETRY_INITIAL_BACKOFF_SECONDS * names.RETRY_BACKOFF_RATE**n for n in range(names.RETRY_MAX_ATTEMPTS)
    )
    assert step_functions_patience > names.CLAIM_LEASE_SECONDS  # 30 + 60 + 120 > 150
    assert names.CLAIM_LEASE_SECONDS < names.INBOUND_QUEUE_VISIBILITY_SECONDS


# --- the protocol, one store per container -------------------------------------------------------------


def test_create_then_held_then_completed(world: World) -> None:
    clock = Clock()
    a, b = _store(world, clock), _store(world, clock)

    held = _holds(a.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-a"))
    assert held.key == KEY
    stored = _stored(world)
    assert stored["state"] == "claimed" and stored["holder"] == "req-a"
    assert stored["leaseExpiresAt"] == clock.now + names.CLAIM_LEASE_SECONDS
    with pytest.raises(ClaimHeldError, match="held by req-a"):
        b.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-b")

    a.complete(held, "gmail-1")

    assert _stored(world)["state"] == "delivered" and _stored(world)["gmailMessageId"] == "gmail-1"
    assert b.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-b") == AlreadyDelivered("gmail-1")
    clock.now += 10 * names.CLAIM_LEASE_SECONDS  # a completed claim never expires
    assert b.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-b") == AlreadyDelivered("gmail-1")


def test_claims_are_per_message_and_mailbox(world: World) -> None:
    store = _store(world)
    _holds(store.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req"))
    _holds(store.acquire(BUCKET, "m1", "family", "req"))
    _holds(store.acquire(BUCKET, "m2", names.DEFAULT_MAILBOX, "req"))
    listed = world.s3.list_objects_v2(Bucket=BUCKET, Prefix=names.CLAIMS_PREFIX)["Contents"]
    assert sorted(o["Key"] for o in listed) == ["claims/m1/default", "claims/m1/family", "claims/m2/default"]


def test_an_expired_lease_is_taken_over_by_exactly_one_of_two_takers(world: World) -> None:
    """B and C both find A's lease expired and read the same ETag. C's takeover lands while B is
    about to write: B's If-Match no longer holds, so B loses (transient) and C holds the claim."""
    clock = Clock()
    _holds(_store(world, clock).acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "dead"))
    clock.now += names.CLAIM_LEASE_SECONDS + 1
    b_client = boto3.client("s3", region_name=REGION)
    b, c = ClaimStore(lambda: b_client, now=clock), _store(world, clock)
    puts: list[Any] = []

    def c_takes_over_first(**kwargs: Any) -> None:
        puts.append(kwargs)
        if len(puts) == 2:  # B's create (412) was the first; this is B's takeover
            puts.append(c.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-c"))

    b_client.meta.events.register("before-call.s3.PutObject", c_takes_over_first)

    with pytest.raises(ClaimLostError, match="PreconditionFailed"):
        b.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-b")

    assert isinstance(puts[2], Claim)
    assert _stored(world)["holder"] == "req-c"
    with pytest.raises(ClaimHeldError, match="held by req-c"):
        b.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-b")


def test_a_released_claim_is_taken_over_at_once(world: World) -> None:
    clock = Clock()
    a, b = _store(world, clock), _store(world, clock)
    held = _holds(a.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-a"))

    a.release(held)

    assert _stored(world)["state"] == "released"
    _holds(b.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-b"))  # no waiting for the lease
    assert _stored(world)["holder"] == "req-b"


def test_completing_a_claim_that_was_taken_over_fails_and_keeps_the_takers(world: World) -> None:
    """A was slower than its lease: B took the claim over. A's completion must not overwrite it."""
    clock = Clock()
    a, b = _store(world, clock), _store(world, clock)
    slow = _holds(a.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-a"))
    clock.now += names.CLAIM_LEASE_SECONDS + 1
    taker = _holds(b.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-b"))

    with pytest.raises(ClaimLostError) as lost:
        a.complete(slow, "gmail-a")

    assert isinstance(lost.value, TransientError)
    assert _stored(world)["holder"] == "req-b" and _stored(world)["state"] == "claimed"
    b.complete(taker, "gmail-b")
    assert _stored(world)["gmailMessageId"] == "gmail-b"


def test_a_completion_sent_twice_recognises_its_own_first_write(world: World) -> None:
    """The first completion succeeded but its answer was lost; the retry's If-Match then fails
    (412) on the version the first one wrote, and must count as done, not as a lost race."""
    store = _store(world)
    held = _holds(store.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req"))
    store.complete(held, "gmail-1")

    done = store.complete(held, "gmail-1")

    assert done.record.gmail_message_id == "gmail-1"
    assert _stored(world)["gmailMessageId"] == "gmail-1"


def test_a_vanished_claim_is_a_lost_race_not_a_missing_message(world: World) -> None:
    """A claim removed between the 412 and the read (lifecycle, an operator) answers NoSuchKey,
    which the classifier would call permanent; for a claim it only means "try again"."""
    store = _store(world)
    _holds(store.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req"))
    client = boto3.client("s3", region_name=REGION)
    other = ClaimStore(lambda: client)

    def removed_meanwhile(**kwargs: Any) -> None:  # returning a value would stand in for S3's answer
        world.s3.delete_object(Bucket=BUCKET, Key=KEY)

    client.meta.events.register("before-call.s3.GetObject", removed_meanwhile)

    with pytest.raises(ClaimLostError, match="NoSuchKey"):
        other.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req-2")


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"state": "weird"}', b'{"state": "delivered"}'])
def test_a_claim_this_code_cannot_read_is_left_alone_as_permanent(world: World, body: bytes) -> None:
    world.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    with pytest.raises(PermanentError, match="delete it"):
        _store(world).acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req")
    assert world.s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == body  # untouched


def test_unknown_fields_are_ignored_so_a_later_version_may_add_some(world: World) -> None:
    record = {"version": 2, "state": "delivered", "gmailMessageId": "gmail-1", "notification": {"mail": {}}}
    world.s3.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps(record).encode())
    assert _store(world).acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req") == AlreadyDelivered("gmail-1")


@pytest.mark.parametrize("message_id", ["", "a/b", "..", ".hidden", "m1\n", "ghost\x00", "\ud800", "x" * 256])
def test_ids_that_cannot_name_a_claim_key_are_permanent(world: World, message_id: str) -> None:
    with pytest.raises(MalformedEventError, match="cannot name a claim"):
        _store(world).acquire(BUCKET, message_id, names.DEFAULT_MAILBOX, "req")


def test_claim_keys() -> None:
    ses_id = "0100018c5b6b3f8f-5b2c7a3e-aaaa-000000"
    assert names.claim_key(ses_id) == f"claims/{ses_id}/default"
    assert names.claim_key("m1", "family") == "claims/m1/family"
    with pytest.raises(ValueError, match="mailbox"):
        names.claim_key("m1", "Family/Kids")


# --- through the forwarder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("AccessDenied", 403, "PutObject failed: AccessDenied"),  # a policy without claims/*: retried
        ("InternalError", 500, "PutObject failed: InternalError"),
        ("SlowDown", 503, "PutObject failed: SlowDown"),
        # S3: another conditional write to the key is in progress.
        ("ConditionalRequestConflict", 409, "lost the race for claims/m1/default (write: ConditionalRequestConflict)"),
        # The create lost to a claim that was gone again when read.
        ("PreconditionFailed", 412, "lost the race for claims/m1/default (read: NoSuchKey)"),
    ],
)
def test_a_claim_write_that_fails_is_transient_and_imports_nothing(
    world: World, code: str, status: int, reason: str
) -> None:
    world.install_token()
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.s3, "PutObject", code, status=status)
    queue = InboundQueue(world)
    note = world.store_mail("m1")
    queue.send(note)

    assert queue.poll() is not None  # a batch item failure: SQS redelivers
    with pytest.raises(TransientError) as raised:  # the retry path names the class Step Functions retries
        world.handle({"source": names.RETRY_PROCESSOR_SOURCE, "notification": note})

    assert type(raised.value) is TransientError and reason in str(raised.value)
    assert world.google.import_requests == 0 and world.google.token_requests == []
    assert queue.depth() == 1
    assert world.drain(world.retry_queue_url) == [] and world.drain(world.inbound_dlq_url) == []
    assert world.sleeps == [1.0, 2.0] * 2  # in-process backoff on each path

    fault.times = fault.raised  # S3 answers again
    queue.run()
    assert [m.raw for m in world.google.messages] == [raw_message("m1")]
    assert _stored(world)["gmailMessageId"] == world.google.messages[0].id


@pytest.mark.parametrize("path", ["inbound", "retry"])
def test_a_completed_claim_is_already_delivered_without_calling_google(world: World, path: str) -> None:
    world.install_token()
    note = world.store_mail("m1")
    record = {"version": 1, "state": "delivered", "messageId": "m1", "mailbox": "default", "gmailMessageId": "gm-1"}
    world.s3.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps(record).encode())

    if path == "inbound":
        assert world.handle(world.sqs_event(note)) == {"batchItemFailures": []}
    else:
        answer = world.handle({"source": names.RETRY_PROCESSOR_SOURCE, "notification": note})
        assert answer == {"status": "already-delivered", "gmailMessageId": "gm-1"}

    assert world.google.import_requests == 0
    assert world.google.token_requests == []  # not even an access token was minted


def test_an_object_tagged_before_claims_existed_is_already_delivered(world: World) -> None:
    """Migration: the record of a delivery made by the tag-based release still counts."""
    world.install_token()
    note = world.store_mail("m1")
    world.s3.put_object_tagging(
        Bucket=BUCKET, Key="inbound/m1", Tagging={"TagSet": [{"Key": names.GMAIL_ID_TAG, "Value": "gm-old"}]}
    )

    answer = world.handle({"source": names.RETRY_PROCESSOR_SOURCE, "notification": note})

    assert answer == {"status": "already-delivered", "gmailMessageId": "gm-old"}
    assert world.google.import_requests == 0
    assert world.claim("m1") is None  # nothing written: the tag stays the record until it expires


def test_an_object_with_other_tags_is_still_claimed_and_delivered(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    world.s3.put_object_tagging(
        Bucket=BUCKET, Key="inbound/m1", Tagging={"TagSet": [{"Key": "retention", "Value": "legal"}]}
    )
    assert world.handle(world.sqs_event(note)) == {"batchItemFailures": []}
    [imported] = world.google.messages
    assert _stored(world)["gmailMessageId"] == imported.id


def test_a_hand_edited_message_id_that_cannot_name_a_claim_is_dead_lettered(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    note["mail"]["messageId"] = "../m1"  # the object exists; its id would name another key

    assert world.handle(world.sqs_event(note)) == {"batchItemFailures": []}

    [dead] = world.drain(world.inbound_dlq_url)
    assert "cannot name a claim" in dead["MessageAttributes"][names.ATTR_ERROR]["StringValue"]
    assert world.google.import_requests == 0


def test_claims_use_the_wall_clock_of_the_store(world: World) -> None:
    store = ClaimStore(lambda: world.s3)
    before = time.time()
    _holds(store.acquire(BUCKET, "m1", names.DEFAULT_MAILBOX, "req"))
    assert before + names.CLAIM_LEASE_SECONDS <= _stored(world)["leaseExpiresAt"] <= time.time() + 151
