"""No secret in any answer of the page, its URLs after the callback, its log lines or its audit records.

The ``stack`` fixture checks every test this way when it ends; these tests run many outcomes in
one stack and also check what the fixture cannot see from outside: the flow cookie's content.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

from sesmail.renewal.cookies import pkce_verifier
from tests.renewal.conftest import FLOW_COOKIE, RESULT_COOKIE, WORK, WORK_ACCOUNT, Stack, is_callback


def _payload(cookie: str) -> dict[str, object]:
    body = cookie.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


def test_the_flow_cookie_carries_no_secret(stack: Stack) -> None:
    _, callback = stack.browser.follow(stack.start_url(WORK), stop=is_callback)
    state = parse_qs(urlsplit(callback).query)["state"][0]
    cookie = stack.browser.cookies[FLOW_COOKIE]

    payload = _payload(cookie)

    assert set(payload) == {"k", "s", "m", "exp"}
    assert payload["s"] == state and payload["m"] == WORK
    verifier = pkce_verifier(stack.secret.encode(), state)
    assert verifier not in cookie and verifier not in json.dumps(payload)
    assert stack.secret not in cookie


def test_no_secret_reaches_a_page_a_url_or_a_log_in_any_outcome(stack: Stack) -> None:
    google = stack.google
    # Renewed, refused, denied, a tampered cookie, a replay: every path that sees a code or a token.
    google.consent_account = WORK_ACCOUNT
    renewed, renewed_url = stack.browser.follow(stack.start_url(WORK))
    google.consent_account = "intruder@gmail.com"
    refused, refused_url = stack.new_browser().follow(stack.start_url(WORK))
    google.consent_behavior = "deny"
    denied, denied_url = stack.new_browser().follow(stack.start_url(WORK))
    google.consent_behavior = "approve"
    google.consent_account = WORK_ACCOUNT
    tamperer = stack.new_browser()
    _, callback = tamperer.follow(stack.start_url(WORK), stop=is_callback)
    tamperer.cookies[FLOW_COOKIE] = tamperer.cookies[FLOW_COOKIE][:-3] + "abc"
    tamperer.request(callback)

    assert "renewed" in renewed.body and "Not this mailbox" in refused.body and "denied" in denied.body
    for url in (renewed_url, refused_url, denied_url):
        assert urlsplit(url).path == "/done" and urlsplit(url).query == ""

    secrets = [*google.secrets(), stack.secret]
    assert len(google.issued_refresh_tokens()) == 2 and len(google.issued_access_tokens()) >= 3
    for browser in stack.browsers:
        for exchange in browser.page_responses:
            text = exchange.body + json.dumps(exchange.headers)
            for secret in secrets:
                assert secret not in text
            for name in (FLOW_COOKIE, RESULT_COOKIE):
                if name in exchange.sent_cookies:
                    assert exchange.sent_cookies[name] not in exchange.body
    out = stack.output()
    for secret in secrets:
        assert secret not in out
    assert '"event": "renewal.renewed"' in out and '"event": "renewal.refused"' in out
