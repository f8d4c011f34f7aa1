"""The forwarder with several mailboxes: one import per (message, mailbox), each with its own token.

Real HTTP against the fake Google, which keeps each account's mailbox, labels and quota apart;
moto for S3, SQS and SSM. Routing looks at ``receipt.recipients`` only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sesmail import names
from sesmail.local.google import error_body
from sesmail.runtime.mailboxes import Mailbox, MailboxTable, queue_url_for
from tests.conftest import ENV, FakeContext, World, emitted_metrics, sns_envelope, sqs_record

ALICE, BOB = "alice@gmail.com", "bob@gmail.com"
TABLE = MailboxTable(
    (
        Mailbox("alice", ("alice@example.com", "family@example.com"), ("Family",), ALICE),
        Mailbox("bob", ("bob@example.com", "family@example.com"), (), BOB),
    ),
    configured=True,
)


class Family:
    """The world with two mailboxes: their queues, their tokens, their Gmail accounts."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.queues = {
            mailbox: world.sqs.create_queue(QueueName=names.retry_queue(ENV, mailbox))["QueueUrl"]
            for mailbox in TABLE.names
        }
        self.tokens = {"alice": self.install("alice", ALICE), "bob": self.install("bob", BOB)}
        world.cold_start(mailboxes=TABLE, retry_queue_url=self.queues["alice"])

    def install(self, mailbox: str, account: str) -> str:
        google = self.world.google
        token = google.issue_refresh_token(f"{names.GMAIL_SCOPE} {names.GMAIL_LABELS_SCOPE}", account=account)
        self.world.ssm.put_parameter(
            Name=names.client_credentials_parameter(ENV),
            Value=json.dumps(google.client_json()),
            Type="SecureString",
            Overwrite=True,
        )
        self.world.ssm.put_parameter(
            Name=names.refresh_token_parameter(ENV, mailbox),
            Value=json.dumps({"token": token, "created_at": "2026-11-20T00:00:00Z", "expires_at": None}),
            Type="SecureString",
            Overwrite=True,
        )
        return token

    def mail(self, message_id: str, *recipients: str) -> dict[str, Any]:
        note = self.world.store_mail(message_id)
        note["receipt"]["recipients"] = list(recipients)
        return note

    def deliver(self, *notes: dict[str, Any]) -> dict[str, Any]:
        return self.world.handle(self.world.sqs_event(*notes))  # type: ignore[no-any-return]


@pytest.fixture
def family(world: World) -> Family:
    return Family(world)


def test_the_derived_queue_urls_are_the_queues_moto_made(family: Family) -> None:
    assert queue_url_for(family.queues["alice"], ENV, "bob") == family.queues["bob"]


def test_each_mailbox_gets_its_own_mail(family: Family) -> None:
    google = family.world.google
    assert family.deliver(family.mail("m-alice", "alice@example.com"), family.mail("m-bob", "bob@example.com")) == {
        "batchItemFailures": []
    }
    (to_alice,) = google.messages_for(ALICE)
    (to_bob,) = google.messages_for(BOB)
    assert b"m-alice" in (to_alice.raw or b"") and b"m-bob" in (to_bob.raw or b"")
    assert family.world.claim("m-alice", "alice") is not None and family.world.claim("m-alice", "bob") is None


def test_a_message_to_two_mailboxes_is_imported_into_each_once_with_its_labels(family: Family) -> None:
    google = family.world.google
    note = family.mail("m-both", "alice@example.com", "bob+news@example.com")
    assert family.deliver(note) == {"batchItemFailures": []}
    (to_alice,) = google.messages_for(ALICE)
    (to_bob,) = google.messages_for(BOB)
    alice_family = next(label["id"] for label in google.labels_for(ALICE) if label["name"] == "Family")
    assert alice_family in to_alice.label_ids  # alice's labels, created in alice's account
    assert not any(label["name"] == "Family" for label in google.labels_for(BOB))
    assert set(to_bob.label_ids) == {"INBOX", "UNREAD"}
    # a shared address is "both", not "twice" for either
    assert family.deliver(family.mail("m-shared", "family@example.com")) == {"batchItemFailures": []}
    assert len(google.messages_for(ALICE)) == 2 and len(google.messages_for(BOB)) == 2


def test_a_duplicate_delivery_imports_into_neither_mailbox_again(family: Family) -> None:
    note = family.mail("m-dup", "alice@example.com", "bob@example.com")
    family.deliver(note)
    family.world.cold_start(mailboxes=TABLE, retry_queue_url=family.queues["alice"])  # another container
    assert family.deliver(note) == {"batchItemFailures": []}
    assert len(family.world.google.messages_for(ALICE)) == 1
    assert len(family.world.google.messages_for(BOB)) == 1


def test_a_dead_token_parks_only_that_mailboxs_copy_in_its_own_queue(
    family: Family, capsys: pytest.CaptureFixture[str]
) -> None:
    world = family.world
    world.google.revoke(family.tokens["alice"])
    note = family.mail("m-both", "alice@example.com", "bob@example.com")
    assert family.deliver(note) == {"batchItemFailures": []}

    assert world.google.messages_for(ALICE) == []
    assert len(world.google.messages_for(BOB)) == 1  # bob's mail keeps flowing
    (parked,) = world.drain(family.queues["alice"])
    assert parked["MessageAttributes"][names.ATTR_MAILBOX]["StringValue"] == "alice"
    assert json.loads(parked["Body"])["mail"]["messageId"] == "m-both"
    assert world.drain(family.queues["bob"]) == []
    # alice's token alarms see 0 hours; bob's are untouched
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    dead = [record for record in metrics if names.METRIC_TOKEN_HOURS in record]
    assert [(r[names.MAILBOX_DIMENSION], r[names.METRIC_TOKEN_HOURS]) for r in dead] == [("alice", 0)]
    assert dead[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[names.MAILBOX_DIMENSION]]


def test_a_mailbox_renewed_on_the_phone_page_mints_with_the_web_client(family: Family) -> None:
    """The page's token belongs to the web client (DESIGN.md, "Renewing from a phone"): the forwarder mints with it.

    Google refuses a refresh token presented by another client (``unauthorized_client``), so minting
    alice's with the installed client would park her mail; bob's CLI token keeps the installed client.
    """
    world, google = family.world, family.world.google
    world.ssm.put_parameter(
        Name=names.web_client_credentials_parameter(ENV),
        Value=json.dumps(google.client_json("web")),
        Type="SecureString",
    )
    renewed = google.issue_refresh_token(f"{names.GMAIL_SCOPE} {names.GMAIL_LABELS_SCOPE}", account=ALICE, client="web")
    record = {
        "token": renewed,
        "created_at": "2026-11-27T00:00:00Z",
        "expires_at": None,
        "client_id": google.web_client_id,
    }
    world.ssm.put_parameter(
        Name=names.refresh_token_parameter(ENV, "alice"), Value=json.dumps(record), Type="SecureString", Overwrite=True
    )
    world.cold_start(mailboxes=TABLE, retry_queue_url=family.queues["alice"])

    assert family.deliver(family.mail("m-both", "alice@example.com", "bob@example.com")) == {"batchItemFailures": []}

    assert len(google.messages_for(ALICE)) == 1 and len(google.messages_for(BOB)) == 1
    minted = {r["refresh_token"]: r["client_id"] for r in google.token_requests}
    assert minted == {renewed: google.web_client_id, family.tokens["bob"]: google.client_id}
    assert world.drain(family.queues["alice"]) == [] and world.drain(family.queues["bob"]) == []


def test_an_unrouted_recipient_goes_to_the_inbound_dlq_with_its_reason(family: Family) -> None:
    world = family.world
    assert family.deliver(family.mail("m-stray", "stranger@example.com")) == {"batchItemFailures": []}
    (dead,) = world.drain(world.inbound_dlq_url)
    assert dead["MessageAttributes"][names.ATTR_ERROR]["StringValue"] == "no mailbox for recipient stranger@example.com"
    assert world.google.messages == []


def test_routed_recipients_are_delivered_and_the_unrouted_one_dead_lettered(family: Family) -> None:
    world = family.world
    note = family.mail("m-mixed", "bob@example.com", "stranger@example.com")
    assert family.deliver(note) == {"batchItemFailures": []}
    assert len(world.google.messages_for(BOB)) == 1
    (dead,) = world.drain(world.inbound_dlq_url)
    assert "stranger@example.com" in dead["MessageAttributes"][names.ATTR_ERROR]["StringValue"]
    # redriven after the configuration is fixed: bob's copy is not imported twice
    family.deliver(json.loads(json.loads(dead["Body"])["Message"]))
    assert len(world.google.messages_for(BOB)) == 1


def test_routing_never_reads_the_headers(family: Family) -> None:
    """The raw message says To: bob@example.com; the envelope says alice: alice gets it."""
    note = family.mail("m-envelope", "alice@example.com")
    family.deliver(note)
    assert len(family.world.google.messages_for(ALICE)) == 1
    assert family.world.google.messages_for(BOB) == []


def test_the_retry_processor_delivers_to_the_mailbox_it_names(family: Family) -> None:
    world = family.world
    note = family.mail("m-retry", "alice@example.com", "bob@example.com")
    event = {"source": names.RETRY_PROCESSOR_SOURCE, "notification": json.dumps(note), "mailbox": "bob"}
    answer = world.handle(event)
    assert answer["status"] == "delivered"
    assert world.google.messages_for(ALICE) == [] and len(world.google.messages_for(BOB)) == 1
    assert world.handle(event)["status"] == "already-delivered"


def test_a_retry_for_a_mailbox_no_longer_configured_is_permanent(family: Family) -> None:
    note = family.mail("m-gone", "alice@example.com")
    event = {"source": names.RETRY_PROCESSOR_SOURCE, "notification": json.dumps(note), "mailbox": "carol"}
    with pytest.raises(Exception) as raised:
        family.world.handle(event)
    assert type(raised.value).__name__ == "PermanentError"
    assert "carol" in str(raised.value)


def test_refusals_are_counted_per_mailbox(family: Family, capsys: pytest.CaptureFixture[str]) -> None:
    world = family.world
    world.google.fail_gmail(403, error_body(403, "Gmail API has not been used", "accessNotConfigured"), times=10)
    family.deliver(family.mail("m-refused", "bob@example.com"))
    out = capsys.readouterr().out
    metrics = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    refused = [record for record in metrics if names.METRIC_MAILBOX_REFUSED in record]
    assert [(r[names.MAILBOX_DIMENSION], r[names.METRIC_MAILBOX_REFUSED]) for r in refused] == [("bob", 1)]
    assert emitted_metrics(out)[names.METRIC_PARKED] == 1
    assert len(world.drain(family.queues["bob"])) == 1


def test_a_stack_without_mailboxes_sends_everything_to_default(world: World) -> None:
    world.install_token()
    note = world.store_mail("m-any")
    note["receipt"]["recipients"] = ["whoever@anywhere.example"]
    assert world.handle(world.sqs_event(note)) == {"batchItemFailures": []}
    assert len(world.google.messages) == 1 and world.claim("m-any") is not None


def test_the_sqs_record_shape_is_what_the_inbound_queue_delivers(family: Family) -> None:
    """Guard: the helper builds records as the other forwarder tests do."""
    record = sqs_record(sns_envelope(family.mail("m-shape", "bob@example.com")), "sqs-0")
    assert family.world.handle({"Records": [record]}, FakeContext()) == {"batchItemFailures": []}
