"""A Lambda function URL on 127.0.0.1, and a small browser for it: the renewal page's tests, the e2e, the demo.

- :class:`FunctionUrl` serves a function on 127.0.0.1, turning each HTTP request into a
  payload-format-2.0 function URL event (``rawPath``, ``rawQueryString``, ``cookies``, lower-case
  ``headers``, ``requestContext``) and the function's answer back into HTTP (one ``Set-Cookie``
  per entry of ``cookies``), one invocation at a time, as Lambda runs a container.
- :class:`Browser` follows redirects across the page and the fake Google and keeps the page's
  cookies. It sends the page's ``Secure`` cookies over plain-http loopback: the real function URL
  is HTTPS only, so ``Secure`` never stops a cookie there, and browsers also treat
  ``http://127.0.0.1`` as a secure context; ``http.cookiejar`` would drop them.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: What Lambda puts in ``requestContext.domainName`` for a function URL.
FUNCTION_DOMAIN = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"

#: Runs the function on one event and returns its response (``statusCode``, ``headers``, ...).
Invoke = Callable[[dict[str, Any]], dict[str, Any]]


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
    """A function behind a Lambda-function-URL-shaped HTTP server on 127.0.0.1.

    ``invoke`` runs the function on an event (the handler itself, or the deployed function through
    Lambda's Invoke API); ``domain`` is what Lambda puts in ``requestContext.domainName``.
    """

    def __init__(self, invoke: Invoke, *, domain: str = FUNCTION_DOMAIN) -> None:
        self._invoke = invoke
        self.domain = domain
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
        event = function_url_event(method, target, headers, body, client, domain=self.domain)
        with self._lock:
            response = self._invoke(event)
            self.invocations.append(Invocation(event, response))
        return response

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class LambdaContext:
    """The one attribute of Lambda's context object the page reads: the request id."""

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())


def function_url_event(
    method: str,
    target: str,
    headers: Any,
    body: bytes = b"",
    client: tuple[str, int] = ("127.0.0.1", 0),
    *,
    domain: str = FUNCTION_DOMAIN,
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
            "apiId": domain.split(".")[0],
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
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
    """Follows redirects and keeps the page's cookies (its own origin only), recording every exchange.

    ``hosts`` maps a public origin to the local one that serves it (``/etc/hosts`` and a TLS
    terminator in one): the deployed page's ``https://{id}.lambda-url...`` to its local adapter.
    """

    def __init__(self, page_origin: str, *, hosts: Mapping[str, str] | None = None) -> None:
        self.page_origin = page_origin
        self.hosts = dict(hosts or {})
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
        served = urlsplit(self.hosts.get(origin, origin))
        conn = http.client.HTTPConnection(served.hostname or "127.0.0.1", served.port, timeout=30)
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
