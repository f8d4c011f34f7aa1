"""Nothing waits forever: the token monitor starts the retry processor while mail is parked.

moto holds the retry queue, the state machine (its executions stay RUNNING: moto does not run
them here, which is what the "already running" cases need), SSM and CloudWatch; the token is
minted at the fake Google on 127.0.0.1. The wiring is the handler's own (``retry_autostart``),
and every AWS call the monitor makes is recorded and checked against its IAM policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest
from moto import mock_aws

from handlers import token_monitor as monitor_handler
from sesmail import names, token_monitor
from sesmail.aws import AwsClients
from sesmail.infra import policies
from sesmail.tokens import TokenExpiry
from tests.conftest import ENV, REGION, FakeContext, inject_aws_fault
from tests.fakes.google import FakeGoogle
from tests.rules.aws_calls import AwsCall, iam_requests, record_calls
from tests.rules.iam_rules import as_list

ACCOUNT = "123456789012"
#: A moment in the middle of a schedule period (10:15-10:30).
NOW = datetime(2026, 11, 24, 10, 20, 7, tzinfo=UTC)
TRIVIAL_MACHINE = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}


@dataclass
class Monitor:
    """The monitor's world: what the Pulumi program deploys around it, and the fake Google."""

    google: FakeGoogle
    clients: AwsClients
    queue_url: str
    state_machine_arn: str
    calls: list[AwsCall] = field(default_factory=list)

    @property
    def sqs(self) -> Any:
        return self.clients.sqs

    @property
    def sfn(self) -> Any:
        return self.clients.get("stepfunctions")

    @property
    def cloudwatch(self) -> Any:
        return self.clients.get("cloudwatch")

    def install_token(self) -> str:
        """What the refresh CLI stores: client JSON, refresh token and its expiry (30 hours left)."""
        token = self.google.issue_refresh_token()
        record = {"token": token, "created_at": "2026-11-23T04:20:07Z", "expires_at": None, "scopes": []}
        self._put(names.client_credentials_parameter(ENV), json.dumps(self.google.client_json()), secret=True)
        self._put(names.refresh_token_parameter(ENV), json.dumps(record), secret=True)
        expiry = TokenExpiry(NOW - timedelta(days=1), NOW + timedelta(hours=30))
        self._put(names.refresh_token_expiry_parameter(ENV), expiry.to_json(), secret=False)
        return token

    def install_placeholders(self) -> None:
        """What ``pulumi up`` leaves before the first renewal."""
        for name, secret in (
            (names.client_credentials_parameter(ENV), True),
            (names.refresh_token_parameter(ENV), True),
            (names.refresh_token_expiry_parameter(ENV), False),
        ):
            self._put(name, names.placeholder_value(ENV), secret=secret)

    def park(self, count: int) -> None:
        for i in range(count):
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"parked": i}))

    def autostart(self) -> token_monitor.RetryAutostart:
        autostart = monitor_handler.retry_autostart(self.clients, ENV)
        assert autostart is not None, "the handler did not find its environment"
        return autostart

    def run(self, at: datetime = NOW, autostart: token_monitor.RetryAutostart | None = None) -> dict[str, Any]:
        return token_monitor.monitor(
            self.clients.ssm, self.cloudwatch, ENV, autostart or self.autostart(), now=at, scheduled_at=at
        )

    def executions(self) -> list[dict[str, Any]]:
        listed = self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]
        return [self.sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]

    def mints(self) -> list[dict[str, str]]:
        return [r for r in self.google.token_requests if r.get("grant_type") == "refresh_token"]

    def metric(self, metric: str) -> list[float]:
        points = self.cloudwatch.get_metric_statistics(
            Namespace=names.metric_namespace(ENV),
            MetricName=metric,
            StartTime=datetime.now(UTC) - timedelta(hours=1),
            EndTime=datetime.now(UTC) + timedelta(hours=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        return [float(p["Maximum"]) for p in points]

    def _put(self, name: str, value: str, *, secret: bool) -> None:
        kind = "SecureString" if secret else "String"
        self.clients.ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)


#: Executions stay RUNNING: said explicitly, because moto's server in the same process (tests/e2e)
#: switches execution on for the whole process.
HELD_EXECUTIONS: Any = {"stepfunctions": {"execute_state_machine": False}}


@pytest.fixture
def world(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    with mock_aws(config=HELD_EXECUTIONS):
        clients = AwsClients(region=REGION)
        queue_url = clients.sqs.create_queue(QueueName=names.retry_queue(ENV))["QueueUrl"]
        machine = clients.get("stepfunctions").create_state_machine(
            name=names.retry_state_machine(ENV),
            definition=json.dumps(TRIVIAL_MACHINE),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/retry-processor",
        )["stateMachineArn"]
        assert machine == names.state_machine_arn(ENV, REGION, ACCOUNT, "aws")
        # The environment the Pulumi program gives the function (tests/infra checks that side).
        monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
        monkeypatch.setenv(names.ENV_VAR_RETRY_QUEUE_URL, queue_url)
        monkeypatch.setenv(names.ENV_VAR_STATE_MACHINE_ARN, machine)
        monitor = Monitor(google, clients, queue_url, machine)
        for service in ("ssm", "sqs", "stepfunctions", "cloudwatch"):
            record_calls(clients.get(service), monitor.calls.append)
        yield monitor


def lines(capsys: pytest.CaptureFixture[str], event_prefix: str = "retry.autostart") -> list[dict[str, Any]]:
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return [r for r in records if str(r.get("event", "")).startswith(event_prefix)]


# --- it starts ----------------------------------------------------------------------------------


def test_starts_the_retry_processor_when_mail_waits_and_the_token_mints(
    world: Monitor, capsys: pytest.CaptureFixture[str]
) -> None:
    world.install_token()
    world.park(3)

    result = world.run()

    [execution] = world.executions()
    assert execution["name"] == "token-monitor-20261124T1015Z"  # the schedule period NOW falls in
    assert names.RETRY_TRIGGER_TOKEN_MONITOR == "token-monitor"
    assert json.loads(execution["input"]) == {"trigger": "token-monitor"}
    assert result["retry"] == {
        "action": "started",
        "reason": token_monitor.MAIL_PARKED,
        "waiting": 3,
        "executionArn": execution["executionArn"],
        "detail": None,
    }
    assert result["hoursLeft"] == pytest.approx(30) and result["error"] is None
    assert len(world.mints()) == 1, "proving the token = minting one access token"
    [line] = lines(capsys)
    assert (line["event"], line["level"], line["waiting"]) == (names.EVENT_RETRY_AUTOSTART, "INFO", 3)
    assert line["executionArn"] == execution["executionArn"]


def test_the_handler_wires_it_from_its_environment(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    world.install_token()
    world.park(1)
    monitor_handler.reset()
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "time": "2026-11-24T10:30:00Z"}
    try:
        result = monitor_handler.handler(event, FakeContext(request_id="req-autostart"))
    finally:
        monitor_handler.reset()
    [execution] = world.executions()
    # Named after EventBridge's scheduled time, the same in every delivery of the event.
    assert execution["name"] == "token-monitor-20261124T1030Z"
    assert result["retry"]["action"] == "started" and result["retry"]["executionArn"] == execution["executionArn"]
    [line] = lines(capsys)
    assert (line["event"], line["env"], line["requestId"]) == (names.EVENT_RETRY_AUTOSTART, ENV, "req-autostart")


# --- it starts nothing --------------------------------------------------------------------------


def test_an_empty_queue_starts_nothing_and_reads_no_secret(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    world.install_token()
    world.calls.clear()

    result = world.run()

    assert result["retry"]["action"] == "skipped" and result["retry"]["reason"] == token_monitor.QUEUE_EMPTY
    assert world.executions() == [] and world.mints() == []
    assert "ssm:GetParameters" not in {c.action for c in world.calls}, "no secret read without parked mail"
    [line] = lines(capsys)
    assert (line["event"], line["level"], line["reason"], line["waiting"]) == (
        names.EVENT_RETRY_AUTOSTART_SKIPPED,
        "INFO",
        "queue-empty",
        0,
    )


def test_messages_in_flight_alone_start_nothing(world: Monitor) -> None:
    """Received by a drain that runs or just stopped: visible again within one schedule period."""
    assert names.RETRY_QUEUE_VISIBILITY_SECONDS <= names.TOKEN_MONITOR_PERIOD_SECONDS
    world.install_token()
    world.park(2)
    world.sqs.receive_message(QueueUrl=world.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600)

    assert world.run()["retry"]["reason"] == token_monitor.QUEUE_EMPTY
    assert world.executions() == [] and world.mints() == []


def test_a_dead_token_starts_nothing_and_raises_no_alarm(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    token = world.install_token()
    world.google.revoke(token)
    world.park(2)

    result = world.run()

    assert result["retry"]["action"] == "skipped" and result["retry"]["reason"] == token_monitor.TOKEN_DEAD
    assert "invalid_grant" in result["retry"]["detail"]
    assert world.executions() == []
    assert len(world.mints()) == 1, "one attempt; the SSM re-read found the same version, so no second"
    # Nothing new alarms: the hours are the stored expiry's, the monitor saw no error.
    assert world.metric(names.METRIC_TOKEN_MONITORING_ERRORS) == [0.0]
    [line] = lines(capsys)
    assert (line["event"], line["level"], line["reason"]) == (names.EVENT_RETRY_AUTOSTART_SKIPPED, "INFO", "token-dead")
    assert names.refresh_command(ENV) in line["detail"]


def test_an_unconfigured_token_starts_nothing(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    """Right after ``pulumi up``: mail already parked, the parameters still Pulumi's placeholders."""
    world.install_placeholders()
    world.park(1)

    result = world.run()

    assert result["retry"]["reason"] == token_monitor.TOKEN_NOT_CONFIGURED
    assert world.executions() == []
    assert world.google.token_requests == [], "nothing to mint with"
    [line] = lines(capsys)
    assert (line["level"], line["reason"]) == ("INFO", "token-not-configured")
    assert names.refresh_command(ENV) in line["detail"]


def test_a_running_execution_is_left_alone(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    world.install_token()
    world.park(4)
    running = world.sfn.start_execution(
        stateMachineArn=world.state_machine_arn, name="refresh-by-the-cli", input=json.dumps({"trigger": "x"})
    )["executionArn"]

    result = world.run()

    assert result["retry"] == {
        "action": "skipped",
        "reason": token_monitor.ALREADY_RUNNING,
        "waiting": 4,
        "executionArn": running,
        "detail": None,
    }
    assert [e["executionArn"] for e in world.executions()] == [running]
    assert world.mints() == [], "no token request while a drain runs"
    [line] = lines(capsys)
    assert (line["reason"], line["executionArn"]) == ("already-running", running)


def test_one_execution_per_schedule_period_even_when_two_runs_race(world: Monitor) -> None:
    """Two runs that both saw nothing running (the list-then-start window) start one drain."""
    world.install_token()
    world.park(1)

    class BlindSfn:
        """Step Functions as both racing runs saw it: nothing running yet."""

        def list_executions(self, **_: Any) -> dict[str, Any]:
            return {"executions": []}

        def start_execution(self, **kwargs: Any) -> Any:
            return world.sfn.start_execution(**kwargs)

    racing = token_monitor.RetryAutostart(
        world.sqs, BlindSfn(), world.queue_url, world.state_machine_arn, world.autostart().prove_token
    )
    first = world.run(at=NOW, autostart=racing)["retry"]
    second = world.run(at=NOW + timedelta(minutes=4), autostart=racing)["retry"]  # same period

    [execution] = world.executions()
    assert first["action"] == second["action"] == "started"
    assert first["executionArn"] == second["executionArn"] == execution["executionArn"]

    # Once that drain has ended, the name stays taken for the rest of the period ...
    world.sfn.stop_execution(executionArn=execution["executionArn"])
    third = world.run(at=NOW + timedelta(minutes=8), autostart=racing)["retry"]
    assert (third["action"], third["reason"]) == ("skipped", token_monitor.ALREADY_STARTED)
    # ... and the next period's run starts a new one.
    fourth = world.run(at=NOW + timedelta(minutes=15))["retry"]
    assert fourth["action"] == "started"
    assert sorted(e["name"] for e in world.executions()) == [
        "token-monitor-20261124T1015Z",
        "token-monitor-20261124T1030Z",
    ]


def test_after_a_failed_execution_the_monitor_waits_an_hour_before_the_next(world: Monitor) -> None:
    """A refused mailbox fails every drain: one start an hour, not one every 15 minutes."""
    world.install_token()
    world.park(2)
    failed_arn = world.state_machine_arn.replace(":stateMachine:", ":execution:") + ":token-monitor-old"

    class AfterAFailure:
        """Step Functions whose newest execution failed at ``NOW``; nothing is running."""

        def list_executions(self, **kwargs: Any) -> dict[str, Any]:
            if kwargs.get("statusFilter") == "RUNNING":
                return {"executions": []}
            return {"executions": [{"executionArn": failed_arn, "status": "FAILED", "stopDate": NOW}]}

        def start_execution(self, **kwargs: Any) -> Any:
            return world.sfn.start_execution(**kwargs)

    autostart = token_monitor.RetryAutostart(
        world.sqs, AfterAFailure(), world.queue_url, world.state_machine_arn, world.autostart().prove_token
    )
    soon = world.run(at=NOW + timedelta(minutes=45), autostart=autostart)["retry"]
    assert (soon["action"], soon["reason"]) == ("skipped", token_monitor.RECENT_FAILURE)
    assert soon["executionArn"] == failed_arn
    assert world.mints() == [] and world.executions() == []

    later = world.run(at=NOW + timedelta(seconds=names.RETRY_AUTOSTART_BACKOFF_SECONDS + 60), autostart=autostart)
    assert later["retry"]["action"] == "started"


# --- failures -------------------------------------------------------------------------------------


def test_a_failure_to_start_still_publishes_the_hours_and_logs_an_error(
    world: Monitor, capsys: pytest.CaptureFixture[str]
) -> None:
    world.install_token()
    world.park(2)
    fault = inject_aws_fault(world.sfn, "StartExecution", "AccessDeniedException", status=400, message="not allowed")

    result = world.run()

    assert fault.raised == 1
    assert result["hoursLeft"] == pytest.approx(30) and result["error"] is None
    assert world.metric(names.METRIC_TOKEN_HOURS) == [pytest.approx(30)]
    # Not a TokenMonitoringErrors: the token's expiry is known; that alarm's runbook is about it.
    assert world.metric(names.METRIC_TOKEN_MONITORING_ERRORS) == [0.0]
    assert result["retry"]["action"] == "failed" and "AccessDeniedException" in result["retry"]["reason"]
    assert world.executions() == []
    [line] = lines(capsys)
    assert (line["event"], line["level"]) == (names.EVENT_RETRY_AUTOSTART_FAILED, "ERROR")
    assert line["failureClass"] == "TransientError" and "StartExecution" in line["reason"]


def test_google_unreachable_is_a_failure_not_a_dead_token(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    """Whether the token works is unknown: logged at ERROR, and the next run asks again."""
    world.install_token()
    world.park(1)
    world.google.fail_token(503)

    assert world.run()["retry"]["action"] == "failed"
    assert world.executions() == []
    [line] = lines(capsys)
    assert (line["level"], line["failureClass"]) == ("ERROR", "TransientError")
    assert "503" in line["reason"]

    assert world.run(at=NOW + timedelta(minutes=15))["retry"]["action"] == "started"


def test_a_failed_publish_still_autostarts_and_then_fails_the_run(world: Monitor) -> None:
    world.install_token()
    world.park(1)
    inject_aws_fault(world.cloudwatch, "PutMetricData", "AccessDenied", status=403)

    with pytest.raises(Exception, match="AccessDenied"):
        world.run()
    assert len(world.executions()) == 1


def test_missing_configuration_is_reported_without_stopping_the_monitor(
    world: Monitor, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.install_token()
    monkeypatch.delenv(names.ENV_VAR_STATE_MACHINE_ARN)
    assert monitor_handler.retry_autostart(world.clients, ENV) is None

    result = token_monitor.monitor(world.clients.ssm, world.cloudwatch, ENV, None, now=NOW)

    assert result["hoursLeft"] == pytest.approx(30)
    assert result["retry"]["action"] == "failed"
    [line] = lines(capsys)
    assert line["level"] == "ERROR" and names.ENV_VAR_STATE_MACHINE_ARN in line["reason"]
    assert names.deploy_command(ENV) in line["reason"]


# --- least privilege and secrets ------------------------------------------------------------------


def monitor_policy(world: Monitor) -> dict[str, Any]:
    """The policy the program attaches, for the resources of this moto world."""

    def parameter(name: str) -> str:
        return f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"

    return policies.token_monitor_policy(
        expiry_parameter_arn=parameter(names.refresh_token_expiry_parameter(ENV)),
        client_credentials_parameter_arn=parameter(names.client_credentials_parameter(ENV)),
        refresh_token_parameter_arn=parameter(names.refresh_token_parameter(ENV)),
        retry_queue_arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.retry_queue(ENV)}",
        state_machine_arn=world.state_machine_arn,
        namespace=names.metric_namespace(ENV),
        log_group_arn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{names.token_monitor_function(ENV)}",
    )


def _allowed_by(document: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> str | None:
    """The Sid of the statement that allows the request (exact actions, ARN or "*", StringEquals)."""
    for statement in document["Statement"]:
        conditions = statement.get("Condition", {}).get("StringEquals", {})
        if (
            statement["Effect"] == "Allow"
            and action in as_list(statement["Action"])
            and any(fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"]))
            and all(context.get(key) == value for key, value in conditions.items())
        ):
            return str(statement["Sid"])
    return None


def test_every_call_the_monitor_makes_is_allowed_by_its_policy_and_every_grant_is_used(world: Monitor) -> None:
    token = world.install_token()
    world.park(1)
    world.run()  # starts: expiry, metrics, queue, executions, OAuth parameters
    world.google.revoke(token)
    world.sfn.stop_execution(executionArn=world.executions()[0]["executionArn"])
    world.run(at=NOW + timedelta(minutes=15))  # a dead token: the SSM re-read
    calls = [c for c in world.calls if c.action != "ssm:PutParameter" and c.operation not in _TEST_SETUP]

    document = monitor_policy(world)
    used: set[str] = set()
    for call in calls:
        for request in iam_requests(call, partition="aws", account=ACCOUNT):
            sid = _allowed_by(document, request.action, request.resource, dict(request.context))
            assert sid, f"{request.action} on {request.resource} is not allowed by the monitor's policy"
            used.add(sid)
    # Every statement but the logs one (Lambda's runtime writes the logs) is needed by the code.
    assert used == {s["Sid"] for s in document["Statement"]} - {"WriteOwnLogs"}
    assert {c.action for c in calls} == {
        "ssm:GetParameter",
        "ssm:GetParameters",
        "cloudwatch:PutMetricData",
        "sqs:GetQueueAttributes",
        "states:ListExecutions",
        "states:StartExecution",
    }


#: Operations the test itself performs on the recorded clients (setup and inspection).
_TEST_SETUP = {
    "CreateQueue",
    "CreateStateMachine",
    "SendMessage",
    "DescribeExecution",
    "StopExecution",
    "GetMetricStatistics",
}


def test_no_secret_reaches_the_log(world: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    token = world.install_token()
    world.park(1)
    world.run()
    out = capsys.readouterr()
    secrets = [token, world.google.client_secret, *world.google.issued_access_tokens()]
    assert len(secrets) == 3
    for secret in secrets:
        assert secret not in out.out + out.err
    assert "[REDACTED]" not in out.out + out.err


# --- the pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "name"),
    [
        (datetime(2026, 11, 24, 10, 15, 0, tzinfo=UTC), "token-monitor-20261124T1015Z"),
        (datetime(2026, 11, 24, 10, 29, 59, 999999, tzinfo=UTC), "token-monitor-20261124T1015Z"),
        (datetime(2026, 11, 24, 10, 30, 0, tzinfo=UTC), "token-monitor-20261124T1030Z"),
        (datetime(2026, 11, 24, 11, 59, 0, tzinfo=UTC) - timedelta(hours=1), "token-monitor-20261124T1045Z"),
    ],
)
def test_execution_name_is_the_schedule_period(at: datetime, name: str) -> None:
    assert token_monitor.execution_name(at) == name
    # A valid Step Functions execution name: at most 80 characters of [A-Za-z0-9_-].
    assert len(name) <= 80 and name.replace("-", "").replace("_", "").isalnum()
    period_minutes = names.TOKEN_MONITOR_PERIOD_SECONDS // 60
    assert f"rate({period_minutes} minutes)" == names.TOKEN_MONITOR_SCHEDULE


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"time": "2026-11-24T10:30:00Z"}, datetime(2026, 11, 24, 10, 30, tzinfo=UTC)),
        ({"time": "2026-11-24T10:30:00"}, datetime(2026, 11, 24, 10, 30, tzinfo=UTC)),
        ({"time": "yesterday"}, None),
        ({"time": 1764000000}, None),
        ({}, None),
        ([], None),
        (None, None),
    ],
)
def test_scheduled_time_comes_from_eventbridge_when_it_says(event: Any, expected: datetime | None) -> None:
    assert token_monitor.scheduled_time(event) == expected
