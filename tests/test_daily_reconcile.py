"""The daily reconcile: once a day the token monitor starts the retry processor for every mailbox.

EventBridge's second rule invokes the monitor with ``{"action": "daily-reconcile", "time": ...}``
(sesmail/infra/token_monitor.py builds it; tests/infra/test_infra_monitoring.py checks the rule).
The run publishes the hours as usual; its autostart does not skip an empty queue, so each
mailbox whose token mints, with no drain running and none failed within the backoff, gets the
day's execution, which reconciles first (DESIGN.md, "Reconcile: S3 is the source of truth").
The world is tests/test_retry_autostart.py's: moto (executions stay RUNNING) and the fake Google.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from handlers import token_monitor as monitor_handler
from sesmail import names
from sesmail.local.google import FakeGoogle
from sesmail.runtime import token_monitor
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from tests.conftest import ENV, FakeContext
from tests.rules.aws_calls import iam_requests
from tests.rules.iam_rules import check_policy
from tests.test_retry_autostart import (
    ACCOUNT,
    NOW,
    TABLE,
    Monitor,
    _allowed_by,
    by_mailbox,
    decisions,
    deploy,
    lines,
    monitor_policy,
    with_ended,
)

#: When the daily rule fires (names.RECONCILE_DAILY_SCHEDULE: 04:00 UTC), and its event as the
#: rule's input transformer hands it to the function.
DAILY_AT = datetime(2026, 11, 24, 4, 0, 0, tzinfo=UTC)
DAILY_EVENT = {"action": "daily-reconcile", "time": "2026-11-24T04:00:00Z"}
#: EventBridge's own scheduled event: what the 15-minute rule passes.
SCHEDULED_EVENT = {"source": "aws.events", "detail-type": "Scheduled Event", "time": "2026-11-24T04:00:00Z"}


@pytest.fixture
def world(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    """A stack without ``ses-mail:mailboxes``: the one mailbox ``default``."""
    yield from deploy(google, monkeypatch)


@pytest.fixture
def mailboxes(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    """default, alice and bob, each with its token and retry queue."""
    yield from deploy(google, monkeypatch, TABLE)


def invoke(event: Any, request_id: str = "req-daily") -> dict[str, Any]:
    """The handler, cold, as Lambda runs it for ``event``."""
    monitor_handler.reset()
    try:
        return monitor_handler.handler(event, FakeContext(request_id=request_id))
    finally:
        monitor_handler.reset()


def daily(
    world: Monitor, at: datetime = DAILY_AT, autostart: token_monitor.RetryAutostart | None = None
) -> dict[str, Any]:
    """A daily run on the world's own (recorded) clients."""
    return token_monitor.monitor(
        world.clients.ssm, world.cloudwatch, ENV, autostart or world.autostart(), scheduled_at=at, daily=True
    )


def names_and_inputs(world: Monitor) -> dict[str, dict[str, Any]]:
    return {e["name"]: json.loads(e["input"]) for e in world.executions()}


# --- it starts, empty queues included ---------------------------------------------------------------


def test_the_daily_event_starts_one_reconcile_per_mailbox_with_empty_queues(
    mailboxes: Monitor, capsys: pytest.CaptureFixture[str]
) -> None:
    world = mailboxes
    tokens = {m: world.install_token(m) for m in TABLE.names}

    result = invoke(DAILY_EVENT)

    trigger = names.RETRY_TRIGGER_DAILY_RECONCILE
    assert trigger == "daily-reconcile" and token_monitor.DAILY_RECONCILE == "daily-reconcile"
    assert names_and_inputs(world) == {
        "daily-reconcile-20261124": {"trigger": trigger, names.RETRY_MAILBOX_KEY: "default"},
        "daily-reconcile-alice-20261124": {"trigger": trigger, names.RETRY_MAILBOX_KEY: "alice"},
        "daily-reconcile-bob-20261124": {"trigger": trigger, names.RETRY_MAILBOX_KEY: "bob"},
    }
    assert decisions(result) == dict.fromkeys(TABLE.names, ("started", token_monitor.DAILY_RECONCILE))
    arns = {e["name"]: e["executionArn"] for e in world.executions()}
    assert result["mailboxes"]["alice"]["retry"] == {
        "action": "started",
        "reason": "daily-reconcile",
        "waiting": 0,
        "executionArn": arns["daily-reconcile-alice-20261124"],
        "detail": None,
    }
    # A full monitor run: every mailbox's hours are published as on every run (the handler
    # computes them at the wall clock's time, so only their presence is checked here).
    assert all(isinstance(r["hoursLeft"], float) and r["error"] is None for r in result["mailboxes"].values())
    assert world.metric(names.METRIC_TOKEN_MONITORING_ERRORS) == [0.0]
    # Each proven with its own token, once.
    assert sorted(r["refresh_token"] for r in world.mints()) == sorted(tokens.values())
    logged = by_mailbox(lines(capsys))
    for mailbox, line in logged.items():
        assert (line["event"], line["level"], line["reason"], line["trigger"]) == (
            names.EVENT_RETRY_AUTOSTART,
            "INFO",
            "daily-reconcile",
            "daily-reconcile",
        )
        assert line["message"].startswith(f"started the daily reconcile of mailbox {mailbox}")
        assert (line["requestId"], line["waiting"]) == ("req-daily", 0)


def test_mail_waiting_on_the_daily_run_goes_to_the_daily_execution(world: Monitor) -> None:
    """One execution both reconciles and drains: the day's name and trigger, the waiting count logged."""
    world.install_token()
    world.park(3)

    result = daily(world)

    assert names_and_inputs(world) == {
        "daily-reconcile-20261124": {"trigger": "daily-reconcile", names.RETRY_MAILBOX_KEY: "default"}
    }
    assert (result["retry"]["action"], result["retry"]["reason"], result["retry"]["waiting"]) == (
        "started",
        token_monitor.DAILY_RECONCILE,
        3,
    )


# --- once a day -------------------------------------------------------------------------------------


def test_a_second_delivery_of_the_days_event_starts_nothing_more(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
    first = invoke(DAILY_EVENT)
    assert set(decisions(first).values()) == {("started", token_monitor.DAILY_RECONCILE)}

    # Delivered again while the executions run: each mailbox sees its own.
    again = invoke(DAILY_EVENT)
    assert decisions(again) == dict.fromkeys(TABLE.names, ("skipped", token_monitor.ALREADY_RUNNING))
    for mailbox in TABLE.names:
        assert (
            again["mailboxes"][mailbox]["retry"]["executionArn"] == first["mailboxes"][mailbox]["retry"]["executionArn"]
        )

    # An EventBridge retry after they ended: the same event time, so the same names, refused.
    for execution in world.executions():
        world.sfn.stop_execution(executionArn=execution["executionArn"])
    retried = invoke(DAILY_EVENT)
    assert decisions(retried) == dict.fromkeys(TABLE.names, ("skipped", token_monitor.ALREADY_STARTED))
    assert retried["mailboxes"]["bob"]["retry"]["detail"] == "daily-reconcile-bob-20261124"
    assert len(world.executions()) == 3

    # The next day's event starts the next day's.
    tomorrow = invoke({"action": "daily-reconcile", "time": "2026-11-25T04:00:00Z"})
    assert set(decisions(tomorrow).values()) == {("started", token_monitor.DAILY_RECONCILE)}
    assert sorted(e["name"] for e in world.executions() if e["name"].endswith("-20261125")) == [
        "daily-reconcile-20261125",
        "daily-reconcile-alice-20261125",
        "daily-reconcile-bob-20261125",
    ]


# --- it starts nothing ------------------------------------------------------------------------------


def test_a_dead_token_starts_nothing(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    world.google.revoke(world.install_token())

    result = daily(world)

    assert (result["retry"]["action"], result["retry"]["reason"]) == ("skipped", token_monitor.TOKEN_DEAD)
    assert world.executions() == []
    [line] = lines(capsys)
    assert (line["event"], line["level"], line["reason"]) == (names.EVENT_RETRY_AUTOSTART_SKIPPED, "INFO", "token-dead")


def test_an_unconfigured_token_starts_nothing(world: Monitor) -> None:
    world.install_placeholders()

    assert daily(world)["retry"]["reason"] == token_monitor.TOKEN_NOT_CONFIGURED
    assert world.executions() == [] and world.google.token_requests == []


def test_a_running_execution_of_a_mailbox_starts_nothing_for_it(mailboxes: Monitor) -> None:
    world = mailboxes
    tokens = {m: world.install_token(m) for m in TABLE.names}
    # A hand-over execution of bob's drain: a generated name, the mailbox only in its input.
    bobs = world.sfn.start_execution(
        stateMachineArn=world.state_machine_arn,
        name="0b4b1a52-6f3e-4d1e-9a4c-2d9f1e7c8b10",
        input=json.dumps({names.RETRY_MAILBOX_KEY: "bob"}),
    )["executionArn"]

    result = daily(world)

    assert decisions(result) == {
        "default": ("started", token_monitor.DAILY_RECONCILE),
        "alice": ("started", token_monitor.DAILY_RECONCILE),
        "bob": ("skipped", token_monitor.ALREADY_RUNNING),
    }
    assert result["mailboxes"]["bob"]["retry"]["executionArn"] == bobs
    assert tokens["bob"] not in {r["refresh_token"] for r in world.mints()}, "no token request for bob"
    assert sorted(names_and_inputs(world)) == [
        "0b4b1a52-6f3e-4d1e-9a4c-2d9f1e7c8b10",
        "daily-reconcile-20261124",
        "daily-reconcile-alice-20261124",
    ]


def test_a_recent_failure_backs_off_the_daily_run_too(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
    arn = world.state_machine_arn.replace(":stateMachine:", ":execution:") + ":token-monitor-alice-20261124T0345Z"
    failed = {
        "executionArn": arn,
        "stateMachineArn": world.state_machine_arn,
        "name": "token-monitor-alice-20261124T0345Z",
        "status": "FAILED",
        "startDate": DAILY_AT - timedelta(minutes=14),
        "stopDate": DAILY_AT - timedelta(minutes=10),
        "input": {"trigger": "token-monitor", names.RETRY_MAILBOX_KEY: "alice"},
    }

    result = daily(world, autostart=with_ended(world, [failed]))

    assert decisions(result) == {
        "default": ("started", token_monitor.DAILY_RECONCILE),
        "alice": ("skipped", token_monitor.RECENT_FAILURE),
        "bob": ("started", token_monitor.DAILY_RECONCILE),
    }


def test_a_normal_run_with_empty_queues_still_starts_nothing(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)

    for event in (SCHEDULED_EVENT, {"action": "something-else", "time": "2026-11-24T04:00:00Z"}, {}):
        result = invoke(event)
        assert decisions(result) == dict.fromkeys(TABLE.names, ("skipped", token_monitor.QUEUE_EMPTY))
    assert world.executions() == [] and world.mints() == []


# --- least privilege ---------------------------------------------------------------------------------


def test_every_call_of_a_daily_run_is_allowed_by_the_monitor_policy(mailboxes: Monitor) -> None:
    """Empty queues now list (and, with mailboxes, describe) executions: the policy already allows it."""
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
    world.sfn.start_execution(stateMachineArn=world.state_machine_arn, name="legacy", input="{}")  # default's
    world.calls.clear()

    daily(world)
    calls = list(world.calls)

    document = monitor_policy(world)
    assert not check_policy(document, policy="the token monitor's policy with mailboxes")
    for call in calls:
        for request in iam_requests(call, partition="aws", account=ACCOUNT):
            sid = _allowed_by(document, request.action, request.resource, dict(request.context))
            assert sid, f"{request.action} on {request.resource} is not allowed by the monitor's policy"
    assert {c.action for c in calls} >= {"states:ListExecutions", "states:DescribeExecution", "states:StartExecution"}


# --- the pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "mailbox", "name"),
    [
        (DAILY_AT, "default", "daily-reconcile-20261124"),
        (DAILY_AT, "alice", "daily-reconcile-alice-20261124"),
        (datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC), "default", "daily-reconcile-20261124"),
        # The UTC day, whatever the offset the time was given in.
        (datetime(2026, 11, 25, 1, 0, tzinfo=timezone(timedelta(hours=2))), "default", "daily-reconcile-20261124"),
        (NOW, "a" * names.MAX_MAILBOX_LENGTH, f"daily-reconcile-{'a' * names.MAX_MAILBOX_LENGTH}-20261124"),
    ],
)
def test_daily_execution_name(at: datetime, mailbox: str, name: str) -> None:
    assert token_monitor.daily_execution_name(at, mailbox) == name
    # A valid Step Functions execution name: at most 80 characters of [A-Za-z0-9_-].
    assert len(name) <= 80 and name.replace("-", "").isalnum()


def test_a_daily_execution_name_refuses_an_invalid_mailbox() -> None:
    with pytest.raises(ValueError, match="mailbox name"):
        token_monitor.daily_execution_name(DAILY_AT, "Not/A/Mailbox")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (DAILY_EVENT, True),
        ({"action": "daily-reconcile"}, True),
        (SCHEDULED_EVENT, False),
        ({"action": "token-monitor"}, False),
        ({}, False),
        ([], False),
        (None, False),
    ],
)
def test_is_daily_reconcile(event: Any, expected: bool) -> None:
    assert token_monitor.is_daily_reconcile(event) is expected


def test_a_table_without_default_names_every_mailbox_after_itself(
    google: FakeGoogle, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = MailboxTable((Mailbox("alice", ("alice@example.com",)), Mailbox("bob", ("bob@x.org",))), configured=True)
    for world in deploy(google, monkeypatch, table):
        for mailbox in table.names:
            world.install_token(mailbox)
        invoke(DAILY_EVENT)
        assert sorted(names_and_inputs(world)) == ["daily-reconcile-alice-20261124", "daily-reconcile-bob-20261124"]
