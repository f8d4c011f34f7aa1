"""Which Google account answered a consent: the claims of the OpenID Connect id token.

The consent asks for ``openid`` and the e-mail scope besides Gmail's, so the token endpoint's
answer to the code exchange carries an ``id_token`` (a JWT) naming the account that consented.
Its signature is not checked here, on purpose: the token came straight from Google's token
endpoint over TLS, in answer to our own authenticated request, which OpenID Connect Core (3.1.3.7,
item 6) allows in place of validating the signature. Everything else a relying party must check
(issuer, audience, expiry, a verified address) is checked by the callers that act on it.

Standard library only: the refresh CLI and the renewal page (a Lambda) both use it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

#: The issuers Google's discovery document and its "OpenID Connect" guide name for id tokens.
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})


class IdTokenError(ValueError):
    """The id token is not a JWT whose payload is a JSON object."""


@dataclass(frozen=True)
class IdentityClaims:
    """What an id token says about the account that consented (no secret: safe to log and audit)."""

    email: str | None
    email_verified: bool
    issuer: str | None
    audience: tuple[str, ...]
    subject: str | None
    expires_at: int | None

    @classmethod
    def from_id_token(cls, id_token: str) -> IdentityClaims:
        payload = _payload(id_token)
        email = payload.get("email")
        audience = payload.get("aud")
        audiences = (audience,) if isinstance(audience, str) else tuple(a for a in audience or () if isinstance(a, str))
        expires = payload.get("exp")
        return cls(
            email=email.lower() if isinstance(email, str) and email else None,
            # Google sends a boolean; some OpenID providers send the string "true".
            email_verified=payload.get("email_verified") in (True, "true"),
            issuer=payload.get("iss") if isinstance(payload.get("iss"), str) else None,
            audience=audiences,
            subject=payload.get("sub") if isinstance(payload.get("sub"), str) else None,
            expires_at=int(expires) if isinstance(expires, (int, float)) and not isinstance(expires, bool) else None,
        )

    @property
    def from_google(self) -> bool:
        return self.issuer in GOOGLE_ISSUERS

    def verified_email(self) -> str | None:
        """The account's address, only when Google says it is verified."""
        return self.email if self.email_verified else None


def _payload(id_token: str) -> dict[str, Any]:
    parts = id_token.split(".") if isinstance(id_token, str) else []
    if len(parts) != 3:
        raise IdTokenError("the id token is not a JWT (three dot-separated parts)")
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        payload = json.loads(raw)
    except (ValueError, TypeError):
        raise IdTokenError("the id token's payload is not base64url-encoded JSON") from None
    if not isinstance(payload, dict):
        raise IdTokenError("the id token's payload is not a JSON object")
    return payload
