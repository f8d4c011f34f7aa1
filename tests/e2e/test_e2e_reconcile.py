"""The bucket is the record of what is owed: the reconcile delivers what no queue will.

Queues forget. SQS keeps a parked message 14 days at most, and a deleted SNS -> SQS subscription
hands the forwarder nothing at all; the raw message stays in S3 either way. Every retry-processor
execution first reconciles the mailbox (plans from the ``inbound/`` and ``claims/`` listings, then
delivers what is owed, oldest first, through the forwarder's normal claimed path) and then drains
its retry queue. These scenarios run the whole deployed program in moto, driven only through its
edges, with S3's ``LastModified``, SQS's timestamps and the reconcile's "now" all on the world's
simulated clock (:func:`_share_the_clock`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import moto.s3.models
import moto.sqs.models
import pytest
from moto.core.utils import unix_time_millis
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

import sesmail.runtime.reconcile
from sesmail import names
from sesmail.local.edges import AlarmView, Arrival, header, mailbox
from sesmail.local.world import ENV, System, emf_counts, events, log_records
from tests.drain_world import finished_execution

#: The scenario's outage: mail arrives every day for this many days while the token is dead.
DAYS_DEAD = 20
MESSAGES_PER_DAY = 2
#: Messages sent while the inbound topic had no subscription (scenario 2).
LOST = 4
#: The subscription attributes SNS lets ``Subscribe`` set (moto's ``set_subscription_attributes`` list).
SETTABLE_SUBSCRIPTION_ATTRIBUTES = (
    "DeliveryPolicy",
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "SubscriptionRoleArn",
)


# --- the world's clock for S3, SQS and the reconcile ---------------------------------------------


def _share_the_clock(system: System, monkeypatch: pytest.MonkeyPatch) -> Callable[[], float]:
    """S3, SQS and the reconcile read the simulated clock; returns SQS's "now" in epoch milliseconds.

    * moto's S3 stamps ``LastModified`` with ``moto.s3.models.utcnow``: the simulated clock, so a
      stored message and its claim markers are as old as the scenario says.
    * the reconcile's "now" (``sesmail.runtime.reconcile.datetime``) is the simulated clock.
    * moto's SQS stamps ``SentTimestamp`` and computes visibility with ``unix_time_millis``: the
      simulated clock *plus the real seconds since this call*. The simulated clock stands still
      between steps, and visibility needs time that moves: moto shows a message again only once
      "now" has passed its ``visible_at``, so on a frozen clock a ``ChangeMessageVisibility 0``
      (the inbound poller's redelivery of a failed record) would hide it until the next step.
    * moto's ``unix_time`` (seconds) stays real: it ends long polls (a frozen one would never end)
      and is the "now" of moto's retention check. That check is of no use here anyway: a receive
      that meets a message past retention hides it (counting a receive, towards the DLQ's
      maxReceiveCount) and stops with an empty answer, leaving it in the queue, so one expired
      message at the head of the retry queue would end a drain at once. With the real "now"
      against a simulated ``SentTimestamp`` nothing ever expires by moto; :func:`_expire` removes
      what SQS would have dropped instead.
    """
    clock = system.clock
    started = time.monotonic()

    def sqs_millis(dt: datetime | None = None) -> float:
        if dt is not None:
            return float(unix_time_millis(dt))
        return (clock.now().timestamp() + (time.monotonic() - started)) * 1000.0

    monkeypatch.setattr(moto.s3.models, "utcnow", lambda: clock.now().astimezone(UTC).replace(tzinfo=None))
    monkeypatch.setattr(moto.sqs.models, "unix_time_millis", sqs_millis)
    monkeypatch.setattr(sesmail.runtime.reconcile, "datetime", clock.datetime_class())
    return sqs_millis


def _expire(system: System, queue_url: str, sqs_now: Callable[[], float]) -> list[str]:
    """SQS's retention: remove the messages sent ``MessageRetentionPeriod`` ago or earlier (by SQS's
    clock, from their ``SentTimestamp``). Returns the mail ids removed.

    The others stay hidden for the minute ``read_queue`` receives them for: the caller lets the
    simulated clock pass it. ``ChangeMessageVisibility 0`` would show them at once, but moto
    refuses it for a message *sent* more than 12 hours ago (SQS's limit counts from the receive).
    """
    sqs = system.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["MessageRetentionPeriod"])
    cutoff = sqs_now() - int(attributes["Attributes"]["MessageRetentionPeriod"]) * 1000
    removed = []
    for message in system.read_queue(queue_url):
        if int(message["Attributes"]["SentTimestamp"]) <= cutoff:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            removed.append(json.loads(message["Body"])["mail"]["messageId"])
    return removed


# --- helpers -------------------------------------------------------------------------------------------


def _ids(arrivals: list[Arrival]) -> list[str]:
    return [f"<{a.message_id}@mail.example.org>" for a in arrivals]


def _queues(system: System) -> list[str]:
    return [system.output(k) for k in ("inboundQueueUrl", "inboundDlqUrl", "retryQueueUrl", "retryDlqUrl")]


def _install_token(system: System) -> str:
    install = system.refresh("--client-secret", str(system.client_secret_file), "--no-retry")
    assert install.returncode == 0, install.stderr
    [token] = system.google.issued_refresh_tokens()
    return token


def _inbound_subscription(system: System) -> dict[str, Any]:
    """The attributes of the inbound topic's subscription of the inbound queue (the one the program made)."""
    sns, sqs = system.client("sns"), system.client("sqs")
    queue_arn = sqs.get_queue_attributes(QueueUrl=system.output("inboundQueueUrl"), AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    [topic] = {action["TopicArn"] for action in system.ses.s3_actions("bob@example.com")}
    [subscription] = [
        s
        for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        if s["Protocol"] == "sqs" and s["Endpoint"] == queue_arn
    ]
    attributes: dict[str, Any] = sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])[
        "Attributes"
    ]
    return attributes


def _lose_a_day(system: System, lost: int) -> tuple[list[Arrival], list[Arrival]]:
    """Day 0 mail flows; then the inbound topic's subscription is deleted and ``lost`` messages arrive
    over the day (stored in S3, announced to nobody); on day 1 it is restored as the program made it
    and mail flows again. Returns (the lost messages, every message in sending order)."""
    sns, google = system.client("sns"), system.google
    sent: list[Arrival] = []
    for hour in (1, 2):
        system.clock.set(hours=hour)
        sent.append(system.ses.receive(f"before{hour}"))
    poll = system.inbound.poll()
    assert (poll.records, poll.item_failures, poll.function_errors) == (3, [], [])  # with SES's "subscribed" notice
    assert len(google.messages) == 2

    original = _inbound_subscription(system)
    assert original["RawMessageDelivery"] == "false"
    sns.unsubscribe(SubscriptionArn=original["SubscriptionArn"])
    gone = []
    for n in range(lost):
        system.clock.set(hours=3 + n * 20 / lost)
        gone.append(system.ses.receive(f"lost{n}"))
    sent += gone
    assert system.inbound.poll().records == 0, "nothing reaches the queue"
    assert len(google.messages) == 2

    system.clock.set(days=1, hours=2)
    sns.subscribe(
        TopicArn=original["TopicArn"],
        Protocol=original["Protocol"],
        Endpoint=original["Endpoint"],
        Attributes={k: v for k, v in original.items() if k in SETTABLE_SUBSCRIPTION_ATTRIBUTES},
        ReturnSubscriptionArn=True,
    )
    restored = _inbound_subscription(system)
    assert restored.pop("SubscriptionArn") != original.pop("SubscriptionArn")
    assert restored == original, "restored exactly as the program created it"
    for hour in (3, 4):
        system.clock.set(days=1, hours=hour)
        sent.append(system.ses.receive(f"after{hour}"))
    poll = system.inbound.poll()
    assert (poll.records, poll.item_failures, poll.function_errors) == (2, [], [])
    assert len(google.messages) == 4
    return gone, sent


def _start_reconcile(system: System) -> str:
    """What the daily reconcile starts for a mailbox whose token works: one retry-processor execution."""
    started = system.client("stepfunctions").start_execution(
        stateMachineArn=system.output("stateMachineArn"),
        # Step Functions makes up a unique name when none is given; moto names it "None", every time.
        name=f"{names.RETRY_TRIGGER_DAILY_RECONCILE}-{uuid.uuid4().hex}",
        input=json.dumps({"trigger": names.RETRY_TRIGGER_DAILY_RECONCILE, names.RETRY_MAILBOX_KEY: "default"}),
    )
    return str(started["executionArn"])


# --- the scenarios ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mail_that_outlived_the_retry_queue_is_reconciled_after_the_renewal(
    system: System, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The token is dead for twenty days. Mail arrives every day and is parked; what was parked
    more than 14 days ago leaves the retry queue, as SQS drops it. On day 20 the operator renews
    with ``--wait``: the execution's reconcile delivers, oldest first, what the queue forgot (the
    bucket and the ``.queued`` markers remember it), the drain delivers what the queue still holds,
    and Gmail has every message once. The queue knew all of it, so no mail counts as lost."""
    sqs_now = _share_the_clock(system, monkeypatch)
    google = system.google
    retry_url = system.output("retryQueueUrl")

    # --- Day 0: the token is installed and mail flows. ------------------------------------------------
    token = _install_token(system)
    sent: list[Arrival] = []
    for i in range(3):
        system.clock.set(minutes=10 * (i + 1))
        sent.append(system.ses.receive(f"d00-{i}"))
    poll = system.inbound.poll()
    assert (poll.records, poll.item_failures, poll.function_errors) == (4, [], [])
    assert len(google.messages) == 3

    # --- Days 1-20: Google revoked the token; mail is parked, and SQS forgets it after 14 days. -----------
    google.revoke(token)
    expired: list[str] = []
    for day in range(1, DAYS_DEAD + 1):
        for n in range(MESSAGES_PER_DAY):
            system.clock.set(days=day, hours=8 + 2 * n)
            sent.append(system.ses.receive(f"d{day:02d}-{n}"))
        poll = system.inbound.poll()
        assert (poll.records, poll.item_failures, poll.function_errors) == (MESSAGES_PER_DAY, [], [])
        system.clock.set(days=day, hours=12)
        expired += _expire(system, retry_url, sqs_now)
    system.clock.set(days=DAYS_DEAD, hours=12, minutes=5)  # the sweep's receive has become visible again
    assert len(google.messages) == 3, "nothing reaches Gmail with a revoked token"
    # Parked (at 10:00) on days 1-6 is more than 14 days before noon of day 20; days 7-20 wait on.
    forgotten = sent[3 : 3 + 6 * MESSAGES_PER_DAY]
    queued = sent[3 + len(forgotten) :]
    assert sorted(expired) == sorted(a.message_id for a in forgotten)
    assert system.depth(retry_url) == len(queued)

    # --- Day 20: the operator renews and waits. -----------------------------------------------------------
    since = system.fresh_metric_window()
    renewal = system.refresh("--wait")
    assert renewal.returncode == 0, renewal.stderr
    assert f"{len(queued)} from the retry queue, 0 moved to the retry DLQ" in renewal.stdout
    [execution] = system.executions()
    assert execution["status"] == "SUCCEEDED"
    totals = json.loads(execution["output"])
    assert (totals["reconciled"], totals["delivered"], totals["failed"]) == (len(forgotten), len(queued), 0)

    # --- Gmail holds every message once, in Date order; the reconcile came first, oldest first. ----------
    imported = google.messages
    assert len(imported) == len(sent)
    assert sorted(m.raw or b"" for m in imported) == sorted(a.raw for a in sent)
    assert [header(m, "Message-ID") for m in mailbox(imported)] == _ids(sent)
    assert [header(m, "Message-ID") for m in imported[3 : 3 + len(forgotten)]] == _ids(forgotten)
    assert all(m.label_ids == ["INBOX", "UNREAD"] for m in imported)
    for url in _queues(system):
        assert system.depth(url) == 0, url

    # --- A queue held all of it: nothing counts as lost upstream. -------------------------------------
    out, _ = capfd.readouterr()
    [done] = events(log_records(out), "reconcile.done")
    assert (done["owed"], done["handled"], done["delivered"], done["waiting"], done["lost"]) == (
        len(forgotten),
        len(forgotten),
        len(forgotten),
        len(queued),
        0,
    )
    assert emf_counts(out)[names.METRIC_UNDELIVERED_FOUND] == 0
    system.ship_metrics(out)
    assert system.metric_sum(names.METRIC_UNDELIVERED_FOUND) == 0
    assert system.metric_sum(names.METRIC_RETRY_DELIVERED) == len(queued)
    alarm = AlarmView(system.client("cloudwatch"), names.undelivered_found_alarm(ENV))
    assert not alarm.reading(since).breaching


@pytest.mark.slow
def test_mail_lost_upstream_is_found_in_the_bucket_and_reported(
    system: System, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Someone deletes the inbound topic's SQS subscription for a day: SES stores the day's mail in
    S3 but nobody hears of it. The subscription is restored and new mail flows. The next day's
    reconcile (a retry-processor execution, as the daily rule starts) finds the lost mail in the
    bucket, routes it from SES's stored headers, delivers it once and reports it as lost upstream;
    the mail that was delivered is not imported again."""
    _share_the_clock(system, monkeypatch)
    google = system.google
    bucket = system.output("emailBucket")
    _install_token(system)
    lost, sent = _lose_a_day(system, LOST)

    # --- Day 2: the daily reconcile runs the retry processor for the mailbox. ---------------------------
    system.clock.set(days=2, hours=4)
    since = system.fresh_metric_window()
    execution = finished_execution(system.client("stepfunctions"), _start_reconcile(system), timeout=120.0)
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"]) == {"delivered": 0, "failed": 0, "batches": 0, "reconciled": LOST}

    # --- Gmail holds every message once, in Date order; the lost ones came last, oldest first. ----------
    imported = google.messages
    assert len(imported) == len(sent)
    assert sorted(m.raw or b"" for m in imported) == sorted(a.raw for a in sent)
    assert [header(m, "Message-ID") for m in mailbox(imported)] == _ids(sent)
    assert [header(m, "Message-ID") for m in imported[-LOST:]] == _ids(lost)
    assert all(m.label_ids == ["INBOX", "UNREAD"] for m in imported)
    assert {system.delivered_gmail_id(bucket, a.message_id) for a in sent} == {m.id for m in imported}
    for url in _queues(system):
        assert system.depth(url) == 0, url

    # --- Reported: older than a day, and no queue ever held it. ------------------------------------------
    out, _ = capfd.readouterr()
    [done] = events(log_records(out), "reconcile.done")
    assert (done["owed"], done["delivered"], done["lost"], done["waiting"], done["unroutable"]) == (
        LOST,
        LOST,
        LOST,
        0,
        0,
    )
    assert emf_counts(out)[names.METRIC_UNDELIVERED_FOUND] == LOST
    system.ship_metrics(out)
    assert system.metric_sum(names.METRIC_UNDELIVERED_FOUND) == LOST
    assert AlarmView(system.client("cloudwatch"), names.undelivered_found_alarm(ENV)).reading(since).breaching

    # The next reconcile finds nothing owed.
    system.clock.set(days=3, hours=4)
    again = finished_execution(system.client("stepfunctions"), _start_reconcile(system), timeout=120.0)
    assert json.loads(again["output"])["reconciled"] == 0
    assert len(google.messages) == len(sent)


@pytest.mark.slow
def test_two_reconciles_at_once_import_nothing_twice(
    system: System, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two retry-processor executions reconcile the same lost day at once (the daily rule's, and
    one an operator started). The first is importing the oldest message when the second reaches
    it: the claim is held, so the second hands it to the retry queue and goes on. The claims let
    each message be imported once; the drain finds the handed-over one already delivered."""
    _share_the_clock(system, monkeypatch)

    # Step Functions' Retry backoff (30 s, 60 s, 120 s), which the world records without sleeping,
    # really waits here, scaled down 100 times: a drain retrying a message whose claim the other
    # execution still holds gives that import time to finish, as the real backoff would.
    def backoff(seconds: float) -> None:
        system.interpreter_sleeps.append(seconds)
        time.sleep(seconds / 100)

    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=backoff))
    google, s3 = system.google, system.client("s3")
    bucket, retry_url = system.output("emailBucket"), system.output("retryQueueUrl")
    _install_token(system)
    lost, sent = _lose_a_day(system, 2 * LOST)

    # --- Day 2: one reconcile holds the oldest lost message's claim while the other reaches it. ----------
    system.clock.set(days=2, hours=4)
    release = threading.Event()
    google.hold_imports(release, timeout=30.0)
    first = _start_reconcile(system)
    _wait_until(lambda: "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=names.claim_key(lost[0].message_id)))
    second = _start_reconcile(system)
    _wait_until(lambda: system.depth(retry_url) > 0)  # the claim was held: handed to the retry queue
    release.set()
    sfn = system.client("stepfunctions")
    finished = [finished_execution(sfn, arn, timeout=120.0) for arn in (first, second)]
    assert [e["status"] for e in finished] == ["SUCCEEDED", "SUCCEEDED"], finished
    totals = [json.loads(e["output"]) for e in finished]

    # --- Each message is in Gmail once; what a reconcile handed over was drained, nothing dead-lettered. --
    imported = google.messages
    assert len(imported) == len(sent)
    assert [header(m, "Message-ID") for m in mailbox(imported)] == _ids(sent)
    assert sum(t["reconciled"] for t in totals) == len(lost), totals
    out, _ = capfd.readouterr()
    records = log_records(out)
    handed_over = events(records, names.EVENT_DELIVERY_PARKED)
    assert handed_over and {r["messageId"] for r in handed_over} <= {a.message_id for a in lost}
    assert sum(t["delivered"] for t in totals) == len(handed_over), totals  # already-delivered counts as delivered
    assert [t["failed"] for t in totals] == [0, 0]
    assert len(events(records, "reconcile.done")) == 2
    # Each lost message counted once, by the reconcile that imported it (not by the one that found it held).
    assert emf_counts(out)[names.METRIC_UNDELIVERED_FOUND] == len(lost)
    for url in _queues(system):
        assert system.depth(url) == 0, url


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.01)
