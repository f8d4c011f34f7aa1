"""The one failure classifier: every path relies on it, so every branch is pinned here."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from sesmail.runtime.errors import (
    RATE_LIMITED,
    FailureClass,
    MailboxRefusedError,
    PermanentError,
    RateLimitedError,
    TokenExpiredError,
    TokenNotConfiguredError,
    TransientError,
    classify,
    classify_gmail_answer,
)
from sesmail.runtime.http import parse_retry_after


def _client_error(code: str, status: int = 400, operation: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("NoSuchKey", 404), PermanentError),
        (_client_error("NoSuchBucket", 404), PermanentError),
        (_client_error("ParameterNotFound", 400, "GetParameters"), TokenNotConfiguredError),
        (_client_error("ThrottlingException", 400, "GetParameters"), TransientError),
        (_client_error("InternalError", 500), TransientError),
        (_client_error("AccessDenied", 403), TransientError),
        (EndpointConnectionError(endpoint_url="https://s3"), TransientError),
        (ReadTimeoutError(endpoint_url="https://s3"), TransientError),
        (TimeoutError("timed out"), TransientError),
        (ConnectionResetError("reset"), TransientError),
        (KeyError("surprise"), TransientError),
    ],
)
def test_classify(exc: BaseException, expected: type) -> None:
    result = classify(exc)
    assert type(result) is expected
    assert result.reason


def test_classified_errors_pass_through_and_name_their_class() -> None:
    error = TokenExpiredError("dead")
    assert classify(error) is error
    assert TokenNotConfiguredError("x").failure_class is FailureClass.TOKEN_DEAD
    assert FailureClass.TRANSIENT.value == TransientError.__name__
    assert FailureClass.MAILBOX_REFUSED.value == MailboxRefusedError.__name__
    assert RateLimitedError("q").failure_class is FailureClass.TRANSIENT


@pytest.mark.parametrize(
    ("status", "reasons", "detail", "expected"),
    [
        (429, set(), "Too many requests", RateLimitedError),
        (403, {"rateLimitExceeded"}, "Rate Limit Exceeded", RateLimitedError),
        (403, {"userRateLimitExceeded"}, "User-rate limit exceeded", RateLimitedError),
        (403, {"quotaExceeded"}, "Quota exceeded", RateLimitedError),
        (403, {"dailyLimitExceeded"}, "Daily Limit Exceeded", RateLimitedError),
        (500, set(), "backendError", TransientError),
        (503, set(), "backendError", TransientError),
        (408, set(), "timeout", TransientError),
        (409, {"ABORTED"}, "Aborted", TransientError),
        (403, {"accessNotConfigured"}, "Gmail API has not been used", MailboxRefusedError),
        (403, {"domainPolicy"}, "The domain administrators have disabled Gmail apps", MailboxRefusedError),
        (403, {"forbidden"}, "Forbidden", MailboxRefusedError),
        (403, {"insufficientPermissions"}, "Insufficient Permission", MailboxRefusedError),
        (403, set(), "<html>403 Forbidden</html>", MailboxRefusedError),
        (400, {"failedPrecondition"}, "Mail service not enabled", MailboxRefusedError),
        (400, {"invalidArgument", "INVALID_ARGUMENT"}, "INVALID_ARGUMENT: Invalid label: Label_9", MailboxRefusedError),
        (404, set(), "<html>Not Found</html>", MailboxRefusedError),
        (400, {"invalidArgument"}, "Invalid message: no From header", PermanentError),
        (413, {"uploadTooLarge"}, "Media is too large", PermanentError),
    ],
)
def test_classify_gmail_answer(status: int, reasons: set[str], detail: str, expected: type) -> None:
    """Google's documented Gmail errors, each to the class of DESIGN.md's failure table."""
    result = classify_gmail_answer(status, detail, reasons=frozenset(reasons), retry_after=2.0)
    assert type(result) is expected
    assert detail in result.reason
    if expected is RateLimitedError:
        assert result.reason.startswith(RATE_LIMITED) and result.retry_after == 2.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
