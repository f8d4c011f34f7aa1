"""The one failure classifier: every path relies on it, so every branch is pinned here."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from sesmail.errors import (
    FailureClass,
    PermanentError,
    TokenExpiredError,
    TokenNotConfiguredError,
    TransientError,
    classify,
    classify_http_status,
)
from sesmail.http import parse_retry_after


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


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
        (408, TransientError),
        (400, PermanentError),
        (404, PermanentError),
        (413, PermanentError),
    ],
)
def test_classify_http_status(status: int, expected: type) -> None:
    assert type(classify_http_status(status, "detail", retry_after=2.0)) is expected


def test_parse_retry_after() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
