"""Start the retry processor, see whether one runs, and follow it with a progress display (``--wait``).

Shared by the refresh CLI (after a renewal) and the token monitor (while mail is parked and the
token works), so it is runtime code: standard library and ``sesmail.names`` only, shipped in
the Lambda archive, never google-auth or pulumi.

Progress is read from the outside (``DescribeExecution``, ``ListExecutions`` to find a successor,
and the retry queue's depth) rather than from the execution's history, so it needs only read
permissions on the state machine and the queue.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sesmail import names
from sesmail.retry_processor import DELIVERED, FAILED

RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
#: What the execution input says about who started it (the processor drains the queue regardless).
TRIGGER = "sesmail.refresh"
#: How many of the newest executions to search for a successor (handovers start it just before ending).
_SUCCESSOR_SEARCH = 20

Say = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    """How the chain of executions ended, with the processor's own totals when it reported them."""

    status: str
    error: str | None = None
    cause: str | None = None
    delivered: int | None = None
    failed: int | None = None
    #: Why a run that succeeded left mail queued (``names.RETRY_STOPPED_RATE_LIMITED``), if it did.
    stopped_by: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


def retry_queue_url(sqs: Any, env: str) -> str | None:
    """URL of the retry queue, or None when it does not exist (progress then shows the status only)."""
    try:
        return str(sqs.get_queue_url(QueueName=names.retry_queue(env))["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        return None


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Messages still in the queue: waiting plus currently being processed (in flight)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def visible_messages(sqs: Any, queue_url: str) -> int:
    """Messages waiting to be received (``ApproximateNumberOfMessages``), without those in flight."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))


def running_execution(sfn: Any, state_machine_arn: str) -> str | None:
    """The ARN of a running execution of the retry processor, if there is one (one list call)."""
    listed = sfn.list_executions(stateMachineArn=state_machine_arn, statusFilter=RUNNING, maxResults=1)
    executions = listed.get("executions") or []
    return str(executions[0]["executionArn"]) if executions else None


#: Execution statuses after which the monitor backs off before starting another (not ABORTED:
#: a person stopped that one, and may want the next start at once).
FAILED_STATUSES = frozenset({"FAILED", "TIMED_OUT"})


def recent_failure(sfn: Any, state_machine_arn: str, *, since: datetime) -> str | None:
    """The newest execution, if it failed and stopped after ``since`` (one list call)."""
    listed = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=1)
    executions = listed.get("executions") or []
    if not executions or executions[0].get("status") not in FAILED_STATUSES:
        return None
    stopped = executions[0].get("stopDate")
    return str(executions[0]["executionArn"]) if isinstance(stopped, datetime) and stopped > since else None


def start_retry_processor(
    sfn: Any,
    state_machine_arn: str,
    *,
    now: datetime | None = None,
    trigger: str = TRIGGER,
    name: str | None = None,
) -> str:
    """Start one execution whose input names who started it; returns its ARN.

    Without ``name`` it gets a unique, sortable one (the CLI: every renewal starts a drain). A
    given ``name`` makes the start idempotent: Step Functions runs one execution per name and
    input, and refuses the name once that execution has ended (``ExecutionAlreadyExists``).
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    response = sfn.start_execution(
        stateMachineArn=state_machine_arn,
        name=name or f"refresh-{stamp}-{uuid.uuid4().hex[:8]}",
        input=json.dumps({"trigger": trigger}),
    )
    return str(response["executionArn"])


def follow_execution(
    sfn: Any,
    sqs: Any,
    execution_arn: str,
    *,
    queue_url: str | None,
    initial_depth: int | None,
    poll_seconds: float,
    say: Say,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Poll until the execution ends, printing one progress line per poll.

    A processor that hands a long backlog over to a successor execution ends SUCCEEDED
    with mail still queued; the successor (input ``names.RETRY_CONTINUED_FROM_KEY``) is followed
    in its place, and the processors' totals are added up.
    """
    totals: dict[str, int] = {}
    while True:
        execution = sfn.describe_execution(executionArn=execution_arn)
        status = str(execution["status"])
        left = queue_depth(sqs, queue_url) if queue_url else None
        say(progress_line(status, left, initial_depth))
        if status == RUNNING:
            sleep(poll_seconds)
            continue
        _add_totals(totals, execution.get("output"))
        successor = find_successor(sfn, execution) if status == SUCCEEDED else None
        if successor is None:
            stopped_by = _json_object(execution.get("output")).get(names.RETRY_STOPPED_BY_KEY)
            return Outcome(
                status,
                execution.get("error"),
                execution.get("cause"),
                **totals,
                stopped_by=stopped_by if isinstance(stopped_by, str) else None,
            )
        say(f"  handed over to {successor}")
        execution_arn = successor


def find_successor(sfn: Any, execution: dict[str, Any]) -> str | None:
    """The execution this one started to continue the drain, if any (newest executions first)."""
    arn = execution["executionArn"]
    recent = sfn.list_executions(stateMachineArn=execution["stateMachineArn"], maxResults=_SUCCESSOR_SEARCH)
    for candidate in recent.get("executions", []):
        if candidate["executionArn"] == arn:
            break  # listed newest first: everything after this started before it
        described = sfn.describe_execution(executionArn=candidate["executionArn"])
        if _json_object(described.get("input")).get(names.RETRY_CONTINUED_FROM_KEY) == arn:
            return str(candidate["executionArn"])
    return None


def _add_totals(totals: dict[str, int], output: str | None) -> None:
    """Sum the processor's ``{"delivered": n, "failed": m}`` output (absent from stand-in definitions)."""
    reported = _json_object(output)
    for key in (DELIVERED, FAILED):
        if isinstance(reported.get(key), int):
            totals[key] = totals.get(key, 0) + int(reported[key])


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def progress_line(status: str, left: int | None, initial_depth: int | None) -> str:
    """``RUNNING: 3 message(s) left in the retry queue, 2 delivered so far``.

    "Delivered" counts the messages that left the queue since the start, which also includes
    any the processor moved to the retry DLQ; new mail parked meanwhile can only make it lower.
    """
    if left is None:
        return f"  {status}: retry queue not found, showing the execution status only"
    delivered = max(0, (initial_depth or 0) - left)
    return f"  {status}: {left} message(s) left in the retry queue, {delivered} delivered so far"
