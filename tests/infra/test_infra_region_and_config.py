"""Program-time refusals: regions without SES receiving, and bad stack config."""

from __future__ import annotations

import json
import re

import pytest

from sesmail import names
from sesmail.infra.config import ConfigError, StackConfig
from sesmail.infra.context import UnsupportedRegionError, check_receiving_region
from sesmail.runtime.verdicts import AuthFailures
from tests.infra.harness import run_program, stack_config
from tests.rules import asl


def test_region_without_ses_receiving_fails_before_creating_anything() -> None:
    with pytest.raises(UnsupportedRegionError) as failure:
        run_program(region="ap-east-1")
    message = str(failure.value)
    assert "'ap-east-1' has no SES email receiving" in message
    for region in names.SUPPORTED_REGIONS:
        assert region in message


@pytest.mark.parametrize("region", names.SES_OPT_IN_REGIONS)
def test_opt_in_regions_are_refused_because_the_s3_action_cannot_write_there(region: str) -> None:
    """SES receives mail there, but its S3 action cannot deliver to a bucket in an opt-in region."""
    with pytest.raises(UnsupportedRegionError) as failure:
        run_program(region=region)
    message = str(failure.value)
    assert f"{region!r} is an opt-in region" in message
    assert "S3 action" in message
    assert region not in message.partition("Choose one of:")[2]
    assert "us-east-1" in message


@pytest.mark.parametrize("region", ["eu-west-1", "ap-southeast-2"])
def test_other_receiving_regions_work(region: str) -> None:
    run = run_program(region=region)
    assert run.outputs["mxRecord"] == f"10 inbound-smtp.{region}.amazonaws.com"
    assert run.outputs["emailBucket"].endswith(f"-{region}")


def test_receiving_regions_are_well_formed() -> None:
    assert len(set(names.SES_RECEIVING_REGIONS)) == len(names.SES_RECEIVING_REGIONS)
    assert set(names.SES_OPT_IN_REGIONS) <= set(names.SES_RECEIVING_REGIONS)
    for region in names.SUPPORTED_REGIONS:
        assert check_receiving_region(region) == region
    for region in ("ap-east-1", "cn-north-1", "us-gov-west-1", "", *names.SES_OPT_IN_REGIONS):
        with pytest.raises(UnsupportedRegionError):
            check_receiving_region(region)


def test_a_stack_name_longer_than_the_limit_is_refused_with_one_sentence() -> None:
    longest = "family-mail-production-x"
    assert len(longest) == names.MAX_ENV_LENGTH
    run_program(stack=longest)  # accepted: tests/rules/test_name_limits.py checks what it creates
    with pytest.raises(ConfigError) as failure:
        run_program(stack=longest + "y")
    message = str(failure.value)
    assert f"1-{names.MAX_ENV_LENGTH} lowercase letters" in message
    assert "\n" not in message


def test_every_arn_takes_its_partition_from_the_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered for GovCloud: no resource input may name the commercial partition.

    SES has no email receiving in GovCloud (or China) today, so the region is let through here as
    if AWS had added it: what is tested is that no ARN in the graph hard-codes ``aws``.
    """
    monkeypatch.setattr(names, "SUPPORTED_REGIONS", (*names.SUPPORTED_REGIONS, "us-gov-west-1"))
    run = run_program(region="us-gov-west-1", partition="aws-us-gov")

    everything = json.dumps([[r.inputs for r in run.custom_resources], run.outputs], default=str)
    arns = set(re.findall(r"arn:[a-z-]*:", everything))
    assert arns == {"arn:aws-us-gov:"}
    machine = run.one("aws:sfn/stateMachine:StateMachine")
    tasks = [state for _, state in asl.states(machine.json_input("definition")) if state["Type"] == "Task"]
    resources = {state["Resource"] for state in tasks}
    assert resources and all(r.startswith("arn:aws-us-gov:") for r in resources)


def test_missing_domains_fail_the_program_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"'ses-mail:domains' is required.*pulumi config set"):
        run_program(stack_config(domains=None))


def parse(**raw: str) -> StackConfig:
    return StackConfig.parse("test", {"domains": "example.com", **raw})


def test_defaults() -> None:
    config = parse()
    assert config.domains == ("example.com",)
    assert config.recipients == ()
    assert config.receipt_recipients == ("example.com",)
    assert config.alert_emails == ()
    assert config.extra_labels == ()
    assert config.retain_days == names.DEFAULT_RETAIN_DAYS
    assert config.token_lifetime_days == names.TESTING_TOKEN_LIFETIME_DAYS == 7
    assert config.rule_set_name is None
    assert not config.uses_existing_rule_set


def test_lists_as_json_or_comma_separated() -> None:
    config = StackConfig.parse(
        "test",
        {
            "domains": '["Example.COM.", "example.org", "xn--bcher-kva.xn--p1ai"]',
            "recipients": "me@example.com, sub.example.org",
            "alertEmails": '["ops@example.net"]',
            "extraLabels": "Label_1,IMPORTANT",
            "retainDays": "90",
            "tokenLifetimeDays": "30",
            "ruleSetName": "company-inbound",
            "canary": "false",
        },
    )
    assert config.domains == ("example.com", "example.org", "xn--bcher-kva.xn--p1ai")
    assert config.recipients == ("me@example.com", "sub.example.org")
    assert config.receipt_recipients == config.recipients
    assert config.alert_emails == ("ops@example.net",)
    assert config.extra_labels == ("Label_1", "IMPORTANT")
    assert (config.retain_days, config.token_lifetime_days) == (90, 30)
    assert config.rule_set_name == "company-inbound"
    assert config.uses_existing_rule_set


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"domains": ""}, r"'ses-mail:domains' is required"),
        ({"domains": "not a domain"}, r"is not a domain name"),
        ({"domains": '["example.com", "example.com"]'}, r"lists 'example.com' twice"),
        ({"domains": '{"a": 1}'}, r"is not a valid list|must be a list"),
        ({"domains": "[1, 2]"}, r"must be a list of strings"),
        ({"recipients": "me@elsewhere.net"}, r"not under any of the configured domains"),
        ({"recipients": "not an address@example.com"}, r"is not an e-mail address"),
        ({"alertEmails": "nobody"}, r"'ses-mail:alertEmails': 'nobody' is not an e-mail address"),
        ({"extraLabels": '["a,b"]'}, r"'ses-mail:extraLabels': 'a,b' contains a comma"),
        ({"extraLabels": '["Inbox"]'}, r"'Inbox' is Gmail's system label INBOX .*write INBOX"),
        ({"extraLabels": '["Family//School"]'}, r"'Family//School' has an empty level"),
        ({"retainDays": "thirty"}, r"'ses-mail:retainDays' must be a whole number"),
        ({"retainDays": "0"}, r"must be between 1 and"),
        # Parked mail waits up to 14 days in the retry queue and its DLQ, and 14 more after a redrive.
        ({"retainDays": "27"}, r"'ses-mail:retainDays' is 27: .* keep it at least 28 days"),
        ({"tokenLifetimeDays": "-1"}, r"'ses-mail:tokenLifetimeDays' must be between"),
        ({"ruleSetName": "bad name!"}, r"is not an SES rule set name"),
    ],
)
def test_bad_values_say_which_key_and_why(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(**raw)


def test_bad_environment_name() -> None:
    with pytest.raises(ConfigError, match="invalid environment name"):
        StackConfig.parse("Prod_1", {"domains": "example.com"})


def test_config_errors_are_pulumi_run_errors() -> None:
    import pulumi

    assert issubclass(ConfigError, pulumi.RunError)  # pulumi prints the message, no traceback
    assert issubclass(UnsupportedRegionError, pulumi.RunError)


def test_auth_failures_mode_is_parsed_and_reaches_the_forwarder() -> None:
    assert parse().auth_failures is AuthFailures.SPAM
    assert parse(authFailures="Drop").auth_failures is AuthFailures.DROP
    assert parse(authFailures="inbox").auth_failures is AuthFailures.INBOX
    with pytest.raises(ConfigError, match=r"'ses-mail:authFailures' is 'quarantine': use spam .*drop .*inbox"):
        parse(authFailures="quarantine")
    run = run_program(stack_config(authFailures="drop"))
    function = run.one("aws:lambda/function:Function", name=names.forwarder_function("test"))
    assert function.inputs["environment"]["variables"][names.ENV_VAR_AUTH_FAILURES] == "drop"
