"""Token monitor Lambda, alarms, dashboard and saved queries under Pulumi mocks (the whole program).

The cross-checks at the end run the real publishers (the forwarder against moto and the fake
Google, the token monitor, the deployed retry-processor definition) and require every metric
the dashboard shows or an alarm watches to be one of theirs, or one AWS documents for our
queues, functions and state machine, with the same dimensions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

import sesmail.runtime.reconcile
from sesmail import names
from sesmail.infra import log_queries, policies
from sesmail.infra.archive import REPO_ROOT, lambda_source_files
from sesmail.infra.dashboard import dashboard_body, metric_lines
from sesmail.infra.watched import Watched
from sesmail.local.edges import SimulatedClock
from sesmail.local.google import error_body
from sesmail.runtime import canary, token_metrics, token_monitor
from tests.conftest import World, sqs_record
from tests.infra.harness import ACCOUNT_ID, PARTITION, REGION, STACK, ProgramRun, Registration

ENV = STACK
NAMESPACE = f"SESMail/{ENV}"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
QUERY = "aws:cloudwatch/queryDefinition:QueryDefinition"
FUNCTION = "aws:lambda/function:Function"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ALERTS_TOPIC_ARN = f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{names.alerts_topic(ENV)}"
STATE_MACHINE_ARN = f"arn:{PARTITION}:states:{REGION}:{ACCOUNT_ID}:stateMachine:{names.retry_state_machine(ENV)}"

#: What AWS documents each service publishes (the oracle: deliberately not taken from names).
AWS_METRICS = {
    "AWS/SQS": (
        "QueueName",
        {
            "ApproximateNumberOfMessagesVisible",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "ApproximateAgeOfOldestMessage",
            "NumberOfMessagesSent",
            "NumberOfMessagesReceived",
            "NumberOfMessagesDeleted",
            "NumberOfEmptyReceives",
            "SentMessageSize",
        },
    ),
    "AWS/Lambda": (
        "FunctionName",
        {"Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions", "DeadLetterErrors"},
    ),
    "AWS/States": (
        "StateMachineArn",
        {
            "ExecutionsStarted",
            "ExecutionsSucceeded",
            "ExecutionsFailed",
            "ExecutionsAborted",
            "ExecutionsTimedOut",
            "ExecutionThrottled",
            "ExecutionTime",
        },
    ),
}
STATISTIC = re.compile(r"^(Minimum|Maximum|Sum|Average|SampleCount|p\d{1,2}(\.\d+)?)$")

# --- expectations: DESIGN.md "Observability" and issue 7 -------------------------------------------

GE, LT, LE = "GreaterThanOrEqualToThreshold", "LessThanThreshold", "LessThanOrEqualToThreshold"


def expected_alarms() -> dict[str, dict[str, Any]]:
    """alarm name → the settings it must have (metric, dimensions, statistic, period, threshold, ...)."""
    forwarder, monitor = names.forwarder_function(ENV), names.token_monitor_function(ENV)

    def alarm(
        namespace: str,
        metric: str,
        dimensions: dict[str, str] | None,
        statistic: str,
        period: int,
        threshold: float,
        operator: str,
        missing: str,
    ) -> dict[str, Any]:
        return {
            "namespace": namespace,
            "metricName": metric,
            "dimensions": dimensions,
            "statistic": statistic,
            "period": period,
            "threshold": threshold,
            "comparisonOperator": operator,
            "treatMissingData": missing,
        }

    hour, five = 3600, 300
    # Token metrics and refusals carry the mailbox, also for the one mailbox of a stack without
    # ses-mail:mailboxes (DESIGN.md, "Mailboxes"): the one change to an alarm such a stack sees.
    DEFAULT = {names.MAILBOX_DIMENSION: names.DEFAULT_MAILBOX}
    return {
        names.token_expiring_alarm(ENV): alarm(
            NAMESPACE, "TokenHoursUntilExpiration", DEFAULT, "Minimum", hour, 24, LT, "breaching"
        ),
        names.token_critical_alarm(ENV): alarm(
            NAMESPACE, "TokenHoursUntilExpiration", DEFAULT, "Minimum", hour, 6, LT, "ignore"
        ),
        names.token_expired_alarm(ENV): alarm(
            NAMESPACE, "TokenHoursUntilExpiration", DEFAULT, "Minimum", hour, 0, LE, "ignore"
        ),
        names.token_monitor_errors_alarm(ENV): alarm(
            NAMESPACE, "TokenMonitoringErrors", None, "Maximum", hour, 1, GE, "ignore"
        ),
        names.token_monitor_function_errors_alarm(ENV): alarm(
            "AWS/Lambda", "Errors", {"FunctionName": monitor}, "Sum", five, 1, GE, "notBreaching"
        ),
        names.retry_queue_depth_alarm(ENV): alarm(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": names.retry_queue(ENV)},
            "Maximum",
            five,
            1,
            GE,
            "notBreaching",
        ),
        names.retry_queue_age_alarm(ENV): alarm(
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            {"QueueName": names.retry_queue(ENV)},
            "Maximum",
            five,
            24 * 3600,
            GE,
            "notBreaching",
        ),
        names.inbound_dlq_alarm(ENV): alarm(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": names.inbound_dlq(ENV)},
            "Maximum",
            five,
            1,
            GE,
            "notBreaching",
        ),
        names.retry_dlq_alarm(ENV): alarm(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": names.retry_dlq(ENV)},
            "Maximum",
            five,
            1,
            GE,
            "notBreaching",
        ),
        names.forwarder_errors_alarm(ENV): alarm(
            "AWS/Lambda", "Errors", {"FunctionName": forwarder}, "Sum", five, 1, GE, "notBreaching"
        ),
        names.mailbox_refused_alarm(ENV): alarm(
            NAMESPACE, "MailboxRefused", DEFAULT, "Sum", five, 1, GE, "notBreaching"
        ),
        names.retry_processor_failed_alarm(ENV): alarm(
            "AWS/States", "ExecutionsFailed", {"StateMachineArn": STATE_MACHINE_ARN}, "Sum", five, 1, GE, "notBreaching"
        ),
        names.retry_processor_timed_out_alarm(ENV): alarm(
            "AWS/States",
            "ExecutionsTimedOut",
            {"StateMachineArn": STATE_MACHINE_ARN},
            "Sum",
            five,
            1,
            GE,
            "notBreaching",
        ),
        # Published by a reconcile that found lost mail; nothing published is healthy.
        names.undelivered_found_alarm(ENV): alarm(
            NAMESPACE, "UndeliveredMailFound", None, "Sum", five, 1, GE, "notBreaching"
        ),
        # 26 periods of an hour, all without a canary: missing data is what a broken path produces.
        names.canary_alarm(ENV): {
            **alarm(NAMESPACE, "CanaryDelivered", DEFAULT, "Sum", hour, 1, LT, "breaching"),
            "evaluationPeriods": 26,
            "datapointsToAlarm": 26,
        },
    }


def test_thresholds_are_the_design_values() -> None:
    assert names.token_expiring_alarm(ENV) == "ses-mail-gmail-forwarder-token-expiring-test"
    assert (names.TOKEN_EXPIRING_HOURS, names.TOKEN_CRITICAL_HOURS, names.TOKEN_EXPIRED_HOURS) == (24, 6, 0)
    assert names.RETRY_QUEUE_DEPTH_ALARM_THRESHOLD == names.DLQ_DEPTH_ALARM_THRESHOLD == 1
    assert names.TOKEN_MONITOR_SCHEDULE == "rate(15 minutes)"
    # The age alarm leaves most of the retry queue's retention to act before SQS drops mail.
    assert names.RETRY_QUEUE_AGE_ALARM_SECONDS * 7 <= names.RETRY_QUEUE_RETENTION_SECONDS
    # A 15-minute schedule puts four points into every one-hour token alarm period.
    assert names.TOKEN_ALARM_PERIOD_SECONDS // (15 * 60) == 4


# --- alarms --------------------------------------------------------------------------------------


def test_exactly_the_expected_alarms_exist(example_run: ProgramRun) -> None:
    assert {a.inputs["name"] for a in example_run.of_type(ALARM)} == set(expected_alarms())


@pytest.mark.parametrize(("alarm_name", "expected"), list(expected_alarms().items()))
def test_alarm_settings(example_run: ProgramRun, alarm_name: str, expected: dict[str, Any]) -> None:
    inputs = example_run.one(ALARM, name=alarm_name).inputs
    actual = {key: inputs.get(key) for key in expected}
    assert actual == expected
    assert inputs["evaluationPeriods"] == expected.get("evaluationPeriods", 1)
    assert inputs["datapointsToAlarm"] == expected.get("datapointsToAlarm", 1)
    assert "extendedStatistic" not in inputs
    # CloudWatch: Period x EvaluationPeriods at most 7 days, and at most a day below an hour's period.
    total = inputs["period"] * inputs["evaluationPeriods"]
    assert total <= (604_800 if inputs["period"] >= 3600 else 86_400)


def test_every_alarm_notifies_the_alerts_topic_when_it_fires_and_when_it_recovers(example_run: ProgramRun) -> None:
    topic = example_run.one("aws:sns/topic:Topic", name=names.alerts_topic(ENV))
    assert topic.state["arn"] == ALERTS_TOPIC_ARN
    for alarm in example_run.of_type(ALARM):
        assert alarm.inputs["alarmActions"] == [ALERTS_TOPIC_ARN], alarm.name
        assert alarm.inputs["okActions"] == [ALERTS_TOPIC_ARN], alarm.name


def test_alarm_dimensions_name_the_deployed_resources(example_run: ProgramRun) -> None:
    queues = {q.state["name"] for q in example_run.of_type("aws:sqs/queue:Queue")}
    functions = {f.state["name"] for f in example_run.of_type(FUNCTION)}
    machines = {m.state["arn"] for m in example_run.of_type("aws:sfn/stateMachine:StateMachine")}
    allowed = {
        "QueueName": queues,
        "FunctionName": functions,
        "StateMachineArn": machines,
        names.MAILBOX_DIMENSION: {names.DEFAULT_MAILBOX},
    }
    for alarm in example_run.of_type(ALARM):
        for key, value in (alarm.inputs.get("dimensions") or {}).items():
            assert value in allowed[key], (alarm.name, key, value)


def test_alarm_descriptions_say_what_it_means_and_the_first_step(example_run: ProgramRun) -> None:
    for alarm in example_run.of_type(ALARM):
        description = alarm.inputs["alarmDescription"]
        assert len(description) <= 1024, alarm.name  # CloudWatch's limit
        assert ENV in description and "First step:" in description, alarm.name
    for name in (names.token_expiring_alarm(ENV), names.token_critical_alarm(ENV), names.token_expired_alarm(ENV)):
        assert names.refresh_command(ENV) in example_run.one(ALARM, name=name).inputs["alarmDescription"]


def test_alarms_belong_to_the_monitoring_component(example_run: ProgramRun) -> None:
    component = example_run.one("sesmail:infra:Monitoring")
    for resource in (*example_run.of_type(ALARM), *example_run.of_type(QUERY), *example_run.of_type(DASHBOARD)):
        assert resource.parent == component.urn, resource.name


# --- the token monitor Lambda --------------------------------------------------------------------


def monitor_function(run: ProgramRun) -> Registration:
    return run.one(FUNCTION, name=names.token_monitor_function(ENV))


def test_monitor_function(example_run: ProgramRun) -> None:
    function = monitor_function(example_run)
    inputs = function.inputs
    assert inputs["handler"] == "handlers.token_monitor.handler" == names.TOKEN_MONITOR_HANDLER
    assert inputs["runtime"] == names.FORWARDER_RUNTIME
    assert inputs["architectures"] == [names.FORWARDER_ARCHITECTURE]
    assert inputs["timeout"] == names.TOKEN_MONITOR_TIMEOUT_SECONDS
    assert inputs["memorySize"] == names.TOKEN_MONITOR_MEMORY_MB
    # The retry queue and the retry processor it starts while mail is parked ("Nothing waits forever").
    retry_queue = example_run.one("aws:sqs/queue:Queue", name=names.retry_queue(ENV))
    assert inputs["environment"]["variables"] == {
        names.ENV_VAR_ENV: ENV,
        names.ENV_VAR_RETRY_QUEUE_URL: retry_queue.state["url"],
        names.ENV_VAR_STATE_MACHINE_ARN: STATE_MACHINE_ARN,
    }
    machine = example_run.one("aws:sfn/stateMachine:StateMachine", name=names.retry_state_machine(ENV))
    assert machine.state["arn"] == STATE_MACHINE_ARN  # the derived ARN is the deployed one
    forwarder = example_run.one(FUNCTION, name=names.forwarder_function(ENV)).inputs["environment"]["variables"]
    assert forwarder[names.ENV_VAR_RETRY_QUEUE_URL] == retry_queue.state["url"]
    log_group = example_run.one(LOG_GROUP, name=f"/aws/lambda/{names.token_monitor_function(ENV)}")
    assert log_group.inputs["retentionInDays"] == names.TOKEN_MONITOR_LOG_RETENTION_DAYS
    assert inputs["loggingConfig"]["logGroup"] == log_group.inputs["name"]
    assert function.depends_on(log_group)
    role = example_run.one("aws:iam/role:Role", name=names.token_monitor_role(ENV))
    assert inputs["role"] == role.state["arn"]
    assert function.depends_on(example_run.one(ROLE_POLICY, role=names.token_monitor_role(ENV)))
    (trust,) = role.json_input("assumeRolePolicy")["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"


def test_monitor_ships_the_same_package_as_the_forwarder(example_run: ProgramRun) -> None:
    forwarder = example_run.one(FUNCTION, name=names.forwarder_function(ENV))
    monitor = monitor_function(example_run)
    shipped = [name for name, _ in lambda_source_files()]
    for function in (forwarder, monitor):
        assets = function.inputs["code"].assets
        assert sorted(assets) == shipped, function.name
        assert all(Path(asset.path) == REPO_ROOT / name for name, asset in assets.items())
    assert "handlers/token_monitor.py" in shipped


def test_missing_monitor_handler_fails_the_program(tmp_path: Path) -> None:
    from sesmail.infra.lambda_package import MissingHandlerError, lambda_archive

    for relative in ("handlers/forwarder.py", "sesmail/names.py"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("", encoding="utf-8")
    with pytest.raises(MissingHandlerError, match=r"handlers/token_monitor\.py is missing"):
        lambda_archive(tmp_path)


def monitor_schedule(run: ProgramRun, rule_name: str) -> tuple[Registration, Registration, Registration]:
    """A rule that invokes the token monitor: the rule, its one target and the permission only it uses."""
    rule = run.one("aws:cloudwatch/eventRule:EventRule", name=rule_name)
    assert "eventPattern" not in rule.inputs
    (target,) = [t for t in run.of_type("aws:cloudwatch/eventTarget:EventTarget") if t.inputs["rule"] == rule_name]
    assert target.inputs["arn"] == monitor_function(run).state["arn"]
    (permission,) = [
        p for p in run.of_type("aws:lambda/permission:Permission") if p.inputs.get("sourceArn") == rule.state["arn"]
    ]
    assert permission.inputs == {
        "action": "lambda:InvokeFunction",
        "function": names.token_monitor_function(ENV),
        "principal": "events.amazonaws.com",
        "sourceArn": rule.state["arn"],
    }
    assert target.depends_on(permission)
    return rule, target, permission


def test_schedule_runs_the_monitor_every_15_minutes(example_run: ProgramRun) -> None:
    rule, target, _ = monitor_schedule(example_run, names.token_monitor_schedule_rule(ENV))
    assert rule.inputs["scheduleExpression"] == "rate(15 minutes)"
    assert "inputTransformer" not in target.inputs and "input" not in target.inputs  # EventBridge's own event


def test_a_daily_rule_runs_the_monitor_as_the_daily_reconcile(example_run: ProgramRun) -> None:
    """DESIGN.md, "Reconcile: S3 is the source of truth": once a day, with ``{"action": "daily-reconcile"}``."""
    rule, target, permission = monitor_schedule(example_run, names.daily_reconcile_rule(ENV))
    assert rule.inputs["scheduleExpression"] == names.RECONCILE_DAILY_SCHEDULE == "cron(0 4 * * ? *)"
    transformer = target.inputs["inputTransformer"]
    assert transformer == {
        "inputPaths": {"time": "$.time"},
        "inputTemplate": '{"action": "daily-reconcile", "time": "<time>"}',
    }
    # What EventBridge hands the function: the template with the scheduled event's time put in
    # (a string placeholder stands between quotes, so the result is JSON), which the handler reads
    # as the daily reconcile of that day.
    delivered = json.loads(transformer["inputTemplate"].replace("<time>", "2026-11-24T04:00:00Z"))
    assert delivered == {"action": names.RETRY_TRIGGER_DAILY_RECONCILE, "time": "2026-11-24T04:00:00Z"}
    assert token_monitor.is_daily_reconcile(delivered)
    assert token_monitor.scheduled_time(delivered) == datetime(2026, 11, 24, 4, tzinfo=UTC)
    assert token_monitor.daily_execution_name(datetime(2026, 11, 24, 4, tzinfo=UTC)) == "daily-reconcile-20261124"
    # Only this rule may invoke the function with it; the 15-minute rule keeps its own permission.
    monitors = [
        p
        for p in example_run.of_type("aws:lambda/permission:Permission")
        if p.inputs["function"] == names.token_monitor_function(ENV)
    ]
    schedule = example_run.one("aws:cloudwatch/eventRule:EventRule", name=names.token_monitor_schedule_rule(ENV))
    assert sorted(p.inputs["sourceArn"] for p in monitors) == sorted([rule.state["arn"], schedule.state["arn"]])
    # All children of the TokenMonitor component, like the rest of it.
    (component,) = [r for r in example_run if r.type == "sesmail:infra:TokenMonitor"]
    assert {rule.parent, target.parent, permission.parent} == {component.urn} == {monitor_function(example_run).parent}


@pytest.fixture(scope="module")
def monitor_policy(example_run: ProgramRun) -> dict[str, Any]:
    policy: dict[str, Any] = example_run.one(ROLE_POLICY, role=names.token_monitor_role(ENV)).json_input("policy")
    return policy


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def test_monitor_policy_is_least_privilege(monitor_policy: dict[str, Any]) -> None:
    parameter = f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT_ID}:parameter"
    expiry_arn = f"{parameter}{names.refresh_token_expiry_parameter(ENV)}"
    client_arn = f"{parameter}{names.client_credentials_parameter(ENV)}"
    web_client_arn = f"{parameter}{names.web_client_credentials_parameter(ENV)}"
    token_arn = f"{parameter}{names.refresh_token_parameter(ENV)}"
    queue_arn = f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{names.retry_queue(ENV)}"
    log_group = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/lambda/{names.token_monitor_function(ENV)}"
    statements = monitor_policy["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    grants = {
        (action, resource)
        for s in statements
        for action in _as_list(s["Action"])
        for resource in _as_list(s["Resource"])
    }
    assert grants == {
        ("ssm:GetParameter", expiry_arn),  # the hours: the expiry parameter
        # Starting the retry processor while mail is parked: minting proves the token works ...
        ("ssm:GetParameters", client_arn),
        ("ssm:GetParameters", web_client_arn),  # a token renewed from a phone mints with the web client
        ("ssm:GetParameters", token_arn),
        # ... the retry queue's depth, and the retry processor's executions.
        ("sqs:GetQueueAttributes", queue_arn),
        ("states:ListExecutions", STATE_MACHINE_ARN),
        ("states:StartExecution", STATE_MACHINE_ARN),
        ("cloudwatch:PutMetricData", "*"),  # no resource type exists; scoped by the condition below
        ("logs:CreateLogStream", f"{log_group}:*"),  # both act on log streams only (tests/rules)
        ("logs:PutLogEvents", f"{log_group}:*"),
    }
    (metrics,) = [s for s in statements if "cloudwatch:PutMetricData" in _as_list(s["Action"])]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}
    for statement in statements:
        if statement is not metrics:
            assert "Condition" not in statement
    assert (
        policies.token_monitor_policy(
            expiry_parameter_arns=[expiry_arn],
            client_credentials_parameter_arn=client_arn,
            web_client_credentials_parameter_arn=web_client_arn,
            refresh_token_parameter_arns=[token_arn],
            retry_queue_arns=[queue_arn],
            state_machine_arn=STATE_MACHINE_ARN,
            namespace=NAMESPACE,
            log_group_arn=log_group,
        )
        == monitor_policy
    )


def test_monitor_reads_the_secrets_only_to_mint_and_changes_nothing(example_run: ProgramRun) -> None:
    """It reads the OAuth parameters (to prove the token) but writes none, and touches no message or key."""
    monitor = example_run.one(ROLE_POLICY, role=names.token_monitor_role(ENV)).json_input("policy")
    text = json.dumps(monitor)
    assert "kms:" not in text and "s3:" not in text and "lambda:" not in text
    actions = {a for s in monitor["Statement"] for a in _as_list(s["Action"])}
    assert not {a for a in actions if a.startswith("ssm:") and not a.startswith("ssm:Get")}
    assert {a for a in actions if a.startswith("sqs:")} == {"sqs:GetQueueAttributes"}
    assert {a for a in actions if a.startswith("states:")} == {"states:ListExecutions", "states:StartExecution"}


# --- what is really published --------------------------------------------------------------------

MetricKey = tuple[str, str, frozenset[tuple[str, str]]]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def state_machine_metrics(run: ProgramRun) -> set[MetricKey]:
    """What the deployed retry-processor definition publishes through PutMetricData tasks."""
    (machine,) = run.of_type("aws:sfn/stateMachine:StateMachine")
    found: set[MetricKey] = set()
    for state in _walk(machine.json_input("definition")):
        if str(state.get("Resource", "")).endswith(":cloudwatch:putMetricData"):
            parameters = state["Parameters"]
            for datum in parameters["MetricData"]:
                dims = frozenset((d["Name"], d["Value"]) for d in datum.get("Dimensions", []))
                found.add((parameters["Namespace"], datum["MetricName"], dims))
    assert found, "the retry processor publishes no metric"
    return found


class RecordingCloudWatch:
    def __init__(self) -> None:
        self.published: set[MetricKey] = set()

    def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
        for datum in MetricData:
            dims = frozenset((d["Name"], d["Value"]) for d in datum.get("Dimensions", []))
            self.published.add((Namespace, datum["MetricName"], dims))


def monitor_and_cli_metrics() -> set[MetricKey]:
    """The token monitor in both states (fine / broken) and the refresh CLI's immediate publish."""
    cloudwatch = RecordingCloudWatch()
    token_monitor.publish(cloudwatch, ENV, {names.DEFAULT_MAILBOX: token_monitor.TokenStatus(30.0)})
    token_monitor.publish(cloudwatch, ENV, {names.DEFAULT_MAILBOX: token_monitor.TokenStatus(0.0, "placeholder")})
    token_metrics.publish_token_hours(cloudwatch, ENV, 168.0)
    return cloudwatch.published


def run_forwarder(world: World, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Forwarded, already delivered, dead-lettered, refused and parked mail: every count the forwarder has."""
    capsys.readouterr()
    token = world.install_token(world.google.issue_refresh_token(f"{names.GMAIL_SCOPE} {names.GMAIL_LABELS_SCOPE}"))
    first = world.store_mail("m-forwarded")
    world.handle(world.sqs_event(first))
    world.handle(world.sqs_event(first))
    world.handle({"Records": [sqs_record("not an SES notification", "sqs-bad")]})
    world.google.fail_gmail(403, error_body(403, "Gmail API has not been used in project 1", "accessNotConfigured"))
    world.handle(world.sqs_event(world.store_mail("m-refused")))
    # The daily canary, recognised and counted for the mailbox.
    address = names.canary_address("example.com")
    world.ssm.put_parameter(Name=names.canary_key_parameter(ENV), Value="k" * 43, Type="SecureString")
    world.cold_start(canary_address=address)
    _, raw = canary.build_message(address, b"k" * 43, datetime.now(UTC))
    note = world.store_mail("m-canary", raw)
    note["receipt"]["recipients"] = [address]
    note["mail"]["timestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    world.handle(world.sqs_event(note))
    # Mail the inbound path never saw (its notification was lost), two days later: a reconcile finds it.
    world.store_mail("m-lost")
    two_days_on = SimulatedClock(datetime.now(UTC) + timedelta(days=2)).datetime_class()
    with patch.object(sesmail.runtime.reconcile, "datetime", two_days_on):
        world.handle({"source": names.RECONCILE_SOURCE, "mailbox": names.DEFAULT_MAILBOX})
    world.google.revoke(token)
    world.google.expire_access_tokens()
    world.handle(world.sqs_event(world.store_mail("m-parked")))
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def emf_metrics(lines: list[dict[str, Any]]) -> set[MetricKey]:
    found: set[MetricKey] = set()
    for line in lines:
        for directive in line.get("_aws", {}).get("CloudWatchMetrics", []):
            for dimension_set in directive["Dimensions"]:
                dims = frozenset((key, str(line[key])) for key in dimension_set)
                for metric in directive["Metrics"]:
                    assert metric["Name"] in line, metric  # EMF: the value is a root member
                    found.add((directive["Namespace"], metric["Name"], dims))
    return found


@pytest.fixture
def forwarder_lines(world: World, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return run_forwarder(world, capsys)


@pytest.fixture
def published(example_run: ProgramRun, forwarder_lines: list[dict[str, Any]]) -> set[MetricKey]:
    custom = emf_metrics(forwarder_lines) | monitor_and_cli_metrics() | state_machine_metrics(example_run)
    # Every metric the forwarder has was exercised (so "published" is complete, not lucky),
    # including the 0-hours gauge it publishes when it finds the token dead.
    forwarder_counts = {m for ns, m, _ in emf_metrics(forwarder_lines)}
    assert forwarder_counts == {
        names.METRIC_FORWARDED,
        names.METRIC_ALREADY_DELIVERED,
        names.METRIC_PARKED,
        names.METRIC_FAILED,
        names.METRIC_MAILBOX_REFUSED,
        names.METRIC_TOKEN_HOURS,
        names.METRIC_CANARY_DELIVERED,
        names.METRIC_UNDELIVERED_FOUND,
    }
    return custom


def unpublished(
    run: ProgramRun, published: set[MetricKey], shown: list[tuple[str, str, dict[str, str]]]
) -> list[tuple[str, str, dict[str, str]]]:
    """The metrics of ``shown`` that nothing in the stack (or AWS, for our resources) publishes."""
    ours = {
        "QueueName": {q.state["name"] for q in run.of_type("aws:sqs/queue:Queue")},
        "FunctionName": {f.state["name"] for f in run.of_type(FUNCTION)},
        "StateMachineArn": {m.state["arn"] for m in run.of_type("aws:sfn/stateMachine:StateMachine")},
    }
    missing = []
    for namespace, metric, dims in shown:
        if namespace in AWS_METRICS:
            dimension, metrics = AWS_METRICS[namespace]
            ok = metric in metrics and set(dims) == {dimension} and dims[dimension] in ours[dimension]
        else:
            ok = (namespace, metric, frozenset(dims.items())) in published
        if not ok:
            missing.append((namespace, metric, dims))
    return missing


def test_every_alarm_watches_a_metric_that_is_really_published(
    example_run: ProgramRun, published: set[MetricKey]
) -> None:
    watched = [
        (a.inputs["namespace"], a.inputs["metricName"], dict(a.inputs.get("dimensions") or {}))
        for a in example_run.of_type(ALARM)
    ]
    assert unpublished(example_run, published, watched) == []


def dashboard(run: ProgramRun) -> dict[str, Any]:
    registration = run.one(DASHBOARD, dashboardName=names.dashboard(ENV))
    body: dict[str, Any] = json.loads(registration.inputs["dashboardBody"])  # valid JSON
    return body


def test_every_dashboard_metric_is_really_published(example_run: ProgramRun, published: set[MetricKey]) -> None:
    lines = metric_lines(dashboard(example_run))
    assert len(lines) >= 15
    shown = [(ns, metric, dims) for ns, metric, dims, _ in lines]
    assert unpublished(example_run, published, shown) == []
    for _, metric, _, options in lines:
        assert STATISTIC.match(options["stat"]), (metric, options)
        assert options["period"] % 60 == 0


def test_the_cross_check_catches_a_renamed_or_mis_dimensioned_metric(
    example_run: ProgramRun, published: set[MetricKey]
) -> None:
    wrong = [
        (NAMESPACE, "MessagesForwardedd", {}),  # typo
        (NAMESPACE, names.METRIC_FORWARDED, {"FunctionName": names.forwarder_function(ENV)}),  # EMF has no dimension
        ("SESMail/prod", names.METRIC_FORWARDED, {}),  # another stack's namespace
        ("AWS/SQS", "ApproximateNumberOfMessages", {"QueueName": names.retry_queue(ENV)}),  # not an SQS metric
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": "someone-elses-queue"}),
        ("AWS/Lambda", "Errors", {"FunctionName": names.forwarder_function("prod")}),
    ]
    assert unpublished(example_run, published, wrong) == wrong


def test_dashboard_shows_what_the_operator_needs(example_run: ProgramRun) -> None:
    body = dashboard(example_run)
    widgets = {w["properties"].get("title"): w for w in body["widgets"]}
    by_widget = {
        title: [(m[0], m[1], opts) for m in w["properties"]["metrics"] for opts in [m[-1]]]
        for title, w in widgets.items()
        if w["type"] == "metric"
    }

    token = widgets["Token hours left"]["properties"]
    assert [(ns, m) for ns, m, _ in by_widget["Token hours left"]] == [(NAMESPACE, "TokenHoursUntilExpiration")]
    assert {a["value"] for a in token["annotations"]["horizontal"]} == {24, 6}

    mail = by_widget["Mail per hour"]
    assert {m for _, m, _ in mail} >= {"MessagesForwarded", "MessagesParkedForRetry", "MessagesFailed"}
    assert all(o["stat"] == "Sum" and o["period"] == 3600 for _, _, o in mail)

    assert {m for _, m, _ in by_widget["Retry queue"]} == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
    }
    dlq_lines = [
        *widgets["Inbound dead-letter queue"]["properties"]["metrics"],
        *widgets["Retry DLQ and Gmail refusals"]["properties"]["metrics"],
    ]
    assert {line[3] for line in dlq_lines} == {names.inbound_dlq(ENV), names.retry_dlq(ENV), names.DEFAULT_MAILBOX}
    assert {m for _, m, _ in by_widget["Retry processor"]} >= {"RetryMessagesDelivered", "RetryMessagesFailed"}
    assert {o["stat"] for _, _, o in by_widget["Forwarder duration (ms)"]} == {"p50", "p99"}
    assert [(ns, m) for ns, m, _ in by_widget["Forwarder errors"]] == [("AWS/Lambda", "Errors")]

    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    arns = {f"arn:{PARTITION}:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{name}" for name in expected_alarms()}
    assert set(alarm_widget["properties"]["alarms"]) == arns
    for metric_widget in widgets.values():
        if metric_widget["type"] == "metric":
            assert metric_widget["properties"]["region"] == REGION


def test_dashboard_widgets_fit_the_grid_without_overlapping(example_run: ProgramRun) -> None:
    widgets = dashboard(example_run)["widgets"]
    cells: set[tuple[int, int]] = set()
    for widget in widgets:
        assert widget["x"] + widget["width"] <= 24
        area = {
            (x, y)
            for x in range(widget["x"], widget["x"] + widget["width"])
            for y in range(widget["y"], widget["y"] + widget["height"])
        }
        assert not cells & area, widget
        cells |= area


def test_dashboard_waits_for_the_alarms_it_shows(example_run: ProgramRun) -> None:
    registration = example_run.one(DASHBOARD)
    for alarm in example_run.of_type(ALARM):
        assert registration.depends_on(alarm), alarm.name


def test_dashboard_body_is_a_pure_function() -> None:
    watched = Watched(**{name: f"value-of-{name}" for name in Watched.field_names()})
    first = dashboard_body("prod", "eu-west-1", watched, ["arn:b", "arn:a"])
    assert first == dashboard_body("prod", "eu-west-1", watched, ["arn:a", "arn:b"])
    assert json.loads(json.dumps(first)) == first
    namespaces = {ns for ns, *_ in metric_lines(first)}
    assert "SESMail/prod" in namespaces and NAMESPACE not in namespaces


# --- saved Logs Insights queries -----------------------------------------------------------------


def queries(run: ProgramRun) -> dict[str, Registration]:
    return {q.inputs["name"]: q for q in run.of_type(QUERY)}


def test_queries_exist_in_the_stacks_folder_and_read_real_log_groups(example_run: ProgramRun) -> None:
    saved = queries(example_run)
    assert set(saved) == {
        "ses-mail-test/token-events",
        "ses-mail-test/messages-parked-for-retry",
        "ses-mail-test/failures-by-class",
        "ses-mail-test/message-story",
        "ses-mail-test/canary-story",
    }
    log_groups = {g.inputs["name"] for g in example_run.of_type(LOG_GROUP)}
    for name, query in saved.items():
        assert query.inputs["logGroupNames"], name
        assert set(query.inputs["logGroupNames"]) <= log_groups, name
        # Insights commands only, piped one after the other.
        for command in query.inputs["queryString"].split("\n"):
            assert command.removeprefix("| ").split(" ")[0] in {"fields", "filter", "stats", "sort", "limit"}, command


def test_token_events_span_forwarder_monitor_and_audit(example_run: ProgramRun) -> None:
    query = queries(example_run)["ses-mail-test/token-events"].inputs
    assert set(query["logGroupNames"]) == {
        f"/aws/lambda/{names.forwarder_function(ENV)}",
        f"/aws/lambda/{names.token_monitor_function(ENV)}",
        names.audit_log_group(ENV),
    }
    assert r"event like /^token\./" in query["queryString"]
    assert f'action = "{names.AUDIT_ACTION_TOKEN_RENEWED}"' in query["queryString"]


def test_message_story_query_has_the_placeholder(example_run: ProgramRun) -> None:
    query = queries(example_run)["ses-mail-test/message-story"].inputs
    assert 'filter messageId = "REPLACE-ME"' in query["queryString"]
    assert "sort @timestamp asc" in query["queryString"]
    assert log_queries.message_story_query("0100abc") == query["queryString"].replace("REPLACE-ME", "0100abc")


def test_failures_by_class_and_parked_queries(example_run: ProgramRun) -> None:
    saved = queries(example_run)
    failures = saved["ses-mail-test/failures-by-class"].inputs["queryString"]
    assert "stats count(*) as failures" in failures and "by failureClass, event" in failures
    assert '(level = "ERROR" or level = "WARNING")' in failures
    # ... including the token monitor's failures to start the retry processor (retry.autostart_failed).
    assert set(saved["ses-mail-test/failures-by-class"].inputs["logGroupNames"]) == {
        f"/aws/lambda/{names.forwarder_function(ENV)}",
        f"/aws/lambda/{names.token_monitor_function(ENV)}",
    }
    assert names.EVENT_RETRY_AUTOSTART_FAILED.startswith(names.EVENT_PREFIX_RETRY)
    parked = saved["ses-mail-test/messages-parked-for-retry"].inputs["queryString"]
    assert 'filter event = "delivery.parked"' in parked


def test_the_queries_fields_are_what_the_code_really_logs(forwarder_lines: list[dict[str, Any]]) -> None:
    logged = [line for line in forwarder_lines if "event" in line]
    events = {line["event"] for line in logged}
    # token events: the forwarder mints tokens (and the monitor logs its own, see test_token_monitor)
    assert any(event.startswith(names.EVENT_PREFIX_TOKEN) for event in events)
    # parked: exactly the event the query filters on, with the message id and the class
    parked = {line["messageId"]: line for line in logged if line["event"] == names.EVENT_DELIVERY_PARKED}
    assert parked["m-parked"]["failureClass"] == "TokenExpiredError"
    assert parked["m-refused"]["failureClass"] == "MailboxRefusedError"
    assert {line["level"] for line in parked.values()} <= {"ERROR", "WARNING"}
    # failures by class: warning/error delivery events carry failureClass
    failures = [line for line in logged if line["level"] in {"ERROR", "WARNING"}]
    assert failures and any(line["event"] == "delivery.dead_lettered" for line in failures)
    assert all(line["event"].startswith((names.EVENT_PREFIX_DELIVERY, names.EVENT_PREFIX_RETRY)) for line in failures)
    classes = {line.get("failureClass") for line in failures}
    assert classes >= {"TokenExpiredError", "MailboxRefusedError", "PermanentError"}
    # a message's story: every line about it carries its SES message id
    story = [line for line in logged if line.get("messageId") == "m-forwarded"]
    assert {line["event"] for line in story} >= {"delivery.imported", "delivery.duplicate"}
    assert all(line["env"] == ENV and line["requestId"] for line in story)
