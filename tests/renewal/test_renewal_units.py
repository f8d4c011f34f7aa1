"""The renewal page's parts on their own: events, cookies, pages, id token checks, settings, the shared steps."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

import handlers.renewal
from sesmail import names
from sesmail.renewal import pages
from sesmail.renewal.app import console_execution_url
from sesmail.renewal.cookies import (
    CookieExpired,
    CookieSigner,
    CookieTampered,
    Flow,
    Result,
    pkce_challenge,
    pkce_verifier,
)
from sesmail.renewal.finish import Renewal, bind_client, complete_renewal
from sesmail.renewal.google import (
    REFUSED_AUDIENCE,
    REFUSED_EXPIRED,
    REFUSED_ISSUER,
    REFUSED_NO_ID_TOKEN,
    REFUSED_OTHER_ACCOUNT,
    identity_problem,
)
from sesmail.renewal.identity import IdentityClaims
from sesmail.renewal.settings import NotConfigured, Settings
from sesmail.renewal.token_store import ProvenToken
from sesmail.runtime.tokens import ClientConfig, RefreshToken
from tests.renewal.conftest import (
    ENV,
    FUNCTION_DOMAIN,
    REGION,
    WORK,
    Stack,
    function_url_event,
    is_callback,
)

SECRET = b"k" * 43

# --- the function URL event -------------------------------------------------------------------------


def _invoke(path: str, method: str = "GET", cookies: list[str] | None = None) -> dict[str, Any]:
    headers = [("Cookie", "; ".join(cookies))] if cookies else []
    return handlers.renewal.handler(function_url_event(method, path, headers), None)


def test_the_event_becomes_a_request() -> None:
    event = function_url_event(
        "GET", "/callback?state=a&code=b&state=c", [("Cookie", "x=1; y=2=3; x=4"), ("User-Agent", "phone")]
    )

    request = handlers.renewal.request_from_event(event)

    assert request.method == "GET" and request.path == "/callback"
    assert request.query == {"state": ["a", "c"], "code": ["b"]}
    assert request.cookies == {"x": "1", "y": "2=3"}
    assert request.domain == FUNCTION_DOMAIN and request.user_agent == "phone"


def test_the_response_is_a_function_url_response(stack: Stack) -> None:
    answer = _invoke("/?mailbox=work")

    assert set(answer) == {"statusCode", "headers", "cookies", "body", "isBase64Encoded"}
    assert answer["statusCode"] == 303 and answer["isBase64Encoded"] is False
    assert answer["headers"]["Content-Type"] == "text/html; charset=utf-8"
    assert len(answer["cookies"]) == 1 and "Set-Cookie" not in answer["headers"]


def test_without_a_base_url_the_redirect_uri_is_the_function_urls(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(names.ENV_VAR_RENEWAL_BASE_URL)
    handlers.renewal.reset()

    answer = _invoke("/")

    query = parse_qs(urlsplit(answer["headers"]["Location"]).query)
    assert query["redirect_uri"] == [f"https://{FUNCTION_DOMAIN}/callback"]


@pytest.mark.parametrize("path", ["//callback", "/callback/../done", "/done%00"])
def test_odd_raw_paths_are_404(stack: Stack, path: str) -> None:
    event = function_url_event("GET", "/", [])
    event["rawPath"] = path
    assert handlers.renewal.handler(event, None)["statusCode"] == 404


def test_too_many_query_parameters_are_refused(stack: Stack) -> None:
    answer = _invoke("/?" + "&".join(f"p{i}=1" for i in range(50)))

    assert answer["statusCode"] == 400
    assert answer["headers"]["Cache-Control"] == "no-store"


def test_a_google_error_other_than_denial_is_shown(stack: Stack) -> None:
    _, callback = stack.browser.follow(stack.start_url(), stop=is_callback)
    state = parse_qs(urlsplit(callback).query)["state"][0]

    final, _ = stack.browser.follow(f"{stack.page.base_url}callback?error=admin_policy_enforced&state={state}")

    assert "Renewal failed" in final.body and "admin_policy_enforced" in final.body
    stack.nothing_written()


def test_googles_lifetime_wins_and_zero_days_means_no_expiry(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.google.refresh_token_expires_in = 3600
    stack.browser.follow(stack.start_url())
    record = stack.stored_token()
    assert record is not None
    created = datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00")) - created == timedelta(hours=1)

    stack.google.refresh_token_expires_in = None
    monkeypatch.setenv(names.ENV_VAR_TOKEN_LIFETIME_DAYS, "0")
    handlers.renewal.reset()
    final, _ = stack.new_browser().follow(stack.start_url())
    assert "no expiry" in final.body
    record = stack.stored_token()
    assert record is not None and record["expires_at"] is None


# --- not configured ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "value", "says"),
    [
        ("web", names.placeholder_value(ENV), "web-client-credentials is not configured yet"),
        ("web", "{not json", "is not usable"),
        ("web", "INSTALLED", "not a 'Web application' one"),
        ("secret", names.placeholder_value(ENV), "renewal-secret is not configured yet"),
        ("secret", "short", "fewer than 32 characters"),
    ],
)
def test_an_unconfigured_page_says_what_to_do(stack: Stack, parameter: str, value: str, says: str) -> None:
    name = names.web_client_credentials_parameter(ENV) if parameter == "web" else names.renewal_secret_parameter(ENV)
    if value == "INSTALLED":
        value = json.dumps(stack.google.client_json("installed"))
    stack.ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)

    answer = stack.browser.request(stack.start_url())

    assert answer.status == 503 and says in html.unescape(answer.body)
    assert answer.set_cookies == [] and stack.google.consent_requests == []


def test_a_missing_environment_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(names.ENV_VAR_ENV, raising=False)
    handlers.renewal.reset()
    try:
        answer = _invoke("/")
    finally:
        handlers.renewal.reset()
    assert answer["statusCode"] == 503 and names.ENV_VAR_ENV in answer["body"]
    assert answer["headers"]["Content-Security-Policy"] == pages.CONTENT_SECURITY_POLICY


def test_settings_from_the_environment() -> None:
    settings = Settings.from_environ({names.ENV_VAR_ENV: ENV, names.ENV_VAR_GMAIL_ADDRESS: "me@gmail.com"})
    assert settings.mailboxes.names == (names.DEFAULT_MAILBOX,)
    assert settings.mailboxes.primary.gmail_address == "me@gmail.com"
    assert settings.lifetime_days == names.TESTING_TOKEN_LIFETIME_DAYS and settings.base_url is None

    base = Settings.from_environ({names.ENV_VAR_ENV: ENV, names.ENV_VAR_RENEWAL_BASE_URL: "https://renew.example.com"})
    assert base.base_url == "https://renew.example.com/"
    for bad in (
        {names.ENV_VAR_ENV: ENV, names.ENV_VAR_MAILBOXES: "[{"},
        {names.ENV_VAR_ENV: ENV, names.ENV_VAR_TOKEN_LIFETIME_DAYS: "seven"},
        {names.ENV_VAR_ENV: ENV, names.ENV_VAR_RENEWAL_BASE_URL: "ftp://x/"},
        {names.ENV_VAR_ENV: "Not An Env"},
    ):
        with pytest.raises((NotConfigured, ValueError)):
            Settings.from_environ(bad)


# --- cookies and PKCE -----------------------------------------------------------------------------------


def test_a_sealed_cookie_opens_only_unaltered_unexpired_and_under_its_name() -> None:
    signer = CookieSigner(SECRET)
    flow = Flow("s" * 43, WORK, 2_000)
    sealed = signer.seal("a", flow.to_payload())

    assert Flow.from_payload(signer.open("a", sealed, now=1_999)) == flow
    with pytest.raises(CookieExpired) as expired:
        signer.open("a", sealed, now=2_000)
    assert expired.value.payload["m"] == WORK
    with pytest.raises(CookieTampered):
        signer.open("b", sealed, now=0)  # another cookie's name
    with pytest.raises(CookieTampered):
        CookieSigner(b"other" * 10).open("a", sealed, now=0)
    with pytest.raises(CookieTampered):
        Result.from_payload(signer.open("a", sealed, now=0))  # a flow is not a result


def test_a_result_round_trips() -> None:
    signer = CookieSigner(SECRET)
    result = Result(WORK, "renewed", 5_000, "a@gmail.com", "arn:aws:states:x", "2026-01-01T00:00:00Z", ("drain",))

    assert Result.from_payload(signer.open("r", signer.seal("r", result.to_payload()), now=0)) == result


def test_the_pkce_verifier_is_derived_per_state_and_per_secret() -> None:
    verifier = pkce_verifier(SECRET, "state-1")

    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", verifier)
    assert verifier == pkce_verifier(SECRET, "state-1")
    assert verifier != pkce_verifier(SECRET, "state-2") and verifier != pkce_verifier(b"other" * 10, "state-1")
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert pkce_challenge(verifier) == expected
    # The cookie key and the PKCE key are different derivations of the secret.
    sealed = CookieSigner(SECRET).seal("a", {"exp": 1})
    assert verifier not in sealed


# --- pages ----------------------------------------------------------------------------------------------


def test_a_page_escapes_everything_and_its_style_matches_the_csp_hash() -> None:
    page = pages.Page("<t>", "<h>", ("<p>&",), pages.TONE_BAD, (("<k>", "<v>"),), (pages.Link("<a>", '/?m="x"'),))

    text = pages.render(page)

    assert "<title>&lt;t&gt;</title>" in text and '<h1 class="bad">&lt;h&gt;</h1>' in text
    assert "<p>&lt;p&gt;&amp;</p>" in text and "<dd>&lt;v&gt;</dd>" in text and ">&lt;a&gt;</a>" in text
    assert 'href="/?m=&quot;x&quot;"' in text and "<script" not in text.lower()
    style = re.search(r"<style>(.*)</style>", text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in pages.CONTENT_SECURITY_POLICY
    for directive in ("default-src 'none'", "form-action 'none'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert directive in pages.CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in pages.CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("href", ["javascript:alert(1)", "http://example.com/", "//evil.example/", "data:text/html,x"])
def test_a_page_link_must_be_same_site_or_https(href: str) -> None:
    with pytest.raises(ValueError):
        pages.Link("x", href)


def test_the_console_link_of_an_execution() -> None:
    arn = "arn:aws:states:eu-west-1:123456789012:execution:ses-mail-gmail-forwarder-retry-processor-test:refresh-1"

    url = console_execution_url(arn)

    assert url == (
        "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/" + arn
    )
    assert console_execution_url("arn:aws:states:eu-west-1:1:stateMachine:x") is None
    assert console_execution_url("arn:aws-xx:states:r:1:execution:x:y") is None


# --- id token checks ------------------------------------------------------------------------------------


def _claims(**overrides: Any) -> IdentityClaims:
    values: dict[str, Any] = {
        "email": "me@gmail.com",
        "email_verified": True,
        "issuer": "https://accounts.google.com",
        "audience": ("client",),
        "subject": "1",
        "expires_at": 10_000,
    }
    values.update(overrides)
    return IdentityClaims(**values)


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        (_claims(), None),
        (_claims(issuer="accounts.google.com"), None),
        (_claims(expires_at=9_950), None),  # within the clock skew
        (None, REFUSED_NO_ID_TOKEN),
        (_claims(issuer="https://evil.example"), REFUSED_ISSUER),
        (_claims(audience=("client", "other")), REFUSED_AUDIENCE),
        (_claims(audience=()), REFUSED_AUDIENCE),
        (_claims(expires_at=9_900), REFUSED_EXPIRED),
        (_claims(expires_at=None), REFUSED_EXPIRED),
        (_claims(email="you@gmail.com"), REFUSED_OTHER_ACCOUNT),
    ],
)
def test_identity_problems(claims: IdentityClaims | None, problem: str | None) -> None:
    assert identity_problem(claims, client_id="client", expected=" Me@Gmail.com ", now=10_000) == problem


# --- the steps shared with the CLI ----------------------------------------------------------------------


def _proven() -> ProvenToken:
    client = ClientConfig("web", "client-1", "secret-1", "https://t.example/token", "https://a.example/auth")
    token = RefreshToken.issued_now("1//refresh-xyz", lifetime=timedelta(days=7), scopes=(names.GMAIL_SCOPE,))
    return ProvenToken(token, client)


def test_the_stored_record_names_its_client() -> None:
    bound = bind_client(_proven())

    assert bound.token.client_id == "client-1"
    assert json.loads(bound.token.to_json())["client_id"] == "client-1"
    assert RefreshToken.from_json(bound.token.to_json()).client_id == "client-1"  # read back as stored
    assert bind_client(bound) is bound
    assert "client_id" not in json.loads(_proven().token.to_json())  # unbound: the installed client


class _Clients:
    def get(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


def test_steps_after_storing_fail_without_undoing_it() -> None:
    with mock_aws():
        clients = _Clients()
        renewal = Renewal(ENV, WORK, "renewal-page", "me@gmail.com", "me@gmail.com", "seven days")

        done = complete_renewal(
            clients,
            _proven(),
            renewal,
            state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:none",
            trigger="renewal-page",
            now=datetime.now(UTC),
        )

        stored = clients.get("ssm").get_parameter(Name=names.refresh_token_parameter(ENV, WORK), WithDecryption=True)[
            "Parameter"
        ]
        assert json.loads(stored["Value"])["client_id"] == "client-1"
        assert done.audit_error is not None and done.drain_error is not None and done.metric_error is None
        assert done.notes == ("audit", "drain") and done.execution_arn is None
        assert 167 < done.hours <= 168
        assert time.time() > 0
