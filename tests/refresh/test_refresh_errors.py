"""Every failure of the refresh CLI: exit 1, one sentence saying what to do, no traceback, SSM untouched."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sesmail import names
from tests.refresh.harness import ENV, SUCCEEDING_PROCESSOR, Cli, Cloud, RefreshFakeGoogle, deploy_stack

CLIENT = names.client_credentials_parameter(ENV)


@dataclass
class Case:
    """A broken world: ``arrange`` breaks it and returns the CLI arguments; ``expect`` is in the error."""

    arrange: Callable[[Cloud, RefreshFakeGoogle, Path], list[str]]
    expect: tuple[str, ...]
    env: Mapping[str, str | None] = field(default_factory=dict)
    deployed: bool = True
    #: Wraps the CLI run (e.g. moto enforcing IAM for the access-denied case).
    around: Callable[[Cloud], AbstractContextManager[None]] = lambda cloud: nullcontext()


def _put_client(value: str) -> Callable[[Cloud, RefreshFakeGoogle, Path], list[str]]:
    def arrange(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
        cloud.put_parameter(CLIENT, value)
        return []

    return arrange


def _client_file(content: str | None) -> Callable[[Cloud, RefreshFakeGoogle, Path], list[str]]:
    def arrange(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
        path = tmp_path / "client_secret.json"
        if content is not None:
            path.write_text(content)
        return ["--client-secret", str(path)]

    return arrange


def _google(**settings: object) -> Callable[[Cloud, RefreshFakeGoogle, Path], list[str]]:
    def arrange(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
        for key, value in settings.items():
            setattr(google, key, value)
        return []

    return arrange


def _nothing(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
    return []


def _token_endpoint_rejects_code(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
    google.fail_token(400, {"error": "invalid_grant", "error_description": "Bad Request"})
    return []


def _client_rejected(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
    google.fail_token(401)
    return []


def _token_endpoint_unreachable(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
    client = google.client_json()
    client["installed"]["token_uri"] = f"http://127.0.0.1:{_closed_port()}/token"
    cloud.put_parameter(CLIENT, json.dumps(client))
    return []


def _client_uris(**uris: str) -> Callable[[Cloud, RefreshFakeGoogle, Path], list[str]]:
    """The fake's client JSON with some URIs replaced (``https`` ones point at a closed port: never reached)."""

    def arrange(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
        client = google.client_json()
        for key, uri in uris.items():
            client["installed"][key] = uri.format(port=_closed_port())
        cloud.put_parameter(CLIENT, json.dumps(client))
        return []

    return arrange


def _operator_without_ssm(cloud: Cloud, google: RefreshFakeGoogle, tmp_path: Path) -> list[str]:
    keys = cloud.operator_credentials(["sts:GetCallerIdentity"])
    CASES["access-denied"].env = keys
    return []


@contextmanager
def _iam_enforced(cloud: Cloud) -> Iterator[None]:
    with cloud.iam_enforced():
        yield


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CASES: dict[str, Case] = {
    "no-aws-credentials": Case(
        _nothing,
        ("no AWS credentials found", "--profile NAME"),
        env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
    ),
    "access-denied": Case(
        _operator_without_ssm, ("AWS denied ssm:GetParameter", "--profile NAME"), around=_iam_enforced
    ),
    "credentials-rejected": Case(
        _nothing, ("AWS rejected your credentials (InvalidClientTokenId)",), around=_iam_enforced
    ),
    "no-region": Case(
        _nothing, ("no AWS region configured", "--region"), env={"AWS_DEFAULT_REGION": None, "AWS_REGION": None}
    ),
    "unknown-profile": Case(
        lambda cloud, google, tmp_path: ["--profile", "nope"], ("the AWS profile 'nope' is not configured",)
    ),
    "stack-not-deployed": Case(
        _nothing, ("do not exist in region us-east-1", f"`pulumi up --stack {ENV}`"), deployed=False
    ),
    "placeholder-client-json": Case(
        _put_client(names.placeholder_value(ENV)),
        ("the OAuth client JSON is not configured yet", f"--env {ENV} --client-secret FILE"),
    ),
    "malformed-client-json": Case(_put_client("{not json"), ("not valid JSON", "--client-secret FILE")),
    "client-json-of-another-kind": Case(
        _put_client(json.dumps({"service_account": {}})), ("neither an 'installed' nor a 'web' section",)
    ),
    "malformed-client-secret-file": Case(_client_file("{"), ("is not a usable OAuth client file", "not valid JSON")),
    "missing-client-secret-file": Case(_client_file(None), ("cannot read", "No such file")),
    "consent-denied": Case(_google(consent_behavior="deny"), ("consent was denied", "click Allow")),
    "state-mismatch": Case(_google(consent_behavior="wrong_state"), ("possible CSRF", "rerun")),
    "label-permission-unticked": Case(
        _google(granted_scopes=frozenset({names.GMAIL_SCOPE})),  # Google's granular consent: one box left empty
        ("instead of the Gmail insert and label permissions", "'See and edit your email labels'"),
    ),
    "no-refresh-token": Case(
        _google(return_refresh_token=False),
        ("Google returned no refresh token", "https://myaccount.google.com/permissions"),
    ),
    "token-endpoint-rejects-code": Case(
        _token_endpoint_rejects_code, ("rejected the authorization code (invalid_grant: Bad Request)",)
    ),
    "client-rejected": Case(
        _client_rejected, ("Google rejected the OAuth client (invalid_client)", "--client-secret FILE")
    ),
    "token-endpoint-unreachable": Case(_token_endpoint_unreachable, ("could not reach http://127.0.0.1:", "network")),
    "client-uris-not-https": Case(
        _nothing,
        ("the client JSON's auth_uri and token_uri are not https", "--client-secret FILE"),
        env={"OAUTHLIB_INSECURE_TRANSPORT": None},
    ),
    "auth-uri-not-https": Case(
        _client_uris(token_uri="https://127.0.0.1:{port}/token"),
        ("the client JSON's auth_uri is not https",),
        env={"OAUTHLIB_INSECURE_TRANSPORT": None},
    ),
    "token-uri-not-https": Case(
        _client_uris(auth_uri="https://127.0.0.1:{port}/o/oauth2/auth"),
        ("the client JSON's token_uri is not https",),
        env={"OAUTHLIB_INSECURE_TRANSPORT": None},
    ),
    "new-token-does-not-work": Case(
        _google(issue_dead_tokens=True), ("would not mint an access token", "nothing was stored")
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_failure_is_one_sentence_with_the_fix_and_writes_nothing(
    name: str, cloud: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    case = CASES[name]
    if case.deployed:
        deploy_stack(cloud, google, processor=SUCCEEDING_PROCESSOR)
    args = case.arrange(cloud, google, tmp_path)
    before = cloud.versions()

    with case.around(cloud):
        result = cli.run(*args, env=case.env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert result.stderr.rstrip("\n").count("\n") == 0, result.stderr  # the error line is all there is
    for phrase in case.expect:
        assert phrase in result.error_lines[0]
    assert "Traceback" not in result.stderr
    assert cloud.versions() == before
    if case.deployed:
        assert cloud.executions() == []


def test_port_in_use(deployed: Cloud, cli: Cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = deployed.versions()

        result = cli.run("--port", str(port))

    assert result.returncode == 1
    assert result.error_lines == [
        f"error: port {port} on 127.0.0.1 is already in use; stop what uses it or rerun with --port N "
        "(another free port, or 0 to pick one)"
    ]
    assert deployed.versions() == before


def test_missing_state_machine_after_storing_says_the_token_is_stored(
    cloud: Cloud, cli: Cli, google: RefreshFakeGoogle
) -> None:
    deploy_stack(cloud, google, processor=None)

    result = cli.run()

    assert result.returncode == 1
    assert result.error_lines == [
        "error: the new token is stored, but the retry processor was not started: the retry processor state "
        f"machine does not exist; deploy the stack (`pulumi up --stack {ENV}`) or rerun with --no-retry"
    ]
    assert json.loads(cloud.parameter(names.refresh_token_parameter(ENV))["Value"])["token"]


def test_missing_audit_log_group_is_a_warning_naming_the_command_that_creates_it(deployed: Cloud, cli: Cli) -> None:
    deployed.client("logs").delete_log_group(logGroupName=names.audit_log_group(ENV))

    result = cli.run("--no-retry")

    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"warning: the audit log group {names.audit_log_group(ENV)} does not exist, so no audit record was "
        f"written; `pulumi up --stack {ENV}` creates it"
    ]


def test_steps_after_storing_that_fail_are_warnings_and_the_drain_an_error_with_the_token_kept(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle
) -> None:
    """Metric, audit and drain each fail (IAM denies them): the token stays stored, each says what happened."""
    keys = deployed.operator_credentials(["sts:GetCallerIdentity", "ssm:*", "sqs:*", "logs:CreateLogStream"])

    with deployed.iam_enforced():
        result = cli.run(env=keys)

    assert result.returncode == 1, result.stdout + result.stderr
    metric, audit, error = result.stderr.splitlines()
    # AWS names the action cloudwatch:PutMetricData; moto names it after the endpoint, monitoring:PutMetricData.
    assert metric.startswith(f"warning: {names.METRIC_TOKEN_HOURS} was not published (AWS denied ")
    assert ":PutMetricData to these credentials" in metric
    assert metric.endswith("the token monitor publishes it within 15 minutes")
    assert audit.startswith(
        f"warning: no audit record was written to {names.audit_log_group(ENV)}: AWS denied logs:PutLogEvents"
    )
    assert error.startswith(
        "error: the new token is stored, but the retry processor was not started: AWS denied states:StartExecution"
    )
    stored = json.loads(deployed.parameter(names.refresh_token_parameter(ENV))["Value"])
    assert stored["token"] in google.issued_refresh_tokens() and stored["client_id"] == google.client_id
    assert f"Stored {names.refresh_token_parameter(ENV)}" in result.stdout
    assert deployed.executions() == [] and deployed.audit_records() == [] and deployed.token_hours() == []


def test_wait_follows_by_status_when_the_retry_queue_cannot_be_read(deployed: Cloud, cli: Cli) -> None:
    allowed = ["sts:GetCallerIdentity", "ssm:*", "cloudwatch:*", "monitoring:*", "logs:*", "states:*"]  # no sqs
    keys = deployed.operator_credentials(allowed)

    with deployed.iam_enforced():
        result = cli.run("--wait", env=keys)

    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("warning: the retry queue could not be read (AWS denied sqs:GetQueueUrl")
    assert warning.endswith("so --wait shows the retry processor's status only")
    assert "Following it (unknown number of message(s) in the retry queue):" in result.stdout
    assert "The retry processor finished." in result.stdout
    (execution,) = deployed.executions()
    assert execution["status"] == "SUCCEEDED"
