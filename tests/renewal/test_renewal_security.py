"""What the renewal page refuses: forged or stale callbacks, other accounts, foreign id tokens, odd requests."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

import sesmail.renewal.app
from sesmail import names
from sesmail.renewal.cookies import CookieSigner, Flow
from sesmail.renewal.google import (
    REFUSED_AUDIENCE,
    REFUSED_EXPIRED,
    REFUSED_ISSUER,
    REFUSED_NO_EMAIL,
    REFUSED_OTHER_ACCOUNT,
    REFUSED_UNVERIFIED,
)
from tests.renewal.conftest import (
    DEFAULT_ACCOUNT,
    FLOW_COOKIE,
    NO_ADDRESS,
    WORK,
    WORK_ACCOUNT,
    WORK_ADDRESS,
    Stack,
    is_callback,
)


def _to_callback(stack: Stack, mailbox: str | None = None) -> str:
    """Start a flow and let Google answer; returns the callback URL, not yet requested."""
    _, callback = stack.browser.follow(stack.start_url(mailbox), stop=is_callback)
    assert is_callback(callback)
    return callback


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


def _cleared(exchange: Any, name: str) -> bool:
    return any(c.startswith(f"{name}=;") and "Max-Age=0" in c for c in exchange.set_cookies)


# --- state -------------------------------------------------------------------------------------------


def test_a_callback_without_state_is_refused(stack: Stack) -> None:
    callback = _to_callback(stack)

    answer = stack.browser.request(_with_query(callback, state=None))

    assert answer.status == 400 and "Not the renewal this browser started" in answer.body
    assert stack.google.token_requests == []
    stack.nothing_written()


def test_a_mismatched_state_is_refused_and_the_real_answer_still_works(stack: Stack) -> None:
    callback = _to_callback(stack)

    forged = stack.browser.request(_with_query(callback, state="x" * 43))

    assert forged.status == 400 and stack.google.token_requests == []
    assert not _cleared(forged, FLOW_COOKIE)  # a stray link does not end the flow in progress
    stack.nothing_written()
    final, _ = stack.browser.follow(callback)
    assert "Gmail token renewed" in final.body


def test_a_repeated_state_parameter_is_refused(stack: Stack) -> None:
    callback = _to_callback(stack)
    state = parse_qs(urlsplit(callback).query)["state"][0]

    answer = stack.browser.request(f"{callback}&state={state}")

    assert answer.status == 400 and stack.google.token_requests == []


def test_a_replayed_callback_is_refused(stack: Stack) -> None:
    callback = _to_callback(stack)
    flow_cookie = stack.browser.cookies[FLOW_COOKIE]
    final, _ = stack.browser.follow(callback)
    assert "Gmail token renewed" in final.body
    token_version = stack.parameter(names.refresh_token_parameter("test"))[1]

    # The same browser again: its flow cookie was cleared by the first callback.
    again = stack.browser.request(callback)
    assert again.status == 400 and "No renewal in progress" in again.body

    # Someone who kept the old cookie too: the warm container remembers the state as used.
    replay = stack.new_browser()
    replay.cookies[FLOW_COOKIE] = flow_cookie
    answer = replay.request(callback)
    assert answer.status == 400 and _cleared(answer, FLOW_COOKIE)
    assert len(stack.google.token_requests) == 2  # the exchange and the proof of the first callback only

    # A cold container forgot it, but Google's codes are single-use: nothing changes.
    import handlers.renewal

    handlers.renewal.reset()
    cold = stack.new_browser()
    cold.cookies[FLOW_COOKIE] = flow_cookie
    final, _ = cold.follow(callback)
    assert "Renewal failed" in final.body
    assert stack.parameter(names.refresh_token_parameter("test"))[1] == token_version
    assert len(stack.executions()) == 1


def test_a_callback_in_another_browser_is_refused(stack: Stack) -> None:
    callback = _to_callback(stack)

    answer = stack.new_browser().request(callback)  # no flow cookie: a login-CSRF attempt

    assert answer.status == 400 and "No renewal in progress" in answer.body
    assert stack.google.token_requests == []
    stack.nothing_written()


# --- the flow cookie -----------------------------------------------------------------------------------


def _reseal_payload(value: str, change: dict[str, Any]) -> str:
    """The cookie with its payload changed and its old signature kept: what a tamperer can do."""
    version, body, signature = value.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(change)
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{version}.{forged}.{signature}"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda v: _reseal_payload(v, {"m": "default"}), id="mailbox-changed"),
        pytest.param(lambda v: _reseal_payload(v, {"exp": int(time.time()) + 86400}), id="expiry-extended"),
        pytest.param(lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"), id="signature-flipped"),
        pytest.param(lambda v: "v1.e30.", id="unsigned"),
        pytest.param(lambda v: "garbage", id="garbage"),
        pytest.param(lambda v: "v1." + "A" * 3000 + ".x", id="oversized"),
    ],
)
def test_a_tampered_flow_cookie_is_refused(stack: Stack, tamper: Any) -> None:
    stack.google.consent_account = WORK_ACCOUNT
    callback = _to_callback(stack, WORK)
    stack.browser.cookies[FLOW_COOKIE] = tamper(stack.browser.cookies[FLOW_COOKIE])

    answer = stack.browser.request(callback)

    assert answer.status == 400 and "renewal cookie is not valid" in answer.body
    assert _cleared(answer, FLOW_COOKIE)
    assert stack.google.token_requests == []
    stack.nothing_written()


def test_a_cookie_signed_with_another_secret_is_refused(stack: Stack) -> None:
    callback = _to_callback(stack)
    state = parse_qs(urlsplit(callback).query)["state"][0]
    flow = Flow(state, names.DEFAULT_MAILBOX, int(time.time()) + 600)
    stack.browser.cookies[FLOW_COOKIE] = CookieSigner(b"x" * 43).seal(FLOW_COOKIE, flow.to_payload())

    answer = stack.browser.request(callback)

    assert answer.status == 400 and stack.google.token_requests == []


def test_an_expired_flow_says_start_again(stack: Stack) -> None:
    callback = _to_callback(stack, WORK)
    state = parse_qs(urlsplit(callback).query)["state"][0]
    # Genuine (signed with the page's secret), but eleven minutes old.
    stale = Flow(state, WORK, int(time.time()) - 60)
    stack.browser.cookies[FLOW_COOKIE] = CookieSigner(stack.secret.encode()).seal(FLOW_COOKIE, stale.to_payload())

    answer = stack.browser.request(callback)

    assert answer.status == 400 and "This renewal expired" in answer.body
    assert 'href="/?mailbox=work"' in answer.body
    assert _cleared(answer, FLOW_COOKIE)
    assert stack.google.token_requests == []
    stack.nothing_written()


def test_a_pkce_verifier_mismatch_is_refused_by_google(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    callback = _to_callback(stack)
    # Between the start and the callback the verifier changes (as if an attacker held another flow's
    # code): Google's PKCE check must refuse the exchange, and the page must store nothing.
    monkeypatch.setattr(sesmail.renewal.app, "pkce_verifier", lambda secret, state: "Z" * 43)

    final, url = stack.browser.follow(callback)

    assert urlsplit(url).path == "/done" and "Renewal failed" in final.body
    (exchange,) = stack.google.token_requests
    assert exchange["code_verifier"] == "Z" * 43
    assert stack.google.consent_requests[0]["code_challenge"] != exchange["code_verifier"]
    stack.nothing_written()


# --- the account and the id token ------------------------------------------------------------------------


def test_another_google_account_is_refused_and_audited(stack: Stack) -> None:
    stack.google.consent_account = "intruder@gmail.com"

    final, url = stack.browser.follow(stack.start_url(WORK))

    assert urlsplit(url).path == "/done" and "Not this mailbox" in final.body
    assert "intruder@gmail.com" in final.body and WORK_ADDRESS not in final.body
    stack.nothing_written()
    (audit,) = stack.audit_records()
    assert audit["action"] == names.AUDIT_ACTION_RENEWAL_REFUSED and audit["source"] == names.RENEWAL_SOURCE
    assert audit["google_account"] == "intruder@gmail.com" and audit["who"] == "intruder@gmail.com"
    assert audit["mailbox"] == WORK and audit["reason"] == REFUSED_OTHER_ACCOUNT
    issued = stack.google.issued_refresh_tokens()
    assert issued and all(token not in json.dumps(audit) for token in issued)
    assert any(line.get("event") == "renewal.refused" for line in stack.log_lines())


def test_the_account_is_compared_without_case(stack: Stack) -> None:
    stack.google.consent_account = WORK_ADDRESS.upper()

    final, _ = stack.browser.follow(stack.start_url(WORK))

    assert "Gmail token renewed" in final.body


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "another-client.apps.googleusercontent.com"}, REFUSED_AUDIENCE),
        ({"aud": ["CLIENT", "another-client.apps.googleusercontent.com"]}, REFUSED_AUDIENCE),
        ({"aud": "INSTALLED"}, REFUSED_AUDIENCE),  # the project's other client: not the page's
        ({"iss": "https://accounts.example.com"}, REFUSED_ISSUER),
        ({"iss": None}, REFUSED_ISSUER),
        ({"exp": 1_000_000_000}, REFUSED_EXPIRED),
        ({"email": None}, REFUSED_NO_EMAIL),
        ({"email_verified": False}, REFUSED_UNVERIFIED),
    ],
)
def test_an_id_token_that_proves_nothing_is_refused(stack: Stack, claims: dict[str, Any], reason: str) -> None:
    if claims.get("aud") and isinstance(claims["aud"], list):
        claims = {"aud": [stack.google.web_client_id if a == "CLIENT" else a for a in claims["aud"]]}
    if claims.get("aud") == "INSTALLED":
        claims = {"aud": stack.google.client_id}
    stack.google.id_token_claims = claims

    final, _ = stack.browser.follow(stack.start_url())

    assert "Not this mailbox" in final.body
    stack.nothing_written()
    (audit,) = stack.audit_records()
    assert audit["reason"] == reason and audit["mailbox"] == names.DEFAULT_MAILBOX


def test_an_unverified_address_is_refused(stack: Stack) -> None:
    stack.google.unverified_accounts.add(DEFAULT_ACCOUNT)

    final, _ = stack.browser.follow(stack.start_url())

    assert "Not this mailbox" in final.body
    stack.nothing_written()
    assert stack.audit_records()[0]["reason"] == REFUSED_UNVERIFIED


# --- mailboxes, methods, paths -------------------------------------------------------------------------


@pytest.mark.parametrize("mailbox", ["nosuch", NO_ADDRESS, "<script>", "dlq", "a" * 300, ""])
def test_an_unknown_mailbox_is_a_404_that_names_none(stack: Stack, mailbox: str) -> None:
    answer = stack.browser.request(stack.page.base_url + "?" + urlencode({"mailbox": mailbox}))

    if mailbox == "":  # an empty name is the default mailbox, as the bare URL
        assert answer.status == 303
        return
    assert answer.status == 404 and "No such mailbox" in answer.body
    for known in (WORK, WORK_ADDRESS, DEFAULT_ACCOUNT, WORK_ACCOUNT, "default"):
        assert known not in answer.body
    if mailbox != NO_ADDRESS:
        assert NO_ADDRESS not in answer.body
    assert "<script>" not in answer.body
    assert answer.set_cookies == [] and stack.google.consent_requests == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/callback", "/done", "/elsewhere"])
def test_only_get_is_answered(stack: Stack, method: str, path: str) -> None:
    answer = stack.browser.request(stack.page.origin + path, method=method)

    assert answer.status == 405 and answer.header("Allow") == "GET"
    assert answer.set_cookies == []


@pytest.mark.parametrize(
    "path", ["/favicon.ico", "/callback/", "/done/x", "/..%2fcallback", "/index.html", "/CALLBACK", "/%63allback"]
)
def test_other_paths_are_404(stack: Stack, path: str) -> None:
    answer = stack.browser.request(stack.page.origin + path)

    assert answer.status == 404 and answer.set_cookies == []


def test_google_coming_back_to_the_root_explains_the_redirect_uri(stack: Stack) -> None:
    answer = stack.browser.request(stack.page.base_url + "?code=4/abc&state=xyz")

    assert answer.status == 400 and f"{stack.page.base_url}callback" in answer.body
    assert stack.google.token_requests == []


def test_a_result_cookie_cannot_be_forged(stack: Stack) -> None:
    forged = stack.new_browser()
    forged.cookies["__Host-sesmail-result"] = CookieSigner(b"y" * 43).seal(
        "__Host-sesmail-result", {"k": "result", "m": WORK, "o": "renewed", "exp": int(time.time()) + 600}
    )

    answer = forged.request(stack.page.base_url + "done")

    assert answer.status == 400 and "Gmail token renewed" not in answer.body
    assert stack.new_browser().request(stack.page.base_url + "done").body.count(WORK) == 0


def test_a_flow_cookie_is_not_a_result_cookie(stack: Stack) -> None:
    """Both are signed with one key, but over their own names: one cannot stand in for the other."""
    _to_callback(stack)
    browser = stack.browser
    browser.cookies["__Host-sesmail-result"] = browser.cookies[FLOW_COOKIE]

    answer = browser.request(stack.page.base_url + "done")

    assert answer.status == 400
