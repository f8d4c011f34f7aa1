"""The four failure classes and the one classifier every delivery path uses.

The class names are a public contract: a Lambda that raises one reports its name as
``errorType``, which is what the retry processor's Step Functions Retry/Catch match on.

- token dead (``TokenExpiredError``): the refresh token is revoked or expired. Inbound: park.
  Retry processor: stop, keep everything queued, fail.
- mailbox refused (``MailboxRefusedError``): Gmail refuses the account or our setup, not this
  message. Inbound: park and count ``MailboxRefused``. Retry processor: stop, keep, fail.
- transient (``TransientError``; ``RateLimitedError`` for quotas): retried in-process, then by
  SQS or Step Functions; a rate limit that outlasts SQS's receive budget is parked.
- permanent (``PermanentError``): this message can never be imported. Inbound DLQ / retry DLQ.
"""

from __future__ import annotations

import enum
import socket
import ssl
from http.client import HTTPException


class FailureClass(enum.Enum):
    TOKEN_DEAD = "TokenExpiredError"
    MAILBOX_REFUSED = "MailboxRefusedError"
    TRANSIENT = "TransientError"
    PERMANENT = "PermanentError"


class SesMailError(Exception):
    """Base of the classified errors. ``reason`` is safe to log and to store on a DLQ message."""

    failure_class: FailureClass

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class TokenExpiredError(SesMailError):
    """The Gmail credentials are unusable until an operator renews them: park, don't retry."""

    failure_class = FailureClass.TOKEN_DEAD


class TokenNotConfiguredError(TokenExpiredError):
    """The OAuth parameters still hold Pulumi's placeholder (or are missing)."""


class MailboxRefusedError(SesMailError):
    """Gmail refuses the account or our setup (API disabled, domain policy, a bad label, a wrong URL).

    Not the message's fault and not a dead token: every message would fail the same way until
    an operator fixes the setup, so mail is parked (never dead-lettered) and the mailbox-refused
    alarm fires, while the token alarms stay quiet.
    """

    failure_class = FailureClass.MAILBOX_REFUSED


class TransientError(SesMailError):
    """Worth retrying later: throttling, 5xx, timeouts, connection failures."""

    failure_class = FailureClass.TRANSIENT


class RateLimitedError(TransientError):
    """Gmail's quota or rate limit: transient, but it can last hours, longer than SQS's receive budget."""


class PermanentError(SesMailError):
    """Retrying can never help: a malformed event, a missing object, a message Gmail refuses."""

    failure_class = FailureClass.PERMANENT


class MalformedEventError(PermanentError):
    """The event or notification is not something the forwarder understands."""


# Amazon error codes that will not go away by retrying the same request.
_PERMANENT_AWS_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound", "InvalidObjectState"})
# A permission problem is an operator's fix, not the message's fault, so it stays retriable.
_AWS_ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


def classify(exc: BaseException) -> SesMailError:
    """Map any exception to one of the four classes, keeping a readable reason.

    Unknown exceptions count as transient: the SQS redrive policy bounds their retries and
    then keeps the message in the DLQ, which loses nothing, whereas calling a bug
    "permanent" would throw mail away on its first occurrence.
    """
    if isinstance(exc, SesMailError):
        return exc
    botocore_result = _classify_botocore(exc)
    if botocore_result is not None:
        return botocore_result
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError, ssl.SSLError, HTTPException)):
        return TransientError(f"network error: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return TransientError(f"I/O error: {type(exc).__name__}: {exc}")
    return TransientError(f"unexpected error: {type(exc).__name__}: {exc}")


#: 403 reasons that mean "slow down" rather than "you may not" (Gmail's usage-limit errors).
GMAIL_RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)
#: 400 reasons / statuses about the account, not the message ("Mail service not enabled").
_GMAIL_SETUP_400_REASONS = frozenset({"failedPrecondition", "FAILED_PRECONDITION"})
#: The 400 Gmail answers for a label id the mailbox lacks: a configured label, so every import fails.
GMAIL_INVALID_LABEL = "Invalid label"
#: Prefix of the reason of a parked rate-limited message (its ``error`` attribute).
RATE_LIMITED = "rate-limited"


def classify_gmail_answer(
    status: int, detail: str, *, reasons: frozenset[str] = frozenset(), retry_after: float | None = None
) -> SesMailError:
    """Classify a non-2xx answer of the Gmail API (``reasons``: its ``errors[].reason`` and ``status``).

    A 401 never reaches here as such: the importer first mints a fresh access token and retries,
    and only a second 401 in a row is classified (mailbox refused).
    """
    if status == 429 or (status == 403 and reasons & GMAIL_RATE_LIMIT_REASONS):
        return RateLimitedError(f"{RATE_LIMITED}: Gmail answered {status}: {detail}", retry_after=retry_after)
    if status in (408, 409) or status >= 500:  # 409 ABORTED: Google marks it retryable
        return TransientError(f"Gmail answered {status}: {detail}", retry_after=retry_after)
    if status in (401, 403, 404) or (
        status == 400 and (reasons & _GMAIL_SETUP_400_REASONS or GMAIL_INVALID_LABEL in detail)
    ):
        return MailboxRefusedError(f"Gmail refused the mailbox or our setup ({status}): {detail}")
    return PermanentError(f"Gmail refused the message ({status}): {detail}")


def aws_error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``NoSuchKey``, ``ExecutionAlreadyExists``...);
    empty for anything else. For callers that act on one code before (or instead of) classifying."""
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _classify_botocore(exc: BaseException) -> SesMailError | None:
    # Imported lazily by name so this module stays importable without botocore in tools.
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - botocore ships with the Lambda runtime
        return None
    if isinstance(exc, ClientError):
        return _classify_client_error(exc)
    if isinstance(exc, BotoCoreError):
        return TransientError(f"AWS SDK error: {type(exc).__name__}: {exc}")
    return None


def _classify_client_error(exc: object) -> SesMailError:
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    operation = getattr(exc, "operation_name", "AWS call")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    reason = f"{operation} failed: {code}: {error.get('Message', '')}".strip()
    if code == "ParameterNotFound":
        return TokenNotConfiguredError(
            f"{reason}; the OAuth parameters do not exist yet (run `pulumi up`, then the refresh CLI)"
        )
    if code in _AWS_ACCESS_CODES:
        return TransientError(reason)
    if code in _PERMANENT_AWS_CODES or status == 404:
        return PermanentError(reason)
    return TransientError(reason)
