"""Sender authentication: each verdict combination lands where DESIGN.md says, in each authFailures mode.

Unit level for the policy and the header fallback, then the forwarder end to end against moto and
the fake Google: the labels Gmail receives, or no import at all, and the metric that counts it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sesmail import names
from sesmail.runtime.forwarder import ConfigurationError, ForwarderSettings
from sesmail.runtime.verdicts import AuthFailures, Placement, Verdicts, place
from tests.conftest import World, emitted_metrics, raw_message

SPAM, DROP, INBOX = AuthFailures.SPAM, AuthFailures.DROP, AuthFailures.INBOX
TO_INBOX, TO_SPAM, REJECTED = Placement.INBOX, Placement.SPAM, Placement.REJECTED


def _v(spf: str = "PASS", dkim: str = "PASS", dmarc: str = "PASS", policy: str | None = None, **other: str) -> Verdicts:
    return Verdicts(
        spf=spf,
        dkim=dkim,
        dmarc=dmarc,
        dmarc_policy=policy,
        spam=other.get("spam", "PASS"),
        virus=other.get("virus", "PASS"),
    )


#: (verdicts, expected placement in spam / drop / inbox mode)
CASES: list[tuple[str, Verdicts, tuple[Placement, Placement, Placement]]] = [
    ("genuine", _v(), (TO_INBOX, TO_INBOX, TO_INBOX)),
    ("dmarc-fail-reject", _v("FAIL", "FAIL", "FAIL", "REJECT"), (TO_SPAM, REJECTED, TO_INBOX)),
    ("dmarc-fail-quarantine", _v("FAIL", "FAIL", "FAIL", "QUARANTINE"), (TO_SPAM, TO_SPAM, TO_INBOX)),
    ("dmarc-fail-none", _v("FAIL", "FAIL", "FAIL", "NONE"), (TO_INBOX, TO_INBOX, TO_INBOX)),
    ("dmarc-fail-no-policy", _v("FAIL", "FAIL", "FAIL", None), (TO_INBOX, TO_INBOX, TO_INBOX)),
    ("spf-dkim-fail-dmarc-gray", _v("FAIL", "FAIL", "GRAY"), (TO_INBOX, TO_INBOX, TO_INBOX)),
    ("virus", _v(virus="FAIL"), (TO_SPAM, REJECTED, TO_SPAM)),
    ("spam", _v(spam="FAIL"), (TO_SPAM, TO_SPAM, TO_SPAM)),
    ("spam-and-dmarc-reject", _v("FAIL", "FAIL", "FAIL", "REJECT", spam="FAIL"), (TO_SPAM, REJECTED, TO_SPAM)),
    ("missing", Verdicts(), (TO_INBOX, TO_INBOX, TO_INBOX)),
]


@pytest.mark.parametrize(("name", "verdicts", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_verdict_combination_in_each_mode(name: str, verdicts: Verdicts, expected: tuple[Placement, ...]) -> None:
    assert tuple(place(verdicts, mode)[0] for mode in (SPAM, DROP, INBOX)) == expected


def test_verdicts_are_compared_case_insensitively_and_the_policy_may_be_a_string() -> None:
    receipt = {"dmarcVerdict": {"status": "fail"}, "dmarcPolicy": "Reject", "spfVerdict": {"status": "Fail"}}
    verdicts = Verdicts.from_receipt(receipt)
    assert (verdicts.dmarc, verdicts.dmarc_policy, verdicts.spf) == ("FAIL", "REJECT", "FAIL")
    assert place(verdicts, DROP)[0] is REJECTED
    assert Verdicts.from_receipt({"dmarcPolicy": {"status": "quarantine"}}).dmarc_policy == "QUARANTINE"


SES_HEADERS = (
    b"Return-Path: <bounce@bank.example>\r\n"
    b"Received: from mail.forger.example by inbound-smtp.us-east-1.amazonaws.com with SMTP id m1\r\n"
    b"X-SES-Spam-Verdict: PASS\r\n"
    b"X-SES-Virus-Verdict: PASS\r\n"
    b"Received-SPF: fail (spfCheck: domain of bank.example does not designate 203.0.113.9 as permitted sender)\r\n"
    b"Authentication-Results: amazonses.com;\r\n"
    b" spf=fail (spfCheck: domain of bank.example does not designate 203.0.113.9 as permitted sender);\r\n"
    b" dkim=fail header.i=@bank.example;\r\n"
    b" dmarc=fail header.from=bank.example (p=reject sp=reject pct=100);\r\n"
)


def test_the_header_fallback_reads_what_ses_wrote() -> None:
    head = SES_HEADERS + b"Authentication-Results: forger.example; dmarc=pass\r\n" + raw_message("m1")
    verdicts = Verdicts.from_headers(head)
    assert verdicts == Verdicts(spam="PASS", virus="PASS", spf="FAIL", dkim="FAIL", dmarc="FAIL", dmarc_policy="REJECT")


def test_only_ses_own_authentication_results_count() -> None:
    """A sender can write any header: a forged 'dmarc=pass' from another authserv-id is ignored."""
    forged = b"Authentication-Results: bank.example; spf=pass; dkim=pass; dmarc=pass\r\n" + raw_message("m1")
    verdicts = Verdicts.from_headers(forged)
    assert (verdicts.spf, verdicts.dkim, verdicts.dmarc) == (None, None, None)


def test_an_unknown_mode_is_refused_by_the_forwarder_settings() -> None:
    environ = {
        names.ENV_VAR_ENV: "test",
        names.ENV_VAR_RETRY_QUEUE_URL: "q",
        names.ENV_VAR_INBOUND_DLQ_URL: "d",
        names.ENV_VAR_AUTH_FAILURES: "quarantine",
    }
    with pytest.raises(ConfigurationError, match="AUTH_FAILURES: authFailures must be one of spam, drop, inbox"):
        ForwarderSettings.from_environ(environ)
    assert ForwarderSettings.from_environ({**environ, names.ENV_VAR_AUTH_FAILURES: "DROP"}).auth_failures is DROP
    del environ[names.ENV_VAR_AUTH_FAILURES]
    assert ForwarderSettings.from_environ(environ).auth_failures is SPAM


# --- the forwarder, end to end against moto and the fake Google ----------------------------------------------


def _spoof(world: World, message_id: str) -> dict[str, Any]:
    note = world.store_mail(message_id)
    note["receipt"].update(
        spfVerdict={"status": "FAIL"},
        dkimVerdict={"status": "FAIL"},
        dmarcVerdict={"status": "FAIL"},
        dmarcPolicy="reject",
    )
    return note


@pytest.mark.parametrize(
    ("mode", "spoof_labels"),
    [(SPAM, ["SPAM"]), (DROP, None), (INBOX, ["INBOX", "UNREAD"])],
    ids=lambda value: value.value if isinstance(value, AuthFailures) else None,
)
def test_a_spoof_and_a_genuine_message_side_by_side(
    world: World, capsys: pytest.CaptureFixture[str], mode: AuthFailures, spoof_labels: list[str] | None
) -> None:
    world.install_token()
    world.cold_start(auth_failures=mode)
    capsys.readouterr()

    result = world.handle(world.sqs_event(world.store_mail("genuine"), _spoof(world, "spoof")))

    assert result == {"batchItemFailures": []}
    labels = {m.raw.split(b"Message-ID: <")[1].split(b"@")[0].decode(): m.label_ids for m in world.google.messages}
    assert labels["genuine"] == ["INBOX", "UNREAD"]
    assert labels.get("spoof") == spoof_labels
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics.get(names.METRIC_REJECTED, 0) == (1 if mode is DROP else 0)
    assert world.drain(world.retry_queue_url) == world.drain(world.inbound_dlq_url) == []
    # Dropped or not, the raw message stays in S3 until retainDays.
    assert world.s3.get_object(Bucket="ses-mail-test-inbound", Key="inbound/spoof")["ContentLength"] > 0


def test_a_rejected_message_is_logged_with_its_verdicts(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.install_token()
    world.cold_start(auth_failures=DROP)
    capsys.readouterr()
    world.handle(world.sqs_event(_spoof(world, "spoof")))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (rejected,) = [line for line in lines if line.get("event") == "delivery.rejected"]
    assert rejected["messageId"] == "spoof" and rejected["level"] == "WARNING"
    assert (rejected["dmarcVerdict"], rejected["dmarcPolicy"], rejected["authFailures"]) == ("FAIL", "REJECT", "drop")


def test_verdicts_missing_from_the_notification_are_read_from_the_stored_headers(world: World) -> None:
    """The notification says nothing (a hand-made or Lambda-action event): SES's headers decide."""
    world.install_token()
    world.cold_start(auth_failures=SPAM)
    note = world.store_mail("spoof", raw=SES_HEADERS + raw_message("spoof"))
    for key in ("spamVerdict", "virusVerdict", "spfVerdict", "dkimVerdict", "dmarcVerdict"):
        note["receipt"].pop(key)

    world.handle(world.sqs_event(note))

    assert [m.label_ids for m in world.google.messages] == [["SPAM"]]


def test_the_retry_processor_is_told_to_delete_a_rejected_message(world: World) -> None:
    world.install_token()
    world.cold_start(auth_failures=DROP)
    event = {"source": names.RETRY_PROCESSOR_SOURCE, "notification": _spoof(world, "spoof")}
    assert world.handle(event) == {"status": names.RETRY_STATUS_REJECTED, "gmailMessageId": None}
    assert world.google.import_requests == 0
