"""Duplicates: what the S3 ``gmail-message-id`` tag guarantees, and precisely what it does not.

The guarantee — at most one import when deliveries of one message are *sequential*: a delivery
checks the object's tags first (GetObject's ``TagCount``, then the tag set when there are tags)
and answers ``already-delivered`` when the tag is there. That
covers SQS redelivering a record (visibility timeout, a Lambda that died after importing but
before acknowledging), the same notification parked twice, the inbound path followed by the
retry processor, an operator's redrive, and any number of cold containers: the record lives on
the S3 object, not in a container.

What can happen concurrently — the tag is a record written *after* the import, not a lock.
Two invocations that deliver the same message at the same moment can both read the tags before
either has written one; both then import, Gmail holds the message twice (two Gmail ids), and the
tag ends up naming whichever import wrote last. The window is the duration of one import, from
the GetObject to the tag write. It opens only when two copies of one notification are in flight
at once:

- SQS hands out a duplicate of an inbound record while the first copy is being delivered
  (standard queues deliver at least once; rare);
- two copies sit in the retry queue (the invocation that parked a record failed as a whole
  afterwards, so SQS redelivered it and it was parked again — the forwarder stops starting
  records once its time is up to make that rare — or an operator redrove a copy) and one
  receive hands both to the Map, which delivers ``RETRY_MAP_MAX_CONCURRENCY`` (2) at a time.

Never more than one import per copy, and never a loss: each copy is deleted only once Gmail has
the message.

Also outside the guarantee, each tested below:

- a Gmail answer lost after Gmail accepted the import (connection reset, timeout on the response)
  is a transient failure; the retry imports again and Gmail holds two copies: its import API
  has no idempotency key, so at-least-once is the best any client can do there;
- if writing the tag fails after a successful import, the record is still acknowledged (the mail
  is in Gmail) and the failure logged as ``delivery.record_failed``; but nothing now records the
  import, so a later redelivery or redrive of the same notification imports it again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sesmail import names
from sesmail.aws import AwsClients
from sesmail.forwarder import Forwarder
from sesmail.http import Body, HttpClient, Response
from tests.conftest import BUCKET, FakeContext, InboundQueue, World, inject_aws_fault, raw_message, sqs_record
from tests.drain_world import DrainWorld


def _tag(world: World, message_id: str) -> str | None:
    tags = world.s3.get_object_tagging(Bucket=BUCKET, Key=f"{names.INBOUND_PREFIX}{message_id}")["TagSet"]
    return next((t["Value"] for t in tags if t["Key"] == names.GMAIL_ID_TAG), None)


def _retry_event(note: dict[str, Any]) -> dict[str, Any]:
    return {"source": names.RETRY_PROCESSOR_SOURCE, "notification": json.dumps(note)}


# --- the sequential guarantee ---------------------------------------------------------------------


def test_same_record_redelivered_to_a_warm_container_imports_once(world: World) -> None:
    world.install_token()
    event = world.sqs_event(world.store_mail("m1"))
    assert world.handle(event) == {"batchItemFailures": []}
    assert world.handle(event) == {"batchItemFailures": []}
    [imported] = world.google.messages
    assert _tag(world, "m1") == imported.id


def test_same_notification_through_two_cold_containers_imports_once(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    first = Forwarder(world.settings(), AwsClients(), sleep=world.sleeps.append)
    second = Forwarder(world.settings(), AwsClients(), sleep=world.sleeps.append)
    assert first.handle(world.sqs_event(note), FakeContext()) == {"batchItemFailures": []}
    assert second.handle(world.sqs_event(note), FakeContext()) == {"batchItemFailures": []}
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
    """The import and its tag happened, the SQS delete did not (timeout, crash): SQS redelivers."""
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
    again. Each renewal's drain sees the tag the previous one wrote."""
    drain.google.revoke(drain.install_token())
    note = drain.store_mail("m1")
    drain.handle({"Records": [sqs_record(json.dumps(note), "sqs-m1")]})
    drain.install_token()  # the operator renews
    assert drain.run()["status"] == "SUCCEEDED"
    drain.handle({"Records": [sqs_record(json.dumps(note), "sqs-m1")]})  # delivered: nothing parked now
    drain.sqs.send_message(QueueUrl=drain.retry_queue_url, MessageBody=json.dumps(note))  # a redriven copy

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 1, "failed": 0, "batches": 1}
    assert [m.raw for m in drain.google.messages] == [raw_message("m1")]
    assert drain.queue_depth(drain.retry_queue_url) == 0


# --- what is outside it (documented, and pinned so a change is noticed) ------------------------------


def test_two_copies_in_one_retry_batch_are_never_lost_and_may_both_import(drain: DrainWorld) -> None:
    """The concurrent case on the retry path. The inbound record was parked, then its invocation
    failed as a whole (timeout, crash) and SQS redelivered it: parked twice. One receive returns
    both copies and the Map delivers up to RETRY_MAP_MAX_CONCURRENCY (2) items at once, so the
    two copies can race exactly like two inbound invocations: one or two imports, both copies
    deleted, nothing in the DLQ."""
    drain.google.revoke(drain.install_token())
    note = drain.store_mail("m1")
    for attempt in (1, 2):
        record = {**sqs_record(json.dumps(note), "sqs-m1"), "attributes": {"ApproximateReceiveCount": str(attempt)}}
        drain.handle({"Records": [record]})
    assert drain.queue_depth(drain.retry_queue_url) == 2
    drain.install_token()

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 2, "failed": 0, "batches": 1}
    assert 1 <= len(drain.google.messages) <= 2
    assert {m.raw for m in drain.google.messages} == {raw_message("m1")}
    assert drain.queue_depth(drain.retry_queue_url) == 0
    assert drain.queue_depth(drain.retry_dlq_url) == 0


def test_concurrent_deliveries_of_one_message_can_both_import(world: World) -> None:
    """Deterministic replay of the race: B runs entirely while A is between its GetObject (whose
    TagCount said "no tags") and its upload. Both saw no tag, both import; the tag names A, which
    wrote last."""
    world.install_token()
    note = world.store_mail("m1")
    a = Forwarder(world.settings(), AwsClients(), sleep=world.sleeps.append)
    b = Forwarder(world.settings(), AwsClients(), sleep=world.sleeps.append)
    raced: list[dict[str, Any]] = []

    def b_delivers_now(**kwargs: Any) -> None:
        if not raced:
            raced.append(b.handle(world.sqs_event(note), FakeContext(request_id="b")))

    a._clients.s3.meta.events.register("after-call.s3.GetObject", b_delivers_now)

    assert a.handle(world.sqs_event(note), FakeContext(request_id="a")) == {"batchItemFailures": []}

    assert raced == [{"batchItemFailures": []}]
    first, second = world.google.messages
    assert first.raw == second.raw == raw_message("m1") and first.id != second.id
    assert _tag(world, "m1") == second.id  # A imported second and wrote its tag last


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
    forwarder = Forwarder(world.settings(), AwsClients(), http=http, sleep=world.sleeps.append)

    assert forwarder.handle(world.sqs_event(world.store_mail("m1")), FakeContext()) == {"batchItemFailures": []}

    assert http.lost == 1
    assert world.sleeps == [names.INPROCESS_BACKOFF_SECONDS]
    assert [m.raw for m in world.google.messages] == [raw_message("m1")] * 2
    assert _tag(world, "m1") == world.google.messages[1].id


def test_a_failed_tag_write_leaves_no_record_so_a_redrive_imports_again(world: World) -> None:
    world.install_token()
    forwarder = world.cold_start()
    inject_aws_fault(forwarder._clients.s3, "PutObjectTagging", "InternalError", times=1)
    event = world.sqs_event(world.store_mail("m1"))

    assert world.handle(event) == {"batchItemFailures": []}  # delivered, acknowledged, logged
    assert _tag(world, "m1") is None
    assert world.handle(event) == {"batchItemFailures": []}  # an operator redrives the same notification

    assert len(world.google.messages) == 2
    assert _tag(world, "m1") == world.google.messages[1].id


@pytest.mark.parametrize("path", ["inbound", "retry"])
def test_already_delivered_is_counted_not_imported(world: World, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    world.install_token()
    note = world.store_mail("m1")
    world.handle(world.sqs_event(note))
    capsys.readouterr()
    world.handle(world.sqs_event(note) if path == "inbound" else _retry_event(note))
    [metrics] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert metrics[names.METRIC_ALREADY_DELIVERED] == 1
    assert names.METRIC_FORWARDED not in metrics
    assert len(world.google.messages) == 1
