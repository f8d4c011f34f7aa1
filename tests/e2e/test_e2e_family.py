"""A family week: one deployment, two Gmail accounts, one token dies while the other lives.

The whole program deployed into moto with ``ses-mail:mailboxes`` = alice and bob (and
``family@`` listed by both). Both operators renew through the real CLI (``--mailbox``), each
consenting as their own Google account. Then alice's token is revoked: bob's mail keeps flowing,
alice's waits in alice's retry queue, the monitor leaves bob alone and finds alice's token dead.
A consent by the wrong account is refused and stores nothing. Alice renews with ``--wait``: only
her backlog is drained, and every message, including those to both, is in each mailbox once.
"""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from sesmail import names
from sesmail.local.edges import Arrival, header, mailbox
from sesmail.local.world import ENV, System, assert_no_secret_anywhere, events, log_records
from tests.infra.harness import stack_config as example_stack

ALICE, BOB = "alice@gmail.com", "bob@gmail.com"
MAILBOXES = [
    {
        "name": "alice",
        "recipients": ["alice@example.com", "family@example.com"],
        "labels": ["Family"],
        "gmailAddress": ALICE,
    },
    {"name": "bob", "recipients": ["bob@example.com", "family@example.com"], "gmailAddress": BOB},
]


@pytest.fixture
def stack_config() -> dict[str, Any]:
    """The example stack with two mailboxes instead of recipients and extraLabels."""
    return example_stack(mailboxes=MAILBOXES, recipients=None, extraLabels=None)


def _ids(arrivals: list[Arrival]) -> list[str]:
    return [f"<{a.message_id}@mail.example.org>" for a in arrivals]


def _token(system: System, mailbox: str) -> dict[str, Any]:
    parameter = system.client("ssm").get_parameter(
        Name=names.refresh_token_parameter(ENV, mailbox), WithDecryption=True
    )["Parameter"]
    return {"version": parameter["Version"], "value": parameter["Value"]}


@pytest.mark.slow
def test_a_family_week(system: System, capfd: pytest.CaptureFixture[str]) -> None:
    google = system.google
    outputs = system.deployment.outputs["mailboxes"]
    alice_queue, bob_queue = outputs["alice"]["retryQueueUrl"], outputs["bob"]["retryQueueUrl"]

    # --- Day 0: each operator renews their own mailbox, consenting as their own account. ------------
    google.consent_account = ALICE
    first = system.refresh("--mailbox", "alice", "--client-secret", str(system.client_secret_file), "--no-retry")
    assert first.returncode == 0, first.stderr
    assert f"must come from {ALICE}" in first.stdout and f"consent came from {ALICE}" in first.stdout
    google.consent_account = BOB
    second = system.refresh("--mailbox", "bob", "--no-retry")
    assert second.returncode == 0, second.stderr
    alice_token = json.loads(_token(system, "alice")["value"])["token"]

    to_alice: list[Arrival] = []
    to_bob: list[Arrival] = []
    for hour in range(2):
        system.clock.set(hours=hour + 1)
        to_alice.append(system.ses.receive(f"a{hour}", recipient="alice@example.com"))
        to_bob.append(system.ses.receive(f"b{hour}", recipient="bob@example.com"))
    system.clock.set(hours=3)
    both = [system.ses.receive("f0", recipient="family@example.com")]
    both.append(system.ses.receive("ab0", recipient="alice@example.com", also=["bob@example.com"]))
    poll = system.inbound.poll()
    assert (poll.item_failures, poll.function_errors) == ([], [])
    assert len(google.messages_for(ALICE)) == 4 and len(google.messages_for(BOB)) == 4

    # --- Days 1-3: alice's token is revoked; bob's keeps working. ----------------------------------
    google.revoke(alice_token)
    for day in (1, 2, 3):
        system.clock.set(days=day, hours=9)
        to_alice.append(system.ses.receive(f"a-day{day}", recipient="alice+school@example.com"))
        to_bob.append(system.ses.receive(f"b-day{day}", recipient="bob@example.com"))
        both.append(system.ses.receive(f"f-day{day}", recipient="family@example.com"))
        poll = system.inbound.poll()
        assert (poll.item_failures, poll.function_errors) == ([], [])
        system.clock.set(days=day, hours=12)
        monitor, alarm = system.run_token_monitor("alice")
        decisions = {m: r["retry"]["reason"] for m, r in monitor["mailboxes"].items()}
        assert decisions == {"alice": "token-dead", "bob": "queue-empty"}, monitor
        # the monitor knows the stored expiry only: alice's alarm still reads her token's hours
        assert alarm.value == monitor["mailboxes"]["alice"]["hoursLeft"]
    assert len(google.messages_for(BOB)) == 4 + 6, "bob's mail keeps flowing"
    assert len(google.messages_for(ALICE)) == 4, "alice's waits"
    assert (system.depth(alice_queue), system.depth(bob_queue)) == (6, 0)
    parked = system.read_queue(alice_queue, put_back=True)
    assert {m["MessageAttributes"][names.ATTR_MAILBOX]["StringValue"] for m in parked} == {"alice"}

    # --- Bob consents where alice should have: refused, nothing stored. ----------------------------
    before = _token(system, "alice")
    google.consent_account = BOB
    wrong = system.refresh("--mailbox", "alice", "--wait")
    assert wrong.returncode == 1
    assert f"consent came from {BOB}, but mailbox 'alice' belongs to {ALICE}; nothing was stored" in wrong.stderr
    assert _token(system, "alice") == before
    assert system.executions() == []

    # --- Alice renews: only her backlog is delivered. -----------------------------------------------
    google.consent_account = ALICE
    renewed = system.refresh("--mailbox", "alice", "--wait")
    assert renewed.returncode == 0, renewed.stderr
    assert "6 from the retry queue, 0 moved to the retry DLQ" in renewed.stdout
    [execution] = system.executions()
    assert json.loads(execution["input"])[names.RETRY_MAILBOX_KEY] == "alice"
    assert execution["status"] == "SUCCEEDED"

    # --- Each mailbox holds its mail once, in Date order; mail to both is in both. ----------------------
    alice_mail, bob_mail = mailbox(google.messages_for(ALICE)), mailbox(google.messages_for(BOB))
    assert sorted(header(m, "Message-ID") for m in alice_mail) == sorted(_ids(to_alice + both))
    assert sorted(header(m, "Message-ID") for m in bob_mail) == sorted(_ids(to_bob + both))
    dates = [parsedate_to_datetime(header(m, "Date")) for m in alice_mail]
    assert dates == sorted(dates)  # late mail sits at its original time (internalDateSource=dateHeader)
    family_label = next(label["id"] for label in google.labels_for(ALICE) if label["name"] == "Family")
    assert all(family_label in m.label_ids for m in alice_mail)
    assert all(set(m.label_ids) == {"INBOX", "UNREAD"} for m in bob_mail)
    for url in (alice_queue, bob_queue, system.output("inboundDlqUrl")):
        assert system.depth(url) == 0, url
    audits = system.audit_records()
    assert [(r["mailbox"], r["google_account"]) for r in audits] == [("alice", ALICE), ("bob", BOB), ("alice", ALICE)]

    out, err = capfd.readouterr()
    records = log_records(out)
    assert len(events(records, "delivery.parked")) == 6
    assert_no_secret_anywhere(
        system,
        {
            "handlers' stdout": out,
            "handlers' stderr": err,
            **{f"CLI run {i} output": r.stdout + r.stderr for i, r in enumerate(system.cli.results)},
        },
    )
