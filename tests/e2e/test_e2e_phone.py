"""Renewing from a phone: the alarm's e-mail carries a link, the page renews, the backlog lands.

The whole program deployed into moto with two mailboxes. Once, at a laptop, the operator uploads
the renewal page's web client with the CLI (``--web-client-secret``) and registers the redirect
URI it prints. Alice's token then dies; her mail waits in her retry queue while bob's flows. The
monitor's run puts her token alarms in ALARM, and the description CloudWatch mails carries
``{renewalUrl}?mailbox=alice``. A phone follows that link: the deployed function, invoked the way
its function URL invokes it, runs Google's consent (alice's account), stores the token, which now
belongs to the web client, and starts alice's drain. The forwarder then mints with the web client
and delivers her backlog, once, in Date order. Bob's token and queue are never touched.
"""

from __future__ import annotations

import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from sesmail import names
from sesmail.local.edges import Arrival, header, mailbox
from sesmail.local.function_url import Browser, FunctionUrl
from sesmail.local.world import ENV, System, assert_no_secret_anywhere, events, log_records
from tests.infra.harness import stack_config as example_stack

ALICE, BOB = "alice@gmail.com", "bob@gmail.com"
MAILBOXES = [
    {"name": "alice", "recipients": ["alice@example.com"], "gmailAddress": ALICE},
    {"name": "bob", "recipients": ["bob@example.com"], "gmailAddress": BOB},
]
DRAIN_TIMEOUT_SECONDS = 120.0


@pytest.fixture
def stack_config() -> dict[str, Any]:
    return example_stack(mailboxes=MAILBOXES, recipients=None, extraLabels=None)


def _token_record(system: System, mailbox: str) -> dict[str, Any]:
    value = system.client("ssm").get_parameter(Name=names.refresh_token_parameter(ENV, mailbox), WithDecryption=True)
    return dict(json.loads(value["Parameter"]["Value"]))


def _description(system: System, alarm: str) -> str:
    (found,) = system.client("cloudwatch").describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    return str(found["AlarmDescription"])


def _function_url(system: System, renewal_url: str) -> FunctionUrl:
    """The deployed renewal function behind its URL: each request is one Invoke, as Lambda does it."""
    client = system.client("lambda")

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        answer = client.invoke(FunctionName=names.renewal_function(ENV), Payload=json.dumps(event).encode())
        assert "FunctionError" not in answer, answer["Payload"].read()
        result: dict[str, Any] = json.loads(answer["Payload"].read())
        return result

    return FunctionUrl(invoke, domain=urlsplit(renewal_url).hostname or "")


def _drain(system: System, mailbox: str) -> dict[str, Any]:
    """The one execution started for ``mailbox``, once it has ended."""
    sfn = system.client("stepfunctions")
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while True:
        mine = [e for e in system.executions() if json.loads(e["input"])[names.RETRY_MAILBOX_KEY] == mailbox]
        assert len(mine) == 1, mine
        if mine[0]["status"] != "RUNNING":
            return dict(sfn.describe_execution(executionArn=mine[0]["executionArn"]))
        assert time.monotonic() < deadline, "the drain did not end"
        time.sleep(0.2)


def _ids(arrivals: list[Arrival]) -> list[str]:
    return [f"<{a.message_id}@mail.example.org>" for a in arrivals]


@pytest.mark.slow
def test_the_alarm_link_renews_from_a_phone_and_the_backlog_lands(
    system: System, capfd: pytest.CaptureFixture[str]
) -> None:
    google = system.google
    # AWS answers with a trailing slash; moto without. Every link is built to work with either.
    renewal_url = system.output("renewalUrl").rstrip("/") + "/"
    outputs = system.output("mailboxes")
    alice_queue, bob_queue = outputs["alice"]["retryQueueUrl"], outputs["bob"]["retryQueueUrl"]
    assert outputs["alice"]["renewalLink"] == f"{renewal_url}?mailbox=alice"

    # --- Once, at a laptop: both tokens through the CLI, then the page's web client. ----------------
    google.consent_account = ALICE
    first = system.refresh("--mailbox", "alice", "--client-secret", str(system.client_secret_file), "--no-retry")
    assert first.returncode == 0, first.stderr
    google.consent_account = BOB
    assert system.refresh("--mailbox", "bob", "--no-retry").returncode == 0
    web_client = system.client_secret_file.with_name("web_client.json")
    web_client.write_text(json.dumps(google.client_json("web")), encoding="utf-8")
    uploaded = system.refresh("--web-client-secret", str(web_client))
    assert uploaded.returncode == 0, uploaded.stderr
    redirect_uri = names.renewal_redirect_uri(renewal_url)
    assert redirect_uri in uploaded.stdout  # what to register in Google's console
    google.web_redirect_uris.add(redirect_uri)  # ... which the operator does
    bob_before = _token_record(system, "bob")

    # --- Alice's token dies; her mail waits, bob's flows. --------------------------------------------
    google.revoke(_token_record(system, "alice")["token"])
    to_alice: list[Arrival] = []
    for day in (1, 2):
        system.clock.set(days=day, hours=9)
        to_alice.append(system.ses.receive(f"a-day{day}", recipient="alice@example.com"))
        system.ses.receive(f"b-day{day}", recipient="bob@example.com")
        poll = system.inbound.poll()
        assert (poll.item_failures, poll.function_errors) == ([], [])
    assert (system.depth(alice_queue), len(google.messages_for(BOB))) == (2, 2)
    system.clock.set(days=2, hours=12)
    monitor, _ = system.run_token_monitor("alice")
    assert monitor["mailboxes"]["alice"]["retry"]["reason"] == "token-dead"

    # --- The alarm's e-mail carries the link (CloudWatch mails the description). ---------------------
    expired = _description(system, names.token_expired_alarm(ENV, "alice"))
    links = re.findall(r"https://\S+\?mailbox=\S+", expired)
    assert links == [f"{renewal_url}?mailbox=alice"]
    assert names.refresh_command(ENV, "alice") in expired  # the laptop way stays in the e-mail too
    assert f"{renewal_url}?mailbox=bob" in _description(system, names.token_expired_alarm(ENV, "bob"))

    # --- The phone: the link, Google's consent as alice, the result page. ----------------------------
    page = _function_url(system, renewal_url)
    try:
        origin = f"https://{urlsplit(renewal_url).netloc}"
        phone = Browser(origin, hosts={origin: page.origin})
        google.consent_account = ALICE
        done, url = phone.follow(links[0])
    finally:
        page.stop()
    assert (done.status, url) == (200, f"{renewal_url}done"), done.body
    assert "alice" in done.body and "renewed" in done.body.lower()
    assert all("code=" not in e.url for e in phone.history if e.url.startswith(origin + "/done"))

    # --- The page's drain delivers alice's backlog with the web client's token. ----------------------
    execution = _drain(system, "alice")
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["input"]) == {"trigger": names.RENEWAL_SOURCE, names.RETRY_MAILBOX_KEY: "alice"}
    assert json.loads(execution["output"])["delivered"] == 2
    record = _token_record(system, "alice")
    assert record["client_id"] == google.web_client_id != google.client_id
    alice_mail = mailbox(google.messages_for(ALICE))
    assert sorted(header(m, "Message-ID") for m in alice_mail) == sorted(_ids(to_alice))
    dates = [parsedate_to_datetime(header(m, "Date")) for m in alice_mail]
    assert dates == sorted(dates)
    assert system.depth(alice_queue) == system.depth(bob_queue) == 0
    assert _token_record(system, "bob") == bob_before

    # --- The alarm clears on the hours the page published; the audit says who, from where. -----------
    monitor, alarm = system.run_token_monitor("alice")
    assert monitor["mailboxes"]["alice"]["hoursLeft"] > names.TOKEN_EXPIRING_HOURS
    assert alarm.value is not None and alarm.value > names.TOKEN_EXPIRING_HOURS
    page_audit = [r for r in system.audit_records() if r.get("source") == names.RENEWAL_SOURCE]
    assert [(r["action"], r["mailbox"], r["google_account"]) for r in page_audit] == [
        (names.AUDIT_ACTION_TOKEN_RENEWED, "alice", ALICE)
    ]

    out, err = capfd.readouterr()
    assert len(events(log_records(out), "delivery.parked")) == 2
    # The page's own secrets: the authorization code and the PKCE verifier never leave the exchange.
    exchanged = [r[key] for r in google.token_requests for key in ("code", "code_verifier") if r.get(key)]
    assert len(exchanged) >= 2
    answers = "\n".join(e.body + str(e.headers) for e in phone.page_responses)
    for value in exchanged:
        assert value not in out and value not in err and value not in answers
    assert_no_secret_anywhere(
        system,
        {
            "handlers' stdout": out,
            "handlers' stderr": err,
            "the page's answers": "\n".join(e.body for e in phone.page_responses),
            "the page's headers": "\n".join(f"{k}: {v}" for e in phone.page_responses for k, v in e.headers),
            **{f"CLI run {i} output": r.stdout + r.stderr for i, r in enumerate(system.cli.results)},
        },
    )
