"""``python -m sesmail.refresh --env ENV``: renew the Gmail refresh token in one command.

The steps, in an order that keeps every failure harmless: check AWS access and that the stack is
deployed (before any browser opens) → consent in the browser (:mod:`sesmail.cli.oauth_flow`) →
prove the new token by minting an access token → store it, all or nothing, publish
``TokenHoursUntilExpiration`` so the alarm clears now, write the audit record and start the retry
processor: the steps the renewal page takes too, so both call
:func:`sesmail.renewal.finish.complete_renewal`, and this module only words the outcome → with
``--wait``, follow the retry processor (:mod:`sesmail.runtime.retry_run`).

``--web-client-secret FILE`` is the one-time set-up of the phone renewal page instead: it checks
that the file is a "Web application" client, stores it in its own SecureString parameter, says
which redirect URI to register for it, and writes an audit record; no consent, no token.

``--reconcile`` delivers the stored mail no queue will (DESIGN.md, "Reconcile: S3 is the source of
truth"), no consent and no token either: it plans from the mail bucket for every mailbox of the
stack (or ``--mailbox NAME``), prints what is owed, oldest first, and why, then starts the retry
processor, which reconciles before it drains, for each mailbox owed mail (:mod:`sesmail.cli.reconcile`).
``--dry-run`` only prints the plan; ``--wait`` follows the executions.

Output is for a human at a terminal. Every failure ends in one sentence with the fix
(:mod:`sesmail.cli.errors`) and exit code 1; tokens and the client secret never appear,
because nothing prints them and every line is passed through :func:`sesmail.runtime.log.redact`.
Exit codes: 0 ok, 1 failed, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sesmail import names
from sesmail.cli import reconcile as reconcile_cli
from sesmail.cli.args import PROG, parse_args
from sesmail.cli.errors import ErrorContext, RefreshFailed, explain
from sesmail.cli.oauth_flow import Grant, obtain_grant
from sesmail.renewal.audit import AuditLogGroupMissing, write_audit_record
from sesmail.renewal.finish import Completion, Renewal, complete_renewal
from sesmail.renewal.settings import PARAMETER_CACHE_SECONDS
from sesmail.renewal.token_store import (
    ProvenToken,
    StoredToken,
    WrittenParameter,
    missing,
    missing_parameters,
    prove_token,
    put_secure_string,
)
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.http import HttpClient
from sesmail.runtime.log import redact
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from sesmail.runtime.retry_run import TRIGGER, finished_sentence, follow_execution, queue_depth, retry_queue_url
from sesmail.runtime.token_metrics import hours_left
from sesmail.runtime.tokens import ClientConfig, ClientConfigError, RefreshToken, iso_utc

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
#: The audit record's ``source``: this CLI (the renewal page writes its own).
AUDIT_SOURCE = "refresh-cli"


class Console:
    """Human-readable output; every line is redacted as a last line of defence for secrets."""

    def say(self, text: str) -> None:
        print(redact(text), flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {redact(text)}", file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print(f"error: {redact(text)}", file=sys.stderr, flush=True)


@dataclass
class _Run:
    """How far a run got: what an interruption or a late failure has to tell the operator."""

    env: str
    ctx: ErrorContext
    console: Console
    mailbox: str = names.DEFAULT_MAILBOX
    stored: bool = False
    execution_arn: str | None = None
    #: ``--web-client-secret``: the web client JSON was written.
    web_client_stored: bool = False
    #: ``--reconcile``: the executions of the retry processor it started.
    started: list[str] = field(default_factory=list)

    def interrupted(self) -> str:
        if self.execution_arn:
            return f"stopped waiting; the retry processor keeps running: {self.execution_arn}"
        if self.stored:
            return "interrupted after the new token was stored; the retry processor was not started"
        if self.web_client_stored:
            return "interrupted after the web client JSON was stored; rerun to see the redirect URI to register"
        if self.started:
            started = ", ".join(self.started)
            return f"interrupted; the retry processor was started and carries on without this command: {started}"
        return "interrupted; nothing was stored"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    ctx = ErrorContext(env=args.env, port=args.port, profile=args.profile, reconcile=args.reconcile)
    run = _Run(args.env, ctx, console, mailbox=args.mailbox or names.DEFAULT_MAILBOX)
    try:
        if args.reconcile:
            return _reconcile(args, run)
        if args.web_client_secret is not None:
            return _store_web_client(args, run)
        return _renew(args, run)
    except KeyboardInterrupt:
        console.error(run.interrupted())
        return EXIT_INTERRUPTED
    except Exception as exc:
        console.error(explain(exc, run.ctx))
        if os.environ.get(names.ENV_VAR_DEBUG):
            print(redact(traceback.format_exc()), file=sys.stderr)
        return EXIT_FAILED


@dataclass(frozen=True)
class _Caller:
    account: str
    arn: str
    region: str

    @property
    def partition(self) -> str:
        """``aws``, ``aws-cn`` or ``aws-us-gov``: the second field of the caller's own ARN."""
        return self.arn.split(":")[1]


@dataclass(frozen=True)
class _Queue:
    """The retry queue as it was just before the drain started, for ``--wait``'s progress."""

    url: str | None
    depth: int | None


def _renew(args: argparse.Namespace, run: _Run) -> int:
    """The whole renewal; each step either succeeds or raises, and nothing is stored before the proof."""
    poll_seconds = _poll_seconds()
    aws = AwsClients(args.region, args.profile)
    caller = _identify(aws, run, f"Renewing the Gmail token of environment {run.env!r}")
    mailbox = _mailbox(aws.ssm, run)
    _require_deployed(aws.ssm, run.env, caller.region, run.mailbox)
    client_text, client = _client_config(args, aws.ssm, run.env)
    run.console.say(f"OAuth client {client.client_id} (from {args.client_secret or 'SSM'}).")
    proven, lifetime_source, account = _consent_and_prove(args, client_text, client, run.console, mailbox)

    state_machine_arn = (
        None if args.no_retry else names.state_machine_arn(run.env, caller.region, caller.account, caller.partition)
    )
    queue = _queue_before_drain(aws, run) if args.wait else _Queue(None, None)
    renewal = Renewal(
        env=run.env,
        mailbox=run.mailbox,
        source=AUDIT_SOURCE,
        who=caller.arn,
        google_account=account,
        lifetime_source=lifetime_source,
        audit_fields={"account": caller.account, "tool": PROG},
    )

    def stored(written: StoredToken) -> None:
        run.stored = True
        _announce_stored(run.console, written, proven.token, lifetime_source)

    completion = complete_renewal(
        aws,
        proven,
        renewal,
        state_machine_arn=state_machine_arn,
        trigger=TRIGGER,
        client_json=client_text if args.client_secret else None,
        on_stored=stored,
    )
    _report_metric(run, completion)
    _report_audit(run, completion.audit_stream, completion.audit_error)
    if state_machine_arn is None:
        run.console.say("Not starting the retry processor (--no-retry): parked mail stays queued until it runs.")
        return EXIT_OK
    return _report_drain(aws, run, completion, state_machine_arn, queue, wait=args.wait, poll_seconds=poll_seconds)


def _identify(aws: AwsClients, run: _Run, doing: str) -> _Caller:
    """Who and where we are; fails on credentials or region before any browser opens or anything is written."""
    region = str(aws.ssm.meta.region_name)
    identity = aws.get("sts").get_caller_identity()
    caller = _Caller(str(identity["Account"]), str(identity["Arn"]), region)
    run.console.say(f"{doing}: account {caller.account}, region {region}, as {caller.arn}.")
    return caller


def _mailbox_table(ssm: Any, env: str) -> MailboxTable:
    """The stack's mailbox table in SSM.

    The table parameter exists when the stack configures ``mailboxes`` or ``gmailAddress``; without
    it only ``default`` exists, with no address to check the consenting account against.
    """
    try:
        text = str(ssm.get_parameter(Name=names.mailboxes_parameter(env))["Parameter"]["Value"])
        return MailboxTable.from_json(text)
    except ssm.exceptions.ParameterNotFound:
        return MailboxTable.single()
    except ValueError as exc:
        raise RefreshFailed(
            f"the mailbox table {names.mailboxes_parameter(env)} is unreadable ({exc}); "
            f"run `{names.deploy_command(env)}` to rewrite it"
        ) from None


def _mailbox(ssm: Any, run: _Run) -> Mailbox:
    """The mailbox being renewed, from the stack's mailbox table; says which account it expects."""
    table = _mailbox_table(ssm, run.env)
    mailbox = table.get(run.mailbox)
    if mailbox is None:
        raise RefreshFailed(
            f"stack {run.env!r} has no mailbox {run.mailbox!r} (it has: {', '.join(table.names)}); "
            "pass one of those to --mailbox, or add the mailbox to ses-mail:mailboxes and run "
            f"`{names.deploy_command(run.env)}`"
        )
    expected = mailbox.gmail_address or "any account (no gmailAddress configured, so it is not checked)"
    run.console.say(f"Mailbox {mailbox.name!r}: Google's consent must come from {expected}.")
    return mailbox


def _check_account(grant: Grant, mailbox: Mailbox, console: Console) -> str | None:
    """The consenting account (from the id token); refuses another account than the mailbox's.

    Storing another account's token would import this mailbox's mail into that account's Gmail,
    so a mismatch stores nothing (the renewal page refuses it alike).
    """
    identity = grant.identity
    account = identity.verified_email() if identity is not None and identity.from_google else None
    expected = mailbox.gmail_address
    if account is None:
        if expected:
            console.warn(
                f"Google's answer did not name a verified account (no usable id token), so it could not be "
                f"checked against {expected}"
            )
        return None
    if expected and account != expected.lower():
        raise RefreshFailed(
            f"Google's consent came from {account}, but mailbox {mailbox.name!r} belongs to {expected}; nothing "
            f"was stored. Rerun and choose {expected} on Google's account screen (or correct the mailbox's "
            "gmailAddress in the stack config)"
        )
    console.say(f"Google says the consent came from {account} (the id token's verified e-mail).")
    return account


def _consent_and_prove(
    args: argparse.Namespace, client_text: str, client: ClientConfig, console: Console, mailbox: Mailbox
) -> tuple[ProvenToken, str, str | None]:
    """Consent in the browser (as the mailbox's account), then mint an access token with the new refresh token."""
    if client.kind == "web":
        console.warn(
            f"this is a 'web' OAuth client: Google redirects only to the URIs registered for it, so add "
            f"http://{names.OAUTH_LOOPBACK_HOST}:{args.port}/ to them (a 'Desktop app' client needs nothing)"
        )
    grant = obtain_grant(
        json.loads(client_text),
        port=args.port,
        open_browser=not args.no_browser,
        say=console.say,
        login_hint=mailbox.gmail_address,
    )
    account = _check_account(grant, mailbox, console)
    lifetime, lifetime_source = _lifetime(grant, args.lifetime_days)
    token = RefreshToken.issued_now(grant.refresh_token, lifetime=lifetime, scopes=grant.scopes)
    console.say("Google issued a new refresh token; checking it by minting an access token ...")
    http = HttpClient()
    try:
        proven = prove_token(http, client, token)
    finally:
        http.close()
    console.say("The new token works.")
    return proven, lifetime_source, account


def _announce_stored(console: Console, stored: StoredToken, token: RefreshToken, lifetime_source: str) -> None:
    """Say what was written and when the token dies."""
    _say_stored(console, stored.parameters)
    if token.expires_at is None:
        console.say(f"The token has no expiry ({lifetime_source}).")
    else:
        hours = hours_left(token.expiry())
        console.say(f"The token expires {iso_utc(token.expires_at)} (in {hours:.1f} hours; {lifetime_source}).")


def _say_stored(console: Console, parameters: Sequence[WrittenParameter]) -> None:
    for parameter in parameters:
        console.say(f"Stored {parameter.name} (version {parameter.version}).")


def _require_deployed(ssm: Any, env: str, region: str, mailbox: str) -> None:
    """Fail before the browser opens when the stack (the mailbox's three parameters) is not deployed here."""
    _refuse_missing(missing_parameters(ssm, env, mailbox), env, region)


def _refuse_missing(missing: Sequence[str], env: str, region: str) -> None:
    """The stack's parameters that ``pulumi up`` creates are missing: say how to deploy (or pick the region)."""
    if missing:
        what = f"SSM parameters {', '.join(missing)} do" if len(missing) > 1 else f"SSM parameter {missing[0]} does"
        raise RefreshFailed(
            f"the {what} not exist in region {region}; deploy the stack first "
            f"(`{names.deploy_command(env)}`), or pass the stack's --region, and rerun"
        )


def _client_config(args: argparse.Namespace, ssm: Any, env: str) -> tuple[str, ClientConfig]:
    """The client JSON text and its parsed form, from ``--client-secret FILE`` or from SSM."""
    if args.client_secret is None:
        name = names.client_credentials_parameter(env)
        text = str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        return text, ClientConfig.from_json(text, env=env)
    text = args.client_secret.expanduser().read_text(encoding="utf-8")
    try:
        return text, ClientConfig.from_json(text, env=env)
    except ClientConfigError as exc:
        raise RefreshFailed(f"{args.client_secret} is not a usable OAuth client file: {exc.reason}") from None


def _lifetime(grant: Grant, lifetime_days: int) -> tuple[timedelta | None, str]:
    """Google's own figure when it sends one, else the configured lifetime (0 = no expiry)."""
    if grant.refresh_token_expires_in is not None:
        return timedelta(seconds=grant.refresh_token_expires_in), "from Google's refresh_token_expires_in"
    if lifetime_days == 0:
        return None, "--lifetime-days 0"
    return timedelta(days=lifetime_days), f"Google sent no lifetime, so --lifetime-days {lifetime_days} applies"


def _queue_before_drain(aws: AwsClients, run: _Run) -> _Queue:
    """The retry queue's depth before the drain starts (``--wait`` counts deliveries from it).

    Read before anything is stored; if it cannot be read, ``--wait`` still follows the retry
    processor, by its status only, rather than throwing away a consent the operator just gave.
    """
    try:
        url = retry_queue_url(aws.sqs, run.env, run.mailbox)
        return _Queue(url, queue_depth(aws.sqs, url) if url else None)
    except Exception as exc:
        run.console.warn(
            f"the retry queue could not be read ({explain(exc, run.ctx)}), so --wait shows the retry processor's "
            "status only"
        )
        return _Queue(None, None)


def _report_metric(run: _Run, completion: Completion) -> None:
    """The expiry alarm clears now; if publishing failed the token monitor publishes within 15 minutes."""
    if completion.metric_error is not None:
        run.console.warn(
            f"{names.METRIC_TOKEN_HOURS} was not published ({explain(completion.metric_error, run.ctx)}); the token "
            "monitor publishes it within 15 minutes"
        )
        return
    run.console.say(
        f"Published {names.METRIC_TOKEN_HOURS} = {completion.hours:.1f} to {names.metric_namespace(run.env)}."
    )


def _report_audit(run: _Run, stream: str | None, error: Exception | None) -> None:
    """Where the audit record went (never the token or a secret), or why there is none."""
    group = names.audit_log_group(run.env)
    if isinstance(error, AuditLogGroupMissing):
        run.console.warn(
            f"the audit log group {group} does not exist, so no audit record was written; "
            f"`{names.deploy_command(run.env)}` creates it"
        )
    elif error is not None:
        run.console.warn(f"no audit record was written to {group}: {explain(error, run.ctx)}")
    else:
        run.console.say(f"Audit record written to {group} (stream {stream}).")


def _report_drain(
    aws: AwsClients,
    run: _Run,
    completion: Completion,
    state_machine_arn: str,
    queue: _Queue,
    *,
    wait: bool,
    poll_seconds: float,
) -> int:
    """The retry processor was started (or not); with ``wait``, follow it and fail when it fails."""
    say = run.console.say
    execution = completion.execution_arn
    if completion.drain_error is not None or execution is None:
        cause = completion.drain_error or RuntimeError("no execution was started")
        raise RefreshFailed(
            f"the new token is stored, but the retry processor was not started: {explain(cause, run.ctx)}"
        ) from completion.drain_error
    run.execution_arn = execution
    say(f"Started the retry processor: {execution}")
    if not wait:
        say("It delivers the parked mail in the background (follow it with --wait, or in the Step Functions console).")
        return EXIT_OK
    initial = queue.depth
    say(f"Following it ({initial if initial is not None else 'unknown number of'} message(s) in the retry queue):")
    outcome = follow_execution(
        aws.get("stepfunctions"),
        aws.sqs,
        execution,
        queue_url=queue.url,
        initial_depth=initial,
        poll_seconds=poll_seconds,
        say=say,
    )
    run.execution_arn = None
    if not outcome.succeeded:
        raise RefreshFailed(
            f"the new token is stored, but the retry processor ended {outcome.status} "
            f"({outcome.error or 'no error'}: {outcome.cause or 'no cause given'}); the mail it did not deliver "
            f"stays in the retry queue, so see `aws stepfunctions get-execution-history --execution-arn {execution}`, "
            f"fix the cause, and start it again with `aws stepfunctions start-execution --state-machine-arn "
            f"{state_machine_arn} "
            f'--input \'{{"mailbox": "{run.mailbox}"}}\'`'
        )
    finished = finished_sentence(outcome)
    say(finished[0].upper() + finished[1:])
    if outcome.stopped_by == names.RETRY_STOPPED_RATE_LIMITED:
        say(
            "It stopped early on Gmail's rate limit: the rest stays in the retry queue, and the token monitor "
            "starts the retry processor again every 15 minutes until it is delivered."
        )
    return EXIT_OK


# --- --reconcile: deliver the stored mail no queue will ------------------------------------------------------


def _reconcile(args: argparse.Namespace, run: _Run) -> int:
    """Plan from the mail bucket and start the drains that deliver it (:mod:`sesmail.cli.reconcile`); no consent."""
    request = reconcile_cli.Request(
        mailbox=args.mailbox, dry_run=args.dry_run, wait=args.wait, poll_seconds=_poll_seconds()
    )
    aws = AwsClients(args.region, args.profile)
    dry = " (dry run)" if args.dry_run else ""
    caller = _identify(aws, run, f"Reconciling the stored mail of environment {run.env!r}{dry}")
    stack = reconcile_cli.Stack(run.env, caller.account, caller.region, caller.partition)
    table = _mailbox_table(aws.ssm, run.env)
    reconcile_cli.reconcile(aws, stack, table, request, say=run.console.say, ctx=run.ctx, on_started=run.started.append)
    return EXIT_OK


# --- --web-client-secret FILE: the renewal page's OAuth client -------------------------------------------------

#: Where a "Web application" client is made, and what to do with it (every refusal of the file ends with it).
_CREATE_WEB_CLIENT = (
    "create a 'Web application' OAuth client in Google's console (APIs & Services > Credentials > Create "
    "credentials > OAuth client ID), download its JSON and rerun with --web-client-secret FILE"
)


def _store_web_client(args: argparse.Namespace, run: _Run) -> int:
    """Validate the file, store it in its own parameter, say which redirect URI to register, audit; no consent."""
    path: Path = args.web_client_secret
    text, client = _web_client_config(path, run.env)
    aws = AwsClients(args.region, args.profile)
    caller = _identify(aws, run, f"Storing the phone renewal page's OAuth client of environment {run.env!r}")
    name = names.web_client_credentials_parameter(run.env)
    _refuse_missing(missing(aws.ssm, [name]), run.env, caller.region)
    run.console.say(f"Web OAuth client {client.client_id} (from {path}).")
    if not any(uri.endswith(names.RENEWAL_CALLBACK_PATH) for uri in client.redirect_uris):
        run.console.warn(
            f"none of this client's redirect URIs ends with {names.RENEWAL_CALLBACK_PATH}, so Google refuses the "
            "renewal page's consent (redirect_uri_mismatch) until you register the page's callback (see below)"
        )

    written = put_secure_string(aws.ssm, name, text)
    run.web_client_stored = True
    _say_stored(run.console, [written])
    _say_redirect_uri(aws, run)
    record = {
        "action": names.AUDIT_ACTION_WEB_CLIENT_STORED,
        "who": caller.arn,
        "account": caller.account,
        "env": run.env,
        "source": AUDIT_SOURCE,
        "tool": PROG,
        "when": iso_utc(datetime.now(UTC)),
        "client_id": client.client_id,
        "redirect_uris": list(client.redirect_uris),
        "parameter": name,
        "version": written.version,
    }
    try:
        stream: str | None = write_audit_record(aws.get("logs"), run.env, record)
        error: Exception | None = None
    except Exception as exc:
        stream, error = None, exc
    _report_audit(run, stream, error)
    minutes = int(PARAMETER_CACHE_SECONDS // 60)
    run.console.say(f"No token was renewed; the renewal page uses this client within {minutes} minutes.")
    return EXIT_OK


def _web_client_config(path: Path, env: str) -> tuple[str, ClientConfig]:
    """The file's text and parsed client; refuses anything but a usable "Web application" client."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
        data = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise RefreshFailed(f"{path} is not valid JSON ({detail}); {_CREATE_WEB_CLIENT}") from None
    sections = data if isinstance(data, dict) else {}
    if isinstance(sections.get("installed"), dict):
        raise RefreshFailed(
            f"{path} is a 'Desktop app' OAuth client (the kind --client-secret takes), but the renewal page needs "
            f"a 'Web application' one; {_CREATE_WEB_CLIENT}"
        )
    if not isinstance(sections.get("web"), dict):
        raise RefreshFailed(
            f"{path} is not a 'Web application' OAuth client (it has no 'web' section); {_CREATE_WEB_CLIENT}"
        )
    try:
        client = ClientConfig.from_json(text, env=env)
    except ClientConfigError as exc:
        # Its reason ends with the installed client's fix (--client-secret), which is not this one.
        reason = exc.reason.rpartition("; ")[0] or exc.reason
        raise RefreshFailed(f"{path} is not a usable OAuth client file ({reason}); {_CREATE_WEB_CLIENT}") from None
    return text, client


def _say_redirect_uri(aws: AwsClients, run: _Run) -> None:
    """The redirect URI to register for the web client: the renewal function URL's callback path."""
    function = names.renewal_function(run.env)
    where = "in Google's console (APIs & Services > Credentials > this client > Authorized redirect URIs)"
    try:
        url = str(aws.get("lambda").get_function_url_config(FunctionName=function)["FunctionUrl"])
    except Exception as exc:
        response = getattr(exc, "response", None)
        code = (response.get("Error", {}).get("Code") if isinstance(response, dict) else None) or type(exc).__name__
        run.console.say(
            f"Register the renewal page's URL followed by 'callback' as a redirect URI of this client {where}; the "
            f"function URL of {function} could not be read ({code}), so find the page's URL with "
            f"`pulumi stack output renewalUrl --stack {run.env}`."
        )
        return
    run.console.say(f"Register this redirect URI for the client {where}, unless it is there already:")
    run.console.say(f"  {names.renewal_redirect_uri(url)}")
    run.console.say(f"The renewal page: {url}")


def _poll_seconds() -> float:
    raw = os.environ.get(names.ENV_VAR_POLL_SECONDS, "").strip()
    if not raw:
        return names.DEFAULT_POLL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise RefreshFailed(f"{names.ENV_VAR_POLL_SECONDS}={raw!r} is not a number of seconds; unset it or set e.g. 5")
    return value


if __name__ == "__main__":
    sys.exit(main())
