"""The canary in the graph: its key, function, daily schedule, least privilege, an alarm per mailbox;
``ses-mail:canary: false`` removes all of it."""

from __future__ import annotations

from typing import Any

import pytest

from sesmail import names
from sesmail.infra.config import ConfigError, StackConfig
from tests.infra.harness import ACCOUNT_ID, REGION, ProgramRun, is_secret, run_program, stack_config, unsecret

ENV = "test"
ADDRESS = names.canary_address("example.com")
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
FUNCTION = "aws:lambda/function:Function"
RULE = "aws:cloudwatch/eventRule:EventRule"
PARAMETER = "aws:ssm/parameter:Parameter"


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program()


@pytest.fixture(scope="module")
def family_run() -> ProgramRun:
    mailboxes = [
        {"name": "alice", "recipients": ["alice@example.com"]},
        {"name": "bob", "recipients": ["bob@example.com"]},
    ]
    return run_program(stack_config(mailboxes=mailboxes, recipients=None, extraLabels=None))


def _policy(run: ProgramRun, role: str) -> dict[str, Any]:
    policy: dict[str, Any] = run.one("aws:iam/rolePolicy:RolePolicy", role=role).json_input("policy")
    return policy


def test_the_canary_runs_daily_and_only_its_schedule_may_invoke_it(run: ProgramRun) -> None:
    function = run.one(FUNCTION, name=names.canary_function(ENV))
    assert function.inputs["handler"] == names.CANARY_HANDLER == "handlers.canary.handler"
    assert function.inputs["environment"]["variables"] == {
        names.ENV_VAR_ENV: ENV,
        names.ENV_VAR_CANARY_ADDRESS: ADDRESS,
    }
    rule = run.one(RULE, name=names.canary_schedule_rule(ENV))
    assert rule.inputs["scheduleExpression"] == "rate(1 day)"
    (target,) = [
        t for t in run.of_type("aws:cloudwatch/eventTarget:EventTarget") if t.inputs["rule"] == rule.inputs["name"]
    ]
    assert target.inputs["arn"] == function.state["arn"]
    (permission,) = [
        p for p in run.of_type("aws:lambda/permission:Permission") if p.inputs["function"] == names.canary_function(ENV)
    ]
    assert permission.inputs["sourceArn"] == rule.state["arn"]
    assert target.depends_on(permission)


def test_the_key_is_generated_once_and_kept_secret(run: ProgramRun) -> None:
    key = run.one(PARAMETER, name=names.canary_key_parameter(ENV))
    assert key.inputs["type"] == "SecureString" and key.inputs["keyId"] == "alias/aws/ssm"
    assert is_secret(key.inputs["value"])  # encrypted in Pulumi's state too
    assert "value" in key.ignore_changes  # a later pulumi up never rolls it
    assert len(unsecret(key.inputs["value"])) >= 40  # 32 random bytes, URL-safe base64


def test_the_canary_may_send_only_as_itself(run: ProgramRun) -> None:
    statements = {s["Sid"]: s for s in _policy(run, names.canary_role(ENV))["Statement"]}
    send = statements["SendTheCanaryFromItsOwnAddress"]
    assert send["Action"] == ["ses:SendRawEmail"]
    assert send["Resource"] == f"arn:aws:ses:{REGION}:{ACCOUNT_ID}:identity/example.com"
    assert send["Condition"] == {"StringEquals": {"ses:FromAddress": ADDRESS}}
    assert statements["ReadTheCanaryKey"]["Resource"] == (
        f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{names.canary_key_parameter(ENV)}"
    )
    assert set(statements) == {"SendTheCanaryFromItsOwnAddress", "ReadTheCanaryKey", "WriteOwnLogs"}


def test_the_forwarder_knows_the_canary_address(run: ProgramRun) -> None:
    function = run.one(FUNCTION, name=names.forwarder_function(ENV))
    assert function.inputs["environment"]["variables"][names.ENV_VAR_CANARY_ADDRESS] == ADDRESS


def test_one_alarm_per_mailbox_missing_data_breaching(family_run: ProgramRun) -> None:
    for mailbox in ("alice", "bob"):
        alarm = family_run.one(ALARM, name=names.canary_alarm(ENV, mailbox)).inputs
        assert alarm["metricName"] == names.METRIC_CANARY_DELIVERED
        assert alarm["dimensions"] == {names.MAILBOX_DIMENSION: mailbox}
        assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (3600, 26, 26)
        assert (alarm["statistic"], alarm["comparisonOperator"], alarm["threshold"]) == ("Sum", "LessThanThreshold", 1)
        assert alarm["treatMissingData"] == "breaching"
        assert names.log_query(ENV, names.LOG_QUERY_CANARY_STORY) in alarm["alarmDescription"]


def test_the_canary_story_reads_the_canary_and_the_forwarder(run: ProgramRun) -> None:
    query = run.one("aws:cloudwatch/queryDefinition:QueryDefinition", name=names.log_query(ENV, "canary-story"))
    assert set(query.inputs["logGroupNames"]) == {
        names.lambda_log_group(names.canary_function(ENV)),
        names.lambda_log_group(names.forwarder_function(ENV)),
    }
    assert "ispresent(canaryId)" in query.inputs["queryString"]


def test_canary_false_removes_schedule_function_key_alarm_and_query() -> None:
    off = run_program(stack_config(canary=False))
    assert not [r for r in off.custom_resources if "canary" in (r.physical_name or "")]
    function = off.one(FUNCTION, name=names.forwarder_function(ENV))
    assert names.ENV_VAR_CANARY_ADDRESS not in function.inputs["environment"]["variables"]
    rule = off.one("aws:ses/receiptRule:ReceiptRule", name=names.receipt_rule(ENV))
    assert ADDRESS not in rule.inputs["recipients"]


@pytest.mark.parametrize("value", ["yes", "1", "maybe"])
def test_canary_is_true_or_false(value: str) -> None:
    with pytest.raises(ConfigError, match="'ses-mail:canary' must be true or false"):
        StackConfig.parse(ENV, {"domains": "example.com", "canary": value})
