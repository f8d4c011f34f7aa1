"""The retry processor as deployed: the exact tested definition, a least-privilege role, logs, tracing."""

from __future__ import annotations

import json
from typing import Any

from sesmail import names
from sesmail.retry_processor import build_definition
from tests.infra.harness import ACCOUNT_ID, PARTITION, REGION, STACK, ProgramRun
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


def test_deploys_exactly_the_definition_the_tests_execute(example_run: ProgramRun) -> None:
    machine = example_run.one(MACHINE, name=names.retry_state_machine(ENV))
    expected = build_definition(
        env=ENV,
        partition=PARTITION,
        retry_queue_url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{names.retry_queue(ENV)}",
        retry_dlq_url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{names.retry_dlq(ENV)}",
        forwarder_function=FORWARDER_ARN,
    )
    assert json.loads(machine.inputs["definition"]) == expected
    assert machine.inputs["type"] == "STANDARD"
    assert example_run.outputs["stateMachineArn"] == MACHINE_ARN


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
