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
from sesmail import names
from sesmail.infra import policies
from sesmail.local.google import FakeGoogle
from sesmail.runtime import token_monitor
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.mailboxes import Mailbox, MailboxTable, queue_url_for
from sesmail.runtime.tokens import TokenExpiry
from tests.conftest import ENV, REGION, FakeContext, inject_aws_fault
from tests.rules.aws_calls import AwsCall, iam_requests, record_calls
from tests.rules.iam_rules import as_list, check_policy

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

    def install_token(self, mailbox: str = names.DEFAULT_MAILBOX) -> str:
        """What the refresh CLI stores: client JSON, a mailbox's refresh token and its expiry (30 hours left)."""
        token = self.google.issue_refresh_token()
        record = {"token": token, "created_at": "2026-11-23T04:20:07Z", "expires_at": None, "scopes": []}
        self._put(names.client_credentials_parameter(ENV), json.dumps(self.google.client_json()), secret=True)
        self._put(names.refresh_token_parameter(ENV, mailbox), json.dumps(record), secret=True)
        expiry = TokenExpiry(NOW - timedelta(days=1), NOW + timedelta(hours=30))
        self._put(names.refresh_token_expiry_parameter(ENV, mailbox), expiry.to_json(), secret=False)
        return token

    def install_placeholders(self) -> None:
        """What ``pulumi up`` leaves before the first renewal."""
        for name, secret in (
            (names.client_credentials_parameter(ENV), True),
            (names.refresh_token_parameter(ENV), True),
            (names.refresh_token_expiry_parameter(ENV), False),
        ):
            self._put(name, names.placeholder_value(ENV), secret=secret)

    def queue(self, mailbox: str = names.DEFAULT_MAILBOX) -> str:
        return queue_url_for(self.queue_url, ENV, mailbox)

    def park(self, count: int, mailbox: str = names.DEFAULT_MAILBOX) -> None:
        for i in range(count):
            self.sqs.send_message(QueueUrl=self.queue(mailbox), MessageBody=json.dumps({"parked": i}))

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


def deploy(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch, table: MailboxTable | None = None) -> Iterator[Monitor]:
    """The resources and environment the program deploys; ``table``: a stack with ``ses-mail:mailboxes``."""
    with mock_aws(config=HELD_EXECUTIONS):
        clients = AwsClients(region=REGION)
        queue_urls = [
            clients.sqs.create_queue(QueueName=names.retry_queue(ENV, m))["QueueUrl"]
            for m in (table.names if table else (names.DEFAULT_MAILBOX,))
        ]
        queue_url = queue_urls[0]  # the primary mailbox's: "default", first in the tables below
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
        if table is not None:
            monkeypatch.setenv(names.ENV_VAR_MAILBOXES, table.to_json())
        monitor = Monitor(google, clients, queue_url, machine)
        for service in ("ssm", "sqs", "stepfunctions", "cloudwatch"):
            record_calls(clients.get(service), monitor.calls.append)
        yield monitor


@pytest.fixture
def world(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    """A stack without ``ses-mail:mailboxes``: the one mailbox ``default``."""
    yield from deploy(google, monkeypatch)


#: default, alice and bob: one Gmail account each.
TABLE = MailboxTable(
    (
        Mailbox(names.DEFAULT_MAILBOX, ("example.com",)),
        Mailbox("alice", ("alice@example.com",)),
        Mailbox("bob", ("bob@example.com",)),
    ),
    configured=True,
)


@pytest.fixture
def mailboxes(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    """A stack with ``ses-mail:mailboxes``: default, alice and bob, each with its token and retry queue."""
    yield from deploy(google, monkeypatch, TABLE)


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
    assert json.loads(execution["input"]) == {"trigger": "token-monitor", names.RETRY_MAILBOX_KEY: "default"}
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
        world.sqs, BlindSfn(), {"default": world.queue_url}, world.state_machine_arn, world.autostart().prove_token
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
        world.sqs, AfterAFailure(), {"default": world.queue_url}, world.state_machine_arn, world.autostart().prove_token
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

    mailboxes = world.autostart().mailboxes
    return policies.token_monitor_policy(
        expiry_parameter_arns=[parameter(names.refresh_token_expiry_parameter(ENV, m)) for m in mailboxes],
        client_credentials_parameter_arn=parameter(names.client_credentials_parameter(ENV)),
        web_client_credentials_parameter_arn=parameter(names.web_client_credentials_parameter(ENV)),
        refresh_token_parameter_arns=[parameter(names.refresh_token_parameter(ENV, m)) for m in mailboxes],
        retry_queue_arns=[f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.retry_queue(ENV, m)}" for m in mailboxes],
        state_machine_arn=world.state_machine_arn,
        namespace=names.metric_namespace(ENV),
        log_group_arn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{names.token_monitor_function(ENV)}",
        describe_executions=mailboxes != ("default",),
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


# --- several mailboxes: each its own queue, drain, token and backoff -------------------------------


def by_mailbox(lines_: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The one ``retry.autostart*`` line of each mailbox (fails on a second line for one)."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines_:
        assert line["mailbox"] not in found, f"two autostart lines for {line['mailbox']}"
        found[line["mailbox"]] = line
    return found


def decisions(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {m: (r["retry"]["action"], r["retry"]["reason"]) for m, r in result["mailboxes"].items()}


def execution_arn(world: Monitor, name: str) -> str:
    return world.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def test_alices_parked_mail_starts_her_drain_while_bobs_queue_is_empty(
    mailboxes: Monitor, capsys: pytest.CaptureFixture[str]
) -> None:
    world = mailboxes
    tokens = {m: world.install_token(m) for m in TABLE.names}
    world.park(2, "alice")

    result = world.run()

    [execution] = world.executions()
    assert execution["name"] == "token-monitor-alice-20261124T1015Z"
    assert json.loads(execution["input"]) == {"trigger": "token-monitor", names.RETRY_MAILBOX_KEY: "alice"}
    assert decisions(result) == {
        "default": ("skipped", token_monitor.QUEUE_EMPTY),
        "alice": ("started", token_monitor.MAIL_PARKED),
        "bob": ("skipped", token_monitor.QUEUE_EMPTY),
    }
    assert result["mailboxes"]["alice"]["retry"]["executionArn"] == execution["executionArn"]
    assert result["mailboxes"]["alice"]["hoursLeft"] == pytest.approx(30)
    # Proven with alice's own token, the only one minted.
    assert [r["refresh_token"] for r in world.mints()] == [tokens["alice"]]
    logged = by_mailbox(lines(capsys))
    assert {m: (line["event"], line["reason"]) for m, line in logged.items()} == {
        "default": (names.EVENT_RETRY_AUTOSTART_SKIPPED, "queue-empty"),
        "alice": (names.EVENT_RETRY_AUTOSTART, "mail-parked"),
        "bob": (names.EVENT_RETRY_AUTOSTART_SKIPPED, "queue-empty"),
    }
    assert logged["alice"]["executionArn"] == execution["executionArn"] and logged["alice"]["waiting"] == 2


def test_empty_queues_cost_no_execution_call_and_no_secret(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
    world.calls.clear()

    result = world.run()

    assert set(decisions(result).values()) == {("skipped", token_monitor.QUEUE_EMPTY)}
    assert [c.action for c in world.calls] == [
        *["ssm:GetParameter"] * 3,
        "cloudwatch:PutMetricData",
        *["sqs:GetQueueAttributes"] * 3,
    ]
    assert [c.params["QueueUrl"] for c in world.calls if c.operation == "GetQueueAttributes"] == [
        world.queue(m) for m in TABLE.names
    ]


def test_each_mailbox_gets_its_own_execution_name_in_a_period(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
        world.park(1, mailbox)

    first = world.run()

    assert set(decisions(first).values()) == {("started", token_monitor.MAIL_PARKED)}
    assert sorted(e["name"] for e in world.executions()) == [
        "token-monitor-20261124T1015Z",  # default keeps the name it had before mailboxes
        "token-monitor-alice-20261124T1015Z",
        "token-monitor-bob-20261124T1015Z",
    ]
    assert {json.loads(e["input"])[names.RETRY_MAILBOX_KEY] for e in world.executions()} == set(TABLE.names)
    # Each mailbox sees its own drain running, not another's.
    again = world.run(at=NOW + timedelta(minutes=5))
    assert decisions(again) == dict.fromkeys(TABLE.names, ("skipped", token_monitor.ALREADY_RUNNING))
    for mailbox in TABLE.names:
        started = first["mailboxes"][mailbox]["retry"]["executionArn"]
        assert again["mailboxes"][mailbox]["retry"]["executionArn"] == started
    # Once they ended, each name stays taken for the rest of the period, and the next period's
    # run starts a new one for every mailbox.
    for execution in world.executions():
        world.sfn.stop_execution(executionArn=execution["executionArn"])
    same_period = world.run(at=NOW + timedelta(minutes=8))
    assert decisions(same_period) == dict.fromkeys(TABLE.names, ("skipped", token_monitor.ALREADY_STARTED))
    next_period = world.run(at=NOW + timedelta(minutes=15))
    assert set(decisions(next_period).values()) == {("started", token_monitor.MAIL_PARKED)}
    assert len(world.executions()) == 6


@pytest.mark.parametrize("table", [TABLE, MailboxTable((Mailbox("a" * 20),), configured=True)])
def test_execution_names_are_valid_for_every_mailbox(table: MailboxTable) -> None:
    for mailbox in table.names:
        name = token_monitor.execution_name(NOW, mailbox)
        assert len(name) <= 80 and name.replace("-", "").isalnum()
    assert token_monitor.execution_name(NOW, "a" * 20) == f"token-monitor-{'a' * 20}-20261124T1015Z"


def test_a_running_drain_of_bob_does_not_block_alice(mailboxes: Monitor) -> None:
    world = mailboxes
    tokens = {m: world.install_token(m) for m in TABLE.names}
    world.park(2, "alice")
    world.park(3, "bob")
    # A hand-over execution: a generated name, the mailbox only in its input.
    bobs = world.sfn.start_execution(
        stateMachineArn=world.state_machine_arn,
        name="0b4b1a52-6f3e-4d1e-9a4c-2d9f1e7c8b10",
        input=json.dumps({names.RETRY_CONTINUED_FROM_KEY: execution_arn(world, "earlier"), "mailbox": "bob"}),
    )["executionArn"]

    result = world.run()

    assert decisions(result) == {
        "default": ("skipped", token_monitor.QUEUE_EMPTY),
        "alice": ("started", token_monitor.MAIL_PARKED),
        "bob": ("skipped", token_monitor.ALREADY_RUNNING),
    }
    assert result["mailboxes"]["bob"]["retry"]["executionArn"] == bobs
    assert [r["refresh_token"] for r in world.mints()] == [tokens["alice"]], "no token request for bob's drain"


def test_an_execution_whose_input_names_no_mailbox_drains_default(mailboxes: Monitor) -> None:
    """Started before mailboxes existed (or by hand): absent = default, read with DescribeExecution."""
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
    world.park(1, "default")
    world.park(1, "alice")
    legacy = world.sfn.start_execution(
        stateMachineArn=world.state_machine_arn, name="refresh-20261124T100000Z-0123abcd", input='{"trigger": "x"}'
    )["executionArn"]
    world.calls.clear()

    result = world.run()
    monitor_calls = list(world.calls)

    assert decisions(result)["default"] == ("skipped", token_monitor.ALREADY_RUNNING)
    assert result["mailboxes"]["default"]["retry"]["executionArn"] == legacy
    assert decisions(result)["alice"] == ("started", token_monitor.MAIL_PARKED)
    # Described once for both mailboxes with mail waiting; bob's empty queue asked nothing.
    described = [c.params["executionArn"] for c in monitor_calls if c.operation == "DescribeExecution"]
    assert described == [legacy]
    assert [c.operation for c in monitor_calls].count("ListExecutions") == 3  # default: 1; alice: 2


class EndedExecutions:
    """Step Functions as moto runs it, plus executions that already ended (moto cannot fail one)."""

    def __init__(self, sfn: Any, ended: list[dict[str, Any]]) -> None:
        self._sfn = sfn
        self.ended = ended
        self.described: list[str] = []

    def list_executions(self, **kwargs: Any) -> dict[str, Any]:
        listed = self._sfn.list_executions(**kwargs)
        if kwargs.get("statusFilter") == "RUNNING":
            return dict(listed)
        summaries = [{k: v for k, v in e.items() if k != "input"} for e in self.ended]
        return {"executions": [*summaries, *listed["executions"]]}

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.described.append(executionArn)
        for execution in self.ended:
            if execution["executionArn"] == executionArn:
                return {**execution, "input": json.dumps(execution["input"])}
        return dict(self._sfn.describe_execution(executionArn=executionArn))

    def start_execution(self, **kwargs: Any) -> Any:
        return self._sfn.start_execution(**kwargs)


def ended(world: Monitor, name: str, status: str, stopped: datetime, mailbox: str | None) -> dict[str, Any]:
    drained = {} if mailbox is None else {names.RETRY_MAILBOX_KEY: mailbox}
    return {
        "executionArn": execution_arn(world, name),
        "stateMachineArn": world.state_machine_arn,
        "name": name,
        "status": status,
        "startDate": stopped - timedelta(minutes=1),
        "stopDate": stopped,
        "input": {"trigger": "token-monitor", **drained},
    }


def with_ended(world: Monitor, executions: list[dict[str, Any]]) -> token_monitor.RetryAutostart:
    wired = world.autostart()
    sfn = EndedExecutions(world.sfn, executions)
    return token_monitor.RetryAutostart(world.sqs, sfn, wired.queue_urls, wired.state_machine_arn, wired.prove_token)


def test_a_failed_drain_of_alice_backs_off_only_alice(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
        world.park(1, mailbox)
    failed = ended(world, "token-monitor-alice-20261124T1000Z", "FAILED", NOW, "alice")
    # default's drain failed long ago: over, whatever its status.
    old = ended(world, "token-monitor-20261124T0800Z", "TIMED_OUT", NOW - timedelta(hours=2), None)
    autostart = with_ended(world, [failed, old])

    soon = world.run(at=NOW + timedelta(minutes=45), autostart=autostart)

    assert decisions(soon) == {
        "default": ("started", token_monitor.MAIL_PARKED),
        "alice": ("skipped", token_monitor.RECENT_FAILURE),
        "bob": ("started", token_monitor.MAIL_PARKED),
    }
    assert soon["mailboxes"]["alice"]["retry"]["executionArn"] == failed["executionArn"]
    assert old["executionArn"] not in autostart.sfn.described, "what stopped before the backoff is not described"
    assert sorted(json.loads(e["input"])[names.RETRY_MAILBOX_KEY] for e in world.executions()) == ["bob", "default"]

    later = world.run(at=NOW + timedelta(seconds=names.RETRY_AUTOSTART_BACKOFF_SECONDS + 60), autostart=autostart)
    assert decisions(later)["alice"] == ("started", token_monitor.MAIL_PARKED)


def test_a_failure_of_a_drain_without_a_mailbox_backs_off_default_only(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
        world.park(1, mailbox)
    autostart = with_ended(world, [ended(world, "refresh-by-hand", "FAILED", NOW, None)])

    result = world.run(at=NOW + timedelta(minutes=15), autostart=autostart)

    assert decisions(result) == {
        "default": ("skipped", token_monitor.RECENT_FAILURE),
        "alice": ("started", token_monitor.MAIL_PARKED),
        "bob": ("started", token_monitor.MAIL_PARKED),
    }
    assert autostart.sfn.described == [execution_arn(world, "refresh-by-hand")], "described once for all"


def test_a_later_success_of_the_same_mailbox_ends_its_backoff(mailboxes: Monitor) -> None:
    world = mailboxes
    world.install_token("alice")
    world.park(1, "alice")
    autostart = with_ended(
        world,
        [
            ended(world, "refresh-alice-20261124T1010Z-0123abcd", "SUCCEEDED", NOW + timedelta(minutes=5), "alice"),
            ended(world, "token-monitor-alice-20261124T1000Z", "FAILED", NOW, "alice"),
        ],
    )
    result = world.run(at=NOW + timedelta(minutes=15), autostart=autostart)
    assert decisions(result)["alice"] == ("started", token_monitor.MAIL_PARKED)


def test_one_mailbox_that_cannot_be_decided_stops_no_other(
    mailboxes: Monitor, capsys: pytest.CaptureFixture[str]
) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
    world.park(1, "alice")
    world.park(1, "bob")
    world.google.fail_token(503)  # the first mint (alice's) only

    result = world.run()

    assert decisions(result)["alice"][0] == "failed" and "503" in decisions(result)["alice"][1]
    assert decisions(result)["bob"] == ("started", token_monitor.MAIL_PARKED)
    logged = by_mailbox(lines(capsys))
    assert (logged["alice"]["event"], logged["alice"]["level"]) == (names.EVENT_RETRY_AUTOSTART_FAILED, "ERROR")
    assert (logged["bob"]["event"], logged["bob"]["level"]) == (names.EVENT_RETRY_AUTOSTART, "INFO")


def test_a_dead_token_of_bob_parks_only_bob(mailboxes: Monitor, capsys: pytest.CaptureFixture[str]) -> None:
    world = mailboxes
    tokens = {m: world.install_token(m) for m in TABLE.names}
    world.google.revoke(tokens["bob"])
    world.park(1, "alice")
    world.park(1, "bob")

    result = world.run()

    assert decisions(result)["alice"] == ("started", token_monitor.MAIL_PARKED)
    assert decisions(result)["bob"] == ("skipped", token_monitor.TOKEN_DEAD)
    assert names.refresh_command(ENV, "bob") in by_mailbox(lines(capsys))["bob"]["detail"]


def test_without_its_environment_every_mailbox_reports_the_missing_configuration(
    mailboxes: Monitor, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(names.ENV_VAR_RETRY_QUEUE_URL)
    assert monitor_handler.retry_autostart(mailboxes.clients, ENV) is None
    result = token_monitor.monitor(mailboxes.clients.ssm, mailboxes.cloudwatch, ENV, None, mailboxes=TABLE.names)
    assert set(decisions(result)) == set(TABLE.names)
    assert {a for a, _ in decisions(result).values()} == {"failed"}
    assert sorted(by_mailbox(lines(capsys))) == sorted(TABLE.names)


def test_every_call_with_mailboxes_is_allowed_and_every_grant_is_used(mailboxes: Monitor) -> None:
    world = mailboxes
    for mailbox in TABLE.names:
        world.install_token(mailbox)
    world.park(1, "default")
    world.park(1, "alice")
    world.sfn.start_execution(stateMachineArn=world.state_machine_arn, name="legacy", input="{}")
    world.calls.clear()
    world.run()  # default: running (described); alice: started
    calls = list(world.calls)

    document = monitor_policy(world)
    assert not check_policy(document, policy="the token monitor's policy with mailboxes")  # policy_sentry
    used: set[str] = set()
    for call in calls:
        for request in iam_requests(call, partition="aws", account=ACCOUNT):
            sid = _allowed_by(document, request.action, request.resource, dict(request.context))
            assert sid, f"{request.action} on {request.resource} is not allowed by the monitor's policy"
            used.add(sid)
    assert used == {s["Sid"] for s in document["Statement"]} - {"WriteOwnLogs"}
    assert "states:DescribeExecution" in {c.action for c in calls}
    # Another state machine's executions stay out of reach.
    other = execution_arn(world, "x").replace(names.retry_state_machine(ENV), names.retry_state_machine("prod"))
    assert not _allowed_by(document, "states:DescribeExecution", other, {})
