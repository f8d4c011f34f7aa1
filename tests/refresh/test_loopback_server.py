"""The OAuth loopback server in-process, without a browser: what a browser, a probe or a stray socket sees.

test_loopback_browser.py proves the same with real Chromium; these run everywhere, fast, and
reach the corners a browser will not produce on demand: a connection reset mid-request, a
socket that times out while the test watches stdout/stderr, the exact headers.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import pytest
from oauthlib.oauth2 import WebApplicationClient
from oauthlib.oauth2.rfc6749 import errors as oe

from sesmail import names
from sesmail.cli import oauth_flow
from sesmail.cli.errors import RefreshFailed
from sesmail.renewal import pages

STATE = "the-state-this-run-sent"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[oauth_flow._LoopbackServer]:
    """A started loopback server on a free port; a short grace so a test that skips the page ends fast."""
    monkeypatch.setattr(oauth_flow, "OUTCOME_PAGE_GRACE_SECONDS", 0.5)
    loopback = oauth_flow._LoopbackServer(0)
    loopback.start(STATE)
    try:
        yield loopback
    finally:
        loopback.stop()


def _get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    """One GET, no redirect followed: (status, headers with lower-case names, body)."""
    conn = http.client.HTTPConnection(names.OAUTH_LOOPBACK_HOST, port, timeout=5)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _answer(**params: str) -> str:
    return "/?" + urlencode(params)


def test_it_waits_past_stray_requests_and_gives_up_at_the_deadline(
    server: oauth_flow._LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = server.server_port
    assert _get(port, "/favicon.ico")[0] == 404
    assert _get(port, "/")[0] == 404  # a probe of the callback path without an answer
    assert _get(port, "/elsewhere?code=4/abc&state=" + STATE)[0] == 404  # Google redirects to "/" only
    assert _get(port, oauth_flow.OUTCOME_PATH)[0] == 404  # no outcome yet

    status, _, _ = _get(port, f"/?state={STATE}&code=4/abc")

    assert status == 303
    assert server.wait_for_answer() == f"http://127.0.0.1:{port}/?state={STATE}&code=4/abc"

    monkeypatch.setattr(names, "OAUTH_CONSENT_TIMEOUT_SECONDS", 0.2)
    idle = oauth_flow._LoopbackServer(0)
    idle.start(STATE)
    try:
        with pytest.raises(RefreshFailed, match="did not redirect back to this computer"):
            idle.wait_for_answer()
    finally:
        idle.stop()


def test_the_callback_redirects_to_a_code_free_page_that_is_neither_cached_nor_referred(
    server: oauth_flow._LoopbackServer,
) -> None:
    port = server.server_port

    status, headers, body = _get(port, _answer(state=STATE, code="4/secret-code", scope=names.GMAIL_SCOPE))

    assert (status, body) == (303, b"")
    location = headers["location"]
    assert urlsplit(location).path == oauth_flow.OUTCOME_PATH
    assert "code" not in location and "secret" not in location and STATE not in location
    status, page_headers, page = _get(port, location)
    assert status == 200
    for answered in (headers, page_headers):
        assert answered["cache-control"] == "no-store"
        assert answered["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in answered["content-security-policy"]
    assert page_headers["content-type"] == "text/html; charset=utf-8"
    text = page.decode()
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>ses-mail: renewal received</title>" in text
    assert "Return to your terminal" in text
    assert "4/secret-code" not in text
    # A second answer does not replace the first one.
    assert _get(port, _answer(state=STATE, code="4/another"))[0] == 404
    assert "code=4%2Fsecret-code&" in server.wait_for_answer()


def test_idle_half_open_and_reset_connections_neither_delay_the_callback_nor_print_anything(
    server: oauth_flow._LoopbackServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(oauth_flow._Handler, "timeout", 0.3)  # so the stalled ones time out during the test
    port = server.server_port
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    stalled[1].sendall(b"GET /?state=")  # half a request line, then silence
    stalled[2].sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
    stalled[3].shutdown(socket.SHUT_WR)  # half-closed without a byte
    reset = socket.create_connection(("127.0.0.1", port))
    reset.sendall(b"GET /fav")
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.close()  # RST mid-request
    time.sleep(0.1)

    started = time.monotonic()
    status, _, _ = _get(port, _answer(state=STATE, code="4/abc"))
    elapsed = time.monotonic() - started

    assert status == 303
    assert elapsed < 1.0, f"the callback waited {elapsed:.2f}s behind stalled connections"
    assert _get(port, oauth_flow.OUTCOME_PATH)[0] == 200
    time.sleep(0.6)  # the stalled connections time out now, in their own threads
    for sock in stalled:
        sock.close()
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_stop_serves_the_outcome_page_first_and_does_not_wait_for_idle_sockets(
    server: oauth_flow._LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oauth_flow, "OUTCOME_PAGE_GRACE_SECONDS", 5.0)
    port = server.server_port
    idle = socket.create_connection(("127.0.0.1", port))
    assert _get(port, _answer(state=STATE, error="access_denied"))[0] == 303
    fetched: list[int] = []

    def slow_browser() -> None:
        time.sleep(0.3)
        fetched.append(_get(port, oauth_flow.OUTCOME_PATH)[0])

    browser = threading.Thread(target=slow_browser)
    browser.start()
    started = time.monotonic()
    server.stop()
    stopped_after = time.monotonic() - started
    browser.join()
    idle.close()

    assert fetched == [200]
    assert 0.2 < stopped_after < 2.0
    with socket.socket() as again:  # the port is free again at once
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_it_listens_on_127_0_0_1_only_and_never_shares_the_port(server: oauth_flow._LoopbackServer) -> None:
    assert server.socket.getsockname()[0] == "127.0.0.1"
    assert server.redirect_uri == f"http://127.0.0.1:{server.server_port}/"
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    if hasattr(socket, "SO_REUSEPORT"):
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


@pytest.mark.parametrize(
    ("query", "outcome", "oauthlib_error"),
    [
        ({"state": STATE, "code": "4/abc"}, oauth_flow.OUTCOME_RECEIVED, None),
        ({"state": STATE, "error": "access_denied"}, oauth_flow.OUTCOME_DENIED, oe.AccessDeniedError),
        ({"state": "tampered", "code": "4/abc"}, oauth_flow.OUTCOME_NOT_OURS, oe.MismatchingStateError),
        ({"code": "4/abc"}, oauth_flow.OUTCOME_NOT_OURS, oe.MismatchingStateError),
        ({"state": "tampered", "error": "access_denied"}, oauth_flow.OUTCOME_NOT_OURS, oe.MismatchingStateError),
        ({"state": STATE, "error": "invalid_scope"}, oauth_flow.OUTCOME_ERROR, oe.InvalidScopeError),
    ],
    ids=["received", "denied", "wrong-state", "no-state", "wrong-state-error", "google-error"],
)
def test_the_page_tells_what_the_terminal_will_say(
    query: dict[str, str], outcome: str, oauthlib_error: type[Exception] | None
) -> None:
    """The page's outcome and oauthlib's verdict (which the CLI reports) agree, in the same order."""
    parsed = {key: [value] for key, value in query.items()}

    assert oauth_flow._classify(parsed, STATE)[0] == outcome
    client = WebApplicationClient("client-id")
    uri = "https://127.0.0.1/?" + urlencode(query)
    if oauthlib_error is None:
        client.parse_request_uri_response(uri, state=STATE)
    else:
        with pytest.raises(oauthlib_error):
            client.parse_request_uri_response(uri, state=STATE)


def test_every_outcome_page_is_small_escaped_html_with_a_title() -> None:
    for outcome in (
        oauth_flow.OUTCOME_RECEIVED,
        oauth_flow.OUTCOME_DENIED,
        oauth_flow.OUTCOME_NOT_OURS,
        oauth_flow.OUTCOME_ERROR,
    ):
        page = oauth_flow._render(outcome, "<b>x</b> & {title}").decode()
        assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
        assert page.count("<title>ses-mail: ") == 1 and page.count("<h1 ") == 1
        assert "Return to your terminal" in page
        assert "<b>" not in page and "<script" not in page
        assert len(page) < 2000
    error_page = oauth_flow._render(oauth_flow.OUTCOME_ERROR, "<b>x</b> & {title}").decode()
    assert "&lt;b&gt;x&lt;/b&gt; &amp; {title}" in error_page


def test_the_outcome_page_has_the_renewal_page_s_look_and_security_headers(
    server: oauth_flow._LoopbackServer,
) -> None:
    port = server.server_port
    _, headers, _ = _get(port, _answer(state=STATE, code="4/abc"))

    status, page_headers, page = _get(port, headers["location"])

    assert status == 200
    for answered in (headers, page_headers):
        for name, value in pages.SECURITY_HEADERS.items():
            assert answered[name.lower()] == value
        assert answered["connection"] == "close"
    # The style the CSP's hash allows, and nothing inline besides it.
    assert f"<style>{pages.STYLE}</style>" in page.decode()
    assert "unsafe-inline" not in page_headers["content-security-policy"]
    assert '<h1 class="good">Renewal received</h1>' in page.decode()
