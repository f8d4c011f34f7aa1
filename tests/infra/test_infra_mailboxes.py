"""``ses-mail:mailboxes`` at ``pulumi up``: validated in sentences, then one set of resources per mailbox.

A stack without the key keeps today's names exactly (the other infra tests pin them); here a stack
with ``alice`` and ``bob`` gets per-mailbox parameters, queues and alarms, one SES rule for the
union of their recipients, least privilege over exactly their parameters and queues, and the
``mailboxes`` output.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sesmail import names
from sesmail.infra.config import ConfigError, StackConfig
from sesmail.runtime.mailboxes import MailboxTable
from tests.infra.harness import ACCOUNT_ID, REGION, ProgramRun, run_program, stack_config, unsecret

ENV = "test"
PARAMETER = "aws:ssm/parameter:Parameter"
QUEUE = "aws:sqs/queue:Queue"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
FAMILY: list[dict[str, Any]] = [
    {
        "name": "alice",
        "recipients": ["alice@example.com", "family@example.com"],
        "labels": ["Family"],
        "gmailAddress": "Alice@Gmail.com",
    },
    {
        "name": "bob",
        "recipients": ["bob@example.com", "family@example.com", "example.com"],
        "gmailAddress": "bob@gmail.com",
    },
]


def _parse(**raw: Any) -> StackConfig:
    strings = {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}
    return StackConfig.parse(ENV, {"domains": "example.com", **strings})


def _refusal(**raw: Any) -> str:
    with pytest.raises(ConfigError) as refused:
        _parse(**raw)
    return str(refused.value)


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{resource}"


@pytest.fixture(scope="module")
def family_run() -> ProgramRun:
    return run_program(stack_config(mailboxes=FAMILY, recipients=None, extraLabels=None))


# --- the config ------------------------------------------------------------------------------------


def test_mailboxes_parse_into_the_table() -> None:
    table = _parse(mailboxes=FAMILY).mailboxes
    assert table.configured and table.names == ("alice", "bob")
    alice = table.get("alice")
    assert alice is not None and alice.gmail_address == "alice@gmail.com" and alice.labels == ("Family",)


def test_without_mailboxes_there_is_one_default_with_the_top_level_keys() -> None:
    config = _parse(extraLabels=["Receipts"], gmailAddress="me@gmail.com", recipients=["me@example.com"])
    assert config.mailboxes == MailboxTable.single(("Receipts",), "me@gmail.com")
    # the canary's address joins a rule that lists single addresses (it would not arrive otherwise)
    assert config.receipt_recipients == ("me@example.com", names.canary_address("example.com"))


def test_the_receipt_rule_matches_the_union_of_every_mailboxs_recipients() -> None:
    assert _parse(mailboxes=FAMILY).receipt_recipients == (
        "alice@example.com",
        "family@example.com",
        "bob@example.com",
        "example.com",
    )


@pytest.mark.parametrize(
    ("mailboxes", "sentence"),
    [
        pytest.param([{"name": "Alice", "recipients": ["a@example.com"]}], "[0].name: mailbox name 'Alice'", id="name"),
        pytest.param([{"name": "dlq-x", "recipients": ["a@example.com"]}], "retry DLQ", id="dlq-prefix"),
        pytest.param(
            [{"name": "a", "recipients": ["a@elsewhere.org"]}],
            "(a).recipients: 'a@elsewhere.org' is not under any of the configured domains (example.com)",
            id="outside-domains",
        ),
        pytest.param([{"name": "a", "recipients": []}], "(a) has no recipients", id="no-recipients"),
        pytest.param([{"name": "a", "recipients": ["not an address@"]}], "is not an e-mail address", id="address"),
        pytest.param(
            [{"name": "a", "recipients": ["a@example.com"], "labels": ["Inbox"]}],
            "(a).labels: 'Inbox' is Gmail's system label INBOX",
            id="label",
        ),
        pytest.param(
            [{"name": "a", "recipients": ["a@example.com"], "gmailAddress": "nobody"}],
            "(a).gmailAddress: 'nobody' is not an e-mail address",
            id="gmail-address",
        ),
        pytest.param(
            [{"name": "a", "recipients": ["a@example.com"], "labelz": ["x"]}], "unknown field(s) labelz", id="typo"
        ),
        pytest.param(
            [{"name": "a", "recipients": ["a@example.com"]}, {"name": "a", "recipients": ["b@example.com"]}],
            "names the mailbox 'a' twice",
            id="twice",
        ),
        pytest.param([], "must be a non-empty list", id="empty"),
        pytest.param(["alice"], "[0] must be a mapping", id="not-a-mapping"),
    ],
)
def test_each_mistake_is_one_sentence(mailboxes: Any, sentence: str) -> None:
    assert sentence in _refusal(mailboxes=mailboxes)


def test_every_mistake_is_reported_at_once() -> None:
    message = _refusal(
        mailboxes=[
            {"name": "Bad Name", "recipients": ["a@example.com"]},
            {"name": "b", "recipients": ["b@other.org"]},
        ]
    )
    assert len(message.splitlines()) == 2


def test_overlapping_addresses_are_allowed_and_mean_both() -> None:
    table = _parse(mailboxes=FAMILY).mailboxes
    assert set(table.route(["family@example.com"]).targets) == {"alice", "bob"}


def test_top_level_recipients_or_labels_beside_mailboxes_are_refused() -> None:
    assert "'ses-mail:recipients' is set together with 'ses-mail:mailboxes'" in _refusal(
        mailboxes=FAMILY, recipients=["a@example.com"]
    )
    assert "'ses-mail:extraLabels' is set together" in _refusal(mailboxes=FAMILY, extraLabels=["Receipts"])


def test_a_default_mailbox_cannot_name_two_accounts() -> None:
    default = [{"name": "default", "recipients": ["a@example.com"], "gmailAddress": "a@gmail.com"}]
    assert "differs from 'ses-mail:gmailAddress'" in _refusal(mailboxes=default, gmailAddress="b@gmail.com")
    table = _parse(mailboxes=[{"name": "default", "recipients": ["a@example.com"]}], gmailAddress="b@gmail.com")
    assert table.mailboxes.get("default") is not None and table.mailboxes.mailboxes[0].gmail_address == "b@gmail.com"


def test_a_table_too_large_for_the_lambda_environment_is_refused() -> None:
    many = [
        {"name": f"m{i}", "recipients": [f"person-number-{i}-{j}@example.com" for j in range(3)], "labels": ["L" * 60]}
        for i in range(20)
    ]
    assert "Lambda's environment holds 4096 bytes" in _refusal(mailboxes=many)


def test_more_recipients_than_one_ses_rule_takes_are_refused() -> None:
    mailboxes = [{"name": f"m{i}", "recipients": [f"r{i}-{j}@example.com" for j in range(11)]} for i in range(10)]
    assert "SES allows 100 per rule" in _refusal(mailboxes=mailboxes)


# --- the graph -------------------------------------------------------------------------------------


def test_each_mailbox_has_its_parameters_queues_and_alarms(family_run: ProgramRun) -> None:
    for mailbox in ("alice", "bob"):
        family_run.one(PARAMETER, name=names.refresh_token_parameter(ENV, mailbox), type="SecureString")
        family_run.one(PARAMETER, name=names.refresh_token_expiry_parameter(ENV, mailbox), type="String")
        family_run.one(QUEUE, name=names.retry_queue(ENV, mailbox))
        family_run.one(QUEUE, name=names.retry_dlq(ENV, mailbox))
        for alarm in (names.token_expiring_alarm, names.token_critical_alarm, names.token_expired_alarm):
            registered = family_run.one(ALARM, name=alarm(ENV, mailbox))
            assert registered.inputs["dimensions"] == {names.MAILBOX_DIMENSION: mailbox}
            assert registered.inputs["metricName"] == names.METRIC_TOKEN_HOURS
        refused = family_run.one(ALARM, name=names.mailbox_refused_alarm(ENV, mailbox))
        assert refused.inputs["dimensions"] == {names.MAILBOX_DIMENSION: mailbox}
        depth = family_run.one(ALARM, name=names.retry_queue_depth_alarm(ENV, mailbox))
        assert depth.inputs["dimensions"] == {names.SQS_QUEUE_DIMENSION: names.retry_queue(ENV, mailbox)}
    # the OAuth client stays one per stack; no default mailbox resources when none is configured
    family_run.one(PARAMETER, name=names.client_credentials_parameter(ENV))
    assert not [p for p in family_run.of_type(PARAMETER) if p.inputs.get("name") == names.refresh_token_parameter(ENV)]
    assert not [q for q in family_run.of_type(QUEUE) if q.inputs.get("name") == names.retry_queue(ENV)]


def test_the_mailbox_table_parameter_holds_the_config(family_run: ProgramRun) -> None:
    table = family_run.one(PARAMETER, name=names.mailboxes_parameter(ENV))
    assert table.inputs["type"] == "String" and not table.ignore_changes
    assert MailboxTable.from_json(unsecret(table.inputs["value"])).names == ("alice", "bob")


def test_the_receipt_rule_and_the_forwarder_environment(family_run: ProgramRun) -> None:
    rule = family_run.one("aws:ses/receiptRule:ReceiptRule", name=names.receipt_rule(ENV))
    assert rule.inputs["recipients"] == ["alice@example.com", "family@example.com", "bob@example.com", "example.com"]
    function = family_run.one("aws:lambda/function:Function", name=names.forwarder_function(ENV))
    variables = function.inputs["environment"]["variables"]
    assert MailboxTable.from_json(variables[names.ENV_VAR_MAILBOXES]).names == ("alice", "bob")
    assert variables[names.ENV_VAR_RETRY_QUEUE_URL].endswith("/" + names.retry_queue(ENV, "alice"))
    assert names.ENV_VAR_GMAIL_LABELS not in variables  # labels travel per mailbox in the table
    assert len(json.dumps(variables)) < names.LAMBDA_ENVIRONMENT_MAX_BYTES


def test_the_forwarder_may_touch_exactly_the_configured_mailboxes(family_run: ProgramRun) -> None:
    policy = family_run.one("aws:iam/rolePolicy:RolePolicy", role=names.forwarder_role(ENV))
    statements = {s["Sid"]: s for s in policy.json_input("policy")["Statement"]}
    assert set(statements["ReadOAuthParameters"]["Resource"]) == {
        _arn("ssm", f"parameter{names.client_credentials_parameter(ENV)}"),
        _arn("ssm", f"parameter{names.web_client_credentials_parameter(ENV)}"),
        _arn("ssm", f"parameter{names.refresh_token_parameter(ENV, 'alice')}"),
        _arn("ssm", f"parameter{names.refresh_token_parameter(ENV, 'bob')}"),
    }
    assert set(statements["ParkForRetryOrDeadLetter"]["Resource"]) == {
        _arn("sqs", names.retry_queue(ENV, "alice")),
        _arn("sqs", names.retry_queue(ENV, "bob")),
        _arn("sqs", names.inbound_dlq(ENV)),
    }


def test_the_mailboxes_output(family_run: ProgramRun) -> None:
    out = family_run.outputs["mailboxes"]
    assert set(out) == {"alice", "bob"}
    assert out["alice"]["recipients"] == ["alice@example.com", "family@example.com"]
    assert out["alice"]["gmailAddress"] == "alice@gmail.com"
    assert out["alice"]["tokenParameter"] == names.refresh_token_parameter(ENV, "alice")
    assert out["bob"]["retryQueueUrl"].endswith("/" + names.retry_queue(ENV, "bob"))
    # the single-valued outputs name the primary mailbox (the first, without a default)
    assert family_run.outputs["refreshTokenParameter"] == names.refresh_token_parameter(ENV, "alice")


def test_a_stack_without_mailboxes_outputs_default_with_todays_names() -> None:
    out = run_program(stack_config(recipients=["me@example.com"], canary=False))
    assert out.outputs["mailboxes"]["default"]["tokenParameter"] == names.refresh_token_parameter(ENV)
    assert out.outputs["mailboxes"]["default"]["recipients"] == ["me@example.com"]
    function = out.one("aws:lambda/function:Function", name=names.forwarder_function(ENV))
    assert names.ENV_VAR_MAILBOXES not in function.inputs["environment"]["variables"]
    assert not [p for p in out.of_type(PARAMETER) if p.inputs.get("name") == names.mailboxes_parameter(ENV)]


def test_the_dashboard_has_a_row_per_mailbox(family_run: ProgramRun) -> None:
    dashboard = family_run.one("aws:cloudwatch/dashboard:Dashboard", dashboardName=names.dashboard(ENV))
    titles = [w["properties"].get("title") for w in dashboard.json_input("dashboardBody")["widgets"]]
    for mailbox in ("alice", "bob"):
        assert f"Token hours left ({mailbox})" in titles
        assert f"Retry queue ({mailbox})" in titles
