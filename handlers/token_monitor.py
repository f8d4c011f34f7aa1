"""Lambda entry point of the token monitor (EventBridge, every 15 minutes, and once a day with
``{"action": "daily-reconcile", "time": ...}``): a thin adapter onto sesmail."""

from __future__ import annotations

import os
from typing import Any

from sesmail import names
from sesmail.runtime import token_monitor
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.log import bound
from sesmail.runtime.mailboxes import MailboxTable, queue_url_for

_clients: AwsClients | None = None


def environment() -> str:
    """``SESMAIL_ENV``, set by the Pulumi program; a clear error instead of a bare KeyError."""
    value = os.environ.get(names.ENV_VAR_ENV, "")
    if not value:
        raise RuntimeError(f"{names.ENV_VAR_ENV} is not set: deploy the token monitor with the Pulumi program")
    return names.check_env(value)


def mailbox_table() -> MailboxTable:
    """``MAILBOXES`` (set only when the stack configures mailboxes), else the one mailbox ``default``.

    A table that cannot be read fails the run: guessing would publish some mailboxes' hours and
    silently drop the others' (their alarms then fire on missing data, and this error says why).
    """
    text = os.environ.get(names.ENV_VAR_MAILBOXES, "")
    if not text.strip():
        return MailboxTable.single()
    try:
        return MailboxTable.from_json(text)
    except ValueError as exc:
        raise RuntimeError(f"{exc}: deploy the token monitor with the Pulumi program") from None


def retry_autostart(
    clients: AwsClients, env: str, mailboxes: MailboxTable | None = None
) -> token_monitor.RetryAutostart | None:
    """Every mailbox's retry queue and the state machine from the environment; None when the
    program did not set them (or set a queue URL no mailbox's URL can be derived from).

    A missing variable does not stop the monitor: the hours are its first job, and the autostart
    step reports the missing configuration in its own log lines.
    """
    queue_url = os.environ.get(names.ENV_VAR_RETRY_QUEUE_URL, "")
    state_machine_arn = os.environ.get(names.ENV_VAR_STATE_MACHINE_ARN, "")
    if not (queue_url and state_machine_arn):
        return None
    table = mailboxes or mailbox_table()
    try:
        queue_urls = {mailbox: queue_url_for(queue_url, env, mailbox) for mailbox in table.names}
    except ValueError:
        return None
    return token_monitor.RetryAutostart(
        sqs=clients.sqs,
        sfn=clients.get("stepfunctions"),
        queue_urls=queue_urls,
        state_machine_arn=state_machine_arn,
        prove_token=lambda mailbox: token_monitor.prove_token(env, clients.read_parameters, mailbox),
    )


def handler(event: Any, context: Any) -> dict[str, Any]:
    global _clients
    env = environment()
    _clients = _clients or AwsClients()
    with bound(env=env, requestId=getattr(context, "aws_request_id", None)):
        table = mailbox_table()
        return token_monitor.monitor(
            _clients.ssm,
            _clients.get("cloudwatch"),
            env,
            retry_autostart(_clients, env, table),
            mailboxes=table.names,
            scheduled_at=token_monitor.scheduled_time(event),
            daily=token_monitor.is_daily_reconcile(event),
        )


def reset() -> None:
    """Forget the warm clients (tests simulate a cold start)."""
    global _clients
    _clients = None
