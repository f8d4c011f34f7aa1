"""The consent round trip in a real browser: Debian's headless Chromium, driven by Playwright.

``fake_browser.py`` follows redirects one request at a time, so it could never show what broke
with a real browser: Chromium preconnects and keeps idle sockets to the loopback port, and a
single-threaded loopback server then sat on those for its whole socket timeout before reading
the callback, and printed a traceback when they timed out. These tests run the CLI exactly as an
operator does (``--no-browser``, then the printed URL opened in Chromium) against the fake
Google, whose consent URL redirects straight back to the loopback server, and check what the
operator sees: the tab, its URL and the terminal.

Chromium comes from Debian (``apt-get install chromium``), never from ``playwright install``
(which downloads a browser build). Without ``/usr/bin/chromium`` the tests are skipped on a
developer's machine; with ``CI`` set they fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.browser import NAVIGATION_TIMEOUT_MS, chromium_page, needs_chromium
from tests.refresh.harness import Cli, CliResult, Cloud, LiveCli, RefreshFakeGoogle

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request

#: The brief: an idle or half-open connection may not delay the callback by more than a second.
CALLBACK_BUDGET_SECONDS = 1.0
#: The whole navigation (consent redirect, callback, outcome page) in a loaded 2-core machine.
NAVIGATION_BUDGET_SECONDS = 5.0

pytestmark = needs_chromium


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A fresh Chromium (own user-data-dir) with one tab; in CI a missing browser is a failure."""
    with chromium_page(tmp_path / "chromium-profile") as tab:
        yield tab


def _consent_url(live: LiveCli) -> str:
    return live.wait_for(lambda line: line.strip().startswith("http")).strip()


def _redirect_uri(consent_url: str) -> str:
    return parse_qs(urlsplit(consent_url).query)["redirect_uri"][0]


def _preconnect(page: Page, origin: str) -> None:
    """Make Chromium open (and keep idle) sockets to the loopback port, as a page's preconnect hints do."""
    page.set_content(
        "<!DOCTYPE html><title>warm-up</title>"
        f'<link rel="preconnect" href="{origin}"><link rel="preconnect" href="{origin}" crossorigin>'
    )


@contextlib.contextmanager
def _stalled_connections(port: int) -> Iterator[None]:
    """Three idle connections, one that sent half a request, one half-closed: all open before the callback."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(3):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        partial = socket.create_connection(("127.0.0.1", port), timeout=5)
        partial.sendall(b"GET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        sockets.append(partial)
        half_closed = socket.create_connection(("127.0.0.1", port), timeout=5)
        half_closed.shutdown(socket.SHUT_WR)
        sockets.append(half_closed)
        time.sleep(0.2)  # let the server accept them before the browser's callback arrives
        yield
    finally:
        for sock in sockets:
            sock.close()


def _callback_seconds(request: Request) -> float | None:
    """Seconds from the callback request being sent to its response starting, per Chromium's timing."""
    timing: Any = request.timing
    start, first_byte = timing.get("requestStart", -1), timing.get("responseStart", -1)
    if start < 0 or first_byte < 0:
        return None
    return float(first_byte - start) / 1000


def _assert_only_cli_lines(result: CliResult, secrets: list[str]) -> None:
    """No traceback, no request log, no error line: just what the CLI itself says on success."""
    assert result.stderr == "", f"unexpected stderr:\n{result.stderr}"
    for marker in ("Traceback", "Exception", "wsgiref", "socketserver", "HTTP/1.", '"GET '):
        assert marker not in result.stdout, f"{marker!r} printed:\n{result.stdout}"
    for secret in secrets:
        assert secret not in result.stdout


def test_consent_round_trip_in_chromium_is_quick_despite_idle_sockets_and_leaves_no_code_in_the_url(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, page: Page, tmp_path: Path
) -> None:
    live = cli.start("--no-browser", "--no-retry")
    url = _consent_url(live)
    redirect_uri = _redirect_uri(url)
    port = urlsplit(redirect_uri).port
    assert port is not None
    _preconnect(page, redirect_uri.rstrip("/"))
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))

    with _stalled_connections(port):
        started = time.monotonic()
        page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
        navigation = time.monotonic() - started
        title, text, final_url = page.title(), page.inner_text("body"), page.url
        page.screenshot(path=str(tmp_path / "loopback-success.png"))
    result = live.finish()

    callbacks = [r for r in requests if r.url.startswith(redirect_uri) and "code=" in r.url]
    assert len(callbacks) == 1, [r.url for r in requests]
    code = parse_qs(urlsplit(callbacks[0].url).query)["code"][0]
    latency = _callback_seconds(callbacks[0])
    seen = f"navigation {navigation:.1f}s, callback {latency}s, final URL {final_url}, CLI stderr:\n{result.stderr}"
    assert navigation < NAVIGATION_BUDGET_SECONDS, seen
    assert latency is not None and latency < CALLBACK_BUDGET_SECONDS, seen
    assert "code=" not in final_url and code not in final_url, final_url
    assert final_url.startswith(redirect_uri), final_url  # the page is served by the same loopback server
    assert "renewal received" in title.lower(), title
    assert "return to your terminal" in text.lower(), text
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_only_cli_lines(result, [code, *google.secrets()])
    assert deployed.audit_records()  # the renewal really happened


@pytest.mark.parametrize(
    ("behavior", "title", "says", "cli_error"),
    [
        ("deny", "consent denied", "nothing was renewed", "the Google consent was denied"),
        ("wrong_state", "not our request", "does not belong to the request", "possible CSRF"),
    ],
    ids=["denied", "state-mismatch"],
)
def test_a_refused_answer_shows_its_outcome_in_chromium(
    deployed: Cloud,
    cli: Cli,
    google: RefreshFakeGoogle,
    page: Page,
    behavior: str,
    title: str,
    says: str,
    cli_error: str,
) -> None:
    google.consent_behavior = behavior
    live = cli.start("--no-browser", "--no-retry")
    url = _consent_url(live)

    page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    shown_title, text, final_url = page.title(), page.inner_text("body"), page.url
    result = live.finish()

    assert title in shown_title.lower(), shown_title
    assert says in text, text
    assert "return to your terminal" in text.lower(), text
    assert "error=" not in final_url and "code=" not in final_url and "state=" not in final_url, final_url
    assert result.returncode == 1
    assert len(result.error_lines) == 1 and cli_error in result.error_lines[0], result.stderr
    assert result.stderr.splitlines() == result.error_lines  # no traceback, no request log


def test_an_error_from_google_is_shown_escaped(deployed: Cloud, cli: Cli, page: Page) -> None:
    live = cli.start("--no-browser", "--no-retry")
    url = _consent_url(live)
    state = parse_qs(urlsplit(url).query)["state"][0]
    answer = {"error": "invalid_scope", "error_description": "<script>document.title='pwned'</script>", "state": state}

    page.goto(_redirect_uri(url) + "?" + urlencode(answer), wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    shown_title, text, final_url = page.title(), page.inner_text("body"), page.url
    scripts = page.locator("script").count()
    result = live.finish()

    assert "google reported an error" in shown_title.lower(), shown_title
    assert "invalid_scope" in text and "<script>" in text, text  # shown as text, not run
    assert scripts == 0
    assert "error=" not in final_url and "pwned" not in final_url, final_url
    assert result.returncode == 1
    assert result.stderr.splitlines() == result.error_lines
