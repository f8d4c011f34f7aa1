"""The renewal page's own constants, its environment and its SSM secrets."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sesmail import names
from sesmail.runtime.log import register_secret
from sesmail.runtime.mailboxes import MailboxTable
from sesmail.runtime.tokens import ClientConfig, ClientConfigError

# --- names ------------------------------------------------------------------------------------------
# The public ones (function, parameters, environment variables, paths, audit names) live in
# ``sesmail.names`` with every other name; these are the page's own.

#: Cookie names. ``__Host-``: browsers accept them only with ``Secure``, ``Path=/`` and no ``Domain``.
FLOW_COOKIE = "__Host-sesmail-renewal"
RESULT_COOKIE = "__Host-sesmail-result"
#: A flow must come back from Google within this (Google's codes live about as long).
FLOW_LIFETIME_SECONDS = 600
#: How long ``/done`` shows a renewal's outcome (reload it to watch the queue drain).
RESULT_LIFETIME_SECONDS = 1800
#: The renewal secret: at least 256 bits when generated as Pulumi does (``token_urlsafe(32)``).
MIN_SECRET_CHARS = 32
#: SSM values are read once per warm container and again after this (a rotated secret or a
#: re-uploaded client JSON takes effect within it).
PARAMETER_CACHE_SECONDS = 300.0


# --- configuration from the environment ------------------------------------------------------------


class NotConfigured(RuntimeError):
    """The page cannot work until the operator does something; the message says what."""


@dataclass(frozen=True)
class Settings:
    """What the Pulumi program gives the function in its environment."""

    env: str
    mailboxes: MailboxTable
    retry_queue_url: str | None
    state_machine_arn: str | None
    base_url: str | None
    lifetime_days: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        env = environ.get(names.ENV_VAR_ENV, "").strip()
        if not env:
            raise NotConfigured(f"{names.ENV_VAR_ENV} is not set: deploy the renewal page with the Pulumi program")
        names.check_env(env)
        table_text = environ.get(names.ENV_VAR_MAILBOXES, "")
        if table_text.strip():
            try:
                table = MailboxTable.from_json(table_text)
            except ValueError as exc:
                raise NotConfigured(f"{exc}: deploy the renewal page with the Pulumi program") from None
        else:
            address = environ.get(names.ENV_VAR_GMAIL_ADDRESS, "").strip()
            table = MailboxTable.single(gmail_address=address or None)
        return cls(
            env=env,
            mailboxes=table,
            retry_queue_url=environ.get(names.ENV_VAR_RETRY_QUEUE_URL, "").strip() or None,
            state_machine_arn=environ.get(names.ENV_VAR_STATE_MACHINE_ARN, "").strip() or None,
            base_url=_base_url(environ.get(names.ENV_VAR_RENEWAL_BASE_URL, "")),
            lifetime_days=_lifetime_days(environ.get(names.ENV_VAR_TOKEN_LIFETIME_DAYS, "")),
        )


def _base_url(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise NotConfigured(f"{names.ENV_VAR_RENEWAL_BASE_URL}={value!r} is not an http(s) base URL")
    return value if value.endswith("/") else value + "/"


def _lifetime_days(value: str) -> int:
    value = value.strip()
    if not value:
        return names.TESTING_TOKEN_LIFETIME_DAYS
    if not value.isdigit():
        raise NotConfigured(f"{names.ENV_VAR_TOKEN_LIFETIME_DAYS}={value!r} is not a whole number of days")
    return int(value)


# --- secrets from SSM ------------------------------------------------------------------------------

ReadParameters = Callable[[Sequence[str]], Mapping[str, tuple[str, int]]]


@dataclass(frozen=True)
class Secrets:
    """The web OAuth client and the signing secret (kept out of every repr)."""

    client: ClientConfig = field(repr=False)
    secret: bytes = field(repr=False)


def load_secrets(read_parameters: ReadParameters, env: str) -> Secrets:
    """Both SSM values in one call; :class:`NotConfigured` naming the parameter and the fix otherwise."""
    client_name, secret_name = names.web_client_credentials_parameter(env), names.renewal_secret_parameter(env)
    found = read_parameters([client_name, secret_name])
    client_text = found.get(client_name, (None, 0))[0]
    upload = (
        "create a 'Web application' OAuth client whose redirect URI is this page's URL followed by "
        f"'callback', download its JSON and store it: python -m sesmail.refresh --env {env} "
        "--web-client-secret FILE"
    )
    if client_text is None or names.is_placeholder(client_text):
        raise NotConfigured(f"the web OAuth client JSON {client_name} is not configured yet; {upload}")
    try:
        client = ClientConfig.from_json(client_text, env=env)
    except ClientConfigError as exc:
        reason = exc.reason.split(";")[0]
        raise NotConfigured(f"{client_name} is not usable ({reason}); {upload}") from None
    if client.kind != "web":
        raise NotConfigured(f"{client_name} holds a '{client.kind}' client, not a 'Web application' one; {upload}")
    secret_text = found.get(secret_name, (None, 0))[0]
    deploy = names.deploy_command(env)
    if secret_text is None or names.is_placeholder(secret_text):
        raise NotConfigured(f"the renewal secret {secret_name} is not configured yet; run `{deploy}`")
    secret = secret_text.strip()
    register_secret(secret_text)
    register_secret(secret)
    if len(secret) < MIN_SECRET_CHARS:
        raise NotConfigured(
            f"the renewal secret {secret_name} holds fewer than {MIN_SECRET_CHARS} characters; store a longer "
            f"random value (or delete it and run `{deploy}`)"
        )
    return Secrets(client, secret.encode("utf-8"))


class SecretsCache:
    """:func:`load_secrets` once per warm container, again after ``ttl_seconds``; failures are not cached."""

    def __init__(
        self,
        read_parameters: ReadParameters,
        env: str,
        *,
        ttl_seconds: float = PARAMETER_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read_parameters
        self._env = env
        self._ttl = ttl_seconds
        self._clock = clock
        self._value: Secrets | None = None
        self._loaded_at = 0.0

    def get(self) -> Secrets:
        if self._value is None or self._clock() - self._loaded_at > self._ttl:
            self._value = load_secrets(self._read, self._env)
            self._loaded_at = self._clock()
        return self._value
