"""Google's OAuth 2.0 flow for web-server applications, as the renewal page needs it.

Standard library and :class:`sesmail.runtime.http.HttpClient` only (the Lambda ships no google-auth):
the authorization URL, the code exchange at the web client's ``token_uri`` (client id and secret
in the form, the PKCE verifier, the same ``redirect_uri``), and the checks of the id token that
decide whose token this is.

The id token's signature is not checked, on purpose: it comes straight from Google's token
endpoint over TLS, in answer to our own request authenticated with the client secret, which
OpenID Connect Core 1.0 section 3.1.3.7 (item 6) allows in place of validating the signature.
Everything else a relying party must check is checked here: ``iss``, ``aud``, ``exp``, and a
verified ``email``.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field

from sesmail import names
from sesmail.renewal.identity import IdentityClaims, IdTokenError
from sesmail.runtime.errors import TransientError, classify
from sesmail.runtime.http import HttpClient
from sesmail.runtime.log import register_secret
from sesmail.runtime.tokens import ClientConfig, post_to_token_endpoint

EXCHANGE_TIMEOUT_SECONDS = 10.0
#: Allowance for the clocks of Google and the Lambda host when judging an id token's ``exp``.
CLOCK_SKEW_SECONDS = 60
#: The scopes without which the token is useless to the forwarder (Google's granular consent
#: lets the person untick them; the proof by minting would not notice).
REQUIRED_SCOPES = (names.GMAIL_SCOPE, names.GMAIL_LABELS_SCOPE)

# Why a consent is refused (the audit record's ``reason``); none of them quotes a token.
REFUSED_NO_ID_TOKEN = "no-id-token"
REFUSED_ISSUER = "issuer"
REFUSED_AUDIENCE = "audience"
REFUSED_EXPIRED = "id-token-expired"
REFUSED_NO_EMAIL = "no-email"
REFUSED_UNVERIFIED = "email-unverified"
REFUSED_OTHER_ACCOUNT = "other-account"


def authorization_url(
    client: ClientConfig, *, redirect_uri: str, state: str, code_challenge: str, login_hint: str | None
) -> str:
    """The consent URL: offline access with a consent prompt (so a refresh token always comes back)."""
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(names.CONSENT_SCOPES),
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
    }
    if login_hint:
        params["login_hint"] = login_hint
    base = client.auth_uri
    separator = "&" if urllib.parse.urlsplit(base).query else "?"
    return f"{base}{separator}{urllib.parse.urlencode(params, quote_via=urllib.parse.quote)}"


class ExchangeFailed(Exception):
    """The token endpoint did not give a usable grant; ``code`` is Google's error (or ours), safe to show."""

    def __init__(self, code: str, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class CodeGrant:
    """The token endpoint's answer to the code exchange (the secrets kept out of the repr)."""

    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    refresh_token_expires_in: int | None
    id_token: str | None = field(default=None, repr=False)

    def identity(self) -> IdentityClaims | None:
        """The id token's claims; None without an id token or with one that is not a readable JWT."""
        if not self.id_token:
            return None
        try:
            return IdentityClaims.from_id_token(self.id_token)
        except IdTokenError:
            return None

    def missing_scopes(self) -> tuple[str, ...]:
        return tuple(scope for scope in REQUIRED_SCOPES if scope not in self.scopes)


def exchange_code(
    http: HttpClient,
    client: ClientConfig,
    *,
    code: str,
    redirect_uri: str,
    verifier: str,
    timeout: float = EXCHANGE_TIMEOUT_SECONDS,
) -> CodeGrant:
    """POST the code to ``token_uri``; :class:`ExchangeFailed` for anything but a grant with a refresh token."""
    grant = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    try:
        response = post_to_token_endpoint(http, client, grant, timeout=timeout)
    except Exception as exc:
        transient = isinstance(classify(exc), TransientError)
        reason = f"the token endpoint could not be reached ({type(exc).__name__})"
        raise ExchangeFailed("unreachable", reason, transient=transient) from None
    try:
        payload = json.loads(response.body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        payload = {}
    _register(payload)
    if response.status != 200:
        error = str(payload.get("error") or f"http-{response.status}")
        transient = response.status in (408, 429) or response.status >= 500
        reason = f"the token endpoint answered {response.status} {safe_code(error)}"
        raise ExchangeFailed(safe_code(error), reason, transient=transient)
    refresh_token = payload.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise ExchangeFailed("no-refresh-token", "the token endpoint answered without a refresh token")
    scope = payload.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) and scope else tuple(names.CONSENT_SCOPES)
    expires_in = payload.get("refresh_token_expires_in")
    lifetime = int(expires_in) if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) else None
    id_token = payload.get("id_token")
    return CodeGrant(refresh_token, scopes, lifetime, id_token if isinstance(id_token, str) else None)


def _register(payload: dict[str, object]) -> None:
    """Mask every credential of the answer in log lines before anything could log it."""
    for key in ("access_token", "refresh_token", "id_token"):
        value = payload.get(key)
        if isinstance(value, str):
            register_secret(value)


def safe_code(error: str) -> str:
    """Google's error code, reduced to what is safe to put in a cookie and a page."""
    cleaned = "".join(c for c in error if c.isascii() and (c.isalnum() or c in "_-"))[:40]
    return cleaned or "error"


def identity_problem(claims: IdentityClaims | None, *, client_id: str, expected: str, now: float) -> str | None:
    """Why this id token does not prove that ``expected`` consented to ``client_id``; None if it does."""
    if claims is None:
        return REFUSED_NO_ID_TOKEN
    if not claims.from_google:
        return REFUSED_ISSUER
    # One audience, ours: a token issued to (also) another client was not meant for us.
    if claims.audience != (client_id,):
        return REFUSED_AUDIENCE
    if claims.expires_at is None or claims.expires_at + CLOCK_SKEW_SECONDS <= now:
        return REFUSED_EXPIRED
    if claims.email is None:
        return REFUSED_NO_EMAIL
    if not claims.email_verified:
        return REFUSED_UNVERIFIED
    if claims.email != expected.strip().lower():
        return REFUSED_OTHER_ACCOUNT
    return None
