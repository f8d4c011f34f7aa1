"""The renewal from a phone in a real browser: Debian's headless Chromium, driven by Playwright.

``conftest.Browser`` follows redirects one request at a time and keeps cookies the way the tests
tell it to; these tests let Chromium do it all: ``GET /?mailbox=work`` → 303 to the fake Google's
consent (which answers at once with a 302 back to ``/callback``, as an account that already
consented would) → 303 to ``/done``. They check what the person sees (the tab's address, its
history, the page, a screenshot under the test's tmp dir) and what was written (the token in SSM,
the retry processor's execution), and that Chromium's own extra traffic (the favicon request,
preconnects, another tab on the page's origin) cannot disturb a flow in progress.

``Secure`` and ``__Host-`` cookies over plain-http loopback, found by trying (Chromium 156, Debian
bookworm): Chromium stores ``Secure`` cookies, ``__Host-`` prefixed ones included, set over
``http://127.0.0.1`` and over ``http://localhost`` alike (both are potentially trustworthy
origins), and sends them back over plain http. So the adapter stays on ``http://127.0.0.1`` and the
page's real cookie attributes (``Secure; HttpOnly; SameSite=Lax; Path=/``, no ``Domain``) are
exercised unchanged, with no certificate and no ``--ignore-certificate-errors``. The tests assert
it (the flow cookie as Chromium stored it, the cookie Chromium sent to ``/callback``), so a
Chromium that stops doing so fails here, saying to serve the adapter over HTTPS instead.

Favicons, also found by trying: Chromium asks for ``/favicon.ico`` right after a page loads, but not
on this page's pages, whose CSP (``default-src 'none'``) forbids images, the favicon included. So
the favicon request that reaches the page here is a second tab opening ``/favicon.ico`` mid-flow
(as a person might); it is answered with the page's 404 and leaves the flow cookie alone.

The browser module (:mod:`tests.browser`) holds the launch: Debian's ``/usr/bin/chromium``, never
``playwright install``; skipped without it on a developer's machine, a failure with ``CI`` set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sesmail import names
from tests.browser import NAVIGATION_TIMEOUT_MS, chromium_page, needs_chromium
from tests.renewal.conftest import (
    ENV,
    FLOW_COOKIE,
    RESULT_COOKIE,
    WORK,
    WORK_ACCOUNT,
    WORK_ADDRESS,
    Invocation,
    Stack,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request, ViewportSize

pytestmark = needs_chromium

#: The whole flow (start, consent, callback, outcome page) on a loaded 2-core machine.
FLOW_BUDGET_SECONDS = 5.0
#: How long to watch for a favicon request of Chromium's own after the outcome page has loaded.
FAVICON_WAIT_SECONDS = 1.0
INTRUDER = "intruder@gmail.com"
PHONE_VIEWPORT: ViewportSize = {"width": 390, "height": 844}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECURE_COOKIE_HINT = (
    "Chromium did not keep the page's Secure __Host- cookie over http://127.0.0.1: serve the adapter over HTTPS "
    "(self-signed certificate, --ignore-certificate-errors) as the module docstring says"
)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A fresh Chromium with one phone-sized tab (the screenshots show what a phone shows)."""
    with chromium_page(tmp_path / "chromium-profile") as tab:
        tab.set_viewport_size(PHONE_VIEWPORT)
        yield tab


# --- helpers ----------------------------------------------------------------------------------------------


class Navigation:
    """The tab's main-frame requests (redirect hops included) and its committed URLs (its history)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        self.committed: list[str] = []
        page.on("request", self._request)
        page.on("framenavigated", lambda frame: self.committed.append(frame.url) if frame == page.main_frame else None)

    def _request(self, request: Request) -> None:
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.requests.append(request)

    def chain(self, final_url: str) -> list[str]:
        """The URLs the navigation to ``final_url`` went through, first to last (redirects followed)."""
        request: Request | None = next(r for r in reversed(self.requests) if r.url == final_url)
        urls: list[str] = []
        while request is not None:
            urls.append(request.url)
            request = request.redirected_from
        return urls[::-1]


def _history(page: Page) -> list[str]:
    """The tab's session history (what the back button walks), as Chromium keeps it."""
    cdp = page.context.new_cdp_session(page)
    try:
        return [str(entry["url"]) for entry in cdp.send("Page.getNavigationHistory")["entries"]]
    finally:
        cdp.detach()


def _park(stack: Stack, mailbox: str, count: int) -> None:
    for i in range(count):
        stack.sqs.send_message(QueueUrl=stack.queue_urls[mailbox], MessageBody=json.dumps({"parked": i}))


def _web_client_id(stack: Stack) -> str:
    return str(stack.google.client_json("web")["web"]["client_id"])


def _page_cookies(page: Page, stack: Stack) -> dict[str, dict[str, Any]]:
    return {c["name"]: dict(c) for c in page.context.cookies(stack.page.origin)}


def _assert_host_cookie(cookie: dict[str, Any] | None) -> None:
    """As Chromium stored it: Secure, HttpOnly, Lax, host-only on 127.0.0.1, path /."""
    assert cookie is not None, SECURE_COOKIE_HINT
    assert cookie["secure"] is True and cookie["httpOnly"] is True and cookie["sameSite"] == "Lax", cookie
    assert cookie["domain"] == "127.0.0.1" and cookie["path"] == "/", cookie  # host-only: no leading dot


def _invocations(stack: Stack, path: str) -> list[Invocation]:
    return [i for i in stack.page.invocations if i.event["rawPath"] == path]


def _sent_cookie_names(invocation: Invocation) -> list[str]:
    return [c.partition("=")[0] for c in invocation.event.get("cookies") or []]


def _screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert len(data) > 5_000 and width >= 300 and height >= 300, (len(data), width, height)


def _assert_no_secret_in(content: str, stack: Stack, navigation: Navigation) -> None:
    """No token, code, verifier, client secret, state or renewal secret in what the tab holds."""
    sent = [parse_qs(urlsplit(r.url).query) for r in navigation.requests]
    codes_and_states = [v for q in sent for key in ("code", "state") for v in q.get(key, [])]
    for secret in [*stack.google.secrets(), *stack.google.states(), *codes_and_states, stack.secret]:
        assert secret not in content, "a secret reached the page's content"


def _wait_for(predicate: Callable[[], bool], seconds: float, page: Page) -> bool:
    """Poll ``predicate``, letting Playwright dispatch the browser's events meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        page.wait_for_timeout(50)
    return predicate()


# --- the flow ---------------------------------------------------------------------------------------------


def test_chromium_renews_the_work_mailbox_and_ends_on_the_outcome_page(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    stack.google.consent_account = WORK_ACCOUNT
    _park(stack, WORK, 2)
    navigation = Navigation(page)
    start_url = stack.start_url(WORK)

    started = time.monotonic()
    page.goto(start_url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    seconds = time.monotonic() - started
    final_url, title, text = page.url, page.title(), page.inner_text("body")
    history = _history(page)
    content = page.content()
    (tmp_path / "renewal-done.html").write_text(content, encoding="utf-8")
    _screenshot(page, tmp_path / "renewal-done.png")

    # The address bar: the outcome page, nothing in its query.
    assert final_url == stack.page.base_url + "done", final_url
    assert seconds < FLOW_BUDGET_SECONDS, f"the flow took {seconds:.1f}s"
    # The navigation went start → Google's consent → callback (with the code) → /done, all by Chromium...
    chain = navigation.chain(final_url)
    assert [urlsplit(u).path for u in chain] == ["/", urlsplit(stack.google.auth_uri).path, "/callback", "/done"]
    assert chain[0] == start_url and chain[1].startswith(stack.google.auth_uri + "?")
    callback = parse_qs(urlsplit(chain[2]).query)
    assert callback.get("code") and callback.get("state"), chain[2]
    # ...but only /done was committed: the code and the state are in no history entry.
    assert navigation.committed == [final_url], navigation.committed
    assert history == ["about:blank", final_url], history  # the back button: the new tab, then /done
    for url in [final_url, *navigation.committed, *history]:
        assert "code=" not in url and "state=" not in url, url

    # The page: the mailbox, its account, the outcome, the queue.
    assert title.endswith("renewed"), title
    assert "Gmail token renewed" in text and WORK in text and WORK_ACCOUNT in text, text
    assert "renewed" in text.replace("Gmail token renewed", ""), text  # the outcome line
    assert "2 messages" in text, text
    _assert_no_secret_in(content, stack, navigation)

    # Written: the token (from the web client) in SSM, and the drain started for this mailbox.
    record = stack.stored_token(WORK)
    assert record is not None and record["token"] == stack.google.issued_refresh_tokens()[-1]
    assert record["client_id"] == _web_client_id(stack)
    assert stack.stored_token(names.DEFAULT_MAILBOX) is None
    (execution,) = stack.executions()
    assert json.loads(execution["input"]) == {"trigger": names.RENEWAL_SOURCE, "mailbox": WORK}
    assert execution["executionArn"].split(":")[-1] in content  # the console link to the execution

    # The cookies: Chromium sent the Secure __Host- flow cookie over http to /callback, which cleared
    # it; the result cookie it holds now has the page's attributes.
    (callback_invocation,) = _invocations(stack, "/callback")
    assert FLOW_COOKIE in _sent_cookie_names(callback_invocation), SECURE_COOKIE_HINT
    cookies = _page_cookies(page, stack)
    assert FLOW_COOKIE not in cookies, cookies
    _assert_host_cookie(cookies.get(RESULT_COOKIE))


def test_favicon_requests_preconnects_and_a_second_tab_do_not_disturb_a_flow(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    """Mid-flow (the flow cookie set, the request to Google's consent held), a second tab of the same
    browser opens ``/favicon.ico`` (sending the flow cookie) and preconnects to the page, whose tab had
    preconnected too. The flow completes all the same, and every favicon request got a bare 404.

    Chromium 156 asks for no favicon of its own on the page's pages: their CSP (``default-src 'none'``)
    forbids images, and Chromium applies it to the favicon (tried with the same server without the CSP:
    it then asks right after the load). Should it start asking, the requests are checked the same way.
    """
    stack.google.consent_account = WORK_ACCOUNT
    origin = stack.page.origin
    # Idle sockets to the page's origin before anything else, as a page's preconnect hints leave them.
    page.set_content(
        f'<!DOCTYPE html><title>warm-up</title><link rel="preconnect" href="{origin}">'
        f'<link rel="preconnect" href="{origin}" crossorigin>'
    )
    navigation = Navigation(page)
    other = page.context.new_page()
    # Hold the navigation at Google's consent, i.e. after the page set the flow cookie: Chromium's own
    # request interception (Playwright's routes never see a redirect's later hops).
    cdp = page.context.new_cdp_session(page)
    held: list[str] = []
    cdp.on("Fetch.requestPaused", lambda event: held.append(event["requestId"]))
    cdp.send("Fetch.enable", {"patterns": [{"urlPattern": stack.google.auth_uri + "*", "requestStage": "Request"}]})

    page.evaluate("url => { window.location.href = url }", stack.start_url(WORK))
    assert _wait_for(lambda: bool(held), FLOW_BUDGET_SECONDS, page), "the flow never reached Google's consent"
    before = _page_cookies(page, stack).get(FLOW_COOKIE)
    favicon = other.goto(origin + "/favicon.ico", wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    other.set_content(f'<!DOCTYPE html><title>tab</title><link rel="preconnect" href="{origin}">')
    after = _page_cookies(page, stack).get(FLOW_COOKIE)
    cdp.send("Fetch.continueRequest", {"requestId": held[0]})
    cdp.send("Fetch.disable")
    page.wait_for_url(stack.page.base_url + "done", wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    final_url, text = page.url, page.inner_text("body")
    # Any favicon request of Chromium's own would follow the load: give it the time to arrive.
    _wait_for(lambda: len(_invocations(stack, "/favicon.ico")) > 1, FAVICON_WAIT_SECONDS, page)
    _screenshot(page, tmp_path / "renewal-done-busy.png")

    # Mid-flow: the flow cookie as Chromium stored it, sent with the other tab's favicon request, unchanged.
    _assert_host_cookie(before)
    assert favicon is not None and favicon.status == 404
    assert after == before

    # The flow completed as if nothing had happened.
    assert final_url == stack.page.base_url + "done", final_url
    assert "Gmail token renewed" in text and WORK in text, text
    assert stack.stored_token(WORK) is not None and len(stack.executions()) == 1
    assert navigation.committed[-1] == final_url and all("code=" not in u for u in navigation.committed)

    # The adapter's count: one start, one callback, the outcome page, and every favicon request a bare 404.
    favicons = _invocations(stack, "/favicon.ico")
    assert favicons, "the second tab's favicon request never reached the page"
    assert FLOW_COOKIE in _sent_cookie_names(favicons[0])  # the mid-flow one carried the flow cookie...
    for asked in favicons:  # ...and no favicon answer set or cleared a cookie
        assert asked.response["statusCode"] == 404 and not asked.response.get("cookies"), asked.response
    assert len(_invocations(stack, "/")) == 1 and len(_invocations(stack, "/callback")) == 1
    assert len(_invocations(stack, "/done")) == 1
    paths = {i.event["rawPath"] for i in stack.page.invocations}
    assert paths == {"/", "/callback", "/done", "/favicon.ico"}, paths


# --- refusals -----------------------------------------------------------------------------------------------


def test_the_lax_cookie_survives_google_s_cross_site_return(stack: Stack, page: Page) -> None:
    """Real Google is another site than the page, so its redirect back is a cross-site navigation.

    ``SameSite=Lax`` lets the flow cookie ride a cross-site top-level GET (``Strict`` would not):
    with Google's consent served from ``localhost``, another site than ``127.0.0.1`` to Chromium,
    the flow still completes.
    """
    web = stack.google.client_json("web")
    cross_site = stack.google.auth_uri.replace("//127.0.0.1:", "//localhost:")
    assert cross_site != stack.google.auth_uri
    web["web"]["auth_uri"] = cross_site
    stack.ssm.put_parameter(
        Name=names.web_client_credentials_parameter(ENV), Value=json.dumps(web), Type="SecureString", Overwrite=True
    )
    stack.google.consent_account = WORK_ACCOUNT
    navigation = Navigation(page)

    page.goto(stack.start_url(WORK), wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)

    assert page.url == stack.page.base_url + "done", page.url
    chain = navigation.chain(page.url)
    assert [urlsplit(u).hostname for u in chain] == ["127.0.0.1", "localhost", "127.0.0.1", "127.0.0.1"]
    (callback,) = _invocations(stack, names.RENEWAL_CALLBACK_PATH)
    assert FLOW_COOKIE in _sent_cookie_names(callback)
    assert "renewed" in page.title()
    assert stack.stored_token(WORK) is not None


@pytest.mark.parametrize(
    ("script", "title", "says"),
    [
        ({"consent_account": INTRUDER}, "refused", "Not this mailbox's account"),
        ({"consent_behavior": "deny"}, "denied", "Consent denied"),
    ],
    ids=["another-account", "denied"],
)
def test_a_refused_consent_ends_on_a_page_saying_so_and_stores_nothing(
    stack: Stack, page: Page, tmp_path: Path, script: dict[str, str], title: str, says: str
) -> None:
    for attribute, value in script.items():
        setattr(stack.google, attribute, value)
    navigation = Navigation(page)

    page.goto(stack.start_url(WORK), wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
    final_url, shown_title, text, content = page.url, page.title(), page.inner_text("body"), page.content()
    _screenshot(page, tmp_path / f"renewal-{title}.png")

    assert final_url == stack.page.base_url + "done", final_url
    assert navigation.committed == [final_url], navigation.committed
    assert shown_title.endswith(title), shown_title
    assert says in text and WORK in text and title in text.replace(says, ""), text
    assert WORK_ADDRESS not in text  # the configured address is never shown to whoever came
    if "consent_account" in script:
        assert INTRUDER in text, text
    _assert_no_secret_in(content, stack, navigation)
    stack.nothing_written()
    assert FLOW_COOKIE not in _page_cookies(page, stack)
