"""The retry processor as deployed: the exact tested definition, a least-privilege role, logs, tracing.

The example stack has one mailbox; ``run_with_mailboxes`` renders a stack with three (one state
machine for all of them, its role on exactly their queues).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from sesmail import names
from sesmail.runtime.retry_processor import MailboxQueues, build_definition
from tests.infra.harness import ACCOUNT_ID, PARTITION, REGION, STACK, ProgramRun
from tests.infra.mailbox_stacks import THREE_MAILBOXES, THREE_WITHOUT_DEFAULT, run_with_mailboxes
from tests.infra.policy_doc import allows, as_list, grants, queue_arn, statements

ENV = STACK
MACHINE = "aws:sfn/stateMachine:StateMachine"
MACHINE_ARN = f"arn:{PARTITION}:states:{REGION}:{ACCOUNT_ID}:stateMachine:{names.retry_state_machine(ENV)}"
FORWARDER_ARN = f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:function:{names.forwarder_function(ENV)}"


def _policy(run: ProgramRun) -> dict[str, Any]:
    document: dict[str, Any] = run.one(
        "aws:iam/rolePolicy:RolePolicy", role=names.retry_processor_role(ENV)
    ).json_input("policy")
    return document


def _queues(mailbox: str) -> MailboxQueues:
    return MailboxQueues(
        mailbox,
        f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{names.retry_queue(ENV, mailbox)}",
        f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{names.retry_dlq(ENV, mailbox)}",
    )


def test_deploys_exactly_the_definition_the_tests_execute(example_run: ProgramRun) -> None:
    machine = example_run.one(MACHINE, name=names.retry_state_machine(ENV))
    expected = build_definition(
        env=ENV,
        partition=PARTITION,
        mailboxes=[_queues(names.DEFAULT_MAILBOX)],
        forwarder_function=FORWARDER_ARN,
    )
    assert json.loads(machine.inputs["definition"]) == expected
    assert machine.inputs["type"] == "STANDARD"
    assert example_run.outputs["stateMachineArn"] == MACHINE_ARN


@pytest.mark.parametrize("mailboxes", [THREE_MAILBOXES, THREE_WITHOUT_DEFAULT], ids=["with-default", "no-default"])
def test_one_state_machine_serves_every_mailbox(mailboxes: Sequence[str]) -> None:
    run = run_with_mailboxes(mailboxes)
    [machine] = run.of_type(MACHINE)
    assert machine.inputs["name"] == names.retry_state_machine(ENV)
    expected = build_definition(
        env=ENV,
        partition=PARTITION,
        mailboxes=[_queues(m) for m in mailboxes],
        forwarder_function=FORWARDER_ARN,
    )
    assert json.loads(machine.inputs["definition"]) == expected


@pytest.mark.parametrize("mailboxes", [THREE_MAILBOXES, THREE_WITHOUT_DEFAULT], ids=["with-default", "no-default"])
def test_role_drains_exactly_every_mailboxs_retry_queue_and_writes_exactly_their_dlqs(
    mailboxes: Sequence[str],
) -> None:
    policy = _policy(run_with_mailboxes(mailboxes))
    retry_queues = sorted(queue_arn(names.retry_queue(ENV, m)) for m in mailboxes)
    retry_dlqs = sorted(queue_arn(names.retry_dlq(ENV, m)) for m in mailboxes)
    assert sorted(grants(policy, "sqs:ReceiveMessage")) == retry_queues
    assert sorted(grants(policy, "sqs:DeleteMessage")) == retry_queues
    assert sorted(grants(policy, "sqs:SendMessage")) == retry_dlqs
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "sqs:PurgeQueue"):
        assert not allows(policy, action, queue_arn(names.retry_queue(ENV, "mallory")))
        assert not allows(policy, action, queue_arn(names.retry_dlq(ENV, "mallory")))
    sqs_resources = [
        r for s in statements(policy) for r in as_list(s["Resource"]) if r.startswith(f"arn:{PARTITION}:sqs:")
    ]
    assert sqs_resources and not any("*" in r for r in sqs_resources)  # none reaches a mailbox not configured


def test_logs_errors_without_execution_data_and_traces(example_run: ProgramRun) -> None:
    machine = example_run.one(MACHINE, name=names.retry_state_machine(ENV))
    logging = machine.inputs["loggingConfiguration"]
    assert logging["level"] == "ERROR"
    assert logging["includeExecutionData"] is False  # execution data holds mail headers
    log_group = example_run.one("aws:cloudwatch/logGroup:LogGroup", name=names.state_machine_log_group(ENV))
    assert logging["logDestination"].startswith(f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT_ID}:log-group:")
    assert log_group.inputs["retentionInDays"] > 0
    assert machine.inputs["tracingConfiguration"] == {"enabled": True}
    role_policy = example_run.one("aws:iam/rolePolicy:RolePolicy", role=names.retry_processor_role(ENV))
    assert machine.depends_on(role_policy) and machine.depends_on(log_group)


def test_role_is_assumable_by_step_functions_of_this_account_only(example_run: ProgramRun) -> None:
    role = example_run.one("aws:iam/role:Role", name=names.retry_processor_role(ENV))
    (trust,) = statements(role.json_input("assumeRolePolicy"))
    assert trust["Principal"] == {"Service": "states.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}


def test_role_touches_only_its_queues_the_forwarder_and_its_namespace(example_run: ProgramRun) -> None:
    policy = _policy(example_run)
    retry, retry_dlq = queue_arn(names.retry_queue(ENV)), queue_arn(names.retry_dlq(ENV))
    assert grants(policy, "sqs:ReceiveMessage") == [retry]
    assert grants(policy, "sqs:DeleteMessage") == [retry]
    assert grants(policy, "sqs:SendMessage") == [retry_dlq]
    for other in (names.inbound_queue(ENV), names.inbound_dlq(ENV)):
        assert not allows(policy, "sqs:ReceiveMessage", queue_arn(other))
        assert not allows(policy, "sqs:SendMessage", queue_arn(other))
    assert not grants(policy, "sqs:PurgeQueue")
    assert set(grants(policy, "lambda:InvokeFunction")) == {FORWARDER_ARN, f"{FORWARDER_ARN}:*"}
    assert grants(policy, "states:StartExecution") == [MACHINE_ARN]
    [metrics] = [s for s in statements(policy) if "cloudwatch:PutMetricData" in as_list(s["Action"])]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": names.metric_namespace(ENV)}}
    for stmt in statements(policy):
        assert not any(a.startswith(("ssm:", "s3:", "kms:")) for a in as_list(stmt["Action"])), stmt
