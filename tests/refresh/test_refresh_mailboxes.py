"""``--mailbox NAME``: renew one mailbox's token, as its own Google account, and drain only its queue.

The mailbox table the CLI reads is what ``pulumi up`` writes to ``names.mailboxes_parameter``; the
consenting account is the fake Google's ``consent_account`` (whoever signs in at Google's screen).
"""

from __future__ import annotations

import json

from sesmail import names
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from tests.refresh.harness import ENV, Cli, Cloud, RefreshFakeGoogle

ALICE = "alice@gmail.com"
TABLE = MailboxTable(
    (Mailbox("default", ("example.com",)), Mailbox("alice", ("alice@example.com",), (), ALICE)), configured=True
)


def _deploy_alice(cloud: Cloud) -> None:
    """What ``pulumi up`` adds for the mailbox alice: its two parameters, its queues, the table."""
    cloud.ssm.put_parameter(
        Name=names.refresh_token_parameter(ENV, "alice"),
        Value=names.placeholder_value(ENV, "alice"),
        Type="SecureString",
        KeyId="alias/aws/ssm",
    )
    cloud.ssm.put_parameter(
        Name=names.refresh_token_expiry_parameter(ENV, "alice"), Value=names.placeholder_value(ENV), Type="String"
    )
    cloud.ssm.put_parameter(Name=names.mailboxes_parameter(ENV), Value=TABLE.to_json(), Type="String")
    cloud.sqs.create_queue(QueueName=names.retry_queue(ENV, "alice"))


def test_alice_renews_alices_token_as_alice(deployed: Cloud, cli: Cli, google: RefreshFakeGoogle) -> None:
    _deploy_alice(deployed)
    google.consent_account = ALICE
    default_before = deployed.parameter(names.refresh_token_parameter(ENV))["Version"]

    result = cli.run("--mailbox", "alice")

    assert result.returncode == 0, result.stderr
    assert f"Mailbox 'alice': Google's consent must come from {ALICE}." in result.stdout
    assert f"Google says the consent came from {ALICE}" in result.stdout
    (consent,) = google.consent_requests
    assert consent["login_hint"] == ALICE
    stored = deployed.parameter_json(names.refresh_token_parameter(ENV, "alice"))
    assert stored["token"] in google.issued_refresh_tokens()
    assert deployed.parameter(names.refresh_token_parameter(ENV))["Version"] == default_before  # untouched
    (execution,) = deployed.executions()
    described = deployed.sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(described["input"])[names.RETRY_MAILBOX_KEY] == "alice"
    (audit,) = deployed.audit_records()
    assert (audit["mailbox"], audit["google_account"], audit["source"]) == ("alice", ALICE, "refresh-cli")
    assert audit["parameter"] == names.refresh_token_parameter(ENV, "alice")


def test_another_account_is_refused_and_nothing_is_stored(deployed: Cloud, cli: Cli, google: RefreshFakeGoogle) -> None:
    _deploy_alice(deployed)
    google.consent_account = "mallory@gmail.com"
    before = deployed.versions()
    alice_before = deployed.parameter(names.refresh_token_parameter(ENV, "alice"))["Version"]

    result = cli.run("--mailbox", "alice")

    assert result.returncode == 1
    assert result.error_lines == [
        f"error: Google's consent came from mallory@gmail.com, but mailbox 'alice' belongs to {ALICE}; nothing was "
        f"stored. Rerun and choose {ALICE} on Google's account screen (or correct the mailbox's gmailAddress in the "
        "stack config)"
    ]
    assert deployed.versions() == before
    assert deployed.parameter(names.refresh_token_parameter(ENV, "alice"))["Version"] == alice_before
    assert deployed.executions() == [] and deployed.audit_records() == []


def test_a_mailbox_the_stack_does_not_have_is_named_with_the_ones_it_has(deployed: Cloud, cli: Cli) -> None:
    _deploy_alice(deployed)

    result = cli.run("--mailbox", "bob")

    assert result.returncode == 1
    assert "stack 'test' has no mailbox 'bob' (it has: default, alice)" in result.stderr
    assert "Opening Google's consent page" not in result.stdout  # before any browser opens


def test_without_a_table_default_takes_any_account_and_says_which(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle
) -> None:
    google.consent_account = "whoever@gmail.com"

    result = cli.run()

    assert result.returncode == 0, result.stderr
    assert "any account (no gmailAddress configured, so it is not checked)" in result.stdout
    assert "Google says the consent came from whoever@gmail.com" in result.stdout


def test_a_mailbox_name_that_cannot_exist_is_a_usage_error(cli: Cli) -> None:
    result = cli.run("--mailbox", "Not Valid")
    assert result.returncode == 2
    assert "mailbox name 'Not Valid'" in result.stderr
