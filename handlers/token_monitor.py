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


def retry_autostart(clients: AwsClients, env: str) -> token_monitor.RetryAutostart | None:
    """The retry queue and state machine from the environment; None when the program did not set them.

    A missing variable does not stop the monitor: the hours are its first job, and the autostart
    step reports the missing configuration in its own log line.
    """
    queue_url = os.environ.get(names.ENV_VAR_RETRY_QUEUE_URL, "")
    state_machine_arn = os.environ.get(names.ENV_VAR_STATE_MACHINE_ARN, "")
    if not (queue_url and state_machine_arn):
        return None
    return token_monitor.RetryAutostart(
        sqs=clients.sqs,
        sfn=clients.get("stepfunctions"),
        queue_url=queue_url,
        state_machine_arn=state_machine_arn,
        prove_token=lambda: token_monitor.prove_token(env, clients.read_parameters),
    )


def handler(event: Any, context: Any) -> dict[str, Any]:
    global _clients
    env = environment()
    _clients = _clients or AwsClients()
    with bound(env=env, requestId=getattr(context, "aws_request_id", None)):
        return token_monitor.monitor(
            _clients.ssm,
            _clients.get("cloudwatch"),
            env,
            retry_autostart(_clients, env),
            scheduled_at=token_monitor.scheduled_time(event),
        )


def reset() -> None:
    """Forget the warm clients (tests simulate a cold start)."""
    global _clients
    _clients = None
