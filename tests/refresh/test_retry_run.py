"""Following the retry processor: progress lines, and the handover of a long backlog to a successor execution."""

from __future__ import annotations

import json
from typing import Any

from sesmail import names
from sesmail.retry_processor import DELIVERED, FAILED
from sesmail.retry_run import follow_execution, progress_line

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
