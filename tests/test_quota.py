"""Gmail's per-user quota: the fake enforces it with 429 + Retry-After; mail is delayed, never
lost, never duplicated, never dead-lettered.

Production numbers: ``GMAIL_QUOTA_UNITS_PER_MINUTE`` (6,000) / ``GMAIL_IMPORT_QUOTA_UNITS`` (25)
= 240 imports a minute per user. Here the quota is a few imports a minute so it bites at once,
and every wait (in-process sleeps, Step Functions Retry intervals, SQS visibility timeouts)
moves the fake's clock instead of the wall clock.

How each path waits:

- inbound: a ``Retry-After`` of at most ``INPROCESS_MAX_WAIT_SECONDS`` (20 s) is slept in-process
  (if the invocation's deadline allows); a longer one makes the record a batch item failure,
  redelivered after the queue's visibility timeout (720 s, long past the 60 s quota window);
- retry processor: a longer wait raises ``TransientError`` and Step Functions retries after 30,
  60 and 120 s (210 s in all, more than three quota windows) before giving up.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from types import SimpleNamespace

import pytest

from sesmail import names
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.forwarder import Forwarder
from tests.conftest import AdvancingSleep, FakeContext, InboundQueue, World, raw_message
from tests.drain_world import DrainWorld


def _quota(imports_per_minute: int) -> int:
    return imports_per_minute * names.GMAIL_IMPORT_QUOTA_UNITS


def test_production_quota_allows_240_imports_a_minute() -> None:
    assert names.GMAIL_QUOTA_UNITS_PER_MINUTE == 6000
    assert names.GMAIL_IMPORT_QUOTA_UNITS == 25
    assert names.GMAIL_QUOTA_UNITS_PER_MINUTE // names.GMAIL_IMPORT_QUOTA_UNITS == 240
    # The longest in-process wait fits in one quota window, and the redelivery comes after it.
    assert names.INPROCESS_MAX_WAIT_SECONDS < 60 < names.INBOUND_QUEUE_VISIBILITY_SECONDS
    # Step Functions' retries outlast several windows before a message could reach the retry DLQ.
    waits = [
        min(names.RETRY_INITIAL_BACKOFF_SECONDS * names.RETRY_BACKOFF_RATE**i, names.RETRY_MAX_BACKOFF_SECONDS)
        for i in range(names.RETRY_MAX_ATTEMPTS)
    ]
    assert sum(waits) >= 3 * 60


def _imported_once(world: World, message_ids: list[str]) -> None:
    raws = Counter(m.raw for m in world.google.messages)
    assert raws == Counter(raw_message(i) for i in message_ids), "lost or duplicated"


def test_short_retry_after_is_slept_in_process(world: World) -> None:
    world.install_token()
    world.google.quota_units_per_minute = _quota(5)
    sleep = AdvancingSleep(world.google)
    forwarder = Forwarder(world.settings(), AwsClients(), sleep=sleep)
    first = [f"a{i}" for i in range(5)]
    assert forwarder.handle(world.sqs_event(*map(world.store_mail, first)), FakeContext()) == {"batchItemFailures": []}
    world.google.advance_time(45)  # the window frees up 15 s from now

    second = [f"b{i}" for i in range(3)]
    result = forwarder.handle(world.sqs_event(*map(world.store_mail, second)), FakeContext())

    assert result == {"batchItemFailures": []}
    assert sleep.calls == [15.0]  # the 429's Retry-After, honoured once, then all three went in
    _imported_once(world, first + second)
    assert world.google.import_requests == 9  # 8 imports + the one 429


def test_long_retry_after_becomes_a_redelivery_not_a_loss(world: World) -> None:
    """12 messages, 5 imports a minute: SQS redelivers what Gmail deferred; each imported once."""
    world.install_token()
    world.google.quota_units_per_minute = _quota(5)
    queue = InboundQueue(world)
    forwarder = Forwarder(world.settings(), AwsClients(), sleep=AdvancingSleep(world.google))
    message_ids = [f"m{i:02d}" for i in range(12)]
    for message_id in message_ids:
        queue.send(world.store_mail(message_id))

    queue.run(forwarder)

    assert queue.depth() == 0
    _imported_once(world, message_ids)
    assert world.drain(world.inbound_dlq_url) == []
    assert world.drain(world.retry_queue_url) == []
    assert queue.max_receive_count < names.INBOUND_QUEUE_MAX_RECEIVE_COUNT
    # Without waiting in-process (Retry-After 60 s > 20 s) each deferral costs Gmail one request.
    assert world.google.import_requests <= 12 * queue.max_receive_count


def test_two_concurrent_pollers_share_the_quota_without_loss_or_duplicates(world: World) -> None:
    """FORWARDER_MAX_CONCURRENCY containers on one queue, one quota: the production shape."""
    assert names.FORWARDER_MAX_CONCURRENCY == 2
    world.install_token()
    world.google.quota_units_per_minute = _quota(8)
    queue = InboundQueue(world)
    message_ids = [f"c{i:02d}" for i in range(24)]
    for message_id in message_ids:
        queue.send(world.store_mail(message_id))
    errors: list[BaseException] = []

    def container() -> None:
        forwarder = Forwarder(world.settings(), AwsClients(), sleep=AdvancingSleep(world.google))
        try:
            while queue.poll(forwarder) is not None:
                pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    for _ in range(10):
        threads = [threading.Thread(target=container) for _ in range(names.FORWARDER_MAX_CONCURRENCY)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not queue.depth():
            break
        queue.pass_visibility_timeout()

    assert errors == []
    assert queue.depth() == 0
    _imported_once(world, message_ids)
    assert world.drain(world.inbound_dlq_url) == []
    assert queue.max_receive_count < names.INBOUND_QUEUE_MAX_RECEIVE_COUNT


def test_retry_processor_waits_out_the_quota(drain: DrainWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog after a token outage drains at Gmail's pace: Step Functions retries, no DLQ."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    drain.install_token()
    drain.google.quota_units_per_minute = _quota(5)
    forwarder_sleep = AdvancingSleep(drain.google)
    interpreter_sleep = AdvancingSleep(drain.google)
    drain.sleeps = forwarder_sleep  # type: ignore[assignment]  # containers take world.sleeps.append
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=interpreter_sleep))
    message_ids = [f"r{i:02d}" for i in range(12)]
    for message_id in message_ids:
        drain.park(message_id)

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"])["delivered"] == 12
    assert json.loads(result["output"])["failed"] == 0
    _imported_once(drain, message_ids)
    assert drain.queue_depth(drain.retry_queue_url) == 0
    assert drain.queue_depth(drain.retry_dlq_url) == 0
    assert interpreter_sleep.calls, "the quota never bit: the test proves nothing"
    # Bounded effort per message: 1 + 3 Step Functions attempts, each at most 3 in-process tries.
    assert drain.google.import_requests <= 12 * (1 + names.RETRY_MAX_ATTEMPTS) * names.INPROCESS_MAX_ATTEMPTS
