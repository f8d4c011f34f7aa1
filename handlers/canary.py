"""Lambda entry point of the canary (EventBridge, once a day): a thin adapter onto sesmail.runtime.canary."""

from __future__ import annotations

import os
from typing import Any

from sesmail import names
from sesmail.runtime import canary
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.log import bound

_clients: AwsClients | None = None


def environment() -> str:
    """``SESMAIL_ENV``, set by the Pulumi program; a clear error instead of a bare KeyError."""
    value = os.environ.get(names.ENV_VAR_ENV, "")
    if not value:
        raise RuntimeError(f"{names.ENV_VAR_ENV} is not set: deploy the canary with the Pulumi program")
    return names.check_env(value)


def canary_address() -> str:
    """``CANARY_ADDRESS`` (``ses-mail-canary@{first domain}``), set by the Pulumi program."""
    value = os.environ.get(names.ENV_VAR_CANARY_ADDRESS, "").strip()
    if not value:
        raise RuntimeError(
            f"{names.ENV_VAR_CANARY_ADDRESS} is not set: deploy the canary with the Pulumi program "
            f"(it sends from and to {names.canary_address('<first domain>')})"
        )
    return value


def handler(event: Any, context: Any) -> dict[str, str]:
    global _clients
    env = environment()
    address = canary_address()
    _clients = _clients or AwsClients()
    with bound(env=env, requestId=getattr(context, "aws_request_id", None)):
        return canary.run(_clients, env, address)


def reset() -> None:
    """Forget the warm clients (tests simulate a cold start)."""
    global _clients
    _clients = None
