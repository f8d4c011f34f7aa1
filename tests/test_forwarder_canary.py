"""The forwarder and the daily canary: recognised by address and signature, imported archived into
every mailbox, counted per mailbox; anything less is ordinary mail, routed as such."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sesmail import names
from sesmail.runtime import canary
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from tests.conftest import ENV, World

ALICE, BOB = "alice@gmail.com", "bob@gmail.com"
ADDRESS = names.canary_address("example.com")
KEY = "k" * 43
SENT = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
TABLE = MailboxTable(
    (Mailbox("alice", ("alice@example.com",), ("Family",), ALICE), Mailbox("bob", ("bob@example.com",), (), BOB)),
    configured=True,
)


class CanaryWorld:
    def __init__(self, world: World) -> None:
        self.world = world
        google = world.google
        queues = {m: world.sqs.create_queue(QueueName=names.retry_queue(ENV, m))["QueueUrl"] for m in TABLE.names}
        self.queues = queues
        world.ssm.put_parameter(
            Name=names.client_credentials_parameter(ENV), Value=json.dumps(google.client_json()), Type="SecureString"
        )
        world.ssm.put_parameter(Name=names.canary_key_parameter(ENV), Value=KEY, Type="SecureString")
        self.tokens = {}
        for mailbox, account in (("alice", ALICE), ("bob", BOB)):
            token = google.issue_refresh_token(f"{names.GMAIL_SCOPE} {names.GMAIL_LABELS_SCOPE}", account=account)
            self.tokens[mailbox] = token
            world.ssm.put_parameter(
                Name=names.refresh_token_parameter(ENV, mailbox),
                Value=json.dumps({"token": token, "created_at": "2026-11-20T00:00:00Z", "expires_at": None}),
                Type="SecureString",
            )
        world.cold_start(mailboxes=TABLE, retry_queue_url=queues["alice"], canary_address=ADDRESS)

    def arrive(
        self, raw: bytes, *, received: datetime = SENT + timedelta(seconds=40), to: str = ADDRESS
    ) -> dict[str, Any]:
        message_id = f"ses-{len(self.world.google.messages)}-{received.timestamp():.0f}-{len(raw)}"
        note = self.world.store_mail(message_id, raw)
        note["receipt"]["recipients"] = [to]
        note["mail"]["timestamp"] = note["receipt"]["timestamp"] = received.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return note

    def canary(self, key: str = KEY, sent: datetime = SENT) -> bytes:
        return canary.build_message(ADDRESS, key.encode(), sent)[1]

    def deliver(self, note: dict[str, Any]) -> dict[str, Any]:
        return self.world.handle(self.world.sqs_event(note))  # type: ignore[no-any-return]


@pytest.fixture
def cw(world: World) -> CanaryWorld:
    return CanaryWorld(world)


def _metrics(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def _canary_counts(out: str) -> dict[str, float]:
    return {
        r[names.MAILBOX_DIMENSION]: r[names.METRIC_CANARY_DELIVERED]
        for r in _metrics(out)
        if names.METRIC_CANARY_DELIVERED in r
    }


def test_the_canary_is_imported_archived_into_every_mailbox_and_counted(
    cw: CanaryWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    google = cw.world.google
    assert cw.deliver(cw.arrive(cw.canary())) == {"batchItemFailures": []}

    for account in (ALICE, BOB):
        (imported,) = google.messages_for(account)
        labels = {label["id"]: label["name"] for label in google.labels_for(account)}
        assert [labels[i] for i in imported.label_ids] == [names.CANARY_LABEL]  # no INBOX, no UNREAD
        assert "ses-mail" in labels.values()  # the parent, created first
    assert not any(label["name"] == "Family" for label in google.labels_for(ALICE))  # not alice's labels
    assert _canary_counts(capsys.readouterr().out) == {"alice": 1, "bob": 1}


def test_the_canarys_log_lines_carry_its_id(cw: CanaryWorld, capsys: pytest.CaptureFixture[str]) -> None:
    cw.deliver(cw.arrive(cw.canary()))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"timestamp"')]
    events = [(line["event"], line.get("mailbox")) for line in lines if "canaryId" in line]
    assert (names.EVENT_CANARY_RECOGNISED, None) in events
    assert {m for e, m in events if e == names.EVENT_CANARY_DELIVERED} == {"alice", "bob"}
    assert KEY not in "\n".join(json.dumps(line) for line in lines)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        pytest.param(
            lambda cw: cw.arrive(cw.canary(key="another-key-of-43-characters-length-xxxxxxx")),
            "bad signature",
            id="forged",
        ),
        pytest.param(lambda cw: cw.arrive(cw.canary(), received=SENT + timedelta(days=2)), "stale", id="stale-replay"),
        pytest.param(
            lambda cw: cw.arrive(
                b"From: someone@example.org\r\nTo: " + ADDRESS.encode() + b"\r\nSubject: hi\r\n\r\nhello\r\n"
            ),
            "no X-SES-Mail-Canary header",
            id="a-human-writes-to-the-canary-address",
        ),
    ],
)
def test_anything_less_than_the_canary_is_ordinary_mail(
    cw: CanaryWorld, capsys: pytest.CaptureFixture[str], make: Any, why: str
) -> None:
    world = cw.world
    assert cw.deliver(make(cw)) == {"batchItemFailures": []}
    # routed as ordinary mail: no mailbox lists the canary address here, so the inbound DLQ says so
    (dead,) = world.drain(world.inbound_dlq_url)
    assert dead["MessageAttributes"][names.ATTR_ERROR]["StringValue"] == f"no mailbox for recipient {ADDRESS}"
    assert world.google.messages == []
    out = capsys.readouterr().out
    refused = [json.loads(line) for line in out.splitlines() if names.EVENT_CANARY_REFUSED in line]
    assert refused and why in refused[0]["reason"]
    assert _canary_counts(out) == {}


def test_a_valid_signature_on_mail_to_another_address_is_not_the_canary(cw: CanaryWorld) -> None:
    """Copied from a real canary onto mail for alice: the envelope does not name the canary address."""
    cw.deliver(cw.arrive(cw.canary(), to="alice@example.com"))
    (imported,) = cw.world.google.messages_for(ALICE)
    assert "INBOX" in imported.label_ids
    assert cw.world.google.messages_for(BOB) == []


def test_a_canary_for_a_dead_token_is_parked_and_counted_when_it_arrives(
    cw: CanaryWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    world = cw.world
    world.google.revoke(cw.tokens["alice"])
    note = cw.arrive(cw.canary())
    cw.deliver(note)
    assert _canary_counts(capsys.readouterr().out) == {"bob": 1}  # alice's canary alarm sees nothing
    (parked,) = world.drain(cw.queues["alice"])

    world.google.revoke(cw.tokens["alice"])  # still dead; renew:
    token = world.google.issue_refresh_token(f"{names.GMAIL_SCOPE} {names.GMAIL_LABELS_SCOPE}", account=ALICE)
    world.ssm.put_parameter(
        Name=names.refresh_token_parameter(ENV, "alice"),
        Value=json.dumps({"token": token, "created_at": "2026-11-23T00:00:00Z", "expires_at": None}),
        Type="SecureString",
        Overwrite=True,
    )
    event = {"source": names.RETRY_PROCESSOR_SOURCE, "notification": parked["Body"], "mailbox": "alice"}
    assert world.handle(event)["status"] == "delivered"
    (imported,) = world.google.messages_for(ALICE)
    labels = {label["id"]: label["name"] for label in world.google.labels_for(ALICE)}
    assert [labels[i] for i in imported.label_ids] == [names.CANARY_LABEL]  # still archived, days later
    assert _canary_counts(capsys.readouterr().out) == {"alice": 1}


def test_without_a_canary_address_nothing_is_checked(world: World) -> None:
    """A stack with ``canary: false``: the address is an address like any other (no key read)."""
    world.install_token()
    note = world.store_mail("m-plain")
    note["receipt"]["recipients"] = [ADDRESS]
    assert world.handle(world.sqs_event(note)) == {"batchItemFailures": []}
    assert len(world.google.messages) == 1
