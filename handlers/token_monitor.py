"""Lambda entry point of the token monitor (EventBridge, every 15 minutes): a thin adapter onto sesmail."""

from __future__ import annotations

import os
from typing import Any

from sesmail import names, token_monitor
from sesmail.aws import AwsClients
from sesmail.log import bound

_clients: AwsClients | None = None


def environment() -> str:
    """``SESMAIL_ENV``, set by the Pulumi program; a clear error instead of a bare KeyError."""
    value = os.environ.get(names.ENV_VAR_ENV, "")
    if not value:
        raise RuntimeError(f"{names.ENV_VAR_ENV} is not set: deploy the token monitor with the Pulumi program")
    return names.check_env(value)


def handler(event: Any, context: Any) -> dict[str, Any]:
    global _clients
    env = environment()
    _clients = _clients or AwsClients()
    with bound(env=env, requestId=getattr(context, "aws_request_id", None)):
        return token_monitor.run(_clients.ssm, _clients.get("cloudwatch"), env).as_dict()


def reset() -> None:
    """Forget the warm clients (tests simulate a cold start)."""
    global _clients
    _clients = None
