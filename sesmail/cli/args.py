"""Command line of ``python -m sesmail.refresh`` (DESIGN.md's "Refresh CLI"): argparse exits 2 on misuse."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from sesmail import names

PROG = "python -m sesmail.refresh"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, with the cross-option checks argparse cannot express (also exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.reconcile:
        given = [option for option, value in _RECONCILE_CONFLICTS if value(args)]
        if given:
            parser.error(
                f"--reconcile only delivers stored mail (no consent, no token), so it cannot be combined with "
                f"{' or '.join(given)}; run {'those' if len(given) > 1 else 'that'} separately"
            )
        if args.dry_run and args.wait:
            parser.error("--dry-run starts no retry processor, so there is nothing for --wait to follow")
    elif args.dry_run:
        parser.error("--dry-run only goes with --reconcile (it shows the reconcile's plan and starts nothing)")
    if args.wait and args.no_retry:
        parser.error("--wait follows the retry processor, so it cannot be combined with --no-retry")
    if args.web_client_secret is not None:
        given = [option for option, value in _RENEWAL_ONLY if value(args)]
        if given:
            parser.error(
                f"--web-client-secret only stores the renewal page's OAuth client (no consent, no token), so it "
                f"cannot be combined with {' or '.join(given)} ({'options' if len(given) > 1 else 'an option'} of a "
                "token renewal); renew separately"
            )
    if args.port is None:
        args.port = names.OAUTH_DEFAULT_PORT
    if args.mailbox is None and not args.reconcile:  # --reconcile without --mailbox: every mailbox
        args.mailbox = names.DEFAULT_MAILBOX
    if args.lifetime_days is None and args.web_client_secret is None and not args.reconcile:
        try:
            args.lifetime_days = stack_token_lifetime_days(args.env)
        except ValueError as exc:
            parser.error(str(exc))
    return args


#: Options of a token renewal that mean nothing to ``--web-client-secret`` (which runs no consent).
_RENEWAL_ONLY: tuple[tuple[str, Callable[[argparse.Namespace], bool]], ...] = (
    ("--client-secret", lambda args: args.client_secret is not None),
    ("--wait", lambda args: bool(args.wait)),
    ("--no-retry", lambda args: bool(args.no_retry)),
    ("--no-browser", lambda args: bool(args.no_browser)),
    ("--mailbox", lambda args: args.mailbox is not None),
    ("--lifetime-days", lambda args: args.lifetime_days is not None),
)

#: Options ``--reconcile`` refuses: the consent, the token and the other set-up.
_RECONCILE_CONFLICTS: tuple[tuple[str, Callable[[argparse.Namespace], bool]], ...] = (
    ("--client-secret", lambda args: args.client_secret is not None),
    ("--web-client-secret", lambda args: args.web_client_secret is not None),
    ("--no-browser", lambda args: bool(args.no_browser)),
    ("--port", lambda args: args.port is not None),
    ("--no-retry", lambda args: bool(args.no_retry)),
    ("--lifetime-days", lambda args: args.lifetime_days is not None),
)


def stack_token_lifetime_days(env: str, directory: Path | None = None) -> int:
    """``ses-mail:tokenLifetimeDays`` from ``Pulumi.<env>.yaml`` when run from the project, else 7."""
    stack_file = (directory or Path.cwd()) / f"Pulumi.{env}.yaml"
    if not stack_file.is_file():
        return names.TESTING_TOKEN_LIFETIME_DAYS
    import yaml  # PyYAML comes with the Pulumi SDK; only needed here

    try:
        config = (yaml.safe_load(stack_file.read_text(encoding="utf-8")) or {}).get("config") or {}
    except (yaml.YAMLError, AttributeError) as exc:
        raise ValueError(f"{stack_file} is not a readable stack file ({exc}); pass --lifetime-days") from None
    value = config.get(f"{names.PROJECT}:tokenLifetimeDays", names.TESTING_TOKEN_LIFETIME_DAYS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{names.PROJECT}:tokenLifetimeDays in {stack_file} is {value!r}, not a whole number of days")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Renew the Gmail OAuth refresh token of a ses-mail environment: consent in the browser, "
        "store the token in SSM, clear the expiry alarm, and deliver the mail that waited in the retry queue.",
        epilog="Example: python -m sesmail.refresh --env test --client-secret ~/Downloads/client_secret.json --wait. "
        "Once, to renew from a phone: python -m sesmail.refresh --env test --web-client-secret "
        "~/Downloads/client_secret_web.json. Deliver stored mail no queue will: python -m sesmail.refresh --env test "
        "--reconcile --dry-run, then without --dry-run",
    )
    parser.add_argument("--env", required=True, type=_env, help="environment (the Pulumi stack name), e.g. test")
    parser.add_argument(
        "--client-secret",
        metavar="FILE",
        type=Path,
        help="OAuth client JSON downloaded from Google's console; stored in SSM (replacing the old one) "
        "together with the new token",
    )
    parser.add_argument(
        "--web-client-secret",
        metavar="FILE",
        type=Path,
        help="set up the phone renewal page instead of renewing a token: store this 'Web application' OAuth "
        "client JSON in its own SSM parameter and print the redirect URI to register for it",
    )
    parser.add_argument("--no-browser", action="store_true", help="print the consent URL instead of opening a browser")
    parser.add_argument(
        "--port",
        metavar="N",
        type=_port,
        default=None,  # parse_args fills in the default, once it knows the option was not given
        help=f"loopback port for Google's redirect, on {names.OAUTH_LOOPBACK_HOST} only "
        f"(default {names.OAUTH_DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--no-retry", action="store_true", help="do not start the retry processor afterwards")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the retry processor until it ends (with --reconcile: each one it started); exit 1 if one fails",
    )
    parser.add_argument(
        "--lifetime-days",
        metavar="DAYS",
        type=_days,
        default=None,
        help="token lifetime when Google does not send one (default: ses-mail:tokenLifetimeDays of "
        f"Pulumi.<env>.yaml in the current directory, else {names.TESTING_TOKEN_LIFETIME_DAYS}, the 'Testing' "
        "status limit; 0 = never expires)",
    )
    parser.add_argument(
        "--mailbox",
        metavar="NAME",
        type=_mailbox,
        default=None,  # parse_args fills in the default, once it knows the option was not given
        help=f"which mailbox's token to renew (ses-mail:mailboxes; default {names.DEFAULT_MAILBOX!r}); with "
        "--reconcile, the one mailbox to reconcile (default: every mailbox)",
    )
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="instead of renewing a token: list the stored mail (S3) that never reached its mailbox, oldest "
        "first, and start the retry processor, which delivers it, for each mailbox owed some",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="with --reconcile: only list what is owed; write and start nothing"
    )
    parser.add_argument("--region", metavar="REGION", help="AWS region of the stack (default: your AWS configuration)")
    parser.add_argument("--profile", metavar="NAME", help="AWS profile to use (default: your AWS configuration)")
    return parser


def _env(value: str) -> str:
    try:
        return names.check_env(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mailbox(value: str) -> str:
    try:
        return names.check_mailbox(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(value: str) -> int:
    port = int(value) if value.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535; 0 picks a free one)")
    return port


def _days(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days (0 = the token never expires)")
    return int(value)
