"""A fake of Google's OAuth 2.0 and Gmail upload endpoints, served over real HTTP on 127.0.0.1.

Why real HTTP instead of mocking the client: the forwarder ships its own keep-alive client on
``http.client`` and streams message bodies (chunked transfer encoding), and the refresh CLI
runs a browser redirect dance. Those wire details — framing, keep-alive, redirects, byte-exact
multipart bodies — are exactly what breaks in production, so the fake speaks HTTP and checks
requests as strictly as Google does.

Where the forwarder's requests could differ from a correct one, the import endpoint is at least as
strict as Gmail (DESIGN.md, "Proven against the real rules"): labels must exist in the mailbox
(system labels, user labels a test registered with :meth:`FakeGoogle.add_label`, or ones created
through the labels API), query parameters and metadata fields must be those of Gmail's discovery
document with values of the right type, the message may not exceed the document's ``maxSize``,
and every error has Google's JSON shape. ``users.labels.list`` and ``users.labels.create`` are as
strict: each method's own scopes, Gmail's rules for names, 409 for a name that exists in any case.
Each rule's source is cited where it is defined.

Two OAuth clients are registered, as in the project's console: the "installed" (desktop) client the
refresh CLI uses and the "Web application" client of the renewal page (:meth:`FakeGoogle.client_json`).
As at Google, a refresh token or an authorization code works only with the client that obtained it:
the other client gets 401 ``unauthorized_client`` (see :data:`WRONG_CLIENT`), each client's redirect
URIs follow its own rule, and an ID token's ``aud`` is the client that redeemed the code.

Several Google accounts share one fake, as several mailboxes share one deployment: a refresh token
belongs to the account that consented (:data:`DEFAULT_ACCOUNT` unless a test says otherwise), its
access tokens act on that account's mailbox, and each mailbox has its own messages, labels and
per-user quota. Single-mailbox tests never name an account and see the default one. The consent
endpoint signs ``consent_account`` in, whatever ``login_hint`` asked for, and with the ``openid``
scope the code exchange answers with an OpenID Connect ``id_token`` naming that account.

Standard library only, so it runs anywhere the tests run. All mutable state sits behind one
``threading.Lock``; the server handles each connection on its own thread.

Usage::

    with FakeGoogle() as google:
        token = google.issue_refresh_token()
        ...  # point token_uri / GMAIL_API_BASE_URL at google.token_uri / google.base_url
        assert google.messages[0].raw == raw_bytes
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import math
import re
import secrets
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO, Any, Final, NamedTuple, Protocol, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

GMAIL_INSERT_SCOPE: Final = "https://www.googleapis.com/auth/gmail.insert"
GMAIL_LABELS_SCOPE: Final = "https://www.googleapis.com/auth/gmail.labels"
USERINFO_EMAIL_SCOPE: Final = "https://www.googleapis.com/auth/userinfo.email"
USERINFO_PROFILE_SCOPE: Final = "https://www.googleapis.com/auth/userinfo.profile"
#: The account every grant, message and label belongs to unless a test names another.
DEFAULT_ACCOUNT: Final = "owner@gmail.com"
#: ``iss`` of Google's ID tokens (OpenID Connect reference, discovery document: "The modern value
#: is https://accounts.google.com").
ID_TOKEN_ISSUER: Final = "https://accounts.google.com"
ID_TOKEN_LIFETIME_SECONDS: Final = 3600  # Google's ID tokens expire an hour after ``iat``
IMPORT_PATH: Final = "/upload/gmail/v1/users/me/messages/import"
LABELS_PATH: Final = "/gmail/v1/users/me/labels"
TOKEN_PATH: Final = "/token"
AUTH_PATH: Final = "/o/oauth2/auth"

#: ``mediaUpload.maxSize`` of gmail.users.messages.import in Gmail's discovery document
#: (gmail.v1.json, as vendored in googleapis/google-api-python-client under
#: googleapiclient/discovery_cache/documents/): "52428800" bytes, i.e. 50 MiB, for the message
#: (media) part. The same document gives messages.send and drafts 36700160 (35 MiB).
MAX_MESSAGE_BYTES: Final = 52_428_800
IMPORT_QUOTA_UNITS: Final = 25  # users.messages.import cost in Gmail's per-user quota
#: users.labels.list and users.labels.create ("Usage limits", per-method quota usage).
LABELS_LIST_QUOTA_UNITS: Final = 1
LABELS_CREATE_QUOTA_UNITS: Final = 5
QUOTA_WINDOW_SECONDS: Final = 60.0
AUTH_CODE_LIFETIME_SECONDS: Final = 600.0

_CHUNK: Final = 1024 * 1024
_SPOOL_IN_MEMORY: Final = 1024 * 1024  # request bodies above this go to a temp file
_HEAD_BYTES: Final = 256 * 1024  # metadata part and part headers must fit in here

# Scopes that allow users.messages.import (Gmail API reference).
_IMPORT_SCOPES: Final = frozenset(
    {GMAIL_INSERT_SCOPE, "https://www.googleapis.com/auth/gmail.modify", "https://mail.google.com/"}
)
# "Authorization scopes" of users.labels.create, and of users.labels.list (which also takes the
# read-only ones) in the Gmail API reference. gmail.insert allows neither.
_LABELS_CREATE_SCOPES: Final = frozenset(
    {GMAIL_LABELS_SCOPE, "https://www.googleapis.com/auth/gmail.modify", "https://mail.google.com/"}
)
_LABELS_LIST_SCOPES: Final = _LABELS_CREATE_SCOPES | {
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.metadata",
}
# What the consent endpoint knows: Gmail's scopes ("Choose Gmail API scopes") and sign-in's own.
# Anything else is Google's error page "Error 400: invalid_scope".
_KNOWN_SCOPES: Final = frozenset(
    {
        "https://mail.google.com/",
        *(
            f"https://www.googleapis.com/auth/gmail.{name}"
            for name in (
                "insert",
                "labels",
                "modify",
                "readonly",
                "metadata",
                "compose",
                "send",
                "settings.basic",
                "settings.sharing",
                "addons.current.action.compose",
                "addons.current.message.action",
                "addons.current.message.metadata",
                "addons.current.message.readonly",
            )
        ),
        "openid",
        "email",
        "profile",
        USERINFO_EMAIL_SCOPE,
        USERINFO_PROFILE_SCOPE,
    }
)
# Sign-in's short scope names and the scopes Google grants for them. Asking for ``email`` or
# ``profile`` grants ``openid`` too: google-api-python-client PR #1088 quotes oauthlib's warning
# 'Scope has changed from "email profile" to "https://www.googleapis.com/auth/userinfo.email openid
# https://www.googleapis.com/auth/userinfo.profile"', and PrefectHQ/fastmcp issue #2314 shows
# ["openid", "email"] coming back as ["openid", "https://www.googleapis.com/auth/userinfo.email"].
# The token endpoint's ``scope`` names only the long forms; the consent redirect's ``scope`` keeps
# the names asked for and adds the long forms and ``openid`` (redirects quoted in public code, e.g.
# "scope=email%20profile%20https://www.googleapis.com/auth/userinfo.profile%20https://www.googleapis.com/
# auth/userinfo.email%20openid&authuser=0&prompt=consent").
_SIGN_IN_SCOPES: Final = {"email": USERINFO_EMAIL_SCOPE, "profile": USERINFO_PROFILE_SCOPE}
_IDENTITY_SCOPES: Final = frozenset({"openid", *_SIGN_IN_SCOPES, *_SIGN_IN_SCOPES.values()})
#: Label ids every mailbox has (Gmail API guide "Manage labels", system labels). CHAT is left out:
#: Gmail answers an import carrying it with 400 "Invalid label: CHAT" (seen in
#: GAM-team/got-your-back issue #135), so it is not a label an import may set.
SYSTEM_LABELS: Final = frozenset(
    {
        "INBOX",
        "SPAM",
        "TRASH",
        "UNREAD",
        "STARRED",
        "IMPORTANT",
        "SENT",
        "DRAFT",
        "CATEGORY_PERSONAL",
        "CATEGORY_SOCIAL",
        "CATEGORY_PROMOTIONS",
        "CATEGORY_UPDATES",
        "CATEGORY_FORUMS",
    }
)
#: What users.labels.list shows besides SYSTEM_LABELS: CHAT is a system label an import may not set.
LISTED_SYSTEM_LABELS: Final = SYSTEM_LABELS | {"CHAT"}
#: Top-level names users.labels.create refuses with 400 "Invalid label name", compared without case:
#: every system label's ("Manage labels" guide: "System label names are reserved; no USER label can
#: be created with the same name as any SYSTEM label") and those Gmail clients found reserved
#: (GAM-team/got-your-back gyb.py ``reserved_labels``; its issues #264, #316, #350 for Muted).
RESERVED_LABEL_NAMES: Final = frozenset(
    {label.casefold() for label in LISTED_SYSTEM_LABELS}
    | {"chats", "drafts", "bin", "allmail", "archived", "migrated", "todo", "todos", "buzz", "muted", "voicemail"}
)
#: Google documents no maximum; public Gmail clients report 225 characters, so the fake refuses more.
MAX_LABEL_NAME_CHARS: Final = 225
#: users.labels.create's 409 (seen live: gauteh/lieer issues #29 and #207, also for a case-only
#: difference, with ``errors[0]`` ``{"domain": "global", "reason": "aborted"}``).
LABEL_EXISTS: Final = "Label name exists or conflicts"
#: users.labels.create's 400 for a reserved or malformed name (got-your-back issues #188, #350, #442).
INVALID_LABEL_NAME: Final = "Invalid label name"
_LABEL_VISIBILITY: Final = {
    "labelListVisibility": frozenset({"labelShow", "labelShowIfUnread", "labelHide"}),
    "messageListVisibility": frozenset({"show", "hide"}),
}
_GOOGLE_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# (domain, reason) of ``errors[0]`` when a caller names none: the reasons of Google's global error
# list ("Standard error responses", developers.google.com; e.g. cloud.google.com/resource-manager/
# docs/core_errors), and Gmail's per-user quota reason for 429.
_DEFAULT_REASONS: Final = {
    400: ("global", "badRequest"),
    401: ("global", "authError"),
    403: ("global", "forbidden"),
    404: ("global", "notFound"),
    409: ("global", "conflict"),
    413: ("global", "uploadTooLarge"),
    429: ("usageLimits", "rateLimitExceeded"),
    501: ("global", "notImplemented"),
}
_TOKEN_ERRORS: Final = {
    400: ("invalid_grant", "Token has been expired or revoked."),
    401: ("invalid_client", "The OAuth client was not found."),
    429: ("rate_limit_exceeded", "Rate limit exceeded."),
}
#: The token endpoint's answer when a valid client presents a refresh token or an authorization code
#: another client obtained: ``{"error": "unauthorized_client", "error_description": "Unauthorized"}``
#: with HTTP 401. Refresh: prasmussen/gdrive issue #375 ("401 Unauthorized", ``unauthorized_client``,
#: fixed by using the client that owned the token), taylorwilsdon/google_workspace_mcp PR #933 ("refresh
#: failed (401): unauthorized_client", a client mismatch), diegosouzapw/OmniRoute PR #12106 ("Google
#: answers 401 unauthorized_client"), with the body quoted in googleapis/google-api-dotnet-client issue
#: #2802 and baptisteArno/typebot.io issue #580. Code: a code obtained by one client of a project and
#: redeemed by another earns ``unauthorized_client`` (EddyVerbruggen/cordova-plugin-googleplus issue
#: #551, capacitor-community/generic-oauth2 issue #13) with "401 Client Error: Unauthorized"
#: (st4lk/django-rest-social-auth issue #103). RFC 6749 would say ``invalid_grant`` ("issued to
#: another client"); Google does not.
WRONG_CLIENT: Final = (401, "unauthorized_client", "Unauthorized")
_JSON: Final = "application/json; charset=UTF-8"
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class ImportedMessage:
    """One successful ``users.messages.import``, as the test wants to assert on it."""

    id: str
    thread_id: str
    raw: bytes | None  # None when the fake was built with store_bodies=False
    size: int
    sha256: str
    label_ids: list[str]
    params: dict[str, str]  # query string of the import request
    access_token: str
    account: str = DEFAULT_ACCOUNT  # whose mailbox: the account of the access token's grant


@dataclass(frozen=True)
class LabelCall:
    """One users.labels request: ``list`` or ``create`` (with the name asked for), and the status answered.

    ``account`` is the account of the bearer token presented (live or not), None when the request
    carried no token the fake ever minted.
    """

    method: str
    name: str | None
    status: int
    account: str | None = DEFAULT_ACCOUNT


# --- internal records ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    """An HTTP response decided by the fake; the handler only writes it."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    disconnect: bool = False

    @classmethod
    def json(cls, status: int, payload: object, headers: dict[str, str] | None = None) -> _Reply:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": _JSON, **(headers or {})})

    @classmethod
    def html(cls, status: int, text: str) -> _Reply:
        return cls(status, text.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def with_headers(self, headers: dict[str, str]) -> _Reply:
        return _Reply(self.status, self.body, {**self.headers, **headers}, self.delay, self.disconnect)


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: IO[bytes]
    body_size: int


@dataclass
class _Grant:
    """What one refresh token stands for; access tokens die with it."""

    scope: str
    revoked: bool = False
    account: str = DEFAULT_ACCOUNT
    client_id: str = ""  # the OAuth client that obtained it: the only one that may present it


@dataclass(frozen=True)
class _AccessToken:
    refresh_token: str
    scope: str
    expires_at: float
    account: str = DEFAULT_ACCOUNT


@dataclass(frozen=True)
class _AuthCode:
    redirect_uri: str
    scope: str  # as the token endpoint names it (see _token_scope)
    code_challenge: str | None
    code_challenge_method: str
    issued_at: float
    account: str  # who signed in at the consent screen
    nonce: str | None  # the consent request's, for the ID token
    client_id: str = ""  # the client whose consent request it answers: the only one that may redeem it


@dataclass(frozen=True)
class _ParsedImport:
    label_ids: list[str]
    raw: bytes | None
    size: int
    sha256: str


class _ApiError(Exception):
    """A Gmail API error in Google's JSON shape, raised from deep inside request parsing."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: str | None = None,
        *,
        domain: str | None = "global",
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.domain = domain
        self.details = details

    def reply(self) -> _Reply:
        return _google_error(self.status, self.message, self.reason, domain=self.domain, details=self.details)


class _FakeGap(Exception):
    """A request Google would serve but this fake does not implement: a 501, never a silent pass."""


def _google_error(status: int, message: str, reason: str | None = None, **shape: Any) -> _Reply:
    """Google APIs' error envelope as a reply: the one shape every Gmail error of this fake has."""
    return _Reply.json(status, error_body(status, message, reason, **shape))


def error_body(
    status: int,
    message: str,
    reason: str | None = None,
    *,
    domain: str | None = "global",
    item: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Google APIs' error envelope; also what tests script with :meth:`FakeGoogle.fail_gmail`.

    ``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}``,
    plus ``details`` where Google sends them. Without a ``reason`` the status's usual one is used;
    ``domain=None`` leaves the domain out (Google's proto-parse errors have none); ``item``
    overrides fields of ``errors[0]`` (its own message, ``location`` ...).
    """
    if reason is None:
        domain, reason = _DEFAULT_REASONS.get(status, ("global", "badRequest" if status < 500 else "backendError"))
    entry = {"message": message, "domain": domain, "reason": reason, **(item or {})}
    error: dict[str, object] = {
        "code": status,
        "message": message,
        "errors": [{key: value for key, value in entry.items() if value is not None}],
        "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _parse_failure(message: str, field_path: str) -> _ApiError:
    """A request Google's front end could not bind to the method's proto request.

    The shape real Google APIs send for "Invalid JSON payload received ..." and "Invalid value
    at ..." (e.g. the live response quoted in danny-avila/LibreChat issue #11761): reason
    ``invalid`` without a domain, and a ``google.rpc.BadRequest`` field violation.
    """
    violation = {"field": field_path, "description": message}
    details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}]
    return _ApiError(400, message, "invalid", domain=None, details=details)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _injected_reply(
    status: int,
    body: dict[str, Any] | str | bytes | None,
    headers: dict[str, str] | None,
    default: _Reply,
    delay: float,
    disconnect: bool,
) -> _Reply:
    """Build a scripted response; a str/bytes body is sent verbatim (e.g. a proxy's HTML 502)."""
    if body is None:
        reply = default
    elif isinstance(body, dict):
        reply = _Reply.json(status, body)
    else:
        raw = body.encode() if isinstance(body, str) else body
        reply = _Reply(status, raw, {"Content-Type": "text/html; charset=utf-8"})
    return _Reply(status, reply.body, {**reply.headers, **(headers or {})}, delay, disconnect)


# --- the fake --------------------------------------------------------------------------------


class FakeGoogle:
    """Google's token and consent endpoints, Gmail's import and labels endpoints, with scriptable failures.

    Configuration attributes (``quota_units_per_minute``, ``consent_behavior``, ``consent_account``,
    ``return_refresh_token``, ``refresh_token_expires_in``, ``access_token_lifetime``,
    ``granted_scopes``, ``unverified_accounts``, ``web_redirect_uris``) may be set at any time;
    recorded state is exposed as copies taken under the lock.

    Two OAuth clients: the installed one (``client_id``, ``client_secret``) and the web one
    (``web_client_id``, ``web_client_secret``), each in its own :meth:`client_json`. Grants and codes
    remember the client that obtained them; the other client presenting one gets :data:`WRONG_CLIENT`.
    """

    def __init__(self, *, access_token_lifetime: int = 3599, store_bodies: bool = True) -> None:
        self.access_token_lifetime = access_token_lifetime
        self.store_bodies = store_bodies
        #: Gmail's per-user quota: each account has its own window of this many units a minute.
        self.quota_units_per_minute: int | None = None
        self.consent_behavior: str = "approve"
        #: The account that signs in at the consent screen. ``login_hint`` only preselects an account
        #: in Google's chooser ("Using OAuth 2.0 for Web Server Applications" and "... for iOS &
        #: Desktop Apps": the server "uses the hint to simplify the login flow"); the user may pick
        #: another, so the fake ignores the hint and this account consents.
        self.consent_account: str = DEFAULT_ACCOUNT
        #: Accounts whose ID tokens say ``"email_verified": false``.
        self.unverified_accounts: set[str] = set()
        #: Redirect URIs registered for the web client: exact matches, any scheme and host (Google
        #: compares a web client's redirect_uri with the registered ones exactly, port included;
        #: anything else is "Error 400: redirect_uri_mismatch"). Only the installed client takes any
        #: loopback URI.
        self.web_redirect_uris: set[str] = {"http://localhost:8080/"}
        self.return_refresh_token: bool = True
        self.refresh_token_expires_in: int | None = None
        #: Google's granular consent: the requested scopes the user left ticked (None: all of them).
        self.granted_scopes: frozenset[str] | None = None
        #: The installed ("Desktop app") client, as the refresh CLI's JSON names it.
        self.client_id = _new_client_id()
        self.client_secret = _new_client_secret()
        #: The renewal page's "Web application" client: another client of the same project.
        self.web_client_id = _new_client_id()
        self.web_client_secret = _new_client_secret()
        # Signs ID tokens with HS256. Google signs with RS256 keys published at its jwks_uri; nothing
        # here checks that signature, since an ID token read straight from the token endpoint's
        # TLS response needs none (OpenID Connect Core 3.1.3.7: "the TLS server validation MAY be
        # used to validate the issuer in place of checking the token signature").
        self._id_token_key = secrets.token_bytes(32)

        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._codes: dict[str, _AuthCode] = {}
        self._token_failures: deque[_Reply] = deque()
        self._gmail_failures: deque[_Reply] = deque()
        self._quota_logs: dict[str, deque[tuple[float, int]]] = {}  # account -> (time, units)
        self._clock_offset = 0.0
        self._token_requests: list[dict[str, str]] = []
        self._consent_requests: list[dict[str, str]] = []
        self._messages: list[ImportedMessage] = []
        # account -> {id: name}, in creation order. Ids are numbered across accounts, so one
        # mailbox's label id is never valid in another's (stricter than Gmail, where ids may repeat).
        self._user_labels: dict[str, dict[str, str]] = {}
        self._label_visibility: dict[str, dict[str, str]] = {}  # id -> what labels.create was given
        self._last_label_number = 0
        self._label_calls: list[LabelCall] = []
        self._labels_failures: deque[_Reply] = deque()
        self._label_create_barrier: threading.Barrier | None = None
        self._import_requests = 0
        self._import_hold: tuple[threading.Event, float] | None = None
        self._internal_errors: list[str] = []

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._stopping = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeGoogle:
        """Bind an ephemeral port on 127.0.0.1 (never a public interface) and serve in a thread."""
        if self._server is not None:
            raise RuntimeError("FakeGoogle is already running")
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), self)
        self._server = server
        self._base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-google", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; also wakes handlers sleeping in an injected delay. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeGoogle:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeGoogle has not been started")
        return self._base_url

    @property
    def token_uri(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def auth_uri(self) -> str:
        return self.base_url + AUTH_PATH

    def client_json(self, kind: str = "installed") -> dict[str, Any]:
        """The OAuth client file as Google's console downloads it, pointing at this fake."""
        if kind not in ("installed", "web"):
            raise ValueError(f"kind must be 'installed' or 'web', not {kind!r}")
        redirect_uris = ["http://localhost"] if kind == "installed" else sorted(self.web_redirect_uris)
        client_id, client_secret = self._credentials_of(kind)
        return {
            kind: {
                "client_id": client_id,
                "project_id": "ses-mail-fake",
                "auth_uri": self.auth_uri,
                "token_uri": self.token_uri,
                "auth_provider_x509_cert_url": self.base_url + "/oauth2/v1/certs",
                "client_secret": client_secret,
                "redirect_uris": redirect_uris,
            }
        }

    def _credentials_of(self, kind: str) -> tuple[str, str]:
        """(client id, client secret) of the ``installed`` or ``web`` client."""
        if kind == "installed":
            return self.client_id, self.client_secret
        if kind == "web":
            return self.web_client_id, self.web_client_secret
        raise ValueError(f"kind must be 'installed' or 'web', not {kind!r}")

    def _client_kind(self, client_id: str | None) -> str | None:
        """``installed`` or ``web`` for a registered client id, None for any other."""
        if client_id == self.client_id:
            return "installed"
        if client_id == self.web_client_id:
            return "web"
        return None

    # -- test controls -----------------------------------------------------------------------

    def issue_refresh_token(
        self, scope: str = GMAIL_INSERT_SCOPE, account: str = DEFAULT_ACCOUNT, *, client: str = "installed"
    ) -> str:
        """A new valid refresh token, as if ``account`` had just consented to ``scope`` through ``client``.

        ``client`` is ``installed`` (the CLI's) or ``web`` (the renewal page's): only that client may mint with it.
        """
        client_id, _ = self._credentials_of(client)
        with self._lock:
            return self._new_grant(_token_scope(scope.split()), account, client_id)

    def revoke(self, refresh_token: str) -> None:
        """Kill a refresh token and every access token minted from it (also unknown tokens)."""
        with self._lock:
            self._grants.setdefault(refresh_token, _Grant(GMAIL_INSERT_SCOPE)).revoked = True

    def expire_access_tokens(self) -> None:
        """Make every access token minted so far expired, without touching the clock."""
        with self._lock:
            now = self._now()
            self._access_tokens = {
                value: replace(t, expires_at=min(t.expires_at, now)) for value, t in self._access_tokens.items()
            }

    def advance_time(self, seconds: float) -> None:
        """Move the fake's clock (token expiry, quota window, code lifetime) without sleeping."""
        with self._lock:
            self._clock_offset += seconds

    def add_label(self, name: str, account: str = DEFAULT_ACCOUNT) -> str:
        """Create a user label in ``account``'s mailbox, as the Gmail UI would; returns its id.

        Ids are ``Label_1``, ``Label_2`` ... numbered across all accounts. Imports may only carry
        system labels and labels of their own mailbox: Gmail answers any other id with
        400 "Invalid label: <id>".
        """
        if not name.strip():
            raise ValueError("a label needs a name")
        with self._lock:
            if self._label_named(name, account) is not None:
                raise ValueError(f"{LABEL_EXISTS}: {name}")  # Gmail refuses it with 409
            return self._new_label(name, account)

    def delete_label(self, name: str, account: str = DEFAULT_ACCOUNT) -> None:
        """Delete a user label, as the Gmail UI would: imports carrying its id are refused from now on."""
        with self._lock:
            label_id = self._label_named(name, account)
            if label_id is None:
                raise ValueError(f"no label named {name!r} in {account}")
            del self._user_labels[account][label_id]
            self._label_visibility.pop(label_id, None)

    def fail_token(
        self,
        status: int,
        body: dict[str, Any] | str | bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        *,
        delay: float = 0.0,
        disconnect: bool = False,
    ) -> None:
        """Script the next ``times`` POST /token responses (before any validation)."""
        error, description = _TOKEN_ERRORS.get(status, ("internal_failure", "Backend Error"))
        default = _Reply.json(status, {"error": error, "error_description": description})
        reply = _injected_reply(status, body, headers, default, delay, disconnect)
        with self._lock:
            self._token_failures.extend([reply] * times)

    def fail_gmail(
        self,
        status: int,
        body: dict[str, Any] | str | bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        *,
        delay: float = 0.0,
        disconnect: bool = False,
    ) -> None:
        """Script the next ``times`` import responses (after the body is read, before auth).

        ``delay`` holds the response back (for client timeouts); ``disconnect`` closes the
        connection without any response (for connection-error handling).
        """
        reply = _injected_reply(status, body, headers, _google_error(status, _phrase(status)), delay, disconnect)
        with self._lock:
            self._gmail_failures.extend([reply] * times)

    def fail_labels(
        self,
        status: int,
        body: dict[str, Any] | str | bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        *,
        delay: float = 0.0,
        disconnect: bool = False,
    ) -> None:
        """Script the next ``times`` users.labels responses (list or create; after the body is read, before auth)."""
        reply = _injected_reply(status, body, headers, _google_error(status, _phrase(status)), delay, disconnect)
        with self._lock:
            self._labels_failures.extend([reply] * times)

    def hold_label_creates(self, parties: int, timeout: float = 10.0) -> None:
        """Hold each users.labels.create until ``parties`` creates are in flight, then answer them all.

        For races: two deliveries that both listed the labels before either created the missing
        one. Which create wins is up to the threads, as in Gmail; the other gets the 409.
        """
        with self._lock:
            self._label_create_barrier = threading.Barrier(parties, timeout=timeout)

    def hold_imports(self, until: threading.Event, timeout: float = 10.0) -> None:
        """Make every later import wait until ``until`` is set (at most ``timeout`` seconds).

        For races that must happen however loaded the machine is: the test sets the event when
        the rival has done what it should do meanwhile (e.g. found the claim held).
        """
        with self._lock:
            self._import_hold = (until, timeout)

    # -- recorded state (copies) -------------------------------------------------------------

    @property
    def token_requests(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(form) for form in self._token_requests]

    @property
    def consent_requests(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(query) for query in self._consent_requests]

    @property
    def messages(self) -> list[ImportedMessage]:
        """Every message imported so far, into any account's mailbox, in import order."""
        with self._lock:
            return list(self._messages)

    def messages_for(self, account: str) -> list[ImportedMessage]:
        """The messages imported into ``account``'s mailbox, in import order."""
        with self._lock:
            return [message for message in self._messages if message.account == account]

    @property
    def labels(self) -> list[dict[str, str]]:
        """The default account's labels as ``users.labels.list`` describes them: system, then user ones.

        Single-mailbox tests have only that mailbox; :meth:`labels_for` reads another's.
        """
        with self._lock:
            return self._label_list(DEFAULT_ACCOUNT)

    def labels_for(self, account: str) -> list[dict[str, str]]:
        """``account``'s labels as ``users.labels.list`` describes them: system ones, then user ones."""
        with self._lock:
            return self._label_list(account)

    @property
    def label_calls(self) -> list[LabelCall]:
        """Every users.labels request answered so far, for any account, oldest first."""
        with self._lock:
            return list(self._label_calls)

    def label_calls_for(self, account: str) -> list[LabelCall]:
        """The users.labels requests made with ``account``'s tokens, oldest first."""
        with self._lock:
            return [call for call in self._label_calls if call.account == account]

    def account_sub(self, account: str) -> str:
        """The ``sub`` of ``account``'s ID tokens: a stable numeric string, as Google's are."""
        return _account_sub(account)

    def decode_id_token(self, id_token: str) -> dict[str, Any]:
        """The payload of an ID token this fake issued; ValueError if it is malformed or not the fake's.

        For assertions only: checks the header, the HS256 signature and nothing else (not ``exp``).
        """
        parts = id_token.split(".")
        if len(parts) != 3:
            raise ValueError("an ID token has three dot-separated parts")
        header, payload, signature = parts
        expected = _b64url(hmac.new(self._id_token_key, f"{header}.{payload}".encode("ascii"), "sha256").digest())
        if not hmac.compare_digest(signature, expected):
            raise ValueError("not signed by this fake")
        if json.loads(_b64url_decode(header)) != _ID_TOKEN_HEADER:
            raise ValueError("unexpected JOSE header")
        claims: dict[str, Any] = json.loads(_b64url_decode(payload))
        return claims

    @property
    def import_requests(self) -> int:
        with self._lock:
            return self._import_requests

    def issued_access_tokens(self) -> list[str]:
        """Every access token minted so far (live or not), oldest first: for no-secret-in-logs checks."""
        with self._lock:
            return list(self._access_tokens)

    @property
    def internal_errors(self) -> list[str]:
        """Exceptions inside the fake itself (answered as 500); a conftest should assert none."""
        with self._lock:
            return list(self._internal_errors)

    # -- routing (called from handler threads) -----------------------------------------------

    def _route(self, request: _Request) -> _Reply:
        try:
            if request.path == TOKEN_PATH and request.method == "POST":
                return self._handle_token(request)
            if request.path == AUTH_PATH and request.method == "GET":
                return self._handle_consent(request.query)
            if request.path == IMPORT_PATH and request.method == "POST":
                return self._handle_import(request)
            if request.path == LABELS_PATH and request.method == "GET":
                return self._handle_labels_list(request)
            if request.path == LABELS_PATH and request.method == "POST":
                return self._handle_label_create(request)
            return _google_error(404, f"Not Found: {request.method} {request.path}")
        except Exception as exc:  # a bug in the fake must be visible, not a hung client
            with self._lock:
                self._internal_errors.append(f"{type(exc).__name__}: {exc}")
            return _google_error(500, f"fake google crashed: {type(exc).__name__}: {exc}")

    def _now(self) -> float:
        return time.monotonic() + self._clock_offset

    # -- POST /token -------------------------------------------------------------------------

    def _handle_token(self, request: _Request) -> _Reply:
        content_type = request.headers.get("Content-Type", "")
        is_form = content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"
        form = _parse_form(request.body.read()) if is_form else {}
        with self._lock:
            self._token_requests.append(form)
            if self._token_failures:
                return self._token_failures.popleft()
            if not is_form:
                return _token_error(400, "invalid_request", f"Unsupported content type: {content_type}")
            client_id = self._authenticated_client(form, request.headers.get("Authorization"))
            if client_id is None:
                return _token_error(401, "invalid_client", "The OAuth client was not found.")
            grant_type = form.get("grant_type", "")
            if grant_type == "refresh_token":
                return self._refresh_token_grant(form, client_id)
            if grant_type == "authorization_code":
                return self._authorization_code_grant(form, client_id)
            return _token_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _authenticated_client(self, form: dict[str, str], authorization: str | None) -> str | None:
        """The registered client whose id and secret were presented, or None.

        Google accepts client credentials in the form or as HTTP Basic auth. Each client's secret
        authenticates only that client.
        """
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credentials = (authorization or "").partition(" ")
        if client_id is None and scheme.lower() == "basic":
            decoded = base64.b64decode(credentials.strip() + "==").decode("utf-8", "replace")
            user, _, password = decoded.partition(":")
            client_id, client_secret = user, password
        kind = self._client_kind(client_id)
        if kind is None or client_secret != self._credentials_of(kind)[1]:
            return None
        return client_id

    def _refresh_token_grant(self, form: dict[str, str], client_id: str) -> _Reply:
        """A live refresh token, presented by the client that obtained it, mints an access token."""
        refresh_token = form.get("refresh_token")
        if not refresh_token:
            return _token_error(400, "invalid_request", "Missing required parameter: refresh_token")
        grant = self._grants.get(refresh_token)
        if grant is None or grant.revoked:
            return _token_error(400, "invalid_grant", "Token has been expired or revoked.")
        if grant.client_id != client_id:
            return _token_error(*WRONG_CLIENT)
        return _Reply.json(200, self._mint_access_token(refresh_token, grant.scope))

    def _authorization_code_grant(self, form: dict[str, str], client_id: str) -> _Reply:
        """Codes are single-use: looking one up consumes it, even if the exchange then fails.

        Only the client whose consent request obtained the code may redeem it; the grant belongs to
        that client and to the account that consented. With ``openid`` granted the answer carries
        an ``id_token`` ("OpenID Connect", "Exchange code for access token and ID token"); the
        refresh-token grant never does here (Google's may: callers must not count on it).
        """
        code = self._codes.pop(form.get("code", ""), None)
        if code is None or self._now() - code.issued_at > AUTH_CODE_LIFETIME_SECONDS:
            return _token_error(400, "invalid_grant", "Bad Request")
        if code.client_id != client_id:
            return _token_error(*WRONG_CLIENT)
        if form.get("redirect_uri") != code.redirect_uri:
            return _token_error(400, "redirect_uri_mismatch", "Bad Request")
        pkce_problem = _pkce_problem(code, form.get("code_verifier"))
        if pkce_problem:
            return _token_error(400, "invalid_grant", pkce_problem)
        refresh_token = self._new_grant(code.scope, code.account, code.client_id)
        payload = self._mint_access_token(refresh_token, code.scope)
        if "openid" in code.scope.split():
            payload["id_token"] = self._id_token(code, payload["access_token"])
        if self.return_refresh_token:
            payload["refresh_token"] = refresh_token
        if self.refresh_token_expires_in is not None:
            payload["refresh_token_expires_in"] = self.refresh_token_expires_in
        return _Reply.json(200, payload)

    def _new_grant(self, scope: str, account: str, client_id: str) -> str:
        """A refresh token of ``account`` for ``client_id``; made by _new_refresh_token, the hook to override."""
        token = self._new_refresh_token(scope)
        self._grants[token].account = account
        self._grants[token].client_id = client_id
        return token

    def _new_refresh_token(self, scope: str) -> str:
        token = "1//fake-" + secrets.token_urlsafe(24)
        self._grants[token] = _Grant(scope)
        return token

    def _mint_access_token(self, refresh_token: str, scope: str) -> dict[str, Any]:
        value = "ya29.fake-" + secrets.token_urlsafe(32)
        lifetime = self.access_token_lifetime
        account = self._grants[refresh_token].account
        self._access_tokens[value] = _AccessToken(refresh_token, scope, self._now() + lifetime, account)
        return {"access_token": value, "expires_in": lifetime, "scope": scope, "token_type": "Bearer"}

    def _id_token(self, code: _AuthCode, access_token: str) -> str:
        """An OpenID Connect ID token for the consenting account, with the claims Google's carry.

        Claims as in Google's OpenID Connect guide ("An ID token's payload"): ``iss``, ``azp`` and
        ``aud`` (the id of the client that redeemed the code), ``sub``, ``at_hash``, ``iat`` and
        ``exp``; ``email`` and ``email_verified`` only with the email scope; ``nonce`` when the
        consent request had one.
        """
        issued = int(time.time() + self._clock_offset)
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims: dict[str, Any] = {
            "iss": ID_TOKEN_ISSUER,
            "azp": code.client_id,
            "aud": code.client_id,
            "sub": _account_sub(code.account),
            "at_hash": _b64url(digest[: len(digest) // 2]),  # OpenID Connect Core 3.1.3.6
        }
        if USERINFO_EMAIL_SCOPE in code.scope.split():
            claims["email"] = code.account
            claims["email_verified"] = code.account not in self.unverified_accounts
        if code.nonce is not None:
            claims["nonce"] = code.nonce
        claims.update(iat=issued, exp=issued + ID_TOKEN_LIFETIME_SECONDS)
        signing_input = f"{_b64url(_json_bytes(_ID_TOKEN_HEADER))}.{_b64url(_json_bytes(claims))}"
        signature = hmac.new(self._id_token_key, signing_input.encode("ascii"), "sha256").digest()
        return f"{signing_input}.{_b64url(signature)}"

    # -- GET /o/oauth2/auth ------------------------------------------------------------------

    def _handle_consent(self, query: dict[str, str]) -> _Reply:
        """Skip the browser UI: answer at once with the redirect the user's click would cause."""
        with self._lock:
            self._consent_requests.append(dict(query))
            problem = self._consent_problem(query)
            if problem:
                page = f"<html><body><h1>Error 400: {html.escape(problem, quote=False)}</h1></body></html>"
                return _Reply.html(400, page)
            params = self._consent_outcome(query)
        redirect_uri = query["redirect_uri"]
        separator = "" if redirect_uri.endswith(("?", "&")) else "&" if "?" in redirect_uri else "?"
        return _Reply(302, b"", {"Location": redirect_uri + separator + urlencode(params)})

    def _consent_problem(self, query: dict[str, str]) -> str | None:
        """What Google's error page would say, or None when the request is acceptable."""
        kind = self._client_kind(query.get("client_id"))
        if kind is None:
            return "invalid_client (The OAuth client was not found.)"
        redirect_uri = query.get("redirect_uri", "")
        if not self._redirect_uri_allowed(redirect_uri, kind):  # Google's page, as quoted in public setup notes
            return (
                "redirect_uri_mismatch (You can't sign in to this app because it doesn't comply with Google's "
                "OAuth 2.0 policy. If you're the app developer, register the redirect URI in the Google Cloud "
                f"Console. Request details: redirect_uri={redirect_uri})"
            )
        if query.get("response_type") != "code":
            return "invalid_request (Missing or unsupported response_type)"
        if not query.get("scope"):
            return "invalid_request (Missing required parameter: scope)"
        unknown = [scope for scope in query["scope"].split() if scope not in _KNOWN_SCOPES]
        if unknown:
            return f"invalid_scope (Some requested scopes were invalid. {{invalid=[{', '.join(unknown)}]}})"
        if query.get("code_challenge_method", "plain") not in ("S256", "plain"):
            return "invalid_request (Invalid code_challenge_method)"
        if self.consent_behavior not in ("approve", "deny", "wrong_state"):
            return f"fake misconfigured: consent_behavior={self.consent_behavior!r}"
        return None

    def _redirect_uri_allowed(self, redirect_uri: str, kind: str) -> bool:
        """The rule of the client that asks.

        Desktop ("Loopback IP address flow"): http to a loopback host, any port and path. Web: only
        the exact URIs registered in the console (``web_redirect_uris``), a loopback one included.
        """
        if kind == "web":
            return redirect_uri in self.web_redirect_uris
        redirect = urlsplit(redirect_uri)
        return redirect.scheme == "http" and redirect.hostname in _LOOPBACK_HOSTS

    def _consent_outcome(self, query: dict[str, str]) -> dict[str, str]:
        state = query.get("state")
        if self.consent_behavior == "deny":
            return {"error": "access_denied", **({"state": state} if state is not None else {})}
        if self.consent_behavior == "wrong_state":
            state = "tampered-" + (state or "")
        code = "4/fake-" + secrets.token_urlsafe(32)
        challenge = query.get("code_challenge")
        granted = self.granted_scopes
        scopes = [s for s in query["scope"].split() if granted is None or s in granted]
        self._codes[code] = _AuthCode(
            redirect_uri=query["redirect_uri"],
            scope=_token_scope(scopes),
            code_challenge=challenge,
            code_challenge_method=query.get("code_challenge_method", "plain"),
            issued_at=self._now(),
            account=self.consent_account,
            nonce=query.get("nonce"),
            client_id=query["client_id"],
        )
        params = {"code": code}
        if state is not None:
            params["state"] = state
        params["scope"] = _redirect_scope(scopes)
        return params

    # -- POST /upload/gmail/v1/users/me/messages/import --------------------------------------

    def _handle_import(self, request: _Request) -> _Reply:
        with self._lock:
            self._import_requests += 1
            if self._gmail_failures:
                return self._gmail_failures.popleft()
            token = self._authenticate(request.headers.get("Authorization"))
            if isinstance(token, _Reply):
                return token
            account = self._access_tokens[token].account
            retry_after = self._take_quota(IMPORT_QUOTA_UNITS, account)
            if retry_after is not None:
                return _rate_limited(retry_after)
            keep_raw = self.store_bodies
            hold = self._import_hold
        if hold is not None:
            hold[0].wait(hold[1])
        try:  # outside the lock: parsing a 50 MiB upload must not serialise other requests
            upload_type = _check_import_query(request.query)
            parsed = _parse_import(request, upload_type, keep_raw)
        except _ApiError as error:
            return error.reply()
        except _FakeGap as gap:
            with self._lock:
                self._internal_errors.append(f"not implemented by the fake: {gap}")
            return _google_error(501, f"FakeGoogle does not implement this: {gap}")
        message_id = secrets.token_hex(8)
        message = ImportedMessage(
            id=message_id,
            thread_id=message_id,  # a message starting a new thread has threadId == id
            raw=parsed.raw,
            size=parsed.size,
            sha256=parsed.sha256,
            label_ids=parsed.label_ids,
            params=dict(request.query),
            access_token=token,
            account=account,
        )
        with self._lock:
            # Checked last, as Gmail's backend does once the upload is in: the mailbox decides.
            unknown = next((label for label in parsed.label_ids if not self._label_exists(label, account)), None)
            if unknown is not None:
                return _google_error(400, f"Invalid label: {unknown}", "invalidArgument")
            self._messages.append(message)
        return _Reply.json(200, {"id": message.id, "threadId": message.thread_id, "labelIds": parsed.label_ids})

    def _label_exists(self, label_id: str, account: str = DEFAULT_ACCOUNT) -> bool:
        """Ids are matched exactly: ``inbox`` or a label's *name* is not an id; another mailbox's is unknown."""
        return label_id in SYSTEM_LABELS or label_id in self._user_labels.get(account, {})

    # -- GET and POST /gmail/v1/users/me/labels ----------------------------------------------

    def _handle_labels_list(self, request: _Request) -> _Reply:
        with self._lock:
            account = self._account_presented(request.headers.get("Authorization"))
            reply = self._labels_preamble(request, _LABELS_LIST_SCOPES, LABELS_LIST_QUOTA_UNITS)
            if reply is None:
                reply = _Reply.json(200, {"labels": self._label_list(account or DEFAULT_ACCOUNT)})
            self._label_calls.append(LabelCall("list", None, reply.status, account))
            return reply

    def _handle_label_create(self, request: _Request) -> _Reply:
        with self._lock:
            account = self._account_presented(request.headers.get("Authorization"))
            reply = self._labels_preamble(request, _LABELS_CREATE_SCOPES, LABELS_CREATE_QUOTA_UNITS)
            barrier = self._label_create_barrier
        label: dict[str, str] = {}
        try:
            label = _label_to_create(request) if reply is None else label
        except _ApiError as error:
            reply = error.reply()
        if reply is None and barrier is not None:
            barrier.wait()  # outside the lock: the other creates arrive meanwhile
        with self._lock:
            if reply is None:
                reply = self._create_label(label, account or DEFAULT_ACCOUNT)
            self._label_calls.append(LabelCall("create", label.get("name"), reply.status, account))
            return reply

    def _account_presented(self, authorization: str | None) -> str | None:
        """The account of the bearer token in ``authorization``, live or not; None for no token minted here."""
        scheme, _, value = (authorization or "").partition(" ")
        token = self._access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        return token.account if token is not None else None

    def _labels_preamble(self, request: _Request, scopes: frozenset[str], units: int) -> _Reply | None:
        """Scripted failure, query string, credentials, scope, quota: the answer, or None to go on."""
        if self._labels_failures:
            return self._labels_failures.popleft()
        try:
            _check_query_names(request.query, _GLOBAL_QUERY)
        except _ApiError as error:
            return error.reply()
        token = self._authenticate(request.headers.get("Authorization"), scopes)
        if isinstance(token, _Reply):
            return token
        retry_after = self._take_quota(units, self._access_tokens[token].account)
        return None if retry_after is None else _rate_limited(retry_after)

    def _create_label(self, label: dict[str, str], account: str = DEFAULT_ACCOUNT) -> _Reply:
        """Gmail's checks on the name, in its order: malformed or reserved (400), then taken (409)."""
        name = label["name"]
        if _label_name_refused(name):
            return _google_error(400, INVALID_LABEL_NAME, "invalidArgument")
        if self._label_named(name, account) is not None:
            return _google_error(409, LABEL_EXISTS, "aborted")
        label_id = self._new_label(name, account)
        visibility = {key: label[key] for key in _LABEL_VISIBILITY if key in label}
        self._label_visibility[label_id] = visibility
        return _Reply.json(200, {"id": label_id, "name": name, **visibility, "type": "user"})

    def _new_label(self, name: str, account: str = DEFAULT_ACCOUNT) -> str:
        self._last_label_number += 1
        label_id = f"Label_{self._last_label_number}"
        self._user_labels.setdefault(account, {})[label_id] = name
        return label_id

    def _label_named(self, name: str, account: str = DEFAULT_ACCOUNT) -> str | None:
        """The id of ``account``'s user label called ``name``, compared as Gmail does: without regard to case."""
        wanted = name.casefold()
        labels = self._user_labels.get(account, {})
        return next((i for i, existing in labels.items() if existing.casefold() == wanted), None)

    def _label_list(self, account: str = DEFAULT_ACCOUNT) -> list[dict[str, str]]:
        system = [{"id": i, "name": i, "type": "system"} for i in sorted(LISTED_SYSTEM_LABELS)]
        user = [
            {"id": i, "name": n, **self._label_visibility.get(i, {}), "type": "user"}
            for i, n in self._user_labels.get(account, {}).items()
        ]
        return [*system, *user]

    def _authenticate(self, authorization: str | None, scopes: frozenset[str] = _IMPORT_SCOPES) -> str | _Reply:
        """The bearer token if it is live and has one of ``scopes``, else Google's 401/403 response."""
        scheme, _, value = (authorization or "").partition(" ")
        token = self._access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        grant = self._grants.get(token.refresh_token) if token else None
        if token is None or grant is None or grant.revoked or token.expires_at <= self._now():
            reply = _google_error(
                401,
                _INVALID_CREDENTIALS,
                "authError",
                item={"message": "Invalid Credentials", "locationType": "header", "location": "Authorization"},
            )
            return reply.with_headers({"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        if not scopes.intersection(token.scope.split()):
            return _google_error(
                403,
                "Request had insufficient authentication scopes.",
                "insufficientPermissions",
                item={"message": "Insufficient Permission"},
            )
        return value.strip()

    def _take_quota(self, cost: int = IMPORT_QUOTA_UNITS, account: str = DEFAULT_ACCOUNT) -> int | None:
        """Charge one call of ``cost`` units against ``account``'s sliding window; seconds to wait when over.

        Gmail's quota is per user ("Usage limits": "Per user rate limit"), so accounts never
        throttle each other.
        """
        limit = self.quota_units_per_minute
        if limit is None:
            return None
        now = self._now()
        log = self._quota_logs.setdefault(account, deque())
        while log and log[0][0] <= now - QUOTA_WINDOW_SECONDS:
            log.popleft()
        used = sum(units for _, units in log)
        if used + cost <= limit:
            log.append((now, cost))
            return None
        for stamp, units in log:  # oldest first: when does enough room free up?
            used -= units
            if used + cost <= limit:
                return max(1, math.ceil(stamp + QUOTA_WINDOW_SECONDS - now))
        return math.ceil(QUOTA_WINDOW_SECONDS)  # the limit is below one call's cost


# --- request helpers -------------------------------------------------------------------------

_PKCE_VERIFIER_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _new_client_id() -> str:
    """A client id shaped like Google's: ``<12 digits>-<32 chars>.apps.googleusercontent.com``."""
    return f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com"


def _new_client_secret() -> str:
    return "GOCSPX-" + secrets.token_urlsafe(21)


def _token_error(status: int, error: str, description: str) -> _Reply:
    """The OAuth token endpoint's flat error shape (RFC 6749 section 5.2)."""
    return _Reply.json(status, {"error": error, "error_description": description})


_INVALID_CREDENTIALS: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def _rate_limited(retry_after: int) -> _Reply:
    reply = _google_error(429, "User-rate limit exceeded.", "rateLimitExceeded", domain="usageLimits")
    return reply.with_headers({"Retry-After": str(retry_after)})


def _token_scope(scopes: list[str]) -> str:
    """The token endpoint's ``scope`` for granted ``scopes``, as Google names them (see _SIGN_IN_SCOPES).

    Sign-in's short names become their long form, and any sign-in scope brings ``openid``.
    """
    names = list(dict.fromkeys(_SIGN_IN_SCOPES.get(scope, scope) for scope in scopes))
    if _IDENTITY_SCOPES.intersection(names) and "openid" not in names:
        names.append("openid")
    return " ".join(names)


def _redirect_scope(scopes: list[str]) -> str:
    """The consent redirect's ``scope``: the granted names as asked, then the long forms and ``openid``."""
    names = list(dict.fromkeys(scopes))
    return " ".join(dict.fromkeys([*names, *_token_scope(names).split()]))


#: The JOSE header of the fake's ID tokens (Google's: {"alg": "RS256", "kid": ..., "typ": "JWT"}).
_ID_TOKEN_HEADER: Final = {"alg": "HS256", "kid": "fake-google", "typ": "JWT"}


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64url(data: bytes) -> str:
    """base64url without padding, as JWS uses (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _account_sub(account: str) -> str:
    """A stable 21-digit ``sub`` for ``account``, shaped like Google's (e.g. "110169484474386276334")."""
    digest = int.from_bytes(hashlib.sha256(account.encode()).digest(), "big")
    return str(10**20 + digest % 10**20)


def _parse_form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _pkce_problem(code: _AuthCode, verifier: str | None) -> str | None:
    """RFC 7636 check of the token request's verifier against the consent's challenge."""
    if code.code_challenge is None:
        return None
    if not verifier:
        return "Missing code verifier."
    if not 43 <= len(verifier) <= 128 or not _PKCE_VERIFIER_CHARS.issuperset(verifier):
        return "Invalid code verifier."
    if code.code_challenge_method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    else:
        computed = verifier
    return None if computed == code.code_challenge else "Invalid code verifier."


# --- query parameters of the import endpoint --------------------------------------------------


class _Choice(NamedTuple):
    """A query parameter whose value must be one of ``values`` (a proto bool or enum)."""

    proto_type: str
    values: frozenset[str]


_BOOL: Final = _Choice("TYPE_BOOL", frozenset({"true", "false"}))
# The discovery document's global "parameters", as in gmail.v1.json (see MAX_MESSAGE_BYTES): all a
# users.labels list or create takes in its query string. None = any string. Enum errors name the
# enum's proto type in the real message, which the document does not reveal, hence TYPE_ENUM here.
_GLOBAL_QUERY: Final[dict[str, _Choice | None]] = {
    "$.xgafv": _Choice("TYPE_ENUM", frozenset({"1", "2"})),
    "access_token": None,
    "alt": _Choice("TYPE_ENUM", frozenset({"json", "media", "proto"})),
    "callback": None,
    "fields": None,
    "key": None,
    "oauth_token": None,
    "prettyPrint": _BOOL,
    "quotaUser": None,
    "uploadType": None,  # on /upload URLs decided by the upload front end, below
    "upload_protocol": None,
}
# gmail.users.messages.import's own parameters plus the global ones.
_IMPORT_QUERY: Final[dict[str, _Choice | None]] = {
    "deleted": _BOOL,
    "internalDateSource": _Choice("TYPE_ENUM", frozenset({"receivedTime", "dateHeader"})),
    "neverMarkSpam": _BOOL,
    "processForCalendar": _BOOL,
    **_GLOBAL_QUERY,
}
_UPLOAD_TYPES: Final = frozenset({"multipart", "media", "resumable"})  # mediaUpload.protocols: simple + resumable


def _snake(name: str) -> str:
    """The proto field name Google's messages use for a camelCase JSON name."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _check_query_names(query: dict[str, str], allowed: dict[str, _Choice | None]) -> None:
    """Unknown query parameters and values outside their choices, refused as Google's front end does."""
    for name, value in query.items():
        if name not in allowed:
            raise _parse_failure(
                f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter. '
                f"Field '{name}' could not be found in request message.",
                name,
            )
        choice = allowed[name]
        if choice is not None and value not in choice.values:
            field_path = _snake(name)
            raise _parse_failure(f"Invalid value at '{field_path}' ({choice.proto_type}), \"{value}\"", field_path)


def _check_import_query(query: dict[str, str]) -> str:
    """Refuse what Gmail refuses in the query string; returns the upload type.

    Unknown names and bad values get the wording of Google's front end, which is the same for
    every API (the unknown-name text is quoted verbatim from live Docs and Identity Toolkit
    answers in public code). Booleans are only ``true``/``false``; whether Google also takes
    ``1``/``0`` is unverified, so the fake is the stricter. A missing or unknown ``uploadType`` on
    an /upload URL gets the upload server's ``wrongUrlForUpload`` answer.
    """
    _check_query_names(query, _IMPORT_QUERY)
    upload_type = query.get("uploadType", "")
    if upload_type not in _UPLOAD_TYPES:
        raise _ApiError(
            400,
            "Upload requests must include an uploadType URL parameter and a URL path beginning with /upload/",
            "wrongUrlForUpload",
        )
    if upload_type == "resumable":
        raise _FakeGap("uploadType=resumable (the forwarder sends multipart)")
    return upload_type


# --- the metadata part: a Message resource ----------------------------------------------------


class _Field(NamedTuple):
    proto_name: str
    proto_type: str
    repeated: bool = False


# The Message schema of gmail.v1.json. Its JSON names and (as every proto3 JSON parser does) its
# proto names are accepted; anything else is an unknown name.
_MESSAGE_FIELDS: Final = {
    "id": _Field("id", "TYPE_STRING"),
    "threadId": _Field("thread_id", "TYPE_STRING"),
    "labelIds": _Field("label_ids", "TYPE_STRING", repeated=True),
    "snippet": _Field("snippet", "TYPE_STRING"),
    "historyId": _Field("history_id", "TYPE_UINT64"),
    "internalDate": _Field("internal_date", "TYPE_INT64"),
    "payload": _Field("payload", "TYPE_MESSAGE"),  # a MessagePart; its inside is not checked
    "sizeEstimate": _Field("size_estimate", "TYPE_INT32"),
    "raw": _Field("raw", "TYPE_BYTES"),
    "classificationLabelValues": _Field("classification_label_values", "TYPE_MESSAGE", repeated=True),
}
_FIELD_NAMES: Final = {**{f.proto_name: name for name, f in _MESSAGE_FIELDS.items()}, **{n: n for n in _MESSAGE_FIELDS}}
# The body binds to the request's ``message`` field (discovery: "request": {"$ref": "Message"}), and
# Google's messages name the path of anything below the request's root ("Unknown name "x" at
# 'requests[0]'", as the live Docs API answers). Gmail's own text for this was not observed: the
# path is an inference, the "Unknown name ...: Cannot find field." grammar is not.
_BODY_FIELD: Final = "message"
_INT_RANGES: Final = {
    "TYPE_INT32": (-(2**31), 2**31 - 1),
    "TYPE_INT64": (-(2**63), 2**63 - 1),
    "TYPE_UINT64": (0, 2**64 - 1),
}
_BASE64: Final = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")  # proto3 JSON bytes: base64 or base64url


def _scalar_fits(proto_type: str, value: object) -> bool:
    """Whether a JSON value parses as the proto3 JSON mapping of ``proto_type``."""
    if proto_type == "TYPE_STRING":
        return isinstance(value, str)
    if proto_type == "TYPE_BYTES":
        return isinstance(value, str) and _BASE64.fullmatch(value) is not None
    if proto_type == "TYPE_MESSAGE":
        return isinstance(value, dict)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        value = int(value)  # 64-bit integers travel as strings in JSON
    low, high = _INT_RANGES[proto_type]
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _invalid_value(field_path: str, proto_type: str, value: object) -> _ApiError:
    return _parse_failure(f"Invalid value at '{field_path}' ({proto_type}), {json.dumps(value)}", field_path)


def _metadata_labels(metadata: bytes) -> list[str]:
    """Validate the metadata part as a Message resource; its label ids (existence is checked later)."""
    try:
        parsed = json.loads(metadata.decode("utf-8"))
    except ValueError as exc:  # includes UnicodeDecodeError
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise _parse_failure(f"Invalid JSON payload received. {reason}.", _BODY_FIELD) from None
    if not isinstance(parsed, dict):
        raise _parse_failure("Invalid JSON payload received. Root element must be a message.", _BODY_FIELD)
    labels: list[str] = []
    for name, value in parsed.items():
        json_name = _FIELD_NAMES.get(name)
        if json_name is None:
            raise _parse_failure(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{_BODY_FIELD}': Cannot find field.",
                _BODY_FIELD,
            )
        spec = _MESSAGE_FIELDS[json_name]
        field_path = f"{_BODY_FIELD}.{spec.proto_name}"
        if value is None:  # proto3 JSON: null is the field's default
            continue
        if spec.repeated and not isinstance(value, list):
            raise _invalid_value(field_path, spec.proto_type, value)
        for index, item in enumerate(value if spec.repeated else [value]):
            if not _scalar_fits(spec.proto_type, item):
                raise _invalid_value(f"{field_path}[{index}]" if spec.repeated else field_path, spec.proto_type, item)
        if json_name == "labelIds":
            labels = list(value)
    return labels


# --- the body of users.labels.create: a Label resource --------------------------------------

# The Label schema of gmail.v1.json: JSON names, and proto names as every proto3 JSON parser takes.
_LABEL_FIELDS: Final = frozenset(
    {
        "id",
        "name",
        "messageListVisibility",
        "labelListVisibility",
        "type",
        "messagesTotal",
        "messagesUnread",
        "threadsTotal",
        "threadsUnread",
        "color",
    }
)
_LABEL_FIELD_NAMES: Final = {**{_snake(name): name for name in _LABEL_FIELDS}, **{name: name for name in _LABEL_FIELDS}}
# The create request binds its body to the request's ``label`` field (discovery: "request": {"$ref": "Label"}).
_LABEL_BODY_FIELD: Final = "label"


def _label_to_create(request: _Request) -> dict[str, str]:
    """The Label resource of a create request, by JSON name; its ``name`` and visibilities checked."""
    try:
        parsed = json.loads(request.body.read().decode("utf-8"))
    except ValueError as exc:  # includes UnicodeDecodeError
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise _parse_failure(f"Invalid JSON payload received. {reason}.", _LABEL_BODY_FIELD) from None
    if not isinstance(parsed, dict):
        raise _parse_failure("Invalid JSON payload received. Root element must be a message.", _LABEL_BODY_FIELD)
    label: dict[str, str] = {}
    for key, value in parsed.items():
        json_name = _LABEL_FIELD_NAMES.get(key)
        if json_name is None:
            raise _parse_failure(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{_LABEL_BODY_FIELD}': Cannot find field.",
                _LABEL_BODY_FIELD,
            )
        choices = _LABEL_VISIBILITY.get(json_name)
        if choices is not None and value not in choices:
            raise _invalid_value(f"{_LABEL_BODY_FIELD}.{_snake(json_name)}", "TYPE_ENUM", value)
        if json_name == "name" and not isinstance(value, str):
            raise _invalid_value(f"{_LABEL_BODY_FIELD}.name", "TYPE_STRING", value)
        if isinstance(value, str):
            label[json_name] = value
    if not label.get("name"):
        raise _ApiError(400, INVALID_LABEL_NAME, "invalidArgument")
    return label


def _label_name_refused(name: str) -> bool:
    """Names users.labels.create answers with 400 "Invalid label name".

    Reserved top levels and control characters are Gmail's documented or observed refusals (see
    RESERVED_LABEL_NAMES; got-your-back #188 for a name ending in CR). Surrounding spaces, empty
    levels (``A//B``) and the length are refused without proof that Gmail does: the fake is the stricter.
    """
    levels = name.split("/")
    return (
        len(name) > MAX_LABEL_NAME_CHARS
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in name)
        or any(not level or level != level.strip() for level in levels)
        or levels[0].casefold() in RESERVED_LABEL_NAMES
    )


# --- multipart/related parsing (byte-exact; the email package would re-encode) ---------------


def _malformed(detail: str) -> _ApiError:
    return _ApiError(400, f"Invalid multipart request: {detail}")


def _content_type(value: str) -> tuple[str, str | None]:
    """(lower-cased type/subtype, boundary parameter) of a Content-Type header value."""
    header = Message()
    header["Content-Type"] = value
    return header.get_content_type(), header.get_boundary()


def _multipart_boundary(content_type: str) -> bytes:
    kind, boundary = _content_type(content_type)
    if not kind.startswith("multipart/"):
        raise _ApiError(400, "Bad content type. Please use multipart.")
    if kind != "multipart/related" or not boundary:
        raise _malformed(f"Content-Type must be multipart/related with a boundary, not {content_type!r}")
    encoded = boundary.encode("ascii", "replace")
    if len(encoded) > 70 or b"?" in encoded:
        raise _malformed("boundary must be 1-70 ASCII characters (RFC 2046)")
    return encoded


def _next_delimiter(data: bytes, dash_boundary: bytes, start: int) -> tuple[int, int]:
    """(end of the previous part, start of the next part's headers) for the next delimiter.

    A delimiter is CRLF "--" boundary CRLF; only the very first may lack the CRLF (no preamble).
    A close delimiter here means the request has fewer than the two parts Gmail needs.
    """
    if start == 0 and data.startswith(dash_boundary):
        part_end, line_start = 0, 0
    else:
        part_end = data.find(b"\r\n" + dash_boundary, start)
        if part_end < 0:
            raise _malformed("missing boundary delimiter")
        line_start = part_end + 2
    after = line_start + len(dash_boundary)
    if data[after : after + 2] != b"\r\n":
        raise _malformed("expected a metadata part and a message part")
    return part_end, after + 2


def _part_headers(data: bytes, start: int) -> tuple[dict[str, str], int]:
    """A part's CRLF-separated headers (names lower-cased) and where its body starts."""
    if data.startswith(b"\r\n", start):
        return {}, start + 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise _malformed("unterminated part headers")
    headers: dict[str, str] = {}
    for line in data[start:end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise _malformed(f"bad part header line {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers, end + 4


def _require_part_type(headers: dict[str, str], expected: str, part: str) -> None:
    kind, _ = _content_type(headers.get("content-type", "text/plain"))
    matches = kind.startswith(expected) if expected.endswith("/") else kind == expected
    if not matches:
        raise _malformed(f"{part} part has Content-Type {kind!r}, expected {expected!r}")


def _leading_parts(head: bytes, boundary: bytes) -> tuple[list[str], int]:
    """Label ids from the JSON part and the offset where the raw message starts."""
    dash = b"--" + boundary
    _, meta_headers_start = _next_delimiter(head, dash, 0)
    meta_headers, meta_start = _part_headers(head, meta_headers_start)
    _require_part_type(meta_headers, "application/json", "metadata")
    meta_end, media_headers_start = _next_delimiter(head, dash, meta_start)
    media_headers, raw_start = _part_headers(head, media_headers_start)
    _require_part_type(media_headers, "message/", "media")
    return _metadata_labels(head[meta_start:meta_end]), raw_start


def _close_delimiter_start(body: IO[bytes], size: int, boundary: bytes) -> int:
    """Where the raw message ends: the body must end in CRLF--boundary-- [CRLF]."""
    close = b"\r\n--" + boundary + b"--"
    body.seek(max(0, size - len(close) - 2))
    tail = body.read()
    for suffix in (close + b"\r\n", close):
        if tail.endswith(suffix):
            return size - len(suffix)
    raise _malformed("missing close delimiter at the end of the body")


def _read_message(
    body: IO[bytes], start: int, end: int, boundary: bytes | None, keep: bool
) -> tuple[str, bytes | None]:
    """sha256 (and the bytes, if kept) of body[start:end], refusing an embedded delimiter.

    A boundary that occurs inside the message would make Google split the message there,
    so it is a client bug worth failing loudly on (a media upload has no boundary). Without
    ``keep`` the region is streamed in chunks so a 50 MiB message does not sit in memory.
    """
    # The first line of the part counts too, hence the CRLF the scan starts with.
    delimiter = b"\r\n--" + boundary if boundary is not None else None
    body.seek(start)
    digest, carry, remaining = hashlib.sha256(), b"\r\n", end - start
    kept: list[bytes] = []
    while remaining > 0:
        chunk = body.read(remaining if keep else min(_CHUNK, remaining))
        remaining -= len(chunk)
        digest.update(chunk)
        if keep:
            kept.append(chunk)
        if delimiter is not None:
            window = carry + chunk
            if delimiter in window:
                raise _malformed("the boundary occurs inside the message part")
            carry = window[-(len(delimiter) - 1) :]
    return digest.hexdigest(), b"".join(kept) if keep else None


def _check_message_size(size: int) -> None:
    """The discovery document's maxSize (MAX_MESSAGE_BYTES) for the message, as a 413.

    What Gmail's upload path answers for an oversized message is not documented: Google's
    JSON endpoints answer 400 badRequest "Request payload size exceeds the limit: N bytes."
    (googleapis/google-api-dotnet-client issue #856), while its upload front end answers 413,
    the status of Google's documented global error ``uploadTooLarge``. The fake answers 413
    with that reason in Google's shape; a client must treat both as "this message never fits".
    """
    if size == 0:
        raise _ApiError(400, "'raw' RFC822 payload message string or uploading message via /upload/* URL required")
    if size > MAX_MESSAGE_BYTES:
        raise _ApiError(413, f"Request payload size exceeds the limit: {MAX_MESSAGE_BYTES} bytes.")


def _parse_import(request: _Request, upload_type: str, keep_raw: bool) -> _ParsedImport:
    content_type = request.headers.get("Content-Type", "")
    body, size = request.body, request.body_size
    if upload_type == "media":  # the message alone, no metadata: imported without labels
        kind, _ = _content_type(content_type)
        if not kind.startswith("message/"):
            raise _ApiError(400, f"Media type '{kind}' is not supported. Valid media types: [message/*]")
        _check_message_size(size)
        sha256, raw = _read_message(body, 0, size, None, keep_raw)
        return _ParsedImport([], raw, size, sha256)
    boundary = _multipart_boundary(content_type)
    body.seek(0)
    labels, raw_start = _leading_parts(body.read(min(size, _HEAD_BYTES)), boundary)
    raw_end = _close_delimiter_start(body, size, boundary)
    if raw_end < raw_start:
        raise _malformed("the message part overlaps the close delimiter")
    _check_message_size(raw_end - raw_start)
    sha256, raw = _read_message(body, raw_start, raw_end, boundary, keep_raw)
    return _ParsedImport(labels, raw, raw_end - raw_start, sha256)


# --- HTTP plumbing ---------------------------------------------------------------------------


class _Reader(Protocol):
    """What the handler's ``rfile`` offers (typed as BufferedIOBase, not IO[bytes])."""

    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


class _BodyError(Exception):
    """The request body could not be read; answer and drop the connection (framing is lost)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.reply = _google_error(status, message).with_headers({"Connection": "close"})


def _copy_exact(src: _Reader, sink: IO[bytes], length: int) -> int:
    remaining = length
    while remaining > 0:
        chunk = src.read(min(_CHUNK, remaining))
        if not chunk:
            raise _BodyError(400, "Request body ended before Content-Length bytes")
        sink.write(chunk)
        remaining -= len(chunk)
    return length


def _copy_chunked(src: _Reader, sink: IO[bytes]) -> int:
    """De-chunk a ``Transfer-Encoding: chunked`` body (what http.client sends for iterables)."""
    total = 0
    while True:
        try:
            size = int(src.readline(1024).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BodyError(400, "Invalid chunk size in chunked body") from None
        if size < 0:
            raise _BodyError(400, "Invalid chunk size in chunked body")
        if size == 0:
            break
        total += _copy_exact(src, sink, size)
        if src.read(2) != b"\r\n":
            raise _BodyError(400, "Chunk not terminated by CRLF")
    while src.readline(65537) not in (b"\r\n", b"\n", b""):
        pass  # trailer fields
    return total


def _content_length(value: str) -> int:
    if not value.strip().isdigit():
        raise _BodyError(400, f"Invalid Content-Length {value!r}")
    return int(value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeGoogle) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request is routine in failure tests: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Google's front ends
    # Headers and body leave in two sends; with Nagle on, every keep-alive response after the
    # first would wait ~40 ms for the client's delayed ACK (a cost of the fake, not the client).
    disable_nagle_algorithm = True
    timeout = 60  # an idle keep-alive connection ends instead of pinning a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line; tests assert on recorded state instead."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    @property
    def _fake(self) -> FakeGoogle:
        return cast(_Server, self.server).fake

    def _serve(self) -> None:
        """Read the whole body first (as Google does), then let the fake decide the answer."""
        try:
            body, size = self._read_body()
        except _BodyError as error:
            self._send(error.reply)
            return
        except OSError:
            self.close_connection = True
            return
        with body:
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            reply = self._fake._route(_Request(self.command, url.path, query, self.headers, body, size))
        self._send(reply)

    def _read_body(self) -> tuple[IO[bytes], int]:
        # The caller owns and closes the spool (``with body:`` in _serve).
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            size = self._copy_body(spool)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool, size

    def _copy_body(self, sink: IO[bytes]) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _copy_chunked(self.rfile, sink)
        length = self.headers.get("Content-Length")
        if length is not None:
            return _copy_exact(self.rfile, sink, _content_length(length))
        if self.command in ("POST", "PUT", "PATCH"):
            raise _BodyError(411, "Length Required")
        return 0

    def _send(self, reply: _Reply) -> None:
        if reply.delay > 0:
            self._fake._stopping.wait(reply.delay)  # stop() cuts the delay short
        if reply.disconnect:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True
