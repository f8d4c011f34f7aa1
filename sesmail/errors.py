"""The three failure classes and the one classifier every delivery path uses.

The class names are a public contract: a Lambda that raises one reports its name as
``errorType``, which is what the retry processor's Step Functions Retry/Catch match on.
"""

from __future__ import annotations

import enum
import socket
import ssl
from http.client import HTTPException


class FailureClass(enum.Enum):
    TOKEN_DEAD = "TokenExpiredError"
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


class TransientError(SesMailError):
    """Worth retrying later: throttling, 5xx, timeouts, connection failures."""

    failure_class = FailureClass.TRANSIENT


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
    """Map any exception to one of the three classes, keeping a readable reason.

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


def classify_http_status(status: int, detail: str, *, retry_after: float | None = None) -> SesMailError:
    """Classify a non-2xx Gmail answer (401/403 token cases are decided by the Gmail client)."""
    if status == 429 or status == 408 or status >= 500:
        return TransientError(f"Gmail answered {status}: {detail}", retry_after=retry_after)
    return PermanentError(f"Gmail refused the message ({status}): {detail}")


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
