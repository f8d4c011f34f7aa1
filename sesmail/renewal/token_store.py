"""The only code that writes the Gmail refresh token (and its expiry and the client JSONs) to SSM.

Two rules make a renewal safe to interrupt at any point:

1. Nothing is written until the new refresh token has been *proven*: :func:`prove_token`
   mints an access token with it, and :func:`store_token` only accepts the
   :class:`ProvenToken` that comes out of that. A token Google issued but will not honour never
   replaces one that may still work.
2. All-or-nothing: the previous values are read first, and if any write fails (or the operator
   presses Ctrl-C) the parameters already written get their previous values back, so the
   forwarder never sees a new client JSON with an old token, or a token with a stale expiry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sesmail import names
from sesmail.runtime.http import HttpClient
from sesmail.runtime.tokens import ClientConfig, RefreshToken, mint_access_token

SECURE = "SecureString"
PLAIN = "String"


@dataclass(frozen=True)
class ProvenToken:
    """A refresh token that just minted an access token with ``client``."""

    token: RefreshToken
    client: ClientConfig


@dataclass(frozen=True)
class WrittenParameter:
    name: str
    version: int


@dataclass(frozen=True)
class StoredToken:
    """What :func:`store_token` wrote, in write order (for the audit record and the output)."""

    parameters: tuple[WrittenParameter, ...]

    def version_of(self, name: str) -> int | None:
        return next((p.version for p in self.parameters if p.name == name), None)


class StoreFailed(Exception):
    """A write failed; ``unrestored`` lists parameters whose previous value could not be put back."""

    def __init__(self, cause: BaseException, unrestored: Sequence[str]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.unrestored = tuple(unrestored)


@dataclass(frozen=True)
class _Write:
    name: str
    value: str = field(repr=False)
    type: str


@dataclass(frozen=True)
class _Previous:
    value: str = field(repr=False)
    type: str
    key_id: str | None


def prove_token(http: HttpClient, client: ClientConfig, token: RefreshToken) -> ProvenToken:
    """Mint an access token with ``token``; raises (``TokenExpiredError``, ...) if Google refuses it."""
    mint_access_token(http, client, token.token)
    return ProvenToken(token, client)


def missing_parameters(ssm: Any, env: str, mailbox: str = names.DEFAULT_MAILBOX) -> list[str]:
    """The token parameters that do not exist yet: the stack was not deployed (``pulumi up``).

    Checked before the browser opens, because creating them here would make the next
    ``pulumi up`` fail on parameters it did not create.
    """
    return missing(ssm, _parameter_names(env, mailbox))


def missing(ssm: Any, parameter_names: Sequence[str]) -> list[str]:
    """Those of ``parameter_names`` that do not exist (``pulumi up`` creates them, with a placeholder)."""
    found = {p["Name"] for p in _describe(ssm, parameter_names)}
    return [name for name in parameter_names if name not in found]


def store_token(
    ssm: Any, env: str, proven: ProvenToken, *, client_json: str | None = None, mailbox: str = names.DEFAULT_MAILBOX
) -> StoredToken:
    """Write client JSON (if given), the mailbox's refresh token and expiry; all of them or none."""
    writes = _planned_writes(env, proven.token, client_json, mailbox)
    previous = _snapshot(ssm, [w.name for w in writes])
    done: list[WrittenParameter] = []
    try:
        for write in writes:
            done.append(WrittenParameter(write.name, _put(ssm, write, previous.get(write.name))))
    except BaseException as exc:
        unrestored = _restore(ssm, [p.name for p in reversed(done)], previous)
        if isinstance(exc, Exception):
            raise StoreFailed(exc, unrestored) from exc
        raise  # KeyboardInterrupt: restored; let it end the program
    return StoredToken(tuple(done))


def put_secure_string(ssm: Any, name: str, value: str) -> WrittenParameter:
    """Overwrite the SecureString ``name`` with ``value``, keeping the KMS key it has (Pulumi may have chosen one).

    One write, so nothing to undo; for a parameter of its own (the renewal page's web client JSON).
    """
    described = _describe(ssm, [name])
    key_id = described[0].get("KeyId") if described and described[0].get("Type") == SECURE else None
    return WrittenParameter(name, _put_with_key(ssm, _Write(name, value, SECURE), key_id))


def _parameter_names(env: str, mailbox: str) -> list[str]:
    return [
        names.client_credentials_parameter(env),
        names.refresh_token_parameter(env, mailbox),
        names.refresh_token_expiry_parameter(env, mailbox),
    ]


def _planned_writes(env: str, token: RefreshToken, client_json: str | None, mailbox: str) -> list[_Write]:
    """Client first, expiry last: the token monitor only looks at the expiry."""
    writes = [] if client_json is None else [_Write(names.client_credentials_parameter(env), client_json, SECURE)]
    writes.append(_Write(names.refresh_token_parameter(env, mailbox), token.to_json(), SECURE))
    writes.append(_Write(names.refresh_token_expiry_parameter(env, mailbox), token.expiry().to_json(), PLAIN))
    return writes


def _describe(ssm: Any, parameter_names: Sequence[str]) -> list[dict[str, Any]]:
    response = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": list(parameter_names)}]
    )
    return list(response.get("Parameters", []))


def _snapshot(ssm: Any, parameter_names: Sequence[str]) -> dict[str, _Previous]:
    """Current value, type and KMS key of each existing parameter (to restore, and to keep the key)."""
    metadata = {p["Name"]: p for p in _describe(ssm, parameter_names)}
    if not metadata:
        return {}
    response = ssm.get_parameters(Names=list(metadata), WithDecryption=True)
    return {
        p["Name"]: _Previous(p["Value"], p["Type"], metadata[p["Name"]].get("KeyId"))
        for p in response.get("Parameters", [])
    }


def _put(ssm: Any, write: _Write, previous: _Previous | None) -> int:
    """Overwrite one parameter, keeping its KMS key (Pulumi may have chosen one)."""
    kept = previous.key_id if previous is not None and previous.type == SECURE else None
    return _put_with_key(ssm, write, kept)


def _put_with_key(ssm: Any, write: _Write, key_id: str | None) -> int:
    extra: dict[str, str] = {"KeyId": key_id} if write.type == SECURE and key_id else {}
    response = ssm.put_parameter(Name=write.name, Value=write.value, Type=write.type, Overwrite=True, **extra)
    return int(response["Version"])


def _restore(ssm: Any, written: Sequence[str], previous: dict[str, _Previous]) -> list[str]:
    """Put back the previous values (newest write first); names that could not be restored."""
    unrestored: list[str] = []
    for name in written:
        before = previous.get(name)
        try:
            if before is None:
                ssm.delete_parameter(Name=name)
            else:
                _put(ssm, _Write(name, before.value, before.type), before)
        except Exception:
            unrestored.append(name)
    return unrestored
