"""Every failure of the refresh CLI, turned into one sentence that says what to do.

The CLI catches exceptions in exactly one place and calls :func:`explain`, so each kind of
failure (AWS credentials, permissions, the OAuth dance, the loopback port, ...) has one
message, worded once, here. Conditions the CLI detects itself raise :class:`RefreshFailed`
with their final message already written.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Any

from sesmail import names
from sesmail.renewal.token_store import StoreFailed
from sesmail.runtime.errors import MailboxRefusedError, SesMailError, TokenExpiredError
from sesmail.runtime.tokens import ClientConfigError

#: Where a user withdraws an app's access, which makes Google issue a refresh token again.
GOOGLE_PERMISSIONS_URL = "https://myaccount.google.com/permissions"

_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "AuthFailure",
        "IncompleteSignature",
        "InvalidSignatureException",
    }
)
_ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"})
_IAM_ACTION = re.compile(r"not authorized to perform:? ([a-z0-9-]+:[A-Za-z0-9]+)")


class RefreshFailed(Exception):
    """A failure whose message is already the one sentence to show the operator."""


@dataclass(frozen=True)
class ErrorContext:
    """What the messages need to name the right command, port and file."""

    env: str
    port: int = names.OAUTH_DEFAULT_PORT
    profile: str | None = None
    #: ``--reconcile``: no token is renewed, and ``--no-retry`` is not an option.
    reconcile: bool = False


def explain(exc: BaseException, ctx: ErrorContext) -> str:
    """The one-sentence message (with the fix) for ``exc``; never contains a secret value."""
    for handler in (_own, _aws, _oauth, _network, _local):
        message = handler(exc, ctx)
        if message is not None:
            return message
    return (
        f"unexpected error: {type(exc).__name__}: {exc}; rerun with {names.ENV_VAR_DEBUG}=1 to see where it "
        "happened, and report it"
    )


def _own(exc: BaseException, ctx: ErrorContext) -> str | None:
    """Our own exceptions: already worded, or worded by the token library."""
    if isinstance(exc, RefreshFailed):
        return str(exc)
    if isinstance(exc, StoreFailed):
        if exc.unrestored:
            return (
                f"{explain(exc.cause, ctx)} — and restoring {', '.join(exc.unrestored)} to its previous value failed "
                f"too, so fix the cause and rerun `{names.refresh_command(ctx.env)}` at once"
            )
        return f"{explain(exc.cause, ctx)} (nothing was changed: the parameters already written were restored)"
    if isinstance(exc, ClientConfigError):
        return exc.reason
    if isinstance(exc, TokenExpiredError):
        return (
            f"Google issued a refresh token but would not mint an access token with it ({exc.reason}), so nothing "
            f"was stored; rerun in a minute, and if it persists revoke the app's access at {GOOGLE_PERMISSIONS_URL} "
            "first"
        )
    if isinstance(exc, MailboxRefusedError):
        return (
            f"Google refused the OAuth client or its setup while checking the new token ({exc.reason}), so nothing "
            "was stored; download the client JSON again from Google's console and rerun with --client-secret FILE"
        )
    if isinstance(exc, SesMailError):
        return f"could not check the new token with Google ({exc.reason}), so nothing was stored; rerun in a minute"
    return None


def _aws(exc: BaseException, ctx: ErrorContext) -> str | None:
    """botocore's exceptions: credentials, region, profile, permissions, API errors."""
    from botocore import exceptions as bce

    login = f"aws sso login --profile {ctx.profile}" if ctx.profile else "aws configure"
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return (
            "no AWS credentials found; configure them (`aws configure`, `aws sso login`, or AWS_PROFILE) or pass "
            "--profile NAME, and rerun"
        )
    if isinstance(exc, (bce.TokenRetrievalError, bce.SSOError, bce.CredentialRetrievalError)):
        return f"your AWS credentials could not be loaded ({exc}); renew them (`{login}`) and rerun"
    if isinstance(exc, bce.ProfileNotFound):
        return (
            f"the AWS profile {ctx.profile!r} is not configured; create it (`aws configure --profile NAME`) "
            "or pass another --profile"
        )
    if isinstance(exc, bce.NoRegionError):
        return (
            "no AWS region configured; pass --region (the stack's aws:region, e.g. us-east-1) or set AWS_DEFAULT_REGION"
        )
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ConnectionClosedError)):
        return f"could not reach AWS ({exc}); check your network or proxy and rerun"
    if isinstance(exc, bce.ClientError):
        return _client_error(exc, ctx, login)
    if isinstance(exc, bce.BotoCoreError):
        return (
            f"the AWS SDK failed ({type(exc).__name__}: {exc}); rerun, and check your AWS configuration if it persists"
        )
    return None


def _client_error(exc: Any, ctx: ErrorContext, login: str) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    text = str(error.get("Message", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    operation = str(getattr(exc, "operation_name", "the AWS call"))
    if code in _CREDENTIAL_CODES:
        return f"AWS rejected your credentials ({code}); renew them (`{login}`) or pass --profile NAME, and rerun"
    if code in _ACCESS_CODES or status == 403 or code == "403":
        match = _IAM_ACTION.search(text)
        action = match.group(1) if match else operation
        task = "reconcile the stored mail" if ctx.reconcile else "renew the token"
        return (
            f"AWS denied {action} to these credentials; rerun with credentials allowed to {task} "
            f"(--profile NAME; the permissions are listed in the README's 'Renewing the Gmail token')"
        )
    deploy = f"`{names.deploy_command(ctx.env)}`"
    if code == "ParameterNotFound":
        return f"an SSM parameter of the token does not exist; deploy the stack ({deploy}) and rerun"
    if code == "StateMachineDoesNotExist":
        instead = "" if ctx.reconcile else " or rerun with --no-retry"
        return f"the retry processor state machine does not exist; deploy the stack ({deploy}){instead}"
    if code == "NoSuchBucket":
        bucket = f"the mail bucket {error['BucketName']}" if error.get("BucketName") else "the mail bucket"
        return f"{bucket} does not exist; deploy the stack ({deploy}), or pass the stack's --region, and rerun"
    return (
        f"AWS {operation} failed ({code}: {_short(text)}); rerun in a minute, and check the AWS console if it persists"
    )


def _oauth(exc: BaseException, ctx: ErrorContext) -> str | None:
    """oauthlib's view of Google's answers: consent, state, code exchange."""
    from oauthlib.oauth2.rfc6749 import errors as oe

    fix_client = (
        "download the client JSON from Google's console again and run "
        f"`{names.refresh_command(ctx.env)} --client-secret FILE`"
    )
    if isinstance(exc, oe.AccessDeniedError):
        return (
            "the Google consent was denied (access_denied); rerun and click Allow — if Google refuses the account, "
            "add it as a test user on the OAuth consent screen"
        )
    if isinstance(exc, oe.MismatchingStateError):
        return (
            "Google's answer did not carry the state this run sent (possible CSRF, or an answer from an old consent "
            "tab), so it was refused; close other consent tabs and rerun"
        )
    if isinstance(exc, oe.InsecureTransportError):
        # oauth_flow names the fields at fault (oauthlib's own error does not say which URL it refused).
        fields = tuple(getattr(exc, "fields", ())) or ("auth_uri or token_uri",)
        return f"the client JSON's {' and '.join(fields)} {'are' if len(fields) > 1 else 'is'} not https; {fix_client}"
    if isinstance(exc, (oe.InvalidClientError, oe.UnauthorizedClientError)):
        return (
            f"Google rejected the OAuth client ({exc.error}): its ID or secret is wrong or it was deleted; {fix_client}"
        )
    if isinstance(exc, oe.OAuth2Error):
        detail = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
        return (
            f"Google's token endpoint rejected the authorization code ({detail}); rerun and finish the consent within "
            "a few minutes"
        )
    if isinstance(exc, Warning) and hasattr(exc, "new_scope"):
        return (
            f"Google granted {getattr(exc, 'new_scope', None)} instead of the Gmail insert and label permissions; "
            "rerun and allow both 'Add emails into your Gmail mailbox' and 'See and edit your email labels' on the "
            "consent page"
        )
    return None


def _network(exc: BaseException, ctx: ErrorContext) -> str | None:
    """The token exchange (requests) and the browser-facing loopback server."""
    import requests

    if isinstance(exc, requests.RequestException):
        url = getattr(exc.request, "url", None) or "Google"
        return f"could not reach {url} ({type(exc).__name__}); check your network or proxy and rerun"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"port {ctx.port} on {names.OAUTH_LOOPBACK_HOST} is already in use; stop what uses it or rerun with "
            "--port N (another free port, or 0 to pick one)"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"not allowed to listen on port {ctx.port}; rerun with --port {names.OAUTH_DEFAULT_PORT} "
            "or another port above 1023"
        )
    return None


def _local(exc: BaseException, ctx: ErrorContext) -> str | None:
    """Files given on the command line."""
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot read {exc.filename} ({exc.strerror}); pass the JSON file downloaded from Google's console"
    return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
