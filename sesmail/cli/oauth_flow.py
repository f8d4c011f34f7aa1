"""Google's installed-app OAuth flow on a loopback server: consent in the browser, a refresh token back.

google-auth-oauthlib's ``InstalledAppFlow`` does the protocol: a random ``state`` (checked on
the way back: oauthlib raises ``MismatchingStateError``), PKCE with a 128-character
``code_verifier`` and its S256 ``code_challenge`` (``Flow.authorization_url`` generates both,
``Flow.fetch_token`` sends the verifier), and the code exchange at the client JSON's
``token_uri``, with ``access_type=offline`` and ``prompt=consent`` so Google issues a refresh
token every time.

The loopback server is ours rather than ``run_local_server``'s, for reasons found by testing
the real thing:

- rerunning within a minute must work (an operator retries right after a denied consent), but
  the library's server refuses ``SO_REUSEADDR``, so the previous run's connection in TIME_WAIT
  blocks the port; on POSIX, ``SO_REUSEADDR`` still lets no second listener share the port
  (``SO_REUSEPORT``, which would, stays off);
- it binds ``127.0.0.1`` only and the redirect URI names that address, so neither another
  interface nor a ``localhost`` that resolves to ``::1`` can receive the code;
- it keeps waiting, until a deadline, for the request that carries Google's answer, instead of
  taking whatever request arrives first (a favicon fetch, a port probe) and failing;
- every connection gets its own (daemon) thread with a short timeout: a real browser keeps idle
  sockets to the port (preconnects, the spare sockets Chromium opens after a page load), and a
  single-threaded server sat on each for its whole timeout before it read the callback;
- it prints nothing, ever: no request log (the callback's request line carries the authorization
  code) and no traceback for a connection that timed out or reset, which an operator reads as a
  crash on a run that succeeded;
- the callback is answered with a 303 to a code-free ``/done`` page on the same server, so the
  code stays in neither the tab's URL, its history, nor a ``Referer``; the page says what
  happened: received, consent denied, not our request (state mismatch), or an error from Google.
  It is rendered by :mod:`sesmail.renewal.pages`, so it looks like the phone renewal page and is served
  with the same security headers (``no-store``, ``no-referrer``, a CSP that allows only its
  style). The terminal still has the final word: the code exchange happens after the page is
  shown. The server stays up a few seconds after the answer so the browser can fetch that page
  even when the run ends at once (a denied consent).

The URL is always printed, and the browser opened through :mod:`webbrowser` (so ``BROWSER`` is
honoured) on a background thread: a browser command that blocks until it exits (a terminal
browser, or ``BROWSER`` without a trailing ``&``) cannot hold up the server that must answer it.
"""

from __future__ import annotations

import hmac
import http.server
import os
import socketserver
import sys
import threading
import time
import traceback
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google_auth_oauthlib.flow import InstalledAppFlow
from oauthlib.oauth2.rfc6749.errors import InsecureTransportError
from oauthlib.oauth2.rfc6749.utils import is_secure_transport

from sesmail import names
from sesmail.cli.errors import GOOGLE_PERMISSIONS_URL, RefreshFailed
from sesmail.renewal import pages
from sesmail.renewal.identity import IdentityClaims, IdTokenError
from sesmail.runtime.log import redact, register_secret

TOKEN_REQUEST_TIMEOUT_SECONDS = 30.0
#: How long one connection may take to send its request. Each connection has its own thread, so
#: this only bounds how long an idle socket keeps a thread; it never delays the callback.
CONNECTION_TIMEOUT_SECONDS = 5.0
#: After Google's answer, how long the server waits for the browser to fetch the outcome page.
OUTCOME_PAGE_GRACE_SECONDS = 5.0
#: How often the waiting thread wakes (so Ctrl-C is never held up) and the server checks for shutdown.
POLL_SECONDS = 0.1
#: The code-free page the callback redirects to.
OUTCOME_PATH = "/done"

#: What the outcome page can say, by the ``outcome`` value in its URL.
OUTCOME_RECEIVED = "received"
OUTCOME_DENIED = "denied"
OUTCOME_NOT_OURS = "not-ours"
OUTCOME_ERROR = "error"

Say = Callable[[str], None]


@dataclass(frozen=True)
class Grant:
    """What Google's token endpoint answered to the code exchange (secrets kept out of repr)."""

    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    #: Seconds until the refresh token dies, when Google says (apps in "Testing" status).
    refresh_token_expires_in: int | None
    #: The consenting account, from the answer's id token (None when Google sent none).
    identity: IdentityClaims | None = None


class InsecureClientUri(InsecureTransportError):  # type: ignore[misc]  # oauthlib ships no type hints
    """oauthlib's refusal of plain-http endpoints, naming the client JSON fields at fault (oauthlib does not)."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        super().__init__(description=f"{' and '.join(fields)} not https")
        self.fields = fields


def obtain_grant(
    client_json: Mapping[str, Any], *, port: int, open_browser: bool, say: Say, login_hint: str | None = None
) -> Grant:
    """Consent in the browser, then the code exchange; oauthlib's and socket errors propagate as they are.

    ``login_hint`` (the mailbox's Gmail address) preselects that account on Google's consent
    screen; the person may still pick another, which the id token then tells.
    """
    flow = InstalledAppFlow.from_client_config(dict(client_json), scopes=list(names.CONSENT_SCOPES))
    _require_https(flow.client_config)
    server = _LoopbackServer(port)
    try:
        flow.redirect_uri = server.redirect_uri
        hint = {"login_hint": login_hint} if login_hint else {}
        url, state = flow.authorization_url(access_type="offline", prompt="consent", **hint)
        server.start(state)
        _present(url, flow.redirect_uri, server.server_port, open_browser, say)
        answer = server.wait_for_answer()
        # oauthlib accepts only https URLs; the loopback hop is plain http by design (RFC 8252).
        flow.fetch_token(
            authorization_response=answer.replace("http://", "https://", 1), timeout=TOKEN_REQUEST_TIMEOUT_SECONDS
        )
    finally:
        server.stop()
    return _grant_from(dict(flow.oauth2session.token))


def _require_https(section: Mapping[str, Any]) -> None:
    """Refuse plain-http endpoints before the browser opens, naming them.

    oauthlib checks each URL only when it reaches it (``token_uri`` after the operator has
    consented) and its error does not say which one it refused.
    """
    insecure = tuple(key for key in ("auth_uri", "token_uri") if not is_secure_transport(str(section.get(key, ""))))
    if insecure:
        raise InsecureClientUri(insecure)


# --- the outcome page ----------------------------------------------------------------------------


_BACK = "Return to your terminal"
#: The outcome pages, in the renewal page's look (:mod:`sesmail.renewal.pages`); every text is plain and escaped.
_PAGES: dict[str, pages.Page] = {
    OUTCOME_RECEIVED: pages.Page(
        "ses-mail: renewal received",
        "Renewal received",
        (
            "ses-mail received Google's answer and is finishing the renewal of the Gmail token.",
            f"{_BACK} to see it complete; you can close this tab.",
        ),
        pages.TONE_GOOD,
    ),
    OUTCOME_DENIED: pages.Page(
        "ses-mail: consent denied",
        "Consent denied",
        (
            "Google says access was not allowed, so nothing was renewed.",
            f"{_BACK}, rerun the command and click Allow.",
        ),
        pages.TONE_BAD,
    ),
    OUTCOME_NOT_OURS: pages.Page(
        "ses-mail: not our request",
        "Not the request ses-mail is waiting for",
        (
            "This answer from Google does not belong to the request ses-mail sent (its state does not match: "
            "an old consent tab, or a link from someone else), so it was refused and nothing was renewed.",
            f"{_BACK}, close other consent tabs and rerun the command.",
        ),
        pages.TONE_BAD,
    ),
    OUTCOME_ERROR: pages.Page(
        "ses-mail: Google reported an error",
        "Google reported an error",
        (
            "Google answered with an error instead of a grant ({detail}), so nothing was renewed.",
            f"{_BACK}: it says what to do.",
        ),
        pages.TONE_BAD,
    ),
}
#: On every response, the renewal page's security headers (nothing cached, no ``Referer``, nothing
#: loads but the hashed inline style, no framing), and one request per connection.
_COMMON_HEADERS: tuple[tuple[str, str], ...] = (*pages.SECURITY_HEADERS.items(), ("Connection", "close"))
_NOT_OURS_BODY = b"Not the OAuth callback of ses-mail.\n"
_DETAIL_LIMIT = 300


def _render(outcome: str, detail: str) -> bytes:
    """The outcome page as small, valid HTML; Google's error text is escaped like everything else."""
    page = _PAGES[outcome]
    paragraphs = tuple(text.replace("{detail}", detail) for text in page.paragraphs)
    return pages.render(replace(page, paragraphs=paragraphs)).encode()


def _classify(query: Mapping[str, list[str]], expected_state: str) -> tuple[str, str]:
    """(outcome, detail) of Google's answer, in oauthlib's order: the state first, then an error."""
    state = query.get("state", [""])[0]
    if not hmac.compare_digest(state.encode(), expected_state.encode()):
        return OUTCOME_NOT_OURS, ""
    if "error" in query:
        error = query["error"][0]
        if error == "access_denied":
            return OUTCOME_DENIED, ""
        description = query.get("error_description", [""])[0]
        detail = f"{error}: {description}" if description else error
        return OUTCOME_ERROR, detail if len(detail) <= _DETAIL_LIMIT else detail[: _DETAIL_LIMIT - 1] + "…"
    return OUTCOME_RECEIVED, ""


# --- the loopback server -------------------------------------------------------------------------


class _Callback:
    """Keeps the first request that carries Google's answer; shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.expected_state: str | None = None
        self.answer: str | None = None
        self.outcome: tuple[str, str] | None = None
        self.answered_at: float | None = None
        self.answered = threading.Event()
        self.page_served = threading.Event()

    def take(self, url: str, query: Mapping[str, list[str]]) -> str | None:
        """Record ``url`` as the answer unless one was already taken; returns the outcome to show."""
        with self._lock:
            if self.answer is not None or self.expected_state is None:
                return None
            self.answer = url
            self.outcome = _classify(query, self.expected_state)
            self.answered_at = time.monotonic()
        self.answered.set()
        return self.outcome[0]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the callback, the outcome page, and a 404 for anything else; logs nothing."""

    server: _LoopbackServer
    #: An idle or half-sent connection is dropped after this; it holds only its own thread meanwhile.
    timeout = CONNECTION_TIMEOUT_SECONDS
    server_version = "ses-mail"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        target = urlsplit(self.path)
        query = parse_qs(target.query)
        callback = self.server.callback
        if target.path == OUTCOME_PATH and callback.outcome is not None:
            outcome, detail = callback.outcome
            self._send(200, _render(outcome, detail), pages.HTML_CONTENT_TYPE, send_body=send_body)
            if send_body:
                callback.page_served.set()
            return
        # Only a GET is the browser following Google's redirect; a HEAD (a link checker) takes nothing.
        if send_body and target.path == "/" and ("code" in query or "error" in query):
            outcome_name = callback.take(f"{self.server.redirect_uri}?{target.query}", query)
            if outcome_name is not None:
                location = f"{OUTCOME_PATH}?outcome={outcome_name}"
                self._send(303, b"", "text/plain; charset=utf-8", send_body=send_body, location=location)
                return
        self._send(404, _NOT_OURS_BODY, "text/plain; charset=utf-8", send_body=send_body)

    def _send(self, status: int, body: bytes, content_type: str, *, send_body: bool, location: str = "") -> None:
        self.send_response(status)
        for name, value in _COMMON_HEADERS:
            self.send_header(name, value)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """The request line holds the authorization code: never write it anywhere."""


class _LoopbackServer(http.server.ThreadingHTTPServer):
    """A thread per connection on 127.0.0.1 only; see the module docstring for why each setting."""

    #: On Windows ``SO_REUSEADDR`` would let another process share the port.
    allow_reuse_address = os.name != "nt"
    allow_reuse_port = False
    daemon_threads = True
    #: Closing must not wait for a thread still stuck on an idle browser socket.
    block_on_close = False

    def __init__(self, port: int) -> None:
        self.callback = _Callback()
        self._thread: threading.Thread | None = None
        super().__init__((names.OAUTH_LOOPBACK_HOST, port), _Handler)

    def server_bind(self) -> None:
        """HTTPServer's own looks the address up in DNS (``getfqdn``), which can hang; the name is known."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = names.OAUTH_LOOPBACK_HOST
        self.server_port = int(self.server_address[1])

    @property
    def redirect_uri(self) -> str:
        return f"http://{names.OAUTH_LOOPBACK_HOST}:{self.server_port}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: a connection that timed out or reset concerns only itself (see the module docstring).

        With ``SESMAIL_DEBUG`` set, anything but a network error is shown (secrets masked), so a bug
        in the handler, which would otherwise just leave the CLI waiting, can still be found.
        """
        error = sys.exc_info()[1]
        if os.environ.get(names.ENV_VAR_DEBUG) and not isinstance(error, OSError):
            print(redact(traceback.format_exc()), file=sys.stderr)

    def start(self, expected_state: str) -> None:
        """Serve in the background; answers are accepted only once the state they must carry is known."""
        self.callback.expected_state = expected_state
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, name="oauth-loopback", daemon=True
        )
        self._thread.start()

    def wait_for_answer(self) -> str:
        """The callback URL once Google's answer arrives; fails at the consent deadline."""
        deadline = time.monotonic() + names.OAUTH_CONSENT_TIMEOUT_SECONDS
        while not self.callback.answered.wait(timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                minutes = names.OAUTH_CONSENT_TIMEOUT_SECONDS // 60
                raise RefreshFailed(
                    f"Google did not redirect back to this computer within {minutes} minutes; rerun and finish the "
                    "consent in the browser (with --no-browser, open the printed URL on this computer)"
                )
        assert self.callback.answer is not None
        return self.callback.answer

    def stop(self) -> None:
        """Give the browser its outcome page (briefly), then stop serving and release the port."""
        answered_at = self.callback.answered_at
        if answered_at is not None:
            grace = answered_at + OUTCOME_PAGE_GRACE_SECONDS - time.monotonic()
            self.callback.page_served.wait(timeout=max(0.0, grace))
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()


# --- the rest of the flow ------------------------------------------------------------------------


def _grant_from(token: Mapping[str, Any]) -> Grant:
    """Keep what the CLI needs; mask both tokens before anything could print them."""
    register_secret(str(token.get("access_token") or ""))
    refresh_token = token.get("refresh_token")
    if not refresh_token:
        raise RefreshFailed(
            "Google returned no refresh token (it sends one only with a fresh consent); revoke the app's access at "
            f"{GOOGLE_PERMISSIONS_URL} and rerun"
        )
    register_secret(str(refresh_token))
    scope = token.get("scope") or list(names.CONSENT_SCOPES)
    scopes = tuple(scope.split() if isinstance(scope, str) else (str(s) for s in scope))
    expires_in = token.get("refresh_token_expires_in")
    return Grant(str(refresh_token), scopes, None if expires_in is None else int(expires_in), _identity(token))


def _identity(token: Mapping[str, Any]) -> IdentityClaims | None:
    """The id token's claims; None without one, or with one that is not a readable JWT (then unchecked)."""
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        return None
    try:
        return IdentityClaims.from_id_token(id_token)
    except IdTokenError:
        return None


def _present(url: str, redirect_uri: str, port: int, open_browser: bool, say: Say) -> None:
    """Print the consent URL and, unless told not to, open it in the browser."""
    if open_browser:
        say("Opening Google's consent page in your browser; if it does not open, visit:")
    else:
        say("Open this URL in a browser on this computer and allow access:")
    say(f"  {url}")
    if not open_browser:
        say(f"  (over SSH, forward the port first: ssh -L {port}:{names.OAUTH_LOOPBACK_HOST}:{port} HOST)")
    minutes = names.OAUTH_CONSENT_TIMEOUT_SECONDS // 60
    say(f"Waiting up to {minutes} minutes for Google to redirect to {redirect_uri} ...")
    if open_browser:
        threading.Thread(target=_open_browser, args=(url, say), name="open-browser", daemon=True).start()


def _open_browser(url: str, say: Say) -> None:
    try:
        opened = webbrowser.open(url, new=1, autoraise=True)
    except Exception:
        opened = False
    if not opened:
        say("Could not start a browser: open the URL above yourself (or set BROWSER).")
