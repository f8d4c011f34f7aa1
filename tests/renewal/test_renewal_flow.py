"""The renewal page end to end over real HTTP: a phone's browser renews a mailbox's token."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from sesmail import names
from tests.renewal.conftest import (
    DEFAULT_ACCOUNT,
    ENV,
    FLOW_COOKIE,
    RESULT_COOKIE,
    WORK,
    WORK_ACCOUNT,
    WORK_ADDRESS,
    Stack,
    s256,
)


def _park(stack: Stack, mailbox: str, count: int) -> None:
    for i in range(count):
        stack.sqs.send_message(QueueUrl=stack.queue_urls[mailbox], MessageBody=json.dumps({"parked": i}))


def test_a_phone_renews_the_work_mailbox(stack: Stack) -> None:
    stack.google.consent_account = WORK_ACCOUNT
    _park(stack, WORK, 3)

    final, url = stack.browser.follow(stack.start_url(WORK))

    # The browser ends on the result page, without the code in its address.
    assert final.status == 200
    assert urlsplit(url).path == "/done" and "code" not in url and "state" not in url
    assert "Gmail token renewed" in final.body
    assert WORK in final.body and WORK_ACCOUNT in final.body
    assert "3 messages" in final.body  # the work mailbox's retry queue, not default's
    assert "console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/" in final.body

    # The token: stored for the work mailbox, naming the web client that minted it.
    issued = stack.google.issued_refresh_tokens()
    record = stack.stored_token(WORK)
    assert record is not None and record["token"] == issued[-1]
    assert record["client_id"] == stack.google.web_client_id
    assert names.GMAIL_SCOPE in record["scopes"] and names.GMAIL_LABELS_SCOPE in record["scopes"]
    expiry = json.loads(stack.parameter(names.refresh_token_expiry_parameter(ENV, WORK))[0])
    assert expiry["expires_at"] and expiry["expires_at_epoch"]
    assert stack.stored_token(names.DEFAULT_MAILBOX) is None  # the other mailbox is untouched

    # The metric, with the Mailbox dimension.
    (metric,) = stack.token_metrics()
    assert metric["Dimensions"] == [{"Name": names.MAILBOX_DIMENSION, "Value": WORK}]

    # The audit record: who (the Google account), which mailbox, the versions; never the token.
    (audit,) = stack.audit_records()
    assert audit["action"] == names.AUDIT_ACTION_TOKEN_RENEWED
    assert (
        audit["source"] == names.RENEWAL_SOURCE
        and audit["who"] == WORK_ACCOUNT
        and audit["google_account"] == WORK_ACCOUNT
    )
    assert audit["mailbox"] == WORK and audit["client_id"] == stack.google.web_client_id
    assert audit["version"] == 2 and audit["parameter"] == names.refresh_token_parameter(ENV, WORK)
    assert audit["source_ip"] == "127.0.0.1"
    assert issued[-1] not in json.dumps(audit)

    # The drain: one execution for the work mailbox.
    (execution,) = stack.executions()
    assert json.loads(execution["input"]) == {"trigger": names.RENEWAL_SOURCE, "mailbox": WORK}
    assert execution["executionArn"].split(":")[-1] in final.body

    # The flow cookie is gone, the result cookie holds the outcome.
    assert FLOW_COOKIE not in stack.browser.cookies and RESULT_COOKIE in stack.browser.cookies


def test_the_consent_request_is_googles_web_server_flow(stack: Stack) -> None:
    start = stack.browser.request(stack.start_url(WORK))

    assert start.status == 303
    location = start.location or ""
    assert location.startswith(stack.google.auth_uri + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["client_id"] == stack.google.web_client_id
    assert query["redirect_uri"] == stack.page.base_url + "callback"
    assert query["response_type"] == "code"
    assert query["scope"].split() == list(names.CONSENT_SCOPES)
    assert (query["access_type"], query["prompt"]) == ("offline", "consent")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["login_hint"] == WORK_ADDRESS
    assert len(query["state"]) >= 43

    # The flow cookie: host-only, HTTPS only, invisible to scripts, sent on Google's redirect back, 10 minutes.
    (cookie,) = start.set_cookies
    name, _, rest = cookie.partition("=")
    assert name == FLOW_COOKIE and name.startswith("__Host-")
    attributes = {a.strip().lower() for a in rest.split(";")[1:]}
    assert {"path=/", "secure", "httponly", "samesite=lax", "max-age=600"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)


def test_the_verifier_sent_to_google_matches_the_challenge(stack: Stack) -> None:
    stack.browser.follow(stack.start_url())

    (consent,) = stack.google.consent_requests
    (exchange, *_) = stack.google.token_requests
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["redirect_uri"] == stack.page.base_url + "callback"
    assert exchange["client_id"] == stack.google.web_client_id
    assert s256(exchange["code_verifier"]) == consent["code_challenge"]
    assert exchange["code_verifier"] != consent["state"]


def test_the_default_mailbox_is_renewed_from_the_bare_url(stack: Stack) -> None:
    final, _ = stack.browser.follow(stack.start_url())

    assert "Gmail token renewed" in final.body and "No parked mail is waiting" in final.body
    assert "0 messages" in final.body
    assert stack.stored_token(names.DEFAULT_MAILBOX) is not None
    (execution,) = stack.executions()
    assert json.loads(execution["input"])["mailbox"] == names.DEFAULT_MAILBOX
    assert stack.audit_records()[0]["google_account"] == DEFAULT_ACCOUNT


def test_the_result_page_shows_the_queue_draining_on_reload(stack: Stack) -> None:
    stack.google.consent_account = WORK_ACCOUNT
    _park(stack, WORK, 2)
    first, _ = stack.browser.follow(stack.start_url(WORK))
    assert "2 messages" in first.body

    stack.sqs.purge_queue(QueueUrl=stack.queue_urls[WORK])  # the retry processor delivered them
    again = stack.browser.request(stack.page.base_url + "done")

    assert again.status == 200 and "0 messages" in again.body and WORK in again.body


def test_a_renewal_logs_structured_lines(stack: Stack) -> None:
    stack.google.consent_account = WORK_ACCOUNT
    stack.browser.follow(stack.start_url(WORK))

    events = {line.get("event"): line for line in stack.log_lines()}
    assert events["renewal.started"]["mailbox"] == WORK
    renewed = events["renewal.renewed"]
    assert renewed["level"] == "INFO" and renewed["env"] == ENV and renewed["requestId"]
    assert renewed["googleAccount"] == WORK_ACCOUNT and renewed["executionArn"]


def test_a_denied_consent_writes_nothing(stack: Stack) -> None:
    stack.google.consent_behavior = "deny"

    final, url = stack.browser.follow(stack.start_url(WORK))

    assert urlsplit(url).path == "/done" and final.status == 200
    assert "Consent denied" in final.body and "/?mailbox=work" in final.body
    stack.nothing_written()
    assert stack.google.token_requests == []


def test_unticked_gmail_permissions_write_nothing(stack: Stack) -> None:
    stack.google.granted_scopes = frozenset({names.GMAIL_SCOPE, names.OPENID_SCOPE, names.EMAIL_SCOPE})

    final, _ = stack.browser.follow(stack.start_url())

    assert "Renewal failed" in final.body and "scopes" in final.body
    stack.nothing_written()


def test_a_token_google_will_not_honour_writes_nothing(stack: Stack) -> None:
    original = stack.google._new_refresh_token

    def dead(scope: str) -> str:  # the exchange works, but the issued token is already revoked: the proof fails
        token = original(scope)
        stack.google._grants[token].revoked = True
        return token

    stack.google._new_refresh_token = dead  # type: ignore[method-assign]

    final, _ = stack.browser.follow(stack.start_url())

    assert "Renewal failed" in final.body and "proof" in final.body
    stack.nothing_written()


def test_a_stored_token_survives_a_failed_drain_start(stack: Stack) -> None:
    stack.sfn.delete_state_machine(stateMachineArn=stack.state_machine_arn)

    final, _ = stack.browser.follow(stack.start_url())

    assert "Gmail token renewed" in final.body and "token monitor starts it within 15 minutes" in final.body
    assert stack.stored_token() is not None
    assert any(line.get("event") == "renewal.step_failed" and line["step"] == "drain" for line in stack.log_lines())
