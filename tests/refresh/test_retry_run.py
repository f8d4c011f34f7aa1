"""Following the retry processor: progress lines, and the handover of a long backlog to a successor execution."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sesmail import names
from sesmail.runtime.retry_processor import DELIVERED, FAILED
from sesmail.runtime.retry_run import (
    RUNNING,
    TRIGGER,
    cached_mailbox_of,
    follow_execution,
    progress_line,
    recent_failure,
    retry_queue_url,
    running_execution,
    start_retry_processor,
)

MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:" + names.retry_state_machine("test")
FIRST = MACHINE.replace(":stateMachine:", ":execution:") + ":first"
SECOND = MACHINE.replace(":stateMachine:", ":execution:") + ":second"
OTHER = MACHINE.replace(":stateMachine:", ":execution:") + ":unrelated"


class ScriptedStepFunctions:
    """DescribeExecution answers from a script (one status per poll); ListExecutions newest first."""

    def __init__(self, script: dict[str, list[dict[str, Any]]], inputs: dict[str, dict[str, Any]]) -> None:
        self._script = script
        self._inputs = inputs
        self.started: list[str] = [FIRST]

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        steps = self._script[executionArn]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if executionArn == FIRST and step["status"] != "RUNNING" and SECOND not in self.started:
            self.started[:0] = [OTHER, SECOND]  # the handover happened before the first one ended
        return {
            "executionArn": executionArn,
            "stateMachineArn": MACHINE,
            "input": json.dumps(self._inputs.get(executionArn, {})),
            **step,
        }

    def list_executions(self, stateMachineArn: str, maxResults: int) -> dict[str, Any]:
        assert stateMachineArn == MACHINE
        return {"executions": [{"executionArn": arn} for arn in self.started[:maxResults]]}


class ScriptedQueue:
    def __init__(self, depths: list[int]) -> None:
        self._depths = depths

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        depth = self._depths.pop(0) if len(self._depths) > 1 else self._depths[0]
        return {"Attributes": {"ApproximateNumberOfMessages": str(depth), "ApproximateNumberOfMessagesNotVisible": "0"}}


def test_a_handover_is_followed_to_the_successor_and_the_totals_add_up() -> None:
    sfn = ScriptedStepFunctions(
        {
            FIRST: [{"status": "RUNNING"}, {"status": "SUCCEEDED", "output": json.dumps({DELIVERED: 500, FAILED: 1})}],
            # The first RUNNING is what the successor search sees, the second what the next poll sees.
            SECOND: [
                {"status": "RUNNING"},
                {"status": "RUNNING"},
                {"status": "SUCCEEDED", "output": json.dumps({DELIVERED: 20, FAILED: 0})},
            ],
            OTHER: [{"status": "SUCCEEDED"}],
        },
        inputs={SECOND: {names.RETRY_CONTINUED_FROM_KEY: FIRST}, OTHER: {"trigger": "someone else"}},
    )
    lines: list[str] = []
    sleeps: list[float] = []

    outcome = follow_execution(
        sfn,
        ScriptedQueue([521, 300, 20, 0]),
        FIRST,
        queue_url="https://sqs/retry",
        initial_depth=521,
        poll_seconds=2.5,
        say=lines.append,
        sleep=sleeps.append,
    )

    assert outcome.succeeded
    assert (outcome.delivered, outcome.failed) == (520, 1)
    assert f"  handed over to {SECOND}" in lines
    assert lines[-1] == "  SUCCEEDED: 0 message(s) left in the retry queue, 521 delivered so far"
    assert sleeps == [2.5, 2.5]


def test_a_failed_execution_ends_the_wait_with_its_error() -> None:
    sfn = ScriptedStepFunctions(
        {FIRST: [{"status": "FAILED", "error": "TokenExpiredError", "cause": "still dead"}]}, inputs={}
    )

    outcome = follow_execution(
        sfn, ScriptedQueue([4]), FIRST, queue_url="q", initial_depth=4, poll_seconds=0, say=lambda _: None
    )

    assert not outcome.succeeded
    assert (outcome.status, outcome.error, outcome.cause) == ("FAILED", "TokenExpiredError", "still dead")


def test_a_run_stopped_by_the_rate_limit_succeeds_and_says_so() -> None:
    output = {DELIVERED: 3, FAILED: 0, "batches": 1, names.RETRY_STOPPED_BY_KEY: names.RETRY_STOPPED_RATE_LIMITED}
    others = {arn: [{"status": "SUCCEEDED"}] for arn in (SECOND, OTHER)}
    sfn = ScriptedStepFunctions(
        {FIRST: [{"status": "SUCCEEDED", "output": json.dumps(output)}], **others},
        inputs={SECOND: {"trigger": "token-monitor"}, OTHER: {"trigger": "someone else"}},  # no successor
    )

    outcome = follow_execution(
        sfn, ScriptedQueue([9]), FIRST, queue_url="q", initial_depth=12, poll_seconds=0, say=lambda _: None
    )

    assert outcome.succeeded
    assert (outcome.delivered, outcome.stopped_by) == (3, names.RETRY_STOPPED_RATE_LIMITED)


def test_progress_line_without_a_queue_and_with_new_mail_arriving() -> None:
    assert progress_line("RUNNING", None, None) == "  RUNNING: retry queue not found, showing the execution status only"
    assert progress_line("RUNNING", 7, 5) == "  RUNNING: 7 message(s) left in the retry queue, 0 delivered so far"


# --- mailboxes -------------------------------------------------------------------------------------

BOBS_FIRST = MACHINE.replace(":stateMachine:", ":execution:") + ":bobs-first"


def test_only_the_same_mailboxs_successor_is_followed() -> None:
    """Alice's and bob's drains hand over at the same moment: continuedFrom picks alice's successor."""
    sfn = ScriptedStepFunctions(
        {
            FIRST: [{"status": "SUCCEEDED", "output": json.dumps({DELIVERED: 50, FAILED: 0})}],
            SECOND: [{"status": "SUCCEEDED", "output": json.dumps({DELIVERED: 2, FAILED: 0})}],
            OTHER: [{"status": "RUNNING"}],
        },
        inputs={
            # Started after alice's successor, newest first: bob's hand-over is the first candidate.
            OTHER: {names.RETRY_CONTINUED_FROM_KEY: BOBS_FIRST, names.RETRY_MAILBOX_KEY: "bob"},
            SECOND: {names.RETRY_CONTINUED_FROM_KEY: FIRST, names.RETRY_MAILBOX_KEY: "alice"},
        },
    )
    lines: list[str] = []

    outcome = follow_execution(
        sfn, ScriptedQueue([0]), FIRST, queue_url="q", initial_depth=52, poll_seconds=0, say=lines.append
    )

    assert outcome.succeeded and outcome.delivered == 52
    assert f"  handed over to {SECOND}" in lines and f"  handed over to {OTHER}" not in lines


class RecordingStepFunctions:
    """start_execution records its arguments; list/describe answer from ``executions`` (newest first)."""

    def __init__(self, executions: list[dict[str, Any]] | None = None) -> None:
        self.executions = executions or []
        self.started: list[dict[str, Any]] = []
        self.described: list[str] = []
        self.listed: list[dict[str, Any]] = []

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        self.started.append(kwargs)
        return {"executionArn": MACHINE.replace(":stateMachine:", ":execution:") + ":" + kwargs["name"]}

    def list_executions(self, **kwargs: Any) -> dict[str, Any]:
        self.listed.append(kwargs)
        status = kwargs.get("statusFilter")
        found = [
            {k: v for k, v in e.items() if k != "input"}
            for e in self.executions
            if status is None or e["status"] == status
        ]
        return {"executions": found[: kwargs["maxResults"]]}

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.described.append(executionArn)
        [execution] = [e for e in self.executions if e["executionArn"] == executionArn]
        return {**execution, "input": json.dumps(execution["input"])}


NOW = datetime(2026, 11, 24, 10, 20, tzinfo=UTC)


def test_the_cli_start_names_the_mailbox_in_its_input_and_its_name() -> None:
    sfn = RecordingStepFunctions()
    start_retry_processor(sfn, MACHINE, now=NOW)
    start_retry_processor(sfn, MACHINE, now=NOW, mailbox="alice")
    default, alice = sfn.started
    assert json.loads(default["input"]) == {"trigger": TRIGGER, names.RETRY_MAILBOX_KEY: "default"}
    assert json.loads(alice["input"]) == {"trigger": TRIGGER, names.RETRY_MAILBOX_KEY: "alice"}
    assert re.fullmatch(r"refresh-20261124T102000Z-[0-9a-f]{8}", default["name"])
    assert re.fullmatch(r"refresh-alice-20261124T102000Z-[0-9a-f]{8}", alice["name"])
    longest = start_retry_processor(sfn, MACHINE, now=NOW, mailbox="m" * names.MAX_MAILBOX_LENGTH)
    assert len(longest.rsplit(":", 1)[1]) <= 80  # Step Functions' limit on execution names
    with pytest.raises(ValueError, match="mailbox name"):
        start_retry_processor(sfn, MACHINE, mailbox="Not A Mailbox")


def _execution(name: str, status: str, mailbox: str | None, stopped: datetime | None = None) -> dict[str, Any]:
    arn = MACHINE.replace(":stateMachine:", ":execution:") + ":" + name
    execution: dict[str, Any] = {"executionArn": arn, "status": status, "startDate": NOW - timedelta(hours=3)}
    if stopped is not None:
        execution["stopDate"] = stopped
    execution["input"] = {} if mailbox is None else {names.RETRY_MAILBOX_KEY: mailbox}
    return execution


def test_running_execution_is_per_mailbox_and_reads_the_input() -> None:
    bob = _execution("handover-5f0c", RUNNING, "bob")
    legacy = _execution("refresh-20261101T000000Z-00000000", RUNNING, None)  # no mailbox: default
    sfn = RecordingStepFunctions([bob, legacy])

    assert running_execution(sfn, MACHINE, "alice") is None
    assert running_execution(sfn, MACHINE, "bob") == bob["executionArn"]
    assert running_execution(sfn, MACHINE) == legacy["executionArn"]
    assert all(call["statusFilter"] == RUNNING for call in sfn.listed)
    # A shared cache describes each execution once, however many mailboxes ask.
    sfn.described.clear()
    mailbox_of = cached_mailbox_of(sfn)
    for mailbox in ("alice", "bob", "default", "carol"):
        running_execution(sfn, MACHINE, mailbox, mailbox_of=mailbox_of)
    assert sorted(sfn.described) == sorted([bob["executionArn"], legacy["executionArn"]])


def test_recent_failure_is_the_mailboxs_last_stopped_execution() -> None:
    since = NOW - timedelta(hours=1)
    executions = [
        _execution("running", RUNNING, "alice"),
        _execution("bob-ok", "SUCCEEDED", "bob", NOW - timedelta(minutes=1)),
        _execution("alice-failed", "FAILED", "alice", NOW - timedelta(minutes=10)),
        _execution("bob-failed", "TIMED_OUT", "bob", NOW - timedelta(minutes=20)),
        _execution("default-failed", "FAILED", None, NOW - timedelta(minutes=30)),
        _execution("alice-old", "FAILED", "alice", NOW - timedelta(hours=2)),
    ]
    sfn = RecordingStepFunctions(executions)

    assert recent_failure(sfn, MACHINE, since=since, mailbox="alice") == executions[2]["executionArn"]
    assert recent_failure(sfn, MACHINE, since=since, mailbox="bob") is None  # a success came after
    assert recent_failure(sfn, MACHINE, since=since) == executions[4]["executionArn"]
    assert recent_failure(sfn, MACHINE, since=since, mailbox="carol") is None
    # Neither the running one nor what stopped before ``since`` is ever described.
    assert executions[0]["executionArn"] not in sfn.described
    assert executions[5]["executionArn"] not in sfn.described


def test_aborted_by_a_person_is_no_failure() -> None:
    sfn = RecordingStepFunctions([_execution("stopped", "ABORTED", "alice", NOW)])
    assert recent_failure(sfn, MACHINE, since=NOW - timedelta(hours=1), mailbox="alice") is None


def test_retry_queue_url_of_a_mailbox() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        default = sqs.create_queue(QueueName=names.retry_queue("test"))["QueueUrl"]
        alice = sqs.create_queue(QueueName=names.retry_queue("test", "alice"))["QueueUrl"]
        assert retry_queue_url(sqs, "test") == default
        assert retry_queue_url(sqs, "test", "alice") == alice
        assert retry_queue_url(sqs, "test", "bob") is None
