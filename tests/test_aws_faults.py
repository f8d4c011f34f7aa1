"""AWS failing under the forwarder: moto plus errors injected through botocore's event system.

The rule every test checks through a real (moto) inbound queue and a faithful event source
mapping: a message leaves the queue only when it was delivered to Gmail, parked in the retry
queue, or copied to the inbound DLQ with its reason. Anything else is a batch item failure that
SQS redelivers, and a fault never changes a message's class (throttling is not a dead token,
a 500 is not a permanent failure). Metrics are best effort: failing to emit them never fails a
delivery.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError, ResponseStreamingError

from sesmail import names
from sesmail.runtime.errors import TransientError
from sesmail.runtime.forwarder import Forwarder
from tests.conftest import BUCKET, FakeContext, InboundQueue, World, inject_aws_fault, raw_message
from tests.drain_world import DrainWorld


def _attrs(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


def _log_events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"timestamp"')]


@pytest.fixture
def queue(world: World) -> InboundQueue:
    return InboundQueue(world)


def _nothing_parked_or_dead(world: World) -> None:
    assert world.drain(world.retry_queue_url) == []
    assert world.drain(world.inbound_dlq_url) == []


# --- SSM ---------------------------------------------------------------------------------------------


def test_ssm_throttling_is_transient_and_the_message_stays_queued(world: World, queue: InboundQueue) -> None:
    world.install_token()
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.ssm, "GetParameters", "ThrottlingException", status=400)
    queue.send(world.store_mail("m1"))

    assert queue.poll() is not None

    assert fault.raised == names.INPROCESS_MAX_ATTEMPTS  # retried in-process: 1 s, then 2 s
    assert world.sleeps == [1.0, 2.0]
    assert queue.depth() == 1  # not acknowledged
    assert world.google.messages == []
    _nothing_parked_or_dead(world)  # throttling is not a dead token: nothing parked

    fault.times = fault.raised  # SSM recovers
    queue.run()
    assert [m.raw for m in world.google.messages] == [raw_message("m1")]
    assert queue.depth() == 0


def test_ssm_throttled_once_is_absorbed_in_process(world: World) -> None:
    world.install_token()
    forwarder = world.cold_start()
    inject_aws_fault(forwarder._clients.ssm, "GetParameters", "ThrottlingException", status=400, times=1)
    assert world.handle(world.sqs_event(world.store_mail("m1"))) == {"batchItemFailures": []}
    assert world.sleeps == [1.0]
    assert len(world.google.messages) == 1


def test_ssm_throttled_while_checking_a_dead_token_is_not_parked_until_it_answers(
    world: World, queue: InboundQueue
) -> None:
    """invalid_grant makes the forwarder re-read SSM (was the token just renewed?); if that read
    is throttled, it cannot tell a dead token from a renewed one, so it parks nothing yet."""
    world.google.revoke(world.install_token())
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.ssm, "GetParameters", "ThrottlingException", status=400, skip=1)
    queue.send(world.store_mail("m1"))

    queue.poll()

    assert fault.raised >= 1
    assert queue.depth() == 1
    _nothing_parked_or_dead(world)

    fault.times = fault.raised  # SSM answers again: now the token is known dead, the mail parked
    queue.run()
    assert queue.depth() == 0
    [parked] = world.drain(world.retry_queue_url)
    assert _attrs(parked)[names.ATTR_ERROR_TYPE] == "TokenExpiredError"
    assert world.google.messages == []


def test_ssm_throttling_on_the_retry_path_is_a_transient_error_by_name(world: World) -> None:
    world.install_token()
    forwarder = world.cold_start()
    inject_aws_fault(forwarder._clients.ssm, "GetParameters", "ThrottlingException", status=400)
    with pytest.raises(TransientError) as raised:
        world.handle({"source": names.RETRY_PROCESSOR_SOURCE, "notification": world.store_mail("m1")})
    assert type(raised.value) is TransientError  # Step Functions retries it with the backoff
    assert "ThrottlingException" in str(raised.value)


# --- S3 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "code", "status"),
    [("GetObject", "InternalError", 500), ("GetObjectTagging", "SlowDown", 503), ("GetObject", "AccessDenied", 403)],
)
def test_s3_read_errors_are_transient(
    world: World, queue: InboundQueue, operation: str, code: str, status: int
) -> None:
    world.install_token()
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.s3, operation, code, status=status)
    queue.send(world.store_mail("m1"))
    if operation == "GetObjectTagging":
        # Tags are read only when GetObject's TagCount says there are some.
        world.s3.put_object_tagging(
            Bucket=BUCKET, Key="inbound/m1", Tagging={"TagSet": [{"Key": "retention", "Value": "legal"}]}
        )

    queue.poll()

    assert fault.raised == names.INPROCESS_MAX_ATTEMPTS
    assert world.google.import_requests == 0  # failed before anything was uploaded
    assert queue.depth() == 1
    _nothing_parked_or_dead(world)

    fault.times = fault.raised
    queue.run()
    assert [m.raw for m in world.google.messages] == [raw_message("m1")]
    assert queue.depth() == 0
    claim = world.claim("m1")
    assert claim is not None and claim["gmailMessageId"] == world.google.messages[0].id
    tags = {t["Key"] for t in world.s3.get_object_tagging(Bucket=BUCKET, Key="inbound/m1")["TagSet"]}
    assert tags == ({"retention"} if operation == "GetObjectTagging" else set())  # the mail is never written


def test_s3_get_object_500_once_is_retried_in_process(world: World) -> None:
    world.install_token()
    forwarder = world.cold_start()
    inject_aws_fault(forwarder._clients.s3, "GetObject", "InternalError", times=1)
    assert world.handle(world.sqs_event(world.store_mail("m1"))) == {"batchItemFailures": []}
    assert world.sleeps == [1.0]
    assert [m.raw for m in world.google.messages] == [raw_message("m1")]


class _BreakingBody:
    """An S3 body that dies mid-stream (a reset connection) or ends early."""

    def __init__(self, data: bytes, *, fail: bool) -> None:
        self._data = data
        self._fail = fail

    def iter_chunks(self, size: int) -> Any:
        yield self._data[: len(self._data) // 2]
        if self._fail:
            raise ResponseStreamingError(error="Connection broken: reset by peer")


@pytest.mark.parametrize("fail", [True, False], ids=["stream-error", "short-body"])
def test_an_s3_stream_that_breaks_mid_upload_imports_nothing_partial(
    world: World, queue: InboundQueue, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    """The upload is aborted before its closing boundary, so Gmail never sees half a message."""
    world.install_token()
    forwarder = world.cold_start()
    s3 = forwarder._clients.s3
    raw = raw_message("m1", body=b"x" * 100_000)
    queue.send(world.store_mail("m1", raw))
    real_get_object = s3.get_object

    def broken_get_object(**kwargs: Any) -> dict[str, Any]:
        real = real_get_object(**kwargs)
        return {**real, "Body": _BreakingBody(real["Body"].read(), fail=fail)}

    monkeypatch.setattr(s3, "get_object", broken_get_object)
    queue.poll()

    assert world.google.messages == []
    assert queue.depth() == 1
    _nothing_parked_or_dead(world)

    monkeypatch.setattr(s3, "get_object", real_get_object)
    queue.run()
    assert [m.raw for m in world.google.messages] == [raw]


def test_claim_completion_failure_after_import_still_counts_as_delivered_and_is_logged(
    world: World, queue: InboundQueue, capsys: pytest.CaptureFixture[str]
) -> None:
    """The claim is created (PutObject #1), the import succeeds, and completing the claim fails
    every time: retried in-process (1 s, 2 s), then logged, and the record still acknowledged.
    The ``delivered`` marker is still attempted (PutObject #5): it is what keeps a reconcile from
    importing again once the claim's lease has run out."""
    world.install_token()
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.s3, "PutObject", "InternalError", skip=1)
    queue.send(world.store_mail("m1"))

    assert queue.poll() == []

    assert queue.depth() == 0  # acknowledged: the mail is in Gmail
    assert len(world.google.messages) == 1
    assert fault.raised == names.INPROCESS_MAX_ATTEMPTS + 1 and world.sleeps == [1.0, 2.0]
    _nothing_parked_or_dead(world)
    out = capsys.readouterr().out
    [unmarked] = [e for e in _log_events(out) if e.get("event") == "delivery.mark_failed"]
    assert unmarked["marker"] == names.CLAIM_MARKER_DELIVERED
    [failed] = [e for e in _log_events(out) if e.get("event") == "delivery.record_failed"]
    assert "PutObject failed: InternalError" in failed["reason"]
    assert failed["messageId"] == "m1"
    assert failed["gmailMessageId"] == world.google.messages[0].id  # what an operator needs to reconcile
    [metrics] = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    assert metrics[names.METRIC_FORWARDED] == 1 and names.METRIC_FAILED not in metrics


# --- SQS ---------------------------------------------------------------------------------------------


def test_retry_queue_refusing_while_the_token_is_dead_is_never_acknowledged(world: World, queue: InboundQueue) -> None:
    world.google.revoke(world.install_token())
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.sqs, "SendMessage", "InternalError", times=1)
    queue.send(world.store_mail("m1"))
    queue.send(world.store_mail("m2"))

    failed = queue.poll()

    assert fault.raised == 1
    assert failed is not None and len(failed) == 1  # the one whose parking failed stays queued
    assert queue.depth() == 1
    queue.run()
    assert queue.depth() == 0
    parked = world.drain(world.retry_queue_url)
    assert sorted(json.loads(m["Body"])["mail"]["messageId"] for m in parked) == ["m1", "m2"]  # once each
    assert world.drain(world.inbound_dlq_url) == []


def test_retry_queue_refusing_for_good_ends_in_the_inbound_dlq_via_redrive(world: World, queue: InboundQueue) -> None:
    """If parking never works, SQS's own redrive keeps the message (without a reason attribute)."""
    world.google.revoke(world.install_token())
    forwarder = world.cold_start()
    inject_aws_fault(forwarder._clients.sqs, "SendMessage", "KMS.DisabledException", status=400)
    queue.send(world.store_mail("m1"))

    queue.run(rounds=names.INBOUND_QUEUE_MAX_RECEIVE_COUNT + 1)

    assert queue.depth() == 0
    assert queue.max_receive_count == names.INBOUND_QUEUE_MAX_RECEIVE_COUNT
    [dead] = world.drain(world.inbound_dlq_url)
    assert json.loads(json.loads(dead["Body"])["Message"])["mail"]["messageId"] == "m1"
    assert world.drain(world.retry_queue_url) == []


def test_inbound_dlq_refusing_a_permanent_failure_is_never_acknowledged(world: World, queue: InboundQueue) -> None:
    world.install_token()
    forwarder = world.cold_start()
    fault = inject_aws_fault(forwarder._clients.sqs, "SendMessage", "ServiceUnavailable", status=503, times=1)
    note = world.store_mail("m1")
    note["receipt"]["action"]["objectKey"] = "inbound/gone"
    queue.send(note)

    queue.poll()

    assert fault.raised == 1
    assert queue.depth() == 1
    queue.run()
    [dead] = world.drain(world.inbound_dlq_url)
    assert "NoSuchKey" in _attrs(dead)[names.ATTR_ERROR]
    assert queue.depth() == 0


# --- metrics -------------------------------------------------------------------------------------------


class _BrokenStdout(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_metric_emission_failing_never_fails_delivery(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """EMF metrics go out on stdout; a dead stdout must not turn delivered mail into a redelivery."""
    world.install_token()
    forwarder: Forwarder = world.cold_start()
    monkeypatch.setattr(sys, "stdout", _BrokenStdout())

    result = forwarder.handle(world.sqs_event(world.store_mail("m1")), FakeContext())
    retry = forwarder.handle({"source": names.RETRY_PROCESSOR_SOURCE, "notification": world.store_mail("m2")}, None)

    assert result == {"batchItemFailures": []}
    assert retry["status"] == "delivered"
    assert len(world.google.messages) == 2


def test_put_metric_data_failing_does_not_fail_the_retry_processor(
    drain: DrainWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    drain.install_token()
    for i in range(3):
        drain.park(f"m{i}")
    real_call = BaseClient._make_api_call
    refused: list[str] = []

    def call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutMetricData":
            refused.append(operation)
            error = {"Code": "InternalServiceError", "Message": "injected"}
            metadata = {"HTTPStatusCode": 500, "RequestId": "injected-0001"}  # what a real error carries
            raise ClientError({"Error": error, "ResponseMetadata": metadata}, operation)
        return real_call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 3, "failed": 0, "batches": 1, "reconciled": 0}
    # Retried with the backoff (30, 60, 120 s, recorded not slept), then given up on.
    assert drain.interpreter_sleeps == [30, 60, 120]
    assert len(refused) == 1 + names.RETRY_MAX_ATTEMPTS
    assert len(drain.google.messages) == 3
    assert drain.queue_depth(drain.retry_queue_url) == 0
    assert drain.queue_depth(drain.retry_dlq_url) == 0
