"""Signed cookies of the renewal page, and the PKCE verifier derived from a flow's state.

Both keys come from the one SSM secret, separated by label (HMAC-SHA256 as a key-derivation
function), so a cookie signature can never double as a verifier or the other way round:

- the cookie key signs ``name | value``: a flow cookie cannot be passed off as a result cookie;
- the PKCE key turns a flow's random ``state`` into its ``code_verifier`` (see the package
  docstring for why the verifier is derived rather than stored in the cookie).

A cookie value is ``v1.<base64url JSON>.<base64url HMAC>``; nothing in it is secret, and nothing
is trusted before the signature is checked (in constant time) and the expiry has not passed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sesmail import names

_VERSION = "v1"
#: Browsers keep about 4 KB per cookie; anything longer is not ours.
MAX_COOKIE_CHARS = 2048
_COOKIE_LABEL = b"ses-mail renewal: cookie signing key v1"
_PKCE_LABEL = b"ses-mail renewal: pkce verifier key v1"
#: Bytes of randomness in a flow's state (256 bits).
STATE_BYTES = 32


class CookieError(Exception):
    """A cookie that cannot be trusted; ``reason`` is safe to log (it never quotes the cookie)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CookieTampered(CookieError):
    """Malformed, or its signature does not match: altered, forged, or signed with an older secret."""


class CookieExpired(CookieError):
    """Genuine but too old; ``payload`` is what it said (signed, so safe to use for a "start again" link)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__("expired")
        self.payload = payload


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.new(secret, label, hashlib.sha256).digest()


def new_state() -> str:
    """A flow's random ``state`` (43 URL-safe characters)."""
    return secrets.token_urlsafe(STATE_BYTES)


def pkce_verifier(secret: bytes, state: str) -> str:
    """The flow's PKCE ``code_verifier``: HMAC-SHA256 of its state under the PKCE key, base64url.

    43 characters of ``[A-Za-z0-9_-]``, the shortest RFC 7636 allows and exactly its recommended
    form (32 random-looking octets, base64url-encoded).
    """
    return _b64(hmac.new(_derive(secret, _PKCE_LABEL), state.encode("utf-8"), hashlib.sha256).digest())


def pkce_challenge(verifier: str) -> str:
    """``S256``: base64url(SHA-256(verifier)) without padding (RFC 7636, 4.2)."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


class CookieSigner:
    """Seals and opens the page's cookies with the key derived from the renewal secret."""

    def __init__(self, secret: bytes) -> None:
        self._key = _derive(secret, _COOKIE_LABEL)

    def seal(self, name: str, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{_VERSION}.{body}.{_b64(self._mac(name, body))}"

    def open(self, name: str, value: str, *, now: float) -> dict[str, Any]:
        """The payload of a genuine, unexpired cookie; :class:`CookieTampered` or :class:`CookieExpired`."""
        if len(value) > MAX_COOKIE_CHARS:
            raise CookieTampered("too long")
        version, _, rest = value.partition(".")
        body, _, signature = rest.partition(".")
        if version != _VERSION or not body or not signature:
            raise CookieTampered("malformed")
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            raise CookieTampered("malformed signature") from None
        if not hmac.compare_digest(given, self._mac(name, body)):
            raise CookieTampered("bad signature")
        try:
            payload = json.loads(_unb64(body))
        except (binascii.Error, ValueError):
            raise CookieTampered("malformed payload") from None  # signed by us, so a bug: refuse anyway
        expires = payload.get("exp") if isinstance(payload, dict) else None
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise CookieTampered("no expiry")
        if now >= expires:
            raise CookieExpired(payload)
        checked: dict[str, Any] = payload
        return checked

    def _mac(self, name: str, body: str) -> bytes:
        return hmac.new(self._key, f"{name}|{_VERSION}.{body}".encode(), hashlib.sha256).digest()


# --- the two cookies' contents ----------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """One consent in progress: what the callback must find again."""

    state: str
    mailbox: str
    expires: int

    def to_payload(self) -> dict[str, Any]:
        return {"k": "flow", "s": self.state, "m": self.mailbox, "exp": self.expires}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Flow:
        state, mailbox, expires = payload.get("s"), payload.get("m"), payload.get("exp")
        if payload.get("k") != "flow" or not isinstance(state, str) or not state or not isinstance(expires, int):
            raise CookieTampered("not a flow")
        return cls(state, _mailbox(mailbox), expires)


@dataclass(frozen=True)
class Result:
    """What ``/done`` shows; only ever set by the callback, after the outcome was decided."""

    mailbox: str
    outcome: str
    expires: int
    #: The Google account that consented (renewed or refused), from the id token.
    account: str | None = None
    #: The retry-processor execution started for the mailbox.
    execution_arn: str | None = None
    #: When the new token dies (ISO-8601 UTC), or None for a token without expiry.
    token_expires_at: str | None = None
    #: Short codes of steps after storing that did not work (``metric``, ``audit``, ``drain``), or a
    #: failure's code (``exchange``, ``proof``, ``store``, ``scopes``, ``google:<error>``).
    notes: tuple[str, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"k": "result", "m": self.mailbox, "o": self.outcome, "exp": self.expires}
        optional = {"a": self.account, "x": self.execution_arn, "t": self.token_expires_at}
        payload.update({key: value for key, value in optional.items() if value})
        if self.notes:
            payload["n"] = list(self.notes)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Result:
        outcome, expires, notes = payload.get("o"), payload.get("exp"), payload.get("n") or []
        if payload.get("k") != "result" or not isinstance(outcome, str) or not isinstance(expires, int):
            raise CookieTampered("not a result")
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise CookieTampered("not a result")
        return cls(
            mailbox=_mailbox(payload.get("m")),
            outcome=outcome,
            expires=expires,
            account=_optional_str(payload.get("a")),
            execution_arn=_optional_str(payload.get("x")),
            token_expires_at=_optional_str(payload.get("t")),
            notes=tuple(notes),
        )


def _mailbox(value: Any) -> str:
    try:
        return names.check_mailbox(value)
    except ValueError:
        raise CookieTampered("bad mailbox") from None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- Set-Cookie values -----------------------------------------------------------------------------


def set_cookie(name: str, value: str, max_age: int) -> str:
    """A ``Set-Cookie`` value: host-only, whole site, HTTPS only, not readable by scripts."""
    return f"{name}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Lax"


def clear_cookie(name: str) -> str:
    """Delete the cookie (same attributes, so the browser matches it)."""
    return f"{name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure; HttpOnly; SameSite=Lax"
