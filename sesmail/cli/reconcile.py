"""``python -m sesmail.refresh --env ENV --reconcile``: deliver the stored mail no queue will.

The plan is :class:`sesmail.runtime.reconcile.Planner`'s, made from the mail bucket (two LIST sweeps, and
one ranged GET per message the forwarder never saw) for every mailbox of the stack's table, or the
one ``--mailbox`` names. It is printed for a human, oldest first, with why each (message, mailbox)
is owed; ``--dry-run`` stops there, having written and started nothing. Otherwise the retry
processor is started for each mailbox that is owed mail: every execution reconciles its mailbox
first (the forwarder delivers from the bucket, through the claims, so nothing is imported twice)
and then drains its retry queue. ``--wait`` follows the executions, one after another.

The CLI's plumbing (AWS clients, the caller's identity, the mailbox table, the wording of errors)
is :mod:`sesmail.cli.refresh`'s; this module plans, words the plan and starts the executions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sesmail import names
from sesmail.cli.errors import ErrorContext, RefreshFailed, explain
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.mailboxes import MailboxTable
from sesmail.runtime.reconcile import Owed, Plan, Planner
from sesmail.runtime.retry_run import (
    TRIGGER,
    Outcome,
    Say,
    finished_sentence,
    follow_execution,
    queue_depth,
    retry_queue_url,
    start_retry_processor,
)

#: Owed (message, mailbox) lines printed before "... and N more".
LISTED_MAX = 50
#: Unroutable message ids the summary names.
UNROUTABLE_LISTED_MAX = 10

#: Why a (message, mailbox) is owed, from what its claims say.
NEVER_REACHED = "never reached the forwarder"
LEFT_THE_QUEUE = "left the retry queue"
NOT_DELIVERED = "not delivered"


def _now() -> datetime:
    """The plan's clock: messages younger than ``names.RECONCILE_MIN_AGE_SECONDS`` are left alone."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Stack:
    """Where the stack is deployed: what names its mail bucket and its retry processor."""

    env: str
    account: str
    region: str
    partition: str

    @property
    def bucket(self) -> str:
        return names.email_bucket(self.env, self.account, self.region)

    @property
    def state_machine_arn(self) -> str:
        return names.state_machine_arn(self.env, self.region, self.account, self.partition)


@dataclass(frozen=True)
class Request:
    """What the operator asked for."""

    #: ``--mailbox``; None: every mailbox of the table.
    mailbox: str | None = None
    dry_run: bool = False
    wait: bool = False
    poll_seconds: float = names.DEFAULT_POLL_SECONDS


@dataclass(frozen=True)
class _Started:
    mailbox: str
    execution_arn: str
    #: The retry queue just before the start (``--wait`` only), for the progress lines.
    queue_url: str | None = None
    depth: int | None = None


def reconcile(
    aws: AwsClients,
    stack: Stack,
    table: MailboxTable,
    request: Request,
    *,
    say: Say,
    ctx: ErrorContext,
    on_started: Callable[[str], None] = lambda _arn: None,
) -> None:
    """Plan, print, and unless ``request.dry_run`` start (and follow) the drains; raises on failure."""
    mailboxes = selected_mailboxes(table, request.mailbox, stack.env)
    every = request.mailbox is None  # unroutable mail belongs to no mailbox: reported for the whole stack only
    say(f"Reading the mail bucket {stack.bucket} for {_mailboxes(mailboxes)} ...")
    planner = Planner(lambda: aws.s3, stack.bucket, table, now=lambda: _now())  # _now looked up late: tests move it
    plan = planner.plan(mailboxes, with_unroutable=every)
    for line in plan_lines(plan, mailboxes, unroutable_reported=every):
        say(line)
    if request.dry_run:
        rest = f"; rerun without --dry-run to deliver the {len(plan.owed)} owed" if plan.owed else ""
        say(f"Dry run: nothing was written and no retry processor was started{rest}.")
        return
    owed = [m for m in mailboxes if any(o.mailbox == m for o in plan.owed)]
    if not owed:
        say("No retry processor was started: there is nothing to deliver.")
        return
    started = _start(aws, stack, request, owed, plan, say=say, ctx=ctx, on_started=on_started)
    idle = [m for m in mailboxes if m not in owed]
    if idle:
        say(f"Not started for {_mailboxes(idle)}: nothing is owed to {'them' if len(idle) > 1 else 'it'}.")
    if not request.wait:
        say(
            "Each execution delivers its mailbox's owed mail from the bucket, then drains its retry queue, in the "
            "background (follow with --wait, or in the Step Functions console)."
        )
        return
    _follow(aws, stack.env, started, request.poll_seconds, say)


def selected_mailboxes(table: MailboxTable, mailbox: str | None, env: str) -> tuple[str, ...]:
    """``--mailbox``'s one mailbox, which must be the table's, or every mailbox of the table."""
    if mailbox is None:
        return table.names
    if table.get(mailbox) is None:
        raise RefreshFailed(
            f"stack {env!r} has no mailbox {mailbox!r} (it has: {', '.join(table.names)}); pass one of those to "
            "--mailbox, or leave --mailbox out to reconcile every mailbox"
        )
    return (mailbox,)


def reason(owed: Owed) -> str:
    """Why it is owed: a queue held it past its retention, the forwarder failed it, or never saw it."""
    if owed.queued:
        return LEFT_THE_QUEUE
    if owed.claimed:
        return NOT_DELIVERED
    return NEVER_REACHED


def plan_lines(plan: Plan, mailboxes: Sequence[str], *, unroutable_reported: bool = True) -> list[str]:
    """The plan for a human: the owed pairs, oldest first (at most LISTED_MAX lines), then one summary line."""
    lines: list[str] = []
    if plan.owed:
        shown = plan.owed[:LISTED_MAX]
        id_width = max(len(o.message.message_id) for o in shown)
        width = max(len(o.mailbox) for o in shown)
        lines.append(f"Owed, oldest first ({len(plan.owed)}; stored UTC, message id, mailbox, why):")
        lines.extend(
            f"  {o.message.stored_at.astimezone(UTC):%Y-%m-%d %H:%M}  {o.message.message_id:<{id_width}}  "
            f"{o.mailbox:<{width}}  {reason(o)}"
            for o in shown
        )
        if len(plan.owed) > LISTED_MAX:
            lines.append(f"  ... and {len(plan.owed) - LISTED_MAX} more")
    else:
        lines.append(f"Nothing is owed to {_mailboxes(mailboxes)}.")
    minutes = names.RECONCILE_MIN_AGE_SECONDS // 60
    summary = (
        f"Summary: {len(plan.owed)} owed, {plan.settled} settled, {plan.waiting} waiting in a queue (pairs of "
        f"message and mailbox); of {plan.scanned} stored message(s), {plan.young} too young to judge (under "
        f"{minutes} minutes old)"
    )
    if unroutable_reported:
        summary += f", {len(plan.unroutable)} unroutable"
        if plan.unroutable:
            ids = [s.message_id for s in plan.unroutable[:UNROUTABLE_LISTED_MAX]]
            more = len(plan.unroutable) - len(ids)
            summary += f" (their headers name no mailbox: {', '.join(ids)}{f' and {more} more' if more else ''})"
    lines.append(summary + ".")
    return lines


def _start(
    aws: AwsClients,
    stack: Stack,
    request: Request,
    owed: Sequence[str],
    plan: Plan,
    *,
    say: Say,
    ctx: ErrorContext,
    on_started: Callable[[str], None],
) -> list[_Started]:
    """One execution per mailbox in ``owed`` (table order), started as the renewal starts its drain."""
    sfn = aws.get("stepfunctions")
    started: list[_Started] = []
    for mailbox in owed:
        url = retry_queue_url(aws.sqs, stack.env, mailbox) if request.wait else None
        depth = queue_depth(aws.sqs, url) if url else None
        try:
            arn = start_retry_processor(sfn, stack.state_machine_arn, mailbox=mailbox, trigger=TRIGGER)
        except Exception as exc:
            if not started:
                raise
            raise RefreshFailed(
                f"the retry processor was started for {_mailboxes([s.mailbox for s in started])}, but not for "
                f"mailbox {mailbox!r}: {explain(exc, ctx)}"
            ) from exc
        on_started(arn)
        started.append(_Started(mailbox, arn, url, depth))
        count = sum(1 for o in plan.owed if o.mailbox == mailbox)
        say(f"Started the retry processor for mailbox {mailbox!r} ({count} owed): {arn}")
    return started


def _follow(aws: AwsClients, env: str, started: Sequence[_Started], poll_seconds: float, say: Say) -> None:
    """Follow each execution to its end (as the renewal's ``--wait`` does); raise if one failed."""
    sfn = aws.get("stepfunctions")
    failed: list[tuple[_Started, Outcome]] = []
    for run in started:
        depth = run.depth if run.depth is not None else "unknown number of"
        say(f"Following the retry processor of mailbox {run.mailbox!r} ({depth} message(s) in its retry queue):")
        outcome = follow_execution(
            sfn,
            aws.sqs,
            run.execution_arn,
            queue_url=run.queue_url,
            initial_depth=run.depth,
            poll_seconds=poll_seconds,
            say=say,
        )
        if not outcome.succeeded:
            failed.append((run, outcome))
            say(
                f"Mailbox {run.mailbox!r}: the retry processor ended {outcome.status} ({outcome.error or 'no error'}: "
                f"{outcome.cause or 'no cause given'}): {run.execution_arn}"
            )
            continue
        say(f"Mailbox {run.mailbox!r}: {finished_sentence(outcome)}")
        if outcome.stopped_by == names.RETRY_STOPPED_RATE_LIMITED:
            say(
                "It stopped early on Gmail's rate limit: the rest stays owed, and a later run delivers it (the "
                "token monitor's, while mail is queued, or the daily reconcile)."
            )
    if failed:
        raise _failure(env, failed)


def _failure(env: str, failed: Sequence[tuple[_Started, Outcome]]) -> RefreshFailed:
    """One sentence for the executions that did not succeed (each was named above with its ARN)."""
    if len(failed) == 1:
        run, outcome = failed[0]
        return RefreshFailed(
            f"the retry processor of mailbox {run.mailbox!r} ended {outcome.status} ({outcome.error or 'no error'}: "
            f"{outcome.cause or 'no cause given'}); what it did not deliver is still owed, so see "
            f"`aws stepfunctions get-execution-history --execution-arn {run.execution_arn}`, fix the cause, and "
            f"rerun `{names.refresh_command(env, run.mailbox)} --reconcile`"
        )
    which = ", ".join(f"{run.mailbox!r} ({outcome.status})" for run, outcome in failed)
    return RefreshFailed(
        f"the retry processor of mailboxes {which} did not succeed; what they did not deliver is still owed, so see "
        "each execution's history (`aws stepfunctions get-execution-history --execution-arn ARN`, ARNs above), fix "
        f"the cause, and rerun `{names.refresh_command(env)} --reconcile`"
    )


def _mailboxes(mailboxes: Sequence[str]) -> str:
    """``mailbox 'a'`` or ``mailboxes 'a', 'b'``."""
    quoted = ", ".join(repr(m) for m in mailboxes)
    return f"mailbox {quoted}" if len(mailboxes) == 1 else f"mailboxes {quoted}"
