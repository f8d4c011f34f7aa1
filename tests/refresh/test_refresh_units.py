"""The refresh CLI's building blocks in-process: all-or-nothing storing, hours left, the error messages."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, NoRegionError, ProfileNotFound
from oauthlib.oauth2.rfc6749.errors import InsecureTransportError

from sesmail import names
from sesmail.cli.errors import ErrorContext, explain
from sesmail.cli.oauth_flow import InsecureClientUri
from sesmail.renewal.finish import Renewal, complete_renewal
from sesmail.renewal.token_store import ProvenToken, StoredToken, StoreFailed, prove_token, store_token
from sesmail.runtime.errors import MailboxRefusedError
from sesmail.runtime.http import HttpClient
from sesmail.runtime.retry_run import TRIGGER
from sesmail.runtime.token_metrics import hours_left
from sesmail.runtime.tokens import ClientConfig, RefreshToken, TokenExpiry
from tests.refresh.harness import CALLER_ARN, ENV, PARAMETERS, Cloud, RefreshFakeGoogle, deploy_stack

CTX = ErrorContext(env=ENV, port=8080)


class _FailingSsm:
    """The real (moto) SSM client, except that writing ``fail_on`` raises ``error`` once."""

    def __init__(self, real: Any, fail_on: str, error: BaseException, *, break_restores: bool = False) -> None:
        self._real = real
        self._fail_on = fail_on
        self._error: BaseException | None = error
        self._break_restores = break_restores

    def put_parameter(self, **kwargs: Any) -> Any:
        if kwargs["Name"] == self._fail_on and self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._error is None and self._break_restores:
            raise ConnectionError("network gone")
        return self._real.put_parameter(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _values(cloud: Cloud) -> dict[str, str]:
    return {name: cloud.parameter(name)["Value"] for name in PARAMETERS}


@pytest.fixture
def proven(cloud: Cloud, google: RefreshFakeGoogle) -> ProvenToken:
    deploy_stack(cloud, google, processor=None)
    client = ClientConfig.from_json(json.dumps(google.client_json()))
    token = RefreshToken.issued_now(
        google.issue_refresh_token(), lifetime=timedelta(days=7), scopes=[names.GMAIL_SCOPE]
    )
    proven = prove_token(HttpClient(), client, token)
    assert google.token_requests[-1]["refresh_token"] == token.token
    return proven


def test_a_failed_later_write_restores_the_earlier_ones(
    cloud: Cloud, proven: ProvenToken, google: RefreshFakeGoogle
) -> None:
    before = _values(cloud)
    ssm = _FailingSsm(cloud.ssm, names.refresh_token_expiry_parameter(ENV), ConnectionError("boom"))

    with pytest.raises(StoreFailed) as failed:
        store_token(ssm, ENV, proven, client_json=json.dumps(google.client_json("web")))

    assert failed.value.unrestored == ()
    assert isinstance(failed.value.cause, ConnectionError)
    assert _values(cloud) == before


def test_ctrl_c_during_the_writes_restores_and_still_interrupts(cloud: Cloud, proven: ProvenToken) -> None:
    before = _values(cloud)
    ssm = _FailingSsm(cloud.ssm, names.refresh_token_expiry_parameter(ENV), KeyboardInterrupt())

    with pytest.raises(KeyboardInterrupt):
        store_token(ssm, ENV, proven)

    assert _values(cloud) == before


def test_a_failed_restore_is_reported_by_name(cloud: Cloud, proven: ProvenToken) -> None:
    ssm = _FailingSsm(
        cloud.ssm, names.refresh_token_expiry_parameter(ENV), ConnectionError("boom"), break_restores=True
    )

    with pytest.raises(StoreFailed) as failed:
        store_token(ssm, ENV, proven)

    assert failed.value.unrestored == (names.refresh_token_parameter(ENV),)
    assert names.refresh_token_parameter(ENV) in explain(failed.value, CTX)


def test_secure_strings_keep_their_kms_key(cloud: Cloud, proven: ProvenToken) -> None:
    name = names.refresh_token_parameter(ENV)
    cloud.ssm.put_parameter(Name=name, Value="old", Type="SecureString", KeyId="alias/ses-mail", Overwrite=True)

    store_token(cloud.ssm, ENV, proven)

    (described,) = cloud.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert described["KeyId"] == "alias/ses-mail"


class _InterruptedMetric:
    """moto's clients, except that publishing the metric is where the operator presses Ctrl-C."""

    def __init__(self, cloud: Cloud) -> None:
        self._cloud = cloud

    def get(self, service: str) -> Any:
        if service == "cloudwatch":
            return self
        return self._cloud.client(service)

    def put_metric_data(self, **kwargs: Any) -> None:
        raise KeyboardInterrupt


def test_complete_renewal_says_the_token_is_stored_before_the_later_steps(
    cloud: Cloud, proven: ProvenToken, google: RefreshFakeGoogle
) -> None:
    """The CLI learns the token is stored before a later step runs: Ctrl-C there must not say "nothing was stored"."""
    seen: list[StoredToken] = []
    renewal = Renewal(ENV, names.DEFAULT_MAILBOX, "refresh-cli", CALLER_ARN, None, "seven days")

    with pytest.raises(KeyboardInterrupt):
        complete_renewal(
            _InterruptedMetric(cloud), proven, renewal, state_machine_arn=None, trigger=TRIGGER, on_stored=seen.append
        )

    (stored,) = seen
    token_parameter = names.refresh_token_parameter(ENV)
    assert stored.version_of(token_parameter) == cloud.parameter(token_parameter)["Version"]
    assert cloud.parameter_json(token_parameter)["client_id"] == google.client_id


def test_hours_left() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert hours_left(TokenExpiry(now, now + timedelta(hours=36, minutes=30)), now) == 36.5
    assert hours_left(TokenExpiry(now, now - timedelta(hours=2)), now) == -2.0
    assert hours_left(TokenExpiry(now, None), now) == names.TOKEN_NO_EXPIRY_HOURS
    assert names.TOKEN_NO_EXPIRY_HOURS > names.TOKEN_EXPIRING_HOURS


def _client_error(code: str, message: str = "", status: int = 400, operation: str = "PutParameter") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: NoRegionError(), "no AWS region configured; pass --region"),
        (lambda: ProfileNotFound(profile="ops"), "is not configured; create it"),
        (
            lambda: _client_error("AccessDeniedException", "User: x is not authorized to perform: ssm:PutParameter"),
            "AWS denied ssm:PutParameter",
        ),
        (lambda: _client_error("ExpiredToken", status=403), "AWS rejected your credentials (ExpiredToken)"),
        (lambda: _client_error("ThrottlingException", "Rate exceeded"), "AWS PutParameter failed (ThrottlingException"),
        (lambda: OSError(errno.EACCES, "Permission denied"), "not allowed to listen on port 8080"),
        (lambda: InsecureClientUri(("token_uri",)), "the client JSON's token_uri is not https; download"),
        (lambda: InsecureClientUri(("auth_uri",)), "the client JSON's auth_uri is not https; download"),
        (lambda: InsecureTransportError(), "the client JSON's auth_uri or token_uri is not https; download"),
        (
            lambda: MailboxRefusedError("token endpoint answered 401 invalid_client"),
            "Google refused the OAuth client or its setup while checking the new token",
        ),
        (
            lambda: RuntimeError("surprise"),
            f"unexpected error: RuntimeError: surprise; rerun with {names.ENV_VAR_DEBUG}=1",
        ),
    ],
)
def test_explain(make: Callable[[], BaseException], expected: str) -> None:
    assert expected in explain(make(), CTX)


def test_lifetime_default_comes_from_the_stack_file(tmp_path: Path) -> None:
    from sesmail.cli.args import stack_token_lifetime_days

    assert stack_token_lifetime_days("test", tmp_path) == names.TESTING_TOKEN_LIFETIME_DAYS  # no stack file
    (tmp_path / "Pulumi.test.yaml").write_text("config:\n  ses-mail:tokenLifetimeDays: 3\n")
    assert stack_token_lifetime_days("test", tmp_path) == 3
    (tmp_path / "Pulumi.test.yaml").write_text("config:\n  ses-mail:domains: [example.com]\n")
    assert stack_token_lifetime_days("test", tmp_path) == names.TESTING_TOKEN_LIFETIME_DAYS
    (tmp_path / "Pulumi.test.yaml").write_text("config:\n  ses-mail:tokenLifetimeDays: soon\n")
    with pytest.raises(ValueError, match="not a whole number of days"):
        stack_token_lifetime_days("test", tmp_path)


def test_explicit_lifetime_days_wins_over_the_stack_file() -> None:
    from sesmail.cli.args import parse_args

    assert parse_args(["--env", "test", "--lifetime-days", "2"]).lifetime_days == 2
