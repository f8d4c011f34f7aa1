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
  blocks the port; on POSIX, ``SO_REUSEADDR`` still lets no second listener share the port;
- it binds ``127.0.0.1`` only and the redirect URI names that address, so neither another
  interface nor a ``localhost`` that resolves to ``::1`` can receive the code;
- it keeps waiting, until a deadline, for the request that carries Google's answer, instead of
  taking whatever request arrives first (a favicon fetch, a port probe) and failing;
- it logs nothing: the callback's request line carries the authorization code.

The URL is always printed, and the browser opened through :mod:`webbrowser` (so ``BROWSER`` is
honoured) on a background thread: a browser command that blocks until it exits (a terminal
browser, or ``BROWSER`` without a trailing ``&``) cannot hold up the server that must answer it.
"""

from __future__ import annotations

import os
import threading
import time
import webbrowser
import wsgiref.simple_server
import wsgiref.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from google_auth_oauthlib.flow import InstalledAppFlow

from sesmail import names
from sesmail.log import register_secret
from sesmail.refresh_errors import GOOGLE_PERMISSIONS_URL, RefreshFailed

TOKEN_REQUEST_TIMEOUT_SECONDS = 30.0
#: Shown in the browser tab once Google redirected back; the terminal has the actual outcome.
BROWSER_DONE_MESSAGE = "ses-mail received Google's answer. You can close this tab and return to your terminal."

Say = Callable[[str], None]
_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Grant:
    """What Google's token endpoint answered to the code exchange (secrets kept out of repr)."""

    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    #: Seconds until the refresh token dies, when Google says (apps in "Testing" status).
    refresh_token_expires_in: int | None


def obtain_grant(client_json: Mapping[str, Any], *, port: int, open_browser: bool, say: Say) -> Grant:
    """Consent in the browser, then the code exchange; oauthlib's and socket errors propagate as they are."""
    flow = InstalledAppFlow.from_client_config(dict(client_json), scopes=[names.GMAIL_SCOPE])
    callback = _Callback()
    server = wsgiref.simple_server.make_server(
        names.OAUTH_LOOPBACK_HOST, port, callback, server_class=_LoopbackServer, handler_class=_SilentHandler
    )
    try:
        flow.redirect_uri = f"http://{names.OAUTH_LOOPBACK_HOST}:{server.server_port}/"
        url, _ = flow.authorization_url(access_type="offline", prompt="consent")
        _present(url, flow.redirect_uri, server.server_port, open_browser, say)
        answer = _wait_for_answer(server, callback)
        # oauthlib accepts only https URLs; the loopback hop is plain http by design (RFC 8252).
        flow.fetch_token(
            authorization_response=answer.replace("http://", "https://", 1), timeout=TOKEN_REQUEST_TIMEOUT_SECONDS
        )
    finally:
        server.server_close()
    return _grant_from(dict(flow.oauth2session.token))


class _LoopbackServer(wsgiref.simple_server.WSGIServer):
    """See the module docstring; on Windows ``SO_REUSEADDR`` would let another process share the port."""

    allow_reuse_address = os.name != "nt"


class _SilentHandler(wsgiref.simple_server.WSGIRequestHandler):
    #: A connection that never sends its request (a port probe) must not wedge the server.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """The request line holds the authorization code: never write it anywhere."""


class _Callback:
    """WSGI app: keeps the first request that carries Google's answer (a code or an error)."""

    def __init__(self) -> None:
        self.answer: str | None = None

    def __call__(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if self.answer is None and ("code" in query or "error" in query):
            self.answer = wsgiref.util.request_uri(environ)
            start_response("200 OK", headers)
            return [BROWSER_DONE_MESSAGE.encode()]
        start_response("404 Not Found", headers)
        return [b"Not the OAuth callback of ses-mail.\n"]


def _wait_for_answer(server: _LoopbackServer, callback: _Callback) -> str:
    """Serve requests until Google's answer arrives or the consent deadline passes."""
    deadline = time.monotonic() + names.OAUTH_CONSENT_TIMEOUT_SECONDS
    while callback.answer is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            minutes = names.OAUTH_CONSENT_TIMEOUT_SECONDS // 60
            raise RefreshFailed(
                f"Google did not redirect back to this computer within {minutes} minutes; rerun and finish the "
                "consent in the browser (with --no-browser, open the printed URL on this computer)"
            )
        server.timeout = remaining
        server.handle_request()
    return callback.answer


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
    scope = token.get("scope") or [names.GMAIL_SCOPE]
    scopes = tuple(scope.split() if isinstance(scope, str) else (str(s) for s in scope))
    expires_in = token.get("refresh_token_expires_in")
    return Grant(str(refresh_token), scopes, None if expires_in is None else int(expires_in))


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
