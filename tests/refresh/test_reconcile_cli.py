"""``python -m sesmail.refresh --env test --reconcile``: the plan from the mail bucket, and the drains it starts.

The CLI runs as an operator runs it (a subprocess against moto's server), through
``tests.rules.aws_calls`` so every AWS call it makes is recorded, with its planning clock
(``sesmail.cli.reconcile._now``) moved ahead: moto stamps every object "now", and the planner
leaves mail younger than ``names.RECONCILE_MIN_AGE_SECONDS`` alone.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sesmail import names
from sesmail.cli.errors import ErrorContext
from sesmail.cli.reconcile import LISTED_MAX, plan_lines
from sesmail.cli.refresh import Console, _Run, main
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from sesmail.runtime.reconcile import Owed, Plan, Stored
from tests.refresh.harness import (
    ACCOUNT,
    CLI,
    ENV,
    FAILING_PROCESSOR,
    REGION,
    Cli,
    CliResult,
    Cloud,
    install_retry_processor,
)
from tests.rules.aws_calls import CALL_LOG_VARIABLE, AwsCall

BUCKET = names.email_bucket(ENV, ACCOUNT, REGION)
TABLE = MailboxTable(
    (Mailbox("default", ("example.com",)), Mailbox("alice", ("alice@example.com",), (), "alice@gmail.com")),
    configured=True,
)
#: What a dry run may call: reads only.
READS = {"sts:GetCallerIdentity", "ssm:GetParameter", "s3:ListObjectsV2", "s3:GetObject"}

#: Runs the CLI through the call recorder with the planning clock moved ahead by argv[1] days.
_LATER = """\
import runpy, sys
from datetime import UTC, datetime, timedelta
import sesmail.cli.reconcile
ahead = timedelta(days=float(sys.argv.pop(1)))
sesmail.cli.reconcile._now = lambda: datetime.now(UTC) + ahead
runpy.run_module("tests.rules.aws_calls", run_name="__main__", alter_sys=True)
"""


def reconcile_argv(*args: str, days: float = 2) -> list[str]:
    """``python -m sesmail.refresh --env test --reconcile ARGS``, recorded, ``days`` later."""
    return [sys.executable, "-c", _LATER, str(days), "--env", ENV, "--reconcile", *args]


def raw_message(recipient: str) -> bytes:
    """A stored message whose first header is SES's own ``Received``, naming the envelope recipient."""
    return (
        f"Received: from mail.sender.example by inbound-smtp.eu-west-1.amazonaws.com with SMTP id abc for "
        f"{recipient}; Mon, 01 Jan 2024 00:00:00 +0000 (UTC)\r\n"
        "From: sender@sender.example\r\n"
        f"To: {recipient}\r\n"
        "Subject: hello\r\n\r\nbody\r\n"
    ).encode()


def store(cloud: Cloud, message_id: str, recipient: str = "bob@example.com", *claims: str) -> None:
    """``inbound/{id}`` and the given claim keys' leaves (``default``, ``default.delivered``, ...)."""
    s3 = cloud.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"{names.INBOUND_PREFIX}{message_id}", Body=raw_message(recipient))
    for leaf in claims:
        s3.put_object(Bucket=BUCKET, Key=f"{names.CLAIMS_PREFIX}{message_id}/{leaf}", Body=b"")


def deploy_mail(cloud: Cloud) -> None:
    """The mail bucket, the mailbox table and alice's retry queue, as ``pulumi up`` leaves them."""
    cloud.client("s3").create_bucket(Bucket=BUCKET)
    cloud.ssm.put_parameter(Name=names.mailboxes_parameter(ENV), Value=TABLE.to_json(), Type="String")
    cloud.sqs.create_queue(QueueName=names.retry_queue(ENV, "alice"))


def seed(cloud: Cloud) -> None:
    """Six messages: three owed, in two batches a second apart so that oldest-first is not id order."""
    store(cloud, "m3-never-alice", "alice@example.com")  # alice: the forwarder never saw it
    store(cloud, "m1-failed-default", "bob@example.com", "default")  # claimed, never delivered or queued
    time.sleep(1.1)  # S3's LastModified has whole seconds
    store(cloud, "m0-never-default", "bob@example.com")  # default (the catch-all): never seen
    store(cloud, "m2-delivered", "bob@example.com", "default", "default.delivered")
    store(cloud, "m4-queued-alice", "alice@example.com", "alice", "alice.queued")
    store(cloud, "m5-unroutable", "someone@elsewhere.example")  # no mailbox receives it


def listed(result: CliResult) -> list[tuple[str, ...]]:
    """The owed lines as (message id, mailbox, why); the stored time checked for its shape."""
    rows: list[tuple[str, ...]] = []
    for line in result.stdout.splitlines():
        if line.startswith("  20"):
            day, minute, message_id, mailbox, *why = line.split()
            datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H:%M")
            rows.append((message_id, mailbox, " ".join(why)))
    return rows


def recorded(cli: Cli, log: Path, argv: list[str]) -> tuple[CliResult, list[AwsCall]]:
    result = cli.run_argv(argv, env={CALL_LOG_VARIABLE: str(log)})
    calls = [AwsCall.from_json(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def world(cloud: Cloud) -> dict[str, Any]:
    """Everything a reconcile could write: the bucket's objects, the queues' messages, the executions."""
    objects = cloud.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])
    queues = cloud.sqs.list_queues().get("QueueUrls", [])
    depths = {url: cloud.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"] for url in queues}
    return {
        "objects": sorted((o["Key"], o["ETag"], o["LastModified"]) for o in objects),
        "queues": {
            url: (a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"])
            for url, a in depths.items()
        },
        "executions": cloud.executions(),
    }


def execution_inputs(cloud: Cloud) -> list[dict[str, Any]]:
    return sorted(
        (json.loads(cloud.sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in cloud.executions()),
        key=lambda i: str(i[names.RETRY_MAILBOX_KEY]),
    )


# --- the dry run: the plan, and nothing else ------------------------------------------------------


def test_the_dry_run_lists_what_is_owed_oldest_first_with_why_and_writes_nothing(
    deployed: Cloud, cli: Cli, tmp_path: Path
) -> None:
    deploy_mail(deployed)
    seed(deployed)
    before = world(deployed)

    result, calls = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--dry-run"))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert listed(result) == [
        ("m1-failed-default", "default", "not delivered"),
        ("m3-never-alice", "alice", "never reached the forwarder"),
        ("m0-never-default", "default", "never reached the forwarder"),
    ]
    assert "Owed, oldest first (3; stored UTC, message id, mailbox, why):" in result.stdout
    assert (
        "Summary: 3 owed, 1 settled, 1 waiting in a queue (pairs of message and mailbox); of 6 stored message(s), "
        "0 too young to judge (under 60 minutes old), 1 unroutable (their headers name no mailbox: m5-unroutable)."
    ) in result.stdout
    assert result.stdout.rstrip().endswith(
        "Dry run: nothing was written and no retry processor was started; rerun without --dry-run to deliver the "
        "3 owed."
    )
    assert world(deployed) == before
    assert {call.action for call in calls} == READS  # the ranged header reads included
    heads = [c.params["Key"] for c in calls if c.action == "s3:GetObject"]
    assert sorted(heads) == ["inbound/m0-never-default", "inbound/m3-never-alice", "inbound/m5-unroutable"]


def test_the_stored_time_is_utc_to_the_minute(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    deploy_mail(deployed)
    store(deployed, "m0-never-default")
    stored = deployed.client("s3").head_object(Bucket=BUCKET, Key="inbound/m0-never-default")["LastModified"]

    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--dry-run"))

    assert result.returncode == 0, result.stderr
    assert f"  {stored.astimezone(UTC):%Y-%m-%d %H:%M}  m0-never-default  default  never reached the forwarder\n" in (
        result.stdout
    )


def test_mail_a_queue_held_past_its_retention_has_left_the_retry_queue(
    deployed: Cloud, cli: Cli, tmp_path: Path
) -> None:
    deploy_mail(deployed)
    store(deployed, "m4-queued-alice", "alice@example.com", "alice", "alice.queued")
    days = names.RECONCILE_QUEUED_WAIT_SECONDS / 86400 + 1

    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--dry-run", days=days))

    assert result.returncode == 0, result.stderr
    assert listed(result) == [("m4-queued-alice", "alice", "left the retry queue")]


def test_mailbox_restricts_the_plan_to_that_mailbox(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    deploy_mail(deployed)
    seed(deployed)

    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--mailbox", "alice", "--dry-run"))

    assert result.returncode == 0, result.stderr
    assert listed(result) == [("m3-never-alice", "alice", "never reached the forwarder")]
    # Unroutable mail is no one mailbox's: only a reconcile of the whole stack reports it.
    assert (
        "Summary: 1 owed, 0 settled, 1 waiting in a queue (pairs of message and mailbox); of 6 stored message(s), "
        "0 too young to judge (under 60 minutes old)."
    ) in result.stdout


def test_a_mailbox_the_stack_does_not_have_is_one_sentence_and_reads_no_mail(
    deployed: Cloud, cli: Cli, tmp_path: Path
) -> None:
    deploy_mail(deployed)
    seed(deployed)

    result, calls = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--mailbox", "bob"))

    assert result.returncode == 1
    assert result.error_lines == [
        "error: stack 'test' has no mailbox 'bob' (it has: default, alice); pass one of those to --mailbox, or "
        "leave --mailbox out to reconcile every mailbox"
    ]
    assert not [c for c in calls if c.service == "s3"]
    assert deployed.executions() == []


def test_young_mail_is_not_owed_and_nothing_is_started(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    deploy_mail(deployed)
    seed(deployed)

    result, calls = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv(days=0))

    assert result.returncode == 0, result.stderr
    assert listed(result) == []
    assert "Nothing is owed to mailboxes 'default', 'alice'." in result.stdout
    assert "of 6 stored message(s), 6 too young to judge" in result.stdout
    assert "No retry processor was started: there is nothing to deliver." in result.stdout
    assert deployed.executions() == []
    assert {call.action for call in calls} == {"sts:GetCallerIdentity", "ssm:GetParameter", "s3:ListObjectsV2"}


def test_without_a_mailbox_table_default_is_the_one_mailbox(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    deployed.client("s3").create_bucket(Bucket=BUCKET)
    store(deployed, "m0-never-default", "anyone@anywhere.example")  # default takes every recipient

    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--dry-run"))

    assert result.returncode == 0, result.stderr
    assert listed(result) == [("m0-never-default", "default", "never reached the forwarder")]


# --- the real run: one retry processor per mailbox owed mail ----------------------------------------


def test_the_reconcile_starts_one_retry_processor_per_mailbox_owed_mail(
    deployed: Cloud, cli: Cli, tmp_path: Path
) -> None:
    deploy_mail(deployed)
    seed(deployed)
    objects_before = world(deployed)["objects"]

    result, calls = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv())

    assert result.returncode == 0, result.stderr
    assert len(listed(result)) == 3
    assert execution_inputs(deployed) == [
        {"trigger": "sesmail.refresh", names.RETRY_MAILBOX_KEY: "alice"},
        {"trigger": "sesmail.refresh", names.RETRY_MAILBOX_KEY: "default"},
    ]
    for execution in deployed.executions():
        assert f": {execution['executionArn']}" in result.stdout
    assert "Started the retry processor for mailbox 'default' (2 owed): " in result.stdout
    assert "Started the retry processor for mailbox 'alice' (1 owed): " in result.stdout
    assert "(follow with --wait, or in the Step Functions console)" in result.stdout
    assert world(deployed)["objects"] == objects_before  # the CLI itself writes nothing to the bucket
    assert {call.action for call in calls} - READS == {"states:StartExecution"}


def test_a_mailbox_owed_nothing_gets_no_retry_processor(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    deploy_mail(deployed)
    store(deployed, "m1-failed-default", "bob@example.com", "default")
    store(deployed, "m4-queued-alice", "alice@example.com", "alice", "alice.queued")  # the queue has it

    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv())

    assert result.returncode == 0, result.stderr
    assert execution_inputs(deployed) == [{"trigger": "sesmail.refresh", names.RETRY_MAILBOX_KEY: "default"}]
    assert "Not started for mailbox 'alice': nothing is owed to it." in result.stdout


def test_wait_follows_each_execution_and_reports_what_it_reconciled(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    install_retry_processor(
        deployed,
        {
            "StartAt": "Reconcile",
            "States": {
                "Reconcile": {"Type": "Wait", "Seconds": 1, "Next": "Totals"},
                "Totals": {
                    "Type": "Pass",
                    "Result": {"delivered": 0, "failed": 0, "batches": 0, "reconciled": 2},
                    "End": True,
                },
            },
        },
    )
    deploy_mail(deployed)
    seed(deployed)

    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--mailbox", "default", "--wait"))

    assert result.returncode == 0, result.stderr
    assert "Following the retry processor of mailbox 'default' (0 message(s) in its retry queue):" in result.stdout
    assert "  SUCCEEDED: 0 message(s) left in the retry queue, 0 delivered so far" in result.stdout
    assert (
        "Mailbox 'default': the retry processor finished: 2 delivered from the bucket, 0 from the retry queue, "
        "0 moved to the retry DLQ."
    ) in result.stdout


def test_wait_fails_when_a_retry_processor_fails(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    install_retry_processor(deployed, FAILING_PROCESSOR)
    deploy_mail(deployed)
    seed(deployed)

    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--mailbox", "alice", "--wait"))

    assert result.returncode == 1
    (execution,) = deployed.executions()
    (error,) = result.error_lines
    assert error == (
        "error: the retry processor of mailbox 'alice' ended FAILED (TokenExpiredError: Gmail rejected a freshly "
        "minted access token); what it did not deliver is still owed, so see `aws stepfunctions "
        f"get-execution-history --execution-arn {execution['executionArn']}`, fix the cause, and rerun "
        "`python -m sesmail.refresh --env test --mailbox alice --reconcile`"
    )


# --- failures: one sentence with the fix -------------------------------------------------------------


def test_a_stack_without_its_mail_bucket_says_to_deploy(deployed: Cloud, cli: Cli, tmp_path: Path) -> None:
    result, _ = recorded(cli, tmp_path / "calls.jsonl", reconcile_argv("--dry-run"))

    assert result.returncode == 1
    assert result.error_lines == [
        f"error: the mail bucket {BUCKET} does not exist; deploy the stack (`pulumi up --stack {ENV}`), or pass the "
        "stack's --region, and rerun"
    ]


def test_credentials_not_allowed_to_list_the_bucket_say_which_permission(
    deployed: Cloud, cli: Cli, tmp_path: Path
) -> None:
    deploy_mail(deployed)
    seed(deployed)
    keys = deployed.operator_credentials(["sts:GetCallerIdentity", "ssm:GetParameter"])

    with deployed.iam_enforced():
        result = cli.run_argv([*CLI, "--env", ENV, "--reconcile", "--dry-run"], env=keys)

    assert result.returncode == 1
    (error,) = result.error_lines
    assert error.startswith("error: AWS denied ")
    assert error.endswith(
        "to these credentials; rerun with credentials allowed to reconcile the stored mail (--profile NAME; the "
        "permissions are listed in the README's 'Renewing the Gmail token')"
    )


# --- usage -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--client-secret", "client.json"], "--client-secret"),
        (["--web-client-secret", "web.json"], "--web-client-secret"),
        (["--no-browser"], "--no-browser"),
        (["--port", "8080"], "--port"),
        (["--no-retry"], "--no-retry"),
        (["--lifetime-days", "7"], "--lifetime-days"),
        (["--no-browser", "--port", "0"], "--no-browser or --port"),
    ],
)
def test_reconcile_refuses_the_options_of_a_renewal(
    options: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--env", ENV, "--reconcile", *options])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m sesmail.refresh" in err
    assert (
        f"--reconcile only delivers stored mail (no consent, no token), so it cannot be combined with {named};" in err
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dry-run"], "--dry-run only goes with --reconcile"),
        (["--dry-run", "--wait"], "--dry-run only goes with --reconcile"),
        (["--reconcile", "--dry-run", "--wait"], "--dry-run starts no retry processor, so there is nothing for --wait"),
    ],
)
def test_dry_run_needs_reconcile_and_has_nothing_to_wait_for(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--env", ENV, *argv])

    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_conflicts_exit_2_from_the_command_line_too(cli: Cli) -> None:
    result = cli.run_argv([*CLI, "--env", ENV, "--reconcile", "--port", "0"])

    assert result.returncode == 2
    assert "cannot be combined with --port" in result.stderr


# --- the listing ---------------------------------------------------------------------------------------


def test_the_listing_stops_at_fifty_lines_and_says_how_many_more() -> None:
    start = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    owed = tuple(
        Owed(Stored(f"m{i:03d}", f"inbound/m{i:03d}", start + timedelta(minutes=i)), "default", False, False)
        for i in range(LISTED_MAX + 7)
    )
    unroutable = tuple(Stored(f"u{i:02d}", f"inbound/u{i:02d}", start) for i in range(12))

    lines = plan_lines(Plan(owed=owed, scanned=80, unroutable=unroutable), ["default"])

    assert lines[0] == f"Owed, oldest first ({LISTED_MAX + 7}; stored UTC, message id, mailbox, why):"
    assert lines[1] == "  2024-05-01 08:00  m000  default  never reached the forwarder"
    assert lines[LISTED_MAX] == "  2024-05-01 08:49  m049  default  never reached the forwarder"
    assert lines[LISTED_MAX + 1] == "  ... and 7 more"
    assert lines[-1].endswith(
        "12 unroutable (their headers name no mailbox: u00, u01, u02, u03, u04, u05, u06, u07, u08, u09 and 2 more)."
    )
    assert len(lines) == LISTED_MAX + 3


def test_an_interrupted_reconcile_names_the_executions_it_started() -> None:
    run = _Run(ENV, ErrorContext(ENV, reconcile=True), Console())
    assert run.interrupted() == "interrupted; nothing was stored"

    run.started.append("arn:aws:states:us-east-1:123456789012:execution:x:refresh-1")

    assert run.interrupted() == (
        "interrupted; the retry processor was started and carries on without this command: "
        "arn:aws:states:us-east-1:123456789012:execution:x:refresh-1"
    )
