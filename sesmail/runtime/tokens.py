"""Google OAuth client configuration, the stored refresh token, and access-token minting.

The forwarder only ever *reads* the refresh token: renewing it is the refresh CLI's job
(`python -m sesmail.refresh`). Access tokens are minted at the client JSON's ``token_uri`` and
cached for their lifetime (less a safety margin) in the warm container.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sesmail import names
from sesmail.runtime.errors import (
    MailboxRefusedError,
    PermanentError,
    TokenExpiredError,
    TokenNotConfiguredError,
    TransientError,
    classify,
)
from sesmail.runtime.http import HttpClient, Response, parse_retry_after
from sesmail.runtime.log import get_logger, register_secret

log = get_logger("sesmail.runtime.tokens")

TOKEN_TIMEOUT_SECONDS = 10.0
# Token-endpoint errors that mean "these credentials will not work until a human acts".
#: The token endpoint's answer for a refresh token that is expired or revoked: the one dead token.
_DEAD_GRANT = "invalid_grant"


class ClientConfigError(TokenNotConfiguredError):
    """The OAuth client JSON is missing, a placeholder, or not what Google's console downloads."""


class RefreshTokenError(TokenNotConfiguredError):
    """The stored refresh token is missing, a placeholder, or unreadable."""


# --- Stored values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    kind: str  # "installed" or "web"
    client_id: str
    client_secret: str = field(repr=False)
    token_uri: str
    auth_uri: str
    redirect_uris: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, text: str | None, *, env: str = "ENV") -> ClientConfig:
        fix = f"upload the JSON from Google's console: python -m sesmail.refresh --env {env} --client-secret FILE"
        if names.is_placeholder(text):
            raise ClientConfigError(f"the OAuth client JSON is not configured yet; {fix}")
        try:
            data = json.loads(text or "")
        except json.JSONDecodeError as exc:
            raise ClientConfigError(f"the OAuth client JSON is not valid JSON ({exc.msg}); {fix}") from None
        kinds = [k for k in ("installed", "web") if isinstance(data, dict) and isinstance(data.get(k), dict)]
        if not kinds:
            raise ClientConfigError(
                "the OAuth client JSON has neither an 'installed' nor a 'web' section "
                f"(create an OAuth client of type 'Desktop app'); {fix}"
            )
        kind = kinds[0]
        section: dict[str, Any] = data[kind]
        missing = [k for k in ("client_id", "client_secret", "token_uri", "auth_uri") if not section.get(k)]
        if missing:
            raise ClientConfigError(f"the OAuth client JSON's '{kind}' section lacks {', '.join(missing)}; {fix}")
        for key in ("token_uri", "auth_uri"):
            if urllib.parse.urlsplit(str(section[key])).scheme not in ("http", "https"):
                raise ClientConfigError(f"the OAuth client JSON's {key} is not an http(s) URL; {fix}")
        register_secret(str(section["client_secret"]))
        return cls(
            kind=kind,
            client_id=str(section["client_id"]),
            client_secret=str(section["client_secret"]),
            token_uri=str(section["token_uri"]),
            auth_uri=str(section["auth_uri"]),
            redirect_uris=tuple(str(u) for u in section.get("redirect_uris") or ()),
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc(value: datetime | None) -> str | None:
    """The timestamp format of the stored token JSON (``2026-11-24T08:30:00Z``), for output and audit records."""
    return _iso(value)


def _parse_iso(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RefreshToken:
    token: str = field(repr=False)
    created_at: datetime
    expires_at: datetime | None
    scopes: tuple[str, ...] = (names.GMAIL_SCOPE,)
    #: The OAuth client the token belongs to (DESIGN.md, "Values stored in SSM"): a refresh token
    #: works only with the client that obtained it. None (and absent from the record): the installed client.
    client_id: str | None = None

    @classmethod
    def issued_now(
        cls,
        token: str,
        *,
        lifetime: timedelta | None,
        scopes: Sequence[str],
        now: datetime | None = None,
    ) -> RefreshToken:
        created = (now or datetime.now(UTC)).replace(microsecond=0)
        return cls(token, created, None if lifetime is None else created + lifetime, tuple(scopes))

    @classmethod
    def from_json(cls, text: str | None, *, env: str = "ENV", mailbox: str = names.DEFAULT_MAILBOX) -> RefreshToken:
        fix = f"run: python -m sesmail.refresh --env {env}"
        if mailbox != names.DEFAULT_MAILBOX:
            fix += f" --mailbox {mailbox}"
        if names.is_placeholder(text):
            raise RefreshTokenError(f"no Gmail refresh token is stored yet; {fix}")
        try:
            data = json.loads(text or "")
            token = data["token"]
            if not isinstance(token, str) or not token:
                raise ValueError("empty token")
            register_secret(token)
            return cls(
                token=token,
                created_at=_parse_iso(data.get("created_at")) or datetime.fromtimestamp(0, UTC),
                expires_at=_parse_iso(data.get("expires_at")),
                scopes=tuple(data.get("scopes") or (names.GMAIL_SCOPE,)),
                client_id=str(data["client_id"]) if data.get("client_id") else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RefreshTokenError(f"the stored refresh token is unreadable ({type(exc).__name__}); {fix}") from None

    def to_json(self) -> str:
        record: dict[str, Any] = {
            "token": self.token,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "scopes": list(self.scopes),
        }
        if self.client_id:
            record["client_id"] = self.client_id
        return json.dumps(record)

    def expiry(self) -> TokenExpiry:
        return TokenExpiry(self.created_at, self.expires_at)


@dataclass(frozen=True)
class TokenExpiry:
    """The non-secret half of the token: all the monitor and the alarms need to know."""

    created_at: datetime
    expires_at: datetime | None

    @property
    def expires_at_epoch(self) -> int | None:
        return None if self.expires_at is None else int(self.expires_at.timestamp())

    def hours_left(self, now: datetime | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return (self.expires_at - (now or datetime.now(UTC))).total_seconds() / 3600

    def to_json(self) -> str:
        return json.dumps(
            {
                "created_at": _iso(self.created_at),
                "expires_at": _iso(self.expires_at),
                "expires_at_epoch": self.expires_at_epoch,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> TokenExpiry:
        if names.is_placeholder(text):
            raise RefreshTokenError("no token expiry is stored yet")
        try:
            data = json.loads(text or "")
            if "expires_at" not in data and "expires_at_epoch" not in data:
                # "Never expires" must be said explicitly (null), never inferred from a missing key.
                raise KeyError("expires_at")
            created = _parse_iso(data.get("created_at"))
            expires = _parse_iso(data.get("expires_at"))
            if expires is None and data.get("expires_at_epoch") is not None:
                expires = datetime.fromtimestamp(int(data["expires_at_epoch"]), UTC)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise RefreshTokenError(f"the token expiry parameter is unreadable ({type(exc).__name__})") from None
        return cls(created or datetime.fromtimestamp(0, UTC), expires)


# --- Minting ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: float  # time.monotonic() deadline, safety margin already subtracted
    minted_now: bool = False


def post_to_token_endpoint(
    http: HttpClient, client: ClientConfig, grant: Mapping[str, str], *, timeout: float
) -> Response:
    """POST ``grant`` and the client's credentials, form-encoded, to the client JSON's ``token_uri``.

    The one request shape of both grants: minting (``refresh_token``) and the renewal page's code
    exchange (``authorization_code``). Transport errors propagate for the caller to classify.
    """
    form = urllib.parse.urlencode(
        {"client_id": client.client_id, "client_secret": client.client_secret, **grant}
    ).encode()
    return http.request(
        "POST",
        client.token_uri,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        body=form,
        timeout=timeout,
    )


def mint_access_token(
    http: HttpClient,
    client: ClientConfig,
    refresh_token: str,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> AccessToken:
    """Exchange the refresh token for an access token at the client JSON's ``token_uri``."""
    grant = {"refresh_token": refresh_token, "grant_type": "refresh_token"}
    try:
        response = post_to_token_endpoint(http, client, grant, timeout=TOKEN_TIMEOUT_SECONDS)
    except Exception as exc:
        raise classify(exc) from None
    if response.status != 200:
        raise _token_endpoint_error(response)
    try:
        payload = json.loads(response.body)
        value = str(payload["access_token"])
        lifetime = float(payload.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError):
        raise TransientError("the token endpoint answered 200 without a usable access_token") from None
    register_secret(value)
    usable = max(lifetime - names.ACCESS_TOKEN_SAFETY_MARGIN_SECONDS, lifetime / 2)
    return AccessToken(value, clock() + usable, minted_now=True)


def _token_endpoint_error(response: Response) -> Exception:
    try:
        payload = json.loads(response.body)
        error = str(payload.get("error", ""))
        description = str(payload.get("error_description", ""))
    except (ValueError, AttributeError):
        error, description = "", response.body[:200].decode("utf-8", "replace")
    detail = f"token endpoint answered {response.status} {error}: {description}".rstrip(": ")
    if response.status in (408, 429) or response.status >= 500:
        return TransientError(detail, retry_after=parse_retry_after(response.header("Retry-After")))
    if error == _DEAD_GRANT:
        return TokenExpiredError(detail)
    if response.status in (400, 401, 403):
        # invalid_client, unauthorized_client, invalid_scope: the OAuth client or its setup,
        # which renewing the refresh token would not fix.
        return MailboxRefusedError(f"{detail}; check the OAuth client JSON in SSM (refresh CLI --client-secret)")
    return PermanentError(detail)


# --- Which OAuth client a refresh token belongs to ------------------------------------------------------


def _declared_client_id(text: str | None) -> str | None:
    """The ``client_id`` a client JSON declares, without validating the rest; None if it has none to read.

    Only for matching: the JSON that matches is then parsed in full, so a placeholder or broken
    JSON of the *other* client never stands in the way.
    """
    if names.is_placeholder(text):
        return None
    try:
        data = json.loads(text or "")
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    for kind in ("installed", "web"):
        section = data.get(kind)
        if isinstance(section, dict) and section.get("client_id"):
            return str(section["client_id"])
    return None


def _web_client_from_json(text: str | None, *, env: str) -> ClientConfig:
    """The web client JSON parsed as :meth:`ClientConfig.from_json` does, its errors naming the web upload."""
    try:
        return ClientConfig.from_json(text, env=env)
    except ClientConfigError as exc:
        reason = exc.reason.split(";")[0].replace("the OAuth client JSON", "the web OAuth client JSON", 1)
        raise ClientConfigError(f"{reason}; {_web_upload(env)}") from None


def _web_upload(env: str) -> str:
    return f"store the renewal page's client JSON: python -m sesmail.refresh --env {env} --web-client-secret FILE"


def client_for(
    token: RefreshToken,
    installed: str | None,
    web: str | None,
    *,
    env: str,
    mailbox: str = names.DEFAULT_MAILBOX,
) -> ClientConfig:
    """The OAuth client that may mint with ``token``: a refresh token works only with the client that obtained it.

    ``installed`` and ``web`` are the stored client JSONs (None when absent). A record without
    ``client_id`` belongs to the installed client (the CLI's, and every record written before the
    renewal page existed); one with ``client_id`` uses whichever JSON declares that id (the page's
    web client, or the installed one). Presenting the token with the other client would only earn
    Google's ``unauthorized_client``, so no match is a :class:`ClientConfigError` saying what to fix.
    """
    if token.client_id is None:
        return ClientConfig.from_json(installed, env=env)
    if _declared_client_id(installed) == token.client_id:
        return ClientConfig.from_json(installed, env=env)
    if _declared_client_id(web) == token.client_id:
        return _web_client_from_json(web, env=env)
    renew = names.refresh_command(env, mailbox)
    owner = f"the refresh token of mailbox {mailbox} belongs to OAuth client {token.client_id}"
    web_name = names.web_client_credentials_parameter(env)
    if names.is_placeholder(web):
        other = ", not the installed one," if _declared_client_id(installed) else ","
        raise ClientConfigError(
            f"{owner}{other} but the web client JSON {web_name} is not configured yet; {_web_upload(env)} "
            f"(or renew the token with: {renew})"
        )
    if _declared_client_id(web) is None:
        _web_client_from_json(web, env=env)  # raises: says what is wrong with the stored web JSON
    raise ClientConfigError(
        f"{owner}, but neither stored client JSON ({names.client_credentials_parameter(env)}, {web_name}) has "
        f"that client id; re-upload the client JSON that obtained it (python -m sesmail.refresh --env {env} "
        f"--client-secret FILE or --web-client-secret FILE), or renew the token with: {renew}"
    )


# --- The provider the forwarder uses -----------------------------------------------------------------


#: Reads SSM parameters: {parameter name: (decrypted value, version)} for the names that exist.
ParameterReader = Callable[[Sequence[str]], Mapping[str, tuple[str, int]]]


@dataclass
class _Credentials:
    client: ClientConfig
    refresh_token: RefreshToken
    version: int


class AccessTokenProvider:
    """Mints access tokens from one mailbox's refresh token in SSM; never writes the refresh token.

    ``mailbox`` picks the refresh token (``names.refresh_token_parameter(env, mailbox)``); the
    OAuth client JSONs are shared by every mailbox of the environment, and the token's record
    picks which of them mints (:func:`client_for`).

    On ``invalid_grant`` it re-reads SSM once (the operator may just have renewed the token)
    before declaring the token dead. A dead token is remembered by its parameter version,
    so later invocations check SSM (one cheap call) instead of hammering Google.
    """

    def __init__(
        self,
        env: str,
        read_parameters: ParameterReader,
        http: HttpClient,
        *,
        mailbox: str = names.DEFAULT_MAILBOX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env = env
        self._mailbox = names.check_mailbox(mailbox)
        self._read = read_parameters
        self._http = http
        self._clock = clock
        self._credentials: _Credentials | None = None
        self._access: AccessToken | None = None
        self._dead_version: int | None = None

    def get(self) -> AccessToken:
        if self._access is not None and self._clock() < self._access.expires_at:
            return AccessToken(self._access.value, self._access.expires_at, minted_now=False)
        if self._credentials is None or self._dead_version is not None:
            self._credentials = self._load()
        credentials = self._credentials
        if credentials.version == self._dead_version:
            raise TokenExpiredError(self._dead_message())
        try:
            self._access = self._mint(credentials)
        except TokenExpiredError as exc:
            reread = self._load()
            self._credentials = reread
            if reread.version == credentials.version:
                self._dead_version = credentials.version
                raise TokenExpiredError(f"{exc.reason}; {self._dead_message()}") from None
            log.info("refresh token changed in SSM; retrying with the new one", extra={"event": "token.reloaded"})
            self._access = self._mint_or_mark_dead(reread)
        self._dead_version = None
        return self._access

    def forget(self, token: AccessToken) -> None:
        """Gmail answered 401 for ``token``: drop it, so the next :meth:`get` mints a fresh one.

        The refresh token is not judged here: only the token endpoint says it is dead.
        """
        if self._access is not None and self._access.value == token.value:
            self._access = None

    def renewed(self) -> bool:
        """Re-read the stored refresh token: True, and the cached access token dropped, if it changed.

        For a refusal that only a renewal fixes (a scope the loaded grant lacks): the operator may
        just have renewed, and a warm container would otherwise keep minting from the grant it
        loaded when it started, for as long as that grant lives.
        """
        reread = self._load()
        if self._credentials is not None and reread.version == self._credentials.version:
            return False
        log.info("refresh token changed in SSM; using the new one", extra={"event": "token.reloaded"})
        self._credentials, self._access, self._dead_version = reread, None, None
        return True

    def _mint(self, credentials: _Credentials) -> AccessToken:
        token = mint_access_token(self._http, credentials.client, credentials.refresh_token.token, clock=self._clock)
        log.info("minted a Gmail access token", extra={"event": "token.minted"})
        return token

    def _mint_or_mark_dead(self, credentials: _Credentials) -> AccessToken:
        try:
            return self._mint(credentials)
        except TokenExpiredError as exc:
            self._dead_version = credentials.version
            raise TokenExpiredError(f"{exc.reason}; {self._dead_message()}") from None

    def _load(self) -> _Credentials:
        """Both client JSONs and the token in one SSM call: the token's record says which client mints."""
        installed_name = names.client_credentials_parameter(self._env)
        web_name = names.web_client_credentials_parameter(self._env)
        token_name = names.refresh_token_parameter(self._env, self._mailbox)
        try:
            values = self._read([installed_name, web_name, token_name])
        except Exception as exc:
            raise classify(exc) from None
        token_value, version = values.get(token_name, (None, 0))
        token = RefreshToken.from_json(token_value, env=self._env, mailbox=self._mailbox)
        client = client_for(
            token,
            values.get(installed_name, (None, 0))[0],
            values.get(web_name, (None, 0))[0],
            env=self._env,
            mailbox=self._mailbox,
        )
        return _Credentials(client=client, refresh_token=token, version=version)

    def _dead_message(self) -> str:
        command = names.refresh_command(self._env, self._mailbox)
        return f"the Gmail refresh token is expired or revoked; renew it with: {command}"
