"""The renewal page over real HTTP: the handler behind a local function-URL adapter, moto, the fake Google.

- :class:`FunctionUrl` serves ``handlers.renewal.handler`` on 127.0.0.1, turning each HTTP request
  into a payload-format-2.0 function URL event (``rawPath``, ``rawQueryString``, ``cookies``,
  lower-case ``headers``, ``requestContext``) and the handler's answer back into HTTP (one
  ``Set-Cookie`` per entry of ``cookies``), one invocation at a time, as Lambda runs a container.
- :class:`Browser` follows redirects across the page and the fake Google and keeps the page's
  cookies. It sends the page's ``Secure`` cookies over plain-http loopback: the real function URL
  is HTTPS only, so ``Secure`` never stops a cookie there, and browsers also treat
  ``http://127.0.0.1`` as a secure context; ``http.cookiejar`` would drop them.
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
import http.client
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

import handlers.renewal
from sesmail import names
from sesmail.mailboxes import Mailbox, MailboxTable
from sesmail.pages import SECURITY_HEADERS
from sesmail.renewal.settings import FLOW_COOKIE, RESULT_COOKIE
from tests.fakes.google import DEFAULT_ACCOUNT, FakeGoogle

ENV = "test"
REGION = "us-east-1"
ACCOUNT = "123456789012"
#: What Lambda puts in ``requestContext.domainName`` for a function URL.
FUNCTION_DOMAIN = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
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


# --- the function URL adapter -----------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    event: dict[str, Any]
    response: dict[str, Any]


class _AdapterServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, adapter: FunctionUrl) -> None:
        self.adapter = adapter
        super().__init__(("127.0.0.1", 0), _AdapterHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a test client hanging up is not a failure of the page."""


class _AdapterHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _AdapterServer

    def log_message(self, format: str, *args: Any) -> None:
        """No request log: the callback's request line carries the code."""

    def do_GET(self) -> None:
        self._invoke()

    def do_POST(self) -> None:
        self._invoke()

    def do_PUT(self) -> None:
        self._invoke()

    def do_DELETE(self) -> None:
        self._invoke()

    def do_HEAD(self) -> None:
        self._invoke()

    def do_OPTIONS(self) -> None:
        self._invoke()

    def _invoke(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.adapter.invoke(self.command, self.path, self.headers.items(), body, self.client_address)
        payload = str(answer.get("body") or "").encode("utf-8")
        self.send_response(int(answer["statusCode"]))
        for name, value in (answer.get("headers") or {}).items():
            self.send_header(name, value)
        for cookie in answer.get("cookies") or []:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class FunctionUrl:
    """``handlers.renewal.handler`` behind a Lambda-function-URL-shaped HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self._server = _AdapterServer(self)
        self._lock = threading.Lock()  # one invocation at a time, like one Lambda container
        self.invocations: list[Invocation] = []
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.origin + "/"

    def invoke(self, method: str, target: str, headers: Any, body: bytes, client: tuple[str, int]) -> dict[str, Any]:
        event = function_url_event(method, target, headers, body, client)
        with self._lock:
            response = handlers.renewal.handler(event, _Context())
            self.invocations.append(Invocation(event, response))
        return response

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Context:
    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())


def function_url_event(
    method: str, target: str, headers: Any, body: bytes = b"", client: tuple[str, int] = ("127.0.0.1", 0)
) -> dict[str, Any]:
    """A payload-format-2.0 event, shaped as Lambda's function URLs send it."""
    parts = urlsplit(target)
    lowered: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":  # function URLs move cookies out of the headers
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    query = parse_qs(parts.query, keep_blank_values=True)
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": lowered,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": FUNCTION_DOMAIN.split(".")[0],
            "domainName": FUNCTION_DOMAIN,
            "domainPrefix": FUNCTION_DOMAIN.split(".")[0],
            "http": {
                "method": method,
                "path": parts.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": client[0],
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
    if cookies:
        event["cookies"] = cookies
    if body:
        event["body"] = body.decode("utf-8", "replace")
    return event


# --- the browser --------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request the browser made and the response it got."""

    method: str
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: str
    sent_cookies: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    @property
    def location(self) -> str | None:
        return self.header("Location")


class Browser:
    """Follows redirects and keeps the page's cookies (its own origin only), recording every exchange."""

    def __init__(self, page_origin: str) -> None:
        self.page_origin = page_origin
        self.cookies: dict[str, str] = {}
        self.cookie_attributes: dict[str, str] = {}
        self.history: list[Exchange] = []

    def request(self, url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Exchange:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        sent: dict[str, str] = {}
        request_headers = {"User-Agent": "renewal-test-browser/1.0", **(headers or {})}
        if origin == self.page_origin and self.cookies:
            sent = dict(self.cookies)
            request_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in sent.items())
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request(method, target, headers=request_headers)
            raw = conn.getresponse()
            body = raw.read().decode("utf-8", "replace")
            exchange = Exchange(method, url, raw.status, list(raw.getheaders()), body, sent)
        finally:
            conn.close()
        self.history.append(exchange)
        if origin == self.page_origin:
            for value in exchange.set_cookies:
                self._store_cookie(value)
        return exchange

    def _store_cookie(self, header: str) -> None:
        pair, _, attributes = header.partition(";")
        name, _, value = pair.partition("=")
        name = name.strip()
        if "max-age=0" in attributes.replace(" ", "").lower():
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value.strip()
        self.cookie_attributes[name] = attributes.strip()

    def follow(self, url: str, *, stop: Callable[[str], bool] | None = None, hops: int = 10) -> tuple[Exchange, str]:
        """GET ``url`` and its redirects; stops before requesting a URL ``stop`` picks (returned second)."""
        exchange: Exchange | None = None
        for _ in range(hops):
            if stop is not None and exchange is not None and stop(url):
                return exchange, url
            exchange = self.request(url)
            location = exchange.location
            if exchange.status not in (301, 302, 303, 307, 308) or not location:
                return exchange, url
            url = location if "://" in location else f"{urlsplit(url).scheme}://{urlsplit(url).netloc}{location}"
        raise AssertionError("too many redirects")

    @property
    def page_responses(self) -> list[Exchange]:
        return [e for e in self.history if e.url.startswith(self.page_origin + "/")]


def is_callback(url: str) -> bool:
    return urlsplit(url).path == "/callback"


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
    page = FunctionUrl()
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
        to_google = str(response["headers"].get("Location", "")).startswith(google.base_url)
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
    "RenewalFakeGoogle",
    "Stack",
    "function_url_event",
    "is_callback",
    "log_lines",
    "s256",
]
