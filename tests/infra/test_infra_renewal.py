"""The renewal page in the graph: its function, public URL, secret, least privilege and the alarm links.

DESIGN.md "Renewing from a phone": ``ses-mail-renewal-{env}`` behind a function URL (output
``renewalUrl``), every token alarm's description carrying ``{renewalUrl}?mailbox=NAME``. Only the
mailboxes with a ``gmailAddress`` can be renewed there, so only their tokens are writable.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from sesmail import names
from sesmail.infra.archive import RENEWAL, RUNTIME, lambda_source_files, write_zip
from sesmail.infra.config import ConfigError, StackConfig
from tests.infra.harness import (
    ACCOUNT_ID,
    PARTITION,
    REGION,
    ProgramRun,
    is_secret,
    run_program,
    stack_config,
    unsecret,
)

ENV = "test"
FUNCTION = "aws:lambda/function:Function"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
PARAMETER = "aws:ssm/parameter:Parameter"
PERMISSION = "aws:lambda/permission:Permission"
STATE_MACHINE = names.state_machine_arn(ENV, REGION, ACCOUNT_ID, PARTITION)
NAMESPACE = names.metric_namespace(ENV)


@pytest.fixture(scope="module")
def single_run() -> ProgramRun:
    """The example stack with the one mailbox's Gmail address set: renewable from a phone."""
    return run_program(stack_config(gmailAddress="owner@gmail.com"))


@pytest.fixture(scope="module")
def family_run() -> ProgramRun:
    """alice has an address (renewable), bob has none (the page refuses him)."""
    mailboxes = [
        {"name": "alice", "recipients": ["alice@example.com"], "gmailAddress": "alice@gmail.com"},
        {"name": "bob", "recipients": ["bob@example.com", "example.com"]},
    ]
    return run_program(stack_config(mailboxes=mailboxes, recipients=None, extraLabels=None))


@pytest.fixture(scope="module")
def unaddressed_run() -> ProgramRun:
    """The example stack as it is: no gmailAddress anywhere."""
    return run_program()


def _policy(run: ProgramRun) -> dict[str, Any]:
    policy: dict[str, Any] = run.one("aws:iam/rolePolicy:RolePolicy", role=names.renewal_role(ENV)).json_input("policy")
    return policy


def _grants(policy: dict[str, Any], action: str) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action in actions:
            resources = statement["Resource"]
            found |= set(resources if isinstance(resources, list) else [resources])
    return found


def _parameter(name: str) -> str:
    return f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT_ID}:parameter{name}"


def _queue(name: str) -> str:
    return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{name}"


def _url(run: ProgramRun) -> str:
    url: str = run.one("aws:lambda/functionUrl:FunctionUrl").state["functionUrl"]
    return url


# --- the function and its URL ----------------------------------------------------------------------


def test_the_page_is_a_public_function_url_with_both_permissions_aws_requires(single_run: ProgramRun) -> None:
    function = single_run.one(FUNCTION, name=names.renewal_function(ENV))
    assert function.inputs["handler"] == names.RENEWAL_HANDLER == "handlers.renewal.handler"
    assert function.inputs["reservedConcurrentExecutions"] == names.RENEWAL_RESERVED_CONCURRENCY == 2
    url = single_run.one("aws:lambda/functionUrl:FunctionUrl", functionName=names.renewal_function(ENV))
    assert url.inputs["authorizationType"] == "NONE"
    assert url.inputs["invokeMode"] == "BUFFERED"
    assert "cors" not in url.inputs  # a page for browsers to navigate to, never for scripts on other origins
    permissions = {
        p.inputs["action"]: p.inputs
        for p in single_run.of_type(PERMISSION)
        if p.inputs["function"] == names.renewal_function(ENV)
    }
    # Since October 2025 AWS needs both for a public URL; InvokeFunction only through the URL.
    assert permissions == {
        "lambda:InvokeFunctionUrl": {
            "action": "lambda:InvokeFunctionUrl",
            "function": names.renewal_function(ENV),
            "principal": "*",
            "functionUrlAuthType": "NONE",
        },
        "lambda:InvokeFunction": {
            "action": "lambda:InvokeFunction",
            "function": names.renewal_function(ENV),
            "principal": "*",
            "invokedViaFunctionUrl": True,
        },
    }


def test_renewal_url_is_an_output_and_each_renewable_mailbox_has_its_link(family_run: ProgramRun) -> None:
    url = _url(family_run)
    assert url.startswith("https://") and url.endswith(f".lambda-url.{REGION}.on.aws/")
    assert family_run.outputs["renewalUrl"] == url
    mailboxes = family_run.outputs["mailboxes"]
    assert mailboxes["alice"]["renewalLink"] == f"{url}?mailbox=alice"
    assert mailboxes["bob"]["renewalLink"] is None


def test_the_environment_carries_the_table_or_the_one_address(single_run: ProgramRun, family_run: ProgramRun) -> None:
    single = single_run.one(FUNCTION, name=names.renewal_function(ENV)).inputs["environment"]["variables"]
    assert single == {
        names.ENV_VAR_ENV: ENV,
        names.ENV_VAR_RETRY_QUEUE_URL: f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{names.retry_queue(ENV)}",
        names.ENV_VAR_STATE_MACHINE_ARN: STATE_MACHINE,
        names.ENV_VAR_TOKEN_LIFETIME_DAYS: "7",
        names.ENV_VAR_GMAIL_ADDRESS: "owner@gmail.com",
    }
    family = family_run.one(FUNCTION, name=names.renewal_function(ENV)).inputs["environment"]["variables"]
    assert names.ENV_VAR_GMAIL_ADDRESS not in family
    assert '"alice@gmail.com"' in family[names.ENV_VAR_MAILBOXES]


def test_the_signing_secret_is_generated_once_and_kept(single_run: ProgramRun) -> None:
    secret = single_run.one(PARAMETER, name=names.renewal_secret_parameter(ENV))
    assert secret.inputs["type"] == "SecureString" and secret.inputs["keyId"] == "alias/aws/ssm"
    assert is_secret(secret.inputs["value"])
    value = unsecret(secret.inputs["value"])
    assert len(value) >= 32 and not names.is_placeholder(value)
    assert "value" in secret.ignore_changes  # a later `pulumi up` must not roll it (flows in progress would end)


def test_the_web_client_parameter_starts_as_a_placeholder_naming_its_command(single_run: ProgramRun) -> None:
    web = single_run.one(PARAMETER, name=names.web_client_credentials_parameter(ENV))
    assert web.inputs["type"] == "SecureString" and "value" in web.ignore_changes
    placeholder = unsecret(web.inputs["value"])
    assert names.is_placeholder(placeholder) and f"--env {ENV} --web-client-secret FILE" in placeholder


def test_a_stack_without_mailboxes_reserves_no_concurrency_when_told_to() -> None:
    run = run_program(stack_config(renewalConcurrency=0))
    assert run.one(FUNCTION, name=names.renewal_function(ENV)).inputs.get("reservedConcurrentExecutions") is None


@pytest.mark.parametrize("value", ["-1", "11", "two"])
def test_renewal_concurrency_outside_0_to_10_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="renewalConcurrency"):
        StackConfig.parse(ENV, {"domains": '["example.com"]', "renewalConcurrency": value})


# --- least privilege -------------------------------------------------------------------------------


def test_the_page_may_write_only_the_renewable_mailboxes_tokens(family_run: ProgramRun) -> None:
    policy = _policy(family_run)
    alice = {
        _parameter(names.refresh_token_parameter(ENV, "alice")),
        _parameter(names.refresh_token_expiry_parameter(ENV, "alice")),
    }
    assert _grants(policy, "ssm:PutParameter") == alice
    assert _grants(policy, "ssm:GetParameters") == alice | {
        _parameter(names.web_client_credentials_parameter(ENV)),
        _parameter(names.renewal_secret_parameter(ENV)),
    }
    assert _grants(policy, "ssm:DescribeParameters") == {"*"}  # no resource type exists for it
    assert _grants(policy, "sqs:GetQueueAttributes") == {_queue(names.retry_queue(ENV, "alice"))}
    assert _grants(policy, "states:StartExecution") == {STATE_MACHINE}
    logs = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT_ID}:log-group:"
    assert _grants(policy, "logs:PutLogEvents") == {
        f"{logs}{names.audit_log_group(ENV)}:*",
        f"{logs}{names.lambda_log_group(names.renewal_function(ENV))}:*",
    }
    (metrics,) = [s for s in policy["Statement"] if "cloudwatch:PutMetricData" in s["Action"]]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}
    every_action = {a for s in policy["Statement"] for a in s["Action"]}
    # Never the installed client (the CLI's), a message, a claim, a queue's messages, a deletion.
    assert _parameter(names.client_credentials_parameter(ENV)) not in _grants(policy, "ssm:GetParameters")
    assert not any(a.startswith("s3:") or a in ("sqs:ReceiveMessage", "ssm:DeleteParameter") for a in every_action)


def test_without_any_gmail_address_the_page_can_write_no_token(unaddressed_run: ProgramRun) -> None:
    policy = _policy(unaddressed_run)
    assert _grants(policy, "ssm:PutParameter") == set()
    assert _grants(policy, "ssm:GetParameters") == {
        _parameter(names.web_client_credentials_parameter(ENV)),
        _parameter(names.renewal_secret_parameter(ENV)),
    }
    assert "renewalLink" in unaddressed_run.outputs["mailboxes"]["default"]


# --- the alarms carry the link ---------------------------------------------------------------------


def test_every_token_alarm_of_a_renewable_mailbox_links_to_its_renewal(family_run: ProgramRun) -> None:
    link = f"{_url(family_run)}?mailbox=alice"
    alarms = {a.inputs["name"]: a.inputs["alarmDescription"] for a in family_run.of_type(ALARM)}
    alice_tokens = [
        names.token_expiring_alarm(ENV, "alice"),
        names.token_critical_alarm(ENV, "alice"),
        names.token_expired_alarm(ENV, "alice"),
    ]
    for alarm in alice_tokens:
        assert alarms[alarm].endswith(f"Or renew from a phone: {link}"), alarm
        assert names.refresh_command(ENV, "alice") in alarms[alarm]  # the CLI stays the first step
    for alarm in (names.token_expiring_alarm(ENV, "bob"), names.token_expired_alarm(ENV, "bob")):
        assert "?mailbox=" not in alarms[alarm]
        assert "set this mailbox's gmailAddress" in alarms[alarm]
    others = [text for name, text in alarms.items() if "token-" not in name]
    assert others and not any("renew from a phone" in text.lower() for text in others)


# --- the archives ----------------------------------------------------------------------------------


def test_only_the_page_s_archive_carries_the_page(tmp_path: Path, single_run: ProgramRun) -> None:
    runtime = {name for name, _ in lambda_source_files(program=RUNTIME)}
    renewal = {name for name, _ in lambda_source_files(program=RENEWAL)}
    page_files = renewal - runtime
    assert page_files and all(
        f == "handlers/renewal.py" or Path(f).is_relative_to("sesmail/renewal") for f in page_files
    )
    assert runtime < renewal and "handlers/renewal.py" in page_files
    for function in single_run.of_type(FUNCTION):
        shipped = set(function.inputs["code"].assets)
        expected = renewal if function.inputs["name"] == names.renewal_function(ENV) else runtime
        assert shipped == expected, function.inputs["name"]
    sizes = {}
    for program in (RUNTIME, RENEWAL):
        path = tmp_path / f"{program}.zip"
        write_zip(path, program=program)
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
        sizes[program] = path.stat().st_size
    assert sizes[RUNTIME] < 100 * 1024  # README: the mail path's archive stays under 100 KiB
