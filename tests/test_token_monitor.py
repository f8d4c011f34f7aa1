"""The token monitor against moto's SSM and CloudWatch: what it publishes for each parameter state, per mailbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from handlers import token_monitor as monitor_handler
from sesmail import names
from sesmail.runtime import token_metrics, token_monitor
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from sesmail.runtime.tokens import TokenExpiry
from tests.conftest import ENV, REGION, FakeContext

NAMESPACE = names.metric_namespace(ENV)
EXPIRY_PARAMETER = names.refresh_token_expiry_parameter(ENV)


@dataclass
class Aws:
    ssm: Any
    cloudwatch: Any
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def store(self, value: str, mailbox: str = names.DEFAULT_MAILBOX) -> None:
        name = names.refresh_token_expiry_parameter(ENV, mailbox)
        self.ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)

    def datapoints(self, metric: str, mailbox: str | None = names.DEFAULT_MAILBOX) -> list[dict[str, Any]]:
        """One mailbox's datapoints (CloudWatch matches dimensions exactly: the alarms must name it too)."""
        now = datetime.now(UTC)
        response = self.cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE,
            MetricName=metric,
            Dimensions=[] if mailbox is None else [{"Name": names.MAILBOX_DIMENSION, "Value": mailbox}],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(hours=1),
            Period=60,
            Statistics=["Minimum", "Maximum", "SampleCount"],
        )
        return list(response["Datapoints"])

    def errors(self) -> float:
        """``TokenMonitoringErrors`` of the run: one value for the monitor, without dimension."""
        return self.value(names.METRIC_TOKEN_MONITORING_ERRORS, None)

    def value(self, metric: str, mailbox: str | None = names.DEFAULT_MAILBOX) -> float:
        """The one value published for ``metric`` (fails unless exactly one datapoint exists)."""
        [point] = self.datapoints(metric, mailbox)
        assert point["SampleCount"] == 1
        assert point["Minimum"] == point["Maximum"]
        return float(point["Minimum"])

    def metrics(self) -> dict[str, list[dict[str, str]]]:
        """Metric name → dimensions, as ``list_metrics`` shows them (what the alarms must match)."""
        listed = self.cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"]
        return {m["MetricName"]: m.get("Dimensions", []) for m in listed}

    def metric_series(self) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        """Every (metric, dimensions) series of the namespace."""
        listed = self.cloudwatch.list_metrics(Namespace=NAMESPACE)["Metrics"]
        return {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m.get("Dimensions", []))) for m in listed}

    def run(self, now: datetime | None = None) -> token_monitor.TokenStatus:
        return token_monitor.run(self.ssm, self.cloudwatch, ENV, now)[names.DEFAULT_MAILBOX]


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        ssm = boto3.client("ssm", region_name=REGION)
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        recorded = Aws(ssm, cloudwatch)

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            recorded.calls.append((model.service_model.endpoint_prefix, model.name, dict(params)))

        for client in (ssm, cloudwatch):
            client.meta.events.register("provide-client-params.*.*", record)
        yield recorded


def expiry_json(expires_in: timedelta | None, *, now: datetime | None = None) -> str:
    """What the refresh CLI stores (``TokenExpiry.to_json``)."""
    created = now or datetime.now(UTC)
    return TokenExpiry(created, None if expires_in is None else created + expires_in).to_json()


def test_valid_expiry_publishes_hours_left_and_zero_errors(aws: Aws) -> None:
    aws.store(expiry_json(timedelta(hours=30)))

    status = aws.run()

    assert status.ok and status.error is None
    assert aws.value(names.METRIC_TOKEN_HOURS) == pytest.approx(30, abs=0.05)
    assert aws.errors() == 0
    # The dimension Mailbox on every token metric, "default" included (DESIGN.md, "Mailboxes").
    default = [{"Name": names.MAILBOX_DIMENSION, "Value": names.DEFAULT_MAILBOX}]
    assert aws.metrics() == {names.METRIC_TOKEN_HOURS: default, names.METRIC_TOKEN_MONITORING_ERRORS: []}


def test_hours_are_computed_from_the_stored_expiry_at_the_given_time(aws: Aws) -> None:
    created = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    aws.store(expiry_json(timedelta(days=7), now=created))
    status = aws.run(now=created + timedelta(days=6, hours=1, minutes=30))
    assert status.hours_left == pytest.approx(22.5)
    assert status.expires_at == "2026-11-27T08:00:00Z"
    assert aws.value(names.METRIC_TOKEN_HOURS) == pytest.approx(22.5)


def test_expired_token_publishes_negative_hours_without_an_error(aws: Aws) -> None:
    aws.store(expiry_json(timedelta(hours=-5)))
    status = aws.run()
    assert status.ok
    assert aws.value(names.METRIC_TOKEN_HOURS) == pytest.approx(-5, abs=0.05)
    assert aws.errors() == 0


def test_token_without_expiry_publishes_the_documented_sentinel(aws: Aws) -> None:
    aws.store(expiry_json(None))
    status = aws.run()
    assert status.ok
    assert aws.value(names.METRIC_TOKEN_HOURS) == names.TOKEN_NO_EXPIRY_HOURS == 365 * 24
    assert aws.errors() == 0
    # Far above every token alarm threshold: an app "In production" never alarms.
    assert names.TOKEN_NO_EXPIRY_HOURS > 10 * names.TOKEN_EXPIRING_HOURS


def test_expiry_given_only_as_epoch_is_read(aws: Aws) -> None:
    now = datetime.now(UTC)
    aws.store(json.dumps({"created_at": None, "expires_at": None, "expires_at_epoch": int(now.timestamp()) + 7200}))
    assert aws.run(now=now).hours_left == pytest.approx(2, abs=0.01)


def test_placeholder_publishes_zero_and_an_error(aws: Aws) -> None:
    aws.store(names.placeholder_value(ENV))
    status = aws.run()
    assert not status.ok
    assert names.refresh_command(ENV) in (status.error or "")
    assert aws.value(names.METRIC_TOKEN_HOURS) == 0
    assert aws.errors() == 1


def test_missing_parameter_publishes_zero_and_an_error(aws: Aws) -> None:
    status = aws.run()
    assert status.hours_left == 0
    error = status.error or ""
    assert EXPIRY_PARAMETER in error
    assert names.deploy_command(ENV) in error and names.refresh_command(ENV) in error
    assert aws.value(names.METRIC_TOKEN_HOURS) == 0
    assert aws.errors() == 1


@pytest.mark.parametrize(
    "value",
    [
        "{oops",
        "null",
        "[]",
        "42",
        '"2026-11-27T08:00:00Z"',
        "{}",  # says nothing about the expiry: must not read as "never expires"
        '{"created_at": "2026-11-20T08:00:00Z"}',
        '{"created_at": "2026-11-20T08:00:00Z", "expires_at": "next tuesday", "expires_at_epoch": null}',
        '{"created_at": "2026-11-20T08:00:00Z", "expires_at": null, "expires_at_epoch": "soon"}',
    ],
)
def test_unparsable_parameter_publishes_zero_and_an_error(aws: Aws, value: str) -> None:
    aws.store(value)
    status = aws.run()
    assert status.hours_left == 0 and not status.ok
    assert names.refresh_command(ENV) in (status.error or "")
    assert aws.value(names.METRIC_TOKEN_HOURS) == 0
    assert aws.errors() == 1


class _DeniedSsm:
    def get_parameter(self, **_: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}, "ResponseMetadata": {}},
            "GetParameter",
        )


def test_unreadable_ssm_publishes_only_the_error_not_a_false_zero(aws: Aws) -> None:
    [status] = token_monitor.run(_DeniedSsm(), aws.cloudwatch, ENV).values()
    assert status.hours_left is None
    assert "AccessDeniedException" in (status.error or "")
    # No hours at all: the expiring alarm (missing data = breaching) still fires if this lasts
    # an hour, but nothing claims the token expired.
    assert aws.datapoints(names.METRIC_TOKEN_HOURS) == []
    assert aws.errors() == 1


def test_a_failing_publish_fails_the_run(aws: Aws) -> None:
    aws.store(expiry_json(timedelta(hours=30)))

    class BrokenCloudWatch:
        def put_metric_data(self, **_: Any) -> None:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutMetricData")

    with pytest.raises(ClientError):
        token_monitor.run(aws.ssm, BrokenCloudWatch(), ENV)


def test_error_metric_returns_to_zero_once_fixed(aws: Aws) -> None:
    assert not aws.run().ok
    aws.store(expiry_json(timedelta(days=7)))
    assert aws.run().ok
    values = sorted(p["Maximum"] for p in aws.datapoints(names.METRIC_TOKEN_MONITORING_ERRORS, None))
    assert values in ([0.0, 1.0], [1.0])  # moto may merge both runs into one minute
    points = aws.datapoints(names.METRIC_TOKEN_MONITORING_ERRORS, None)
    assert sum(p["SampleCount"] for p in points) == 2
    assert min(p["Minimum"] for p in points) == 0


def test_the_monitor_makes_exactly_the_calls_its_policy_allows(aws: Aws) -> None:
    aws.store(expiry_json(timedelta(hours=30)))
    aws.calls.clear()
    aws.run()
    assert [(service, operation) for service, operation, _ in aws.calls] == [
        ("ssm", "GetParameter"),
        ("monitoring", "PutMetricData"),
    ]
    assert aws.calls[0][2] == {"Name": EXPIRY_PARAMETER}  # no WithDecryption: a plain String
    assert aws.calls[1][2]["Namespace"] == NAMESPACE


def test_logs_say_what_happened(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws.store(names.placeholder_value(ENV))
    aws.run()
    aws.store(expiry_json(timedelta(hours=30)))
    aws.run()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    error, ok = (line for line in lines if line.get("event", "").startswith(names.EVENT_PREFIX_TOKEN))
    assert error["event"] == names.EVENT_TOKEN_MONITOR_ERROR and error["level"] == "ERROR"
    assert names.refresh_command(ENV) in error["reason"]
    assert ok["event"] == names.EVENT_TOKEN_MONITORED and ok["level"] == "INFO"
    assert ok["hoursLeft"] == pytest.approx(30, abs=0.05)


# --- several mailboxes ------------------------------------------------------------------------------

MAILBOXES = (names.DEFAULT_MAILBOX, "alice", "bob")


class _DenyOneParameter:
    """SSM that refuses one parameter (throttled, denied) and answers the others from moto."""

    def __init__(self, ssm: Any, refused: str) -> None:
        self._ssm = ssm
        self._refused = refused

    def get_parameter(self, **kwargs: Any) -> Any:
        if kwargs["Name"] == self._refused:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}, "ResponseMetadata": {}},
                "GetParameter",
            )
        return self._ssm.get_parameter(**kwargs)


def test_each_mailbox_publishes_its_own_hours_in_one_call(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    aws.store(expiry_json(timedelta(hours=30), now=now))
    aws.store(expiry_json(timedelta(hours=5), now=now), "alice")
    aws.store(names.placeholder_value(ENV, "bob"), "bob")  # bob never renewed
    aws.calls.clear()

    statuses = token_monitor.run(aws.ssm, aws.cloudwatch, ENV, now, mailboxes=MAILBOXES)
    calls = list(aws.calls)

    assert list(statuses) == list(MAILBOXES)
    assert statuses["default"].ok and statuses["alice"].ok and not statuses["bob"].ok
    # bob's broken parameter stops nobody: everyone's hours are published, each under its name.
    assert aws.value(names.METRIC_TOKEN_HOURS, "default") == pytest.approx(30)
    assert aws.value(names.METRIC_TOKEN_HOURS, "alice") == pytest.approx(5)
    assert aws.value(names.METRIC_TOKEN_HOURS, "bob") == 0
    assert aws.errors() == 1  # one mailbox's expiry unknown; the log line names it
    assert names.refresh_command(ENV, "bob") in (statuses["bob"].error or "")
    # One GetParameter per mailbox (its own expiry parameter), one PutMetricData for all.
    assert [(service, op) for service, op, _ in calls] == [("ssm", "GetParameter")] * 3 + [
        ("monitoring", "PutMetricData")
    ]
    assert [params["Name"] for _, _, params in calls[:3]] == [
        names.refresh_token_expiry_parameter(ENV, m) for m in MAILBOXES
    ]
    assert len(calls[3][2]["MetricData"]) == 4
    assert aws.metric_series() == {
        *((names.METRIC_TOKEN_HOURS, ((names.MAILBOX_DIMENSION, m),)) for m in MAILBOXES),
        (names.METRIC_TOKEN_MONITORING_ERRORS, ()),
    }
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_mailbox = {line["mailbox"]: line for line in lines if line["event"].startswith(names.EVENT_PREFIX_TOKEN)}
    assert {m: line["event"] for m, line in by_mailbox.items()} == {
        "default": names.EVENT_TOKEN_MONITORED,
        "alice": names.EVENT_TOKEN_MONITORED,
        "bob": names.EVENT_TOKEN_MONITOR_ERROR,
    }


def test_one_mailbox_ssm_cannot_read_publishes_only_its_error(aws: Aws) -> None:
    aws.store(expiry_json(timedelta(hours=30)))
    aws.store(expiry_json(timedelta(hours=40)), "alice")
    ssm = _DenyOneParameter(aws.ssm, names.refresh_token_expiry_parameter(ENV, "alice"))

    statuses = token_monitor.run(ssm, aws.cloudwatch, ENV, mailboxes=("default", "alice"))

    assert statuses["default"].ok and statuses["alice"].hours_left is None
    assert aws.value(names.METRIC_TOKEN_HOURS, "default") == pytest.approx(30, abs=0.05)
    assert aws.datapoints(names.METRIC_TOKEN_HOURS, "alice") == []  # unknown, not a false zero
    assert aws.errors() == 1


def test_the_refresh_cli_publishes_under_the_mailbox_dimension(aws: Aws) -> None:
    token_metrics.publish_token_hours(aws.cloudwatch, ENV, 168.0)
    token_metrics.publish_token_hours(aws.cloudwatch, ENV, 100.0, "alice")
    assert aws.value(names.METRIC_TOKEN_HOURS, "default") == 168
    assert aws.value(names.METRIC_TOKEN_HOURS, "alice") == 100
    assert aws.metric_series() == {
        (names.METRIC_TOKEN_HOURS, ((names.MAILBOX_DIMENSION, m),)) for m in ("default", "alice")
    }


# --- the Lambda entry point -----------------------------------------------------------------------


@pytest.fixture
def cold_handler() -> Iterator[None]:
    monitor_handler.reset()
    yield
    monitor_handler.reset()


def test_handler_reads_the_environment_and_publishes(
    aws: Aws, cold_handler: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
    aws.store(expiry_json(timedelta(hours=10)))

    result = monitor_handler.handler({"source": "aws.events"}, FakeContext(request_id="req-monitor"))

    assert result["error"] is None
    assert result["hoursLeft"] == pytest.approx(10, abs=0.05)
    assert aws.value(names.METRIC_TOKEN_HOURS) == pytest.approx(10, abs=0.05)
    assert aws.errors() == 0
    line, autostart = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["event"], line["env"], line["requestId"]) == (names.EVENT_TOKEN_MONITORED, ENV, "req-monitor")
    # Without the retry queue and state machine in its environment the monitor still publishes,
    # and says what is missing (tests/test_retry_autostart.py has the configured monitor).
    assert (autostart["event"], autostart["level"]) == (names.EVENT_RETRY_AUTOSTART_FAILED, "ERROR")
    assert names.ENV_VAR_RETRY_QUEUE_URL in autostart["reason"] and result["retry"]["action"] == "failed"


def test_handler_reports_a_placeholder_in_its_result(
    aws: Aws, cold_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
    aws.store(names.placeholder_value(ENV))
    result = monitor_handler.handler({}, FakeContext())
    assert result["hoursLeft"] == 0 and names.refresh_command(ENV) in result["error"]
    assert aws.errors() == 1


def test_handler_without_environment_fails_clearly(cold_handler: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(names.ENV_VAR_ENV, raising=False)
    with pytest.raises(RuntimeError, match=names.ENV_VAR_ENV):
        monitor_handler.handler({}, FakeContext())


def test_handler_refuses_an_invalid_environment(cold_handler: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.ENV_VAR_ENV, "Not Valid")
    with pytest.raises(ValueError, match="invalid environment name"):
        monitor_handler.handler({}, FakeContext())


def test_handler_publishes_every_mailbox_of_its_table(
    aws: Aws, cold_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = MailboxTable((Mailbox("alice", ("alice@example.com",)), Mailbox("bob", ("bob@example.com",))), True)
    monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
    monkeypatch.setenv(names.ENV_VAR_MAILBOXES, table.to_json())
    aws.store(expiry_json(timedelta(hours=10)), "alice")

    result = monitor_handler.handler({}, FakeContext())

    assert list(result["mailboxes"]) == ["alice", "bob"]
    assert result["mailboxes"]["alice"]["hoursLeft"] == pytest.approx(10, abs=0.05)
    assert result["mailboxes"]["bob"]["hoursLeft"] == 0 and result["mailboxes"]["bob"]["error"]
    # No "default" here: the top-level fields are the table's first mailbox's.
    assert result["hoursLeft"] == result["mailboxes"]["alice"]["hoursLeft"]
    assert aws.errors() == 1
    assert aws.datapoints(names.METRIC_TOKEN_HOURS, "default") == []


def test_handler_refuses_an_unreadable_mailbox_table(
    aws: Aws, cold_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
    monkeypatch.setenv(names.ENV_VAR_MAILBOXES, "[{oops")
    with pytest.raises(RuntimeError, match=f"{names.ENV_VAR_MAILBOXES} is not JSON.*Pulumi program"):
        monitor_handler.handler({}, FakeContext())
