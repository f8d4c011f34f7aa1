"""Duplicates: what the delivery claim guarantees, and precisely what it does not.

The guarantee — at most one import per (message, mailbox), sequential *and* concurrent: before
importing, a delivery claims ``claims/{messageId}/{mailbox}`` with an S3 conditional write
(``If-None-Match: *``), and completes it with the Gmail id after the import (``If-Match`` on the
ETag it wrote). A second delivery finds the claim: completed → ``already-delivered``; held with a
live lease → transient, back off (SQS or Step Functions redeliver, and by then it is completed);
released or its lease expired (the holder failed or died) → taken over with ``If-Match`` on the
ETag it read, so of two takers only one wins. That covers SQS redelivering a record, a Lambda that
died after importing but before acknowledging, the same notification parked twice and drained at
once, the inbound path followed by the retry processor, an operator's redrive, and any number of
cold containers: the record lives in S3, not in a container.

Outside the guarantee, each pinned below so a change is noticed:

- a Gmail answer lost after Gmail accepted the import (connection reset, timeout on the response)
  is a transient failure; the retry imports again and Gmail holds two copies: its import API has
  no idempotency key, so at-least-once is the best any client can do there;
- the import succeeded but completing the claim failed (after in-process retries) or the Lambda
  died between the two: the record is acknowledged (the mail is in Gmail), ``delivery.record_failed``
  is logged, and the claim still says ``claimed``. Redeliveries back off while its lease
  (``CLAIM_LEASE_SECONDS``) lasts; one after that imports again.

moto honours ``IfNoneMatch`` and ``IfMatch`` on PutObject but does not make the check and the write
one step; the ``world`` and ``drain`` fixtures serialise its PutObject as S3 does
(``tests/conftest.py: atomic_s3_conditional_writes``).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from sesmail import names
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.claims import ClaimHeldError, ClaimStore
from sesmail.runtime.forwarder import Forwarder
from sesmail.runtime.http import Body, HttpClient, Response
from tests.conftest import FakeContext, InboundQueue, World, inject_aws_fault, raw_message, sqs_record
from tests.drain_world import DrainWorld

RETRIED_LATER = {"batchItemFailures": [{"itemIdentifier": "sqs-0"}]}


def _gmail_id_on_claim(world: World, message_id: str) -> str | None:
    claim = world.claim(message_id)
    return claim.get("gmailMessageId") if claim else None


def _retry_event(note: dict[str, Any]) -> dict[str, Any]:
    return {"source": names.RETRY_PROCESSOR_SOURCE, "notification": json.dumps(note)}


def _forwarder(world: World, http: HttpClient | None = None) -> Forwarder:
    """One more cold container of the forwarder, beside ``world.forwarder``."""
    return Forwarder(world.settings(), AwsClients(), http=http, sleep=world.sleeps.append)


def _metrics(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


# --- the sequential guarantee ---------------------------------------------------------------------


def test_same_record_redelivered_to_a_warm_container_imports_once(world: World) -> None:
    world.install_token()
    event = world.sqs_event(world.store_mail("m1"))
    assert world.handle(event) == {"batchItemFailures": []}
    assert world.handle(event) == {"batchItemFailures": []}
    [imported] = world.google.messages
    assert _gmail_id_on_claim(world, "m1") == imported.id


def test_same_notification_through_two_cold_containers_imports_once(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    assert _forwarder(world).handle(world.sqs_event(note), FakeContext()) == {"batchItemFailures": []}
    assert _forwarder(world).handle(world.sqs_event(note), FakeContext()) == {"batchItemFailures": []}
    assert len(world.google.messages) == 1


def test_inbound_then_retry_path_imports_once(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    world.handle(world.sqs_event(note))
    world.cold_start()
    answer = world.handle(_retry_event(note))
    [imported] = world.google.messages
    assert answer == {"status": "already-delivered", "gmailMessageId": imported.id}


def test_a_lambda_that_died_before_acknowledging_does_not_import_twice(world: World) -> None:
    """The import and its claim completion happened, the SQS delete did not (timeout, crash)."""
    world.install_token()
    queue = InboundQueue(world)
    queue.send(world.store_mail("m1"))
    [message] = world.sqs.receive_message(QueueUrl=queue.url, VisibilityTimeout=0)["Messages"]
    world.handle({"Records": [sqs_record(message["Body"], message["MessageId"])]})  # never deleted

    queue.run()

    assert queue.depth() == 0
    assert len(world.google.messages) == 1


def test_parked_twice_drained_in_separate_runs_imports_once(drain: DrainWorld) -> None:
    """Token dead: a record is parked; later (another outage) the same notification is parked
    again. Each renewal's drain finds the claim the previous one completed."""
    drain.google.revoke(drain.install_token())
    note = drain.store_mail("m1")
    drain.handle({"Records": [sqs_record(json.dumps(note), "sqs-m1")]})
    drain.install_token()  # the operator renews
    assert drain.run()["status"] == "SUCCEEDED"
    drain.handle({"Records": [sqs_record(json.dumps(note), "sqs-m1")]})  # delivered: nothing parked now
    drain.sqs.send_message(QueueUrl=drain.retry_queue_url, MessageBody=json.dumps(note))  # a redriven copy

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 1, "failed": 0, "batches": 1, "reconciled": 0}
    assert [m.raw for m in drain.google.messages] == [raw_message("m1")]
    assert drain.queue_depth(drain.retry_queue_url) == 0


# --- the concurrent guarantee ---------------------------------------------------------------------


def _tell_when_a_claim_is_found_held(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set when a delivery finds the claim held by another: the race really happened.

    Holding the claim holder's import until then makes the race certain however loaded the
    machine is, where a slowed import only makes it likely.
    """
    raced = threading.Event()
    acquire = ClaimStore.acquire

    def acquire_and_tell(store: ClaimStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return acquire(store, *args, **kwargs)
        except ClaimHeldError:
            raced.set()
            raise

    monkeypatch.setattr(ClaimStore, "acquire", acquire_and_tell)
    return raced


def test_two_deliveries_at_the_same_moment_import_once(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Two containers get the same notification at once (SQS handed out a duplicate while the
    first copy was in flight). Gmail's import is held so both are in flight together: exactly
    one claims and imports; the other finds a live claim, backs off (a batch item failure) and,
    redelivered, answers already-delivered."""
    world.install_token()
    note = world.store_mail("m1")
    # The claim holder's import waits until the other delivery has given up (however loaded the
    # machine): only then is "backs off, redelivered later" the one possible outcome.
    gave_up = threading.Event()
    world.google.hold_imports(gave_up)
    forwarders = {"a": _forwarder(world), "b": _forwarder(world)}
    start = threading.Barrier(len(forwarders))
    results: dict[str, Any] = {}

    def deliver(name: str) -> None:
        start.wait()
        results[name] = forwarders[name].handle(world.sqs_event(note), FakeContext(request_id=name))
        if results[name] == RETRIED_LATER:
            gave_up.set()

    threads = [threading.Thread(target=deliver, args=(name,)) for name in forwarders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    [winner] = [name for name, result in results.items() if result == {"batchItemFailures": []}]
    [loser] = [name for name, result in results.items() if result == RETRIED_LATER]
    [imported] = world.google.messages
    assert world.google.import_requests == 1
    claim = world.claim("m1")
    assert claim is not None and claim["state"] == "delivered"
    assert (claim["holder"], claim["gmailMessageId"]) == (winner, imported.id)
    assert world.sleeps == [1.0, 2.0]  # the loser's in-process backoff (recorded, not slept)
    assert "is being imported now" in capsys.readouterr().out

    assert forwarders[loser].handle(world.sqs_event(note), FakeContext(request_id=loser)) == {"batchItemFailures": []}

    assert _metrics(capsys.readouterr().out)[0][names.METRIC_ALREADY_DELIVERED] == 1
    assert len(world.google.messages) == 1


def test_a_delivery_racing_an_import_in_flight_backs_off_then_finds_it_delivered(world: World) -> None:
    """Deterministic replay of the race: B runs entirely while A holds the claim and has not yet
    uploaded. B must not import; the retry path reports it transient by name."""
    world.install_token()
    note = world.store_mail("m1")
    a, b = _forwarder(world), _forwarder(world)
    raced: list[Any] = []

    def b_delivers_now(**kwargs: Any) -> None:
        if not raced:  # A's first PutObject is its claim; B is delivered right after it
            try:
                raced.append(b.handle(_retry_event(note), FakeContext(request_id="b")))
            except Exception as exc:
                raced.append(exc)

    a._clients.s3.meta.events.register("after-call.s3.PutObject", b_delivers_now)

    assert a.handle(world.sqs_event(note), FakeContext(request_id="a")) == {"batchItemFailures": []}

    [error] = raced
    assert type(error).__name__ == "TransientError"  # Step Functions retries it with the backoff
    assert "claims/m1/default is held by a" in str(error)
    [imported] = world.google.messages
    assert b.handle(_retry_event(note), FakeContext(request_id="b")) == {
        "status": "already-delivered",
        "gmailMessageId": imported.id,
    }


class _SandboxKilled(BaseException):
    """Lambda killing the sandbox (timeout, out of memory): no Python handler runs after it."""


class _DiesBeforeUploading(HttpClient):
    """The container dies as it starts the upload: the claim is written, Gmail never got the mail."""

    def request(self, method: str, url: str, *, body: Body = None, **kwargs: Any) -> Response:
        if names.GMAIL_IMPORT_UPLOAD_PATH in url:
            raise _SandboxKilled
        return super().request(method, url, body=body, **kwargs)


def test_a_holder_that_died_mid_import_is_taken_over_once_its_lease_expires(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    dead = _forwarder(world, http=_DiesBeforeUploading())
    with pytest.raises(_SandboxKilled):
        dead.handle(world.sqs_event(note), FakeContext(request_id="dead"))
    held = world.claim("m1")
    assert held is not None and held["state"] == "claimed" and held["holder"] == "dead"
    assert held["leaseExpiresAt"] - held["claimedAt"] in (names.CLAIM_LEASE_SECONDS, names.CLAIM_LEASE_SECONDS + 1)

    next_one = _forwarder(world)
    assert next_one.handle(world.sqs_event(note), FakeContext(request_id="next")) == RETRIED_LATER  # lease live
    assert world.google.import_requests == 0

    next_one._deliverer.claims.now = lambda: time.time() + names.CLAIM_LEASE_SECONDS + 1  # the lease has passed
    assert next_one.handle(world.sqs_event(note), FakeContext(request_id="next")) == {"batchItemFailures": []}

    [imported] = world.google.messages
    assert imported.raw == raw_message("m1")
    claim = world.claim("m1")
    assert claim is not None and claim["state"] == "delivered"
    assert (claim["holder"], claim["gmailMessageId"]) == ("next", imported.id)
    assert next_one.handle(world.sqs_event(note), FakeContext()) == {"batchItemFailures": []}
    assert len(world.google.messages) == 1


def test_two_copies_in_one_retry_batch_import_once(
    drain: DrainWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The concurrent case on the retry path. The inbound record was parked, then its invocation
    failed as a whole (timeout, crash) and SQS redelivered it: parked twice. One receive returns
    both copies and the Map delivers up to RETRY_MAP_MAX_CONCURRENCY (2) items at once: one
    copy imports, the other backs off on the live claim and then finds it delivered. Both copies
    are deleted, nothing is dead-lettered."""
    drain.google.revoke(drain.install_token())
    note = drain.store_mail("m1")
    for attempt in (1, 2):
        record = {**sqs_record(json.dumps(note), "sqs-m1"), "attributes": {"ApproximateReceiveCount": str(attempt)}}
        drain.handle({"Records": [record]})
    assert drain.queue_depth(drain.retry_queue_url) == 2
    drain.install_token()
    # Both copies in flight at once, however loaded the machine (see the helper).
    drain.google.hold_imports(_tell_when_a_claim_is_found_held(monkeypatch))
    # The in-process backoff really waits here (briefly), so the copy that lost the claim gives
    # the winner's import time to finish instead of spending every Step Functions retry at once.
    drain.sleeps = _BriefRealSleep()  # type: ignore[assignment]

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 2, "failed": 0, "batches": 1, "reconciled": 0}
    assert [m.raw for m in drain.google.messages] == [raw_message("m1")]
    assert drain.google.import_requests == 1
    assert "is being imported now" in capsys.readouterr().out  # the copies did race for the claim
    assert drain.queue_depth(drain.retry_queue_url) == 0
    assert drain.queue_depth(drain.retry_dlq_url) == 0


class _BriefRealSleep(list[float]):
    """Records each in-process backoff like ``world.sleeps``, and really sleeps a fifth of a second."""

    def append(self, seconds: float) -> None:
        super().append(seconds)
        time.sleep(min(seconds, 0.2))


# --- what is outside it (documented, and pinned so a change is noticed) ------------------------------


class _LosesFirstImportAnswer(HttpClient):
    """Gmail accepts the import, then the connection drops before the answer arrives."""

    lost = 0

    def request(self, method: str, url: str, *, body: Body = None, **kwargs: Any) -> Response:
        response = super().request(method, url, body=body, **kwargs)
        if names.GMAIL_IMPORT_UPLOAD_PATH in url and not self.lost:
            self.lost += 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return response


def test_a_lost_gmail_answer_is_retried_and_duplicates(world: World) -> None:
    world.install_token()
    http = _LosesFirstImportAnswer()

    assert _forwarder(world, http).handle(world.sqs_event(world.store_mail("m1")), FakeContext()) == {
        "batchItemFailures": []
    }

    assert http.lost == 1
    assert world.sleeps == [names.INPROCESS_BACKOFF_SECONDS]
    assert [m.raw for m in world.google.messages] == [raw_message("m1")] * 2
    assert _gmail_id_on_claim(world, "m1") == world.google.messages[1].id  # released, then taken over


def test_a_failed_claim_completion_leaves_a_window_after_the_lease(world: World) -> None:
    """Imported, but every completion write failed: acknowledged and logged. Redeliveries back
    off while the lease lasts; one after it imports a second time (the honest window)."""
    world.install_token()
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.s3, "PutObject", "InternalError", skip=1)
    event = world.sqs_event(world.store_mail("m1"))

    assert world.handle(event) == {"batchItemFailures": []}  # delivered, acknowledged, logged
    claim = world.claim("m1")
    assert claim is not None and claim["state"] == "claimed" and "gmailMessageId" not in claim
    fault.times = fault.raised  # S3 works again

    assert world.handle(event) == RETRIED_LATER  # within the lease: it backs off
    assert len(world.google.messages) == 1

    forwarder._deliverer.claims.now = lambda: time.time() + names.CLAIM_LEASE_SECONDS + 1
    assert world.handle(event) == {"batchItemFailures": []}  # an operator's redrive, after the lease

    assert len(world.google.messages) == 2
    assert _gmail_id_on_claim(world, "m1") == world.google.messages[1].id


@pytest.mark.parametrize("path", ["inbound", "retry"])
def test_already_delivered_is_counted_not_imported(world: World, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    world.install_token()
    note = world.store_mail("m1")
    world.handle(world.sqs_event(note))
    capsys.readouterr()
    world.handle(world.sqs_event(note) if path == "inbound" else _retry_event(note))
    [metrics] = _metrics(capsys.readouterr().out)
    assert metrics[names.METRIC_ALREADY_DELIVERED] == 1
    assert names.METRIC_FORWARDED not in metrics
    assert len(world.google.messages) == 1
