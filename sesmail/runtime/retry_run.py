"""Start the retry processor, see whether one runs, and follow it with a progress display (``--wait``).

Shared by the refresh CLI (after a renewal) and the token monitor (while mail is parked and the
token works), so it is runtime code: standard library and ``sesmail.names`` only, shipped in
the Lambda archive, never google-auth or pulumi.

Progress is read from the outside (``DescribeExecution``, ``ListExecutions`` to find a successor,
and the retry queue's depth) rather than from the execution's history, so it needs only read
permissions on the state machine and the queue.

Every execution drains one mailbox (DESIGN.md, "Mailboxes"): the one its input names under
``names.RETRY_MAILBOX_KEY``, ``default`` when the input names none. ``ListExecutions`` does not show
the input, and the processor's hand-over executions have generated names, so which mailbox an
execution drains is read with ``DescribeExecution`` (:func:`execution_mailbox`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sesmail import names
from sesmail.runtime.retry_processor import DELIVERED, FAILED, RECONCILED

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
    #: What the first execution's reconcile delivered from the bucket (successors only drain).
    reconciled: int | None = None
    #: Why a run that succeeded left mail queued (``names.RETRY_STOPPED_RATE_LIMITED``), if it did.
    stopped_by: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


def retry_queue_url(sqs: Any, env: str, mailbox: str = names.DEFAULT_MAILBOX) -> str | None:
    """URL of a mailbox's retry queue, or None when it does not exist (progress then shows the status only)."""
    try:
        return str(sqs.get_queue_url(QueueName=names.retry_queue(env, mailbox))["QueueUrl"])
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


#: Which mailbox an execution drains, by its ARN (:func:`execution_mailbox`, or a cached version).
MailboxOf = Callable[[str], str]


def input_mailbox(text: str | None) -> str:
    """The mailbox an execution input names (``names.RETRY_MAILBOX_KEY``); ``default`` when it names none."""
    value = _json_object(text).get(names.RETRY_MAILBOX_KEY)
    return value if isinstance(value, str) and value else names.DEFAULT_MAILBOX


def execution_mailbox(sfn: Any, execution_arn: str) -> str:
    """The mailbox an execution drains, read from its input (one ``DescribeExecution``)."""
    return input_mailbox(sfn.describe_execution(executionArn=execution_arn).get("input"))


def inputs_tell_mailboxes_apart(mailboxes: Iterable[str]) -> bool:
    """Whether telling executions' mailboxes apart needs their inputs (``DescribeExecution``).

    Not for a stack whose one mailbox is ``default`` (no ``ses-mail:mailboxes``): every execution
    there drains ``default``, so neither the monitor nor its policy needs ``DescribeExecution``.
    """
    return tuple(mailboxes) != (names.DEFAULT_MAILBOX,)


def cached_mailbox_of(sfn: Any, known: dict[str, str] | None = None) -> MailboxOf:
    """:func:`execution_mailbox` that describes each execution once (an execution's input never changes).

    ``known``: the cache (execution ARN → mailbox); the caller may add what it knows without a
    call, such as the executions it started itself.
    """
    known = {} if known is None else known

    def mailbox_of(execution_arn: str) -> str:
        if execution_arn not in known:
            known[execution_arn] = execution_mailbox(sfn, execution_arn)
        return known[execution_arn]

    return mailbox_of


#: Page size of the ``ListExecutions`` calls below (the API's maximum is 1000).
_LIST_PAGE = 100


def running_execution(
    sfn: Any,
    state_machine_arn: str,
    mailbox: str = names.DEFAULT_MAILBOX,
    *,
    mailbox_of: MailboxOf | None = None,
) -> str | None:
    """The ARN of a running execution of the retry processor for ``mailbox``, if there is one.

    One list call (running executions are few: about one per mailbox), then one
    ``DescribeExecution`` per running execution until one of ``mailbox`` is found; ``mailbox_of``
    replaces those (a cache shared by several mailboxes, or a constant where there is one mailbox).
    """
    mailbox_of = mailbox_of or (lambda arn: execution_mailbox(sfn, arn))
    request: dict[str, Any] = {"stateMachineArn": state_machine_arn, "statusFilter": RUNNING, "maxResults": _LIST_PAGE}
    while True:
        listed = sfn.list_executions(**request)
        for execution in listed.get("executions") or []:
            arn = str(execution["executionArn"])
            if mailbox_of(arn) == mailbox:
                return arn
        if not listed.get("nextToken"):
            return None
        request["nextToken"] = listed["nextToken"]


#: Execution statuses after which the monitor backs off before starting another (not ABORTED:
#: a person stopped that one, and may want the next start at once).
FAILED_STATUSES = frozenset({"FAILED", "TIMED_OUT"})


def recent_failure(
    sfn: Any,
    state_machine_arn: str,
    *,
    since: datetime,
    mailbox: str = names.DEFAULT_MAILBOX,
    mailbox_of: MailboxOf | None = None,
) -> str | None:
    """The ARN of ``mailbox``'s last execution to stop after ``since``, if it failed.

    A later success (a renewal's drain, say) of the same mailbox ends the backoff, and
    another mailbox's failure never starts one. One list call of the newest executions; only
    those that stopped after ``since`` are described (rarely more than a few in the last hour).
    """
    mailbox_of = mailbox_of or (lambda arn: execution_mailbox(sfn, arn))
    listed = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=_LIST_PAGE)
    stopped = [
        e
        for e in listed.get("executions") or []
        if e.get("status") != RUNNING and isinstance(e.get("stopDate"), datetime) and e["stopDate"] > since
    ]
    for execution in sorted(stopped, key=lambda e: e["stopDate"], reverse=True):
        if mailbox_of(str(execution["executionArn"])) == mailbox:
            return str(execution["executionArn"]) if execution.get("status") in FAILED_STATUSES else None
    return None


def start_retry_processor(
    sfn: Any,
    state_machine_arn: str,
    *,
    now: datetime | None = None,
    trigger: str = TRIGGER,
    name: str | None = None,
    mailbox: str = names.DEFAULT_MAILBOX,
) -> str:
    """Start one execution that drains ``mailbox``'s retry queue; returns its ARN.

    Its input names who started it and the mailbox (``{"trigger": ..., "mailbox": ...}``).
    Without ``name`` it gets a unique, sortable one (the CLI: every renewal starts a drain):
    ``refresh-{stamp}-{hex}`` for ``default``, ``refresh-{mailbox}-{stamp}-{hex}`` for the others.
    A given ``name`` makes the start idempotent: Step Functions runs one execution per name and
    input, and refuses the name once that execution has ended (``ExecutionAlreadyExists``).
    """
    names.check_mailbox(mailbox)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    prefix = "refresh" if mailbox == names.DEFAULT_MAILBOX else f"refresh-{mailbox}"
    response = sfn.start_execution(
        stateMachineArn=state_machine_arn,
        name=name or f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}",
        input=json.dumps({"trigger": trigger, names.RETRY_MAILBOX_KEY: mailbox}),
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
    """The execution this one started to continue the drain, if any (newest executions first).

    Matched by ``names.RETRY_CONTINUED_FROM_KEY`` = this execution's ARN, which only the
    execution's own hand-over writes: so it is always the same mailbox's successor, never the
    drain another mailbox handed over at the same time.
    """
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
    """Sum the processor's ``{"delivered": n, "failed": m, "reconciled": r}`` output (absent from stand-ins)."""
    reported = _json_object(output)
    for key in (DELIVERED, FAILED, RECONCILED):
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


def finished_sentence(outcome: Outcome) -> str:
    """``the retry processor finished: 2 delivered from the bucket, 5 from the retry queue, 0 moved to
    the retry DLQ.`` (the parts the processor reported)."""
    parts = [] if outcome.reconciled is None else [f"{outcome.reconciled} delivered from the bucket"]
    if outcome.delivered is not None:
        parts.append(f"{outcome.delivered} from the retry queue, {outcome.failed or 0} moved to the retry DLQ")
    return f"the retry processor finished{': ' + ', '.join(parts) if parts else ''}."
