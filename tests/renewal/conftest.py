"""The renewal page over real HTTP: the handler behind a local function-URL adapter, moto, the fake Google.

- :class:`~tests.function_url.FunctionUrl` serves ``handlers.renewal.handler`` on 127.0.0.1 as a
  function URL does, and :class:`~tests.function_url.Browser` follows the redirects across the page
  and the fake Google (both shared with the e2e).
- :class:`RenewalFakeGoogle` is the shared fake plus what these tests script: id token claims
  (a foreign ``aud`` or ``iss``, an old ``exp``) and the lists of every secret it handed out.
- moto (in process) holds SSM, SQS, CloudWatch, CloudWatch Logs and Step Functions as the stack
  deploys them; executions are held RUNNING, so the tests see exactly what the page started.

After every test, every response of the page is checked for the security headers, and every
response and log line for secrets (tokens, codes, client secret, states, PKCE verifiers, cookies).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

import handlers.renewal
from sesmail import names
from sesmail.local.function_url import (
    FUNCTION_DOMAIN,
    Browser,
    Exchange,
    FunctionUrl,
    Invocation,
    LambdaContext,
    function_url_event,
    is_callback,
)
from sesmail.local.google import DEFAULT_ACCOUNT, FakeGoogle
from sesmail.renewal.pages import SECURITY_HEADERS
from sesmail.renewal.settings import FLOW_COOKIE, RESULT_COOKIE
from sesmail.runtime.mailboxes import Mailbox, MailboxTable

ENV = "test"
REGION = "us-east-1"
ACCOUNT = "123456789012"
WORK = "work"
#: The work mailbox's configured address, in another case than Google's answer (compared without case).
WORK_ADDRESS = "Work.Person@gmail.com"
WORK_ACCOUNT = "work.person@gmail.com"
NO_ADDRESS = "noaddr"
TABLE = MailboxTable(
    (
        Mailbox(names.DEFAULT_MAILBOX, ("example.com",), gmail_address=DEFAULT_ACCOUNT),
        Mailbox(WORK, ("work.example.com",), gmail_address=WORK_ADDRESS),
        Mailbox(NO_ADDRESS, ("other.example.com",)),
    ),
    configured=True,
)
HELD_EXECUTIONS: Any = {"stepfunctions": {"execute_state_machine": False}}


# --- the fake Google -------------------------------------------------------------------------------


class RenewalFakeGoogle(FakeGoogle):
    """The shared fake; ``id_token_claims`` overrides (or, with None, removes) claims of its id tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.id_token_claims: dict[str, Any] = {}

    def _id_token(self, code: Any, access_token: str) -> str:
        token = super()._id_token(code, access_token)
        if not self.id_token_claims:
            return token
        claims = self.decode_id_token(token)
        for key, value in self.id_token_claims.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        header = token.split(".")[0]
        body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._id_token_key, f"{header}.{body}".encode(), "sha256").digest()
        return f"{header}.{body}.{_b64url(signature)}"

    def issued_refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._grants)

    def secrets(self) -> list[str]:
        """Every credential the fake handed out or was sent: none may reach a page or a log line."""
        found = [
            *self.issued_refresh_tokens(),
            *self.issued_access_tokens(),
            self.client_secret,
            self.web_client_secret,
        ]
        found += [r["code_verifier"] for r in self.token_requests if r.get("code_verifier")]
        found += [r["code"] for r in self.token_requests if r.get("code")]
        return [s for s in found if s]

    def states(self) -> list[str]:
        return [q["state"] for q in self.consent_requests if q.get("state")]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


# --- the deployed stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    """moto's AWS as ``pulumi up`` leaves it, the fake Google, the page's function URL and a browser."""

    google: RenewalFakeGoogle
    page: FunctionUrl
    browser: Browser
    secret: str
    state_machine_arn: str
    queue_urls: dict[str, str]
    ssm: Any = None
    sqs: Any = None
    logs: Any = None
    cloudwatch: Any = None
    sfn: Any = None
    capsys: pytest.CaptureFixture[str] | None = None
    browsers: list[Browser] = field(default_factory=list)
    _out: list[str] = field(default_factory=list)

    def output(self) -> str:
        """Everything the page has logged so far (stdout, where Lambda's log lines go)."""
        if self.capsys is not None:
            self._out.append(self.capsys.readouterr().out)
        return "".join(self._out)

    def log_lines(self) -> list[dict[str, Any]]:
        return log_lines(self.output())

    def start_url(self, mailbox: str | None = None) -> str:
        return self.page.base_url + (f"?mailbox={mailbox}" if mailbox else "")

    def new_browser(self) -> Browser:
        browser = Browser(self.page.origin)
        self.browsers.append(browser)
        return browser

    def parameter(self, name: str) -> tuple[str, int]:
        found = self.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        return str(found["Value"]), int(found["Version"])

    def stored_token(self, mailbox: str = names.DEFAULT_MAILBOX) -> dict[str, Any] | None:
        value, _ = self.parameter(names.refresh_token_parameter(ENV, mailbox))
        return None if names.is_placeholder(value) else dict(json.loads(value))

    def audit_records(self) -> list[dict[str, Any]]:
        events = self.logs.filter_log_events(logGroupName=names.audit_log_group(ENV))["events"]
        return [json.loads(e["message"]) for e in events]

    def executions(self) -> list[dict[str, Any]]:
        listed = self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]
        return [self.sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]

    def token_metrics(self) -> list[dict[str, Any]]:
        metrics = self.cloudwatch.list_metrics(
            Namespace=names.metric_namespace(ENV), MetricName=names.METRIC_TOKEN_HOURS
        )["Metrics"]
        return list(metrics)

    def nothing_written(self) -> None:
        """No token, expiry, metric or execution: what every refusal must leave."""
        for mailbox in TABLE.names:
            assert self.stored_token(mailbox) is None
            value, version = self.parameter(names.refresh_token_expiry_parameter(ENV, mailbox))
            assert names.is_placeholder(value) and version == 1
        assert self.token_metrics() == []
        assert self.executions() == []
        assert not [r for r in self.audit_records() if r.get("action") == names.AUDIT_ACTION_TOKEN_RENEWED]


@pytest.fixture
def google() -> Iterator[RenewalFakeGoogle]:
    fake = RenewalFakeGoogle()
    fake.start()
    try:
        yield fake
        assert fake.internal_errors == []
    finally:
        fake.stop()


@pytest.fixture
def stack(
    google: RenewalFakeGoogle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Stack]:
    handlers.renewal.reset()
    page = FunctionUrl(lambda event: handlers.renewal.handler(event, LambdaContext()))
    google.web_redirect_uris.add(page.base_url + "callback")
    secret = secrets.token_urlsafe(32)
    try:
        with mock_aws(config=HELD_EXECUTIONS):
            ssm = boto3.client("ssm", region_name=REGION)
            sqs = boto3.client("sqs", region_name=REGION)
            logs = boto3.client("logs", region_name=REGION)
            sfn = boto3.client("stepfunctions", region_name=REGION)
            cloudwatch = boto3.client("cloudwatch", region_name=REGION)
            for mailbox in TABLE.names:
                for name, kind in (
                    (names.refresh_token_parameter(ENV, mailbox), "SecureString"),
                    (names.refresh_token_expiry_parameter(ENV, mailbox), "String"),
                ):
                    ssm.put_parameter(Name=name, Value=names.placeholder_value(ENV, mailbox), Type=kind)
            ssm.put_parameter(
                Name=names.client_credentials_parameter(ENV),
                Value=json.dumps(google.client_json("installed")),
                Type="SecureString",
            )
            ssm.put_parameter(
                Name=names.web_client_credentials_parameter(ENV),
                Value=json.dumps(google.client_json("web")),
                Type="SecureString",
            )
            ssm.put_parameter(Name=names.renewal_secret_parameter(ENV), Value=secret, Type="SecureString")
            queue_urls = {m: sqs.create_queue(QueueName=names.retry_queue(ENV, m))["QueueUrl"] for m in TABLE.names}
            for mailbox in TABLE.names:
                sqs.create_queue(QueueName=names.retry_dlq(ENV, mailbox))
            logs.create_log_group(logGroupName=names.audit_log_group(ENV))
            machine = sfn.create_state_machine(
                name=names.retry_state_machine(ENV),
                definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/retry-processor",
            )["stateMachineArn"]
            monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
            monkeypatch.setenv(names.ENV_VAR_MAILBOXES, TABLE.to_json())
            monkeypatch.setenv(names.ENV_VAR_RETRY_QUEUE_URL, queue_urls[names.DEFAULT_MAILBOX])
            monkeypatch.setenv(names.ENV_VAR_STATE_MACHINE_ARN, machine)
            monkeypatch.setenv(names.ENV_VAR_RENEWAL_BASE_URL, page.base_url)
            browser = Browser(page.origin)
            world = Stack(google, page, browser, secret, machine, queue_urls, ssm, sqs, logs, cloudwatch, sfn, capsys)
            world.browsers.append(browser)
            yield world
            handlers.renewal.reset()
            _check_every_response(world)
            _check_no_secret_anywhere(world, world.output())
    finally:
        handlers.renewal.reset()
        page.stop()


def log_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _codes_google_sent(world: Stack) -> list[str]:
    """Every authorization code in the fake's redirects, exchanged or not."""
    codes: list[str] = []
    for browser in world.browsers:
        for exchange in browser.history:
            location = exchange.location or ""
            if exchange.url.startswith(world.google.base_url) and location:
                codes += parse_qs(urlsplit(location).query).get("code", [])
    return codes


def _check_every_response(world: Stack) -> None:
    """Every answer of the page, redirects and errors included, carries the security headers."""
    for invocation in world.page.invocations:
        headers = invocation.response["headers"]
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (name, invocation.event["rawPath"])
        assert invocation.response["isBase64Encoded"] is False


def _check_no_secret_anywhere(world: Stack, out: str) -> None:
    """No token, code, client secret, verifier, renewal secret or cookie value in a page answer or a log line.

    The state is in exactly one place by protocol: the start's redirect to Google (and, signed, in the
    flow cookie); never in a page, a later URL, or a log line.
    """
    google = world.google
    secrets_ = [*google.secrets(), world.secret, *_codes_google_sent(world)]
    states = google.states()
    cookie_values = [
        c.partition("=")[2].partition(";")[0]
        for inv in world.page.invocations
        for c in inv.response.get("cookies") or []
        if c.partition("=")[2].partition(";")[0]
    ]
    for invocation in world.page.invocations:
        response = invocation.response
        location = urlsplit(str(response["headers"].get("Location", "")))
        # Google's consent, whichever name of the loopback host the web client's auth_uri uses.
        to_google = location.port == urlsplit(google.base_url).port and location.hostname in ("127.0.0.1", "localhost")
        texts = [response["body"], *response.get("cookies", [])]
        texts += [v for k, v in response["headers"].items() if not (to_google and k == "Location")]
        for text in texts:
            for secret in secrets_:
                assert secret not in text, "a secret reached a response of the page"
            for state in states:
                assert state not in text, "a state reached a response of the page (other than to Google)"
        if to_google:
            location = response["headers"]["Location"]
            for secret in secrets_:
                assert secret not in location
    assert out.strip(), "the page logged nothing"
    for line in out.splitlines():
        for value in [*secrets_, *states, *cookie_values]:
            assert value not in line, "a secret, state or cookie value reached a log line"
    for record in world.audit_records():
        text = json.dumps(record)
        for value in [*secrets_, *states, *cookie_values]:
            assert value not in text, "a secret reached the audit log"


__all__ = [
    "ACCOUNT",
    "DEFAULT_ACCOUNT",
    "ENV",
    "FLOW_COOKIE",
    "FUNCTION_DOMAIN",
    "NO_ADDRESS",
    "RESULT_COOKIE",
    "TABLE",
    "WORK",
    "WORK_ACCOUNT",
    "WORK_ADDRESS",
    "Browser",
    "Exchange",
    "Invocation",
    "RenewalFakeGoogle",
    "Stack",
    "function_url_event",
    "is_callback",
    "log_lines",
    "s256",
]
