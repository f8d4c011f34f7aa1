"""``--web-client-secret FILE``: the one-time set-up of the phone renewal page (DESIGN.md "Refresh CLI").

It stores the "Web application" client JSON in its own SecureString parameter, says which
redirect URI to register for it, writes an audit record, and runs no consent: the fake Google
sees no request at all. Anything else is refused before a byte is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sesmail import names
from tests.refresh.harness import (
    ACCOUNT,
    CALLER_ARN,
    CLI,
    ENV,
    REGION,
    WEB_CLIENT,
    Cli,
    Cloud,
    RefreshFakeGoogle,
    deploy_renewal_function,
)

PROG = "python -m sesmail.refresh"


def _web_file(tmp_path: Path, content: dict[str, Any] | str) -> str:
    path = tmp_path / "client_secret_web.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _described(cloud: Cloud, name: str) -> dict[str, Any]:
    (found,) = cloud.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    return dict(found)


def _untouched(google: RefreshFakeGoogle) -> None:
    """No consent, no code exchange, no minting: the fake Google was never asked anything."""
    assert google.consent_requests == []
    assert google.token_requests == []


def test_it_stores_the_web_client_prints_the_redirect_uri_and_audits_without_a_consent(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    renewal_url = deploy_renewal_function(deployed)
    # pulumi up may have given the parameter its own KMS key: storing keeps it.
    deployed.ssm.put_parameter(
        Name=WEB_CLIENT, Value=names.placeholder_value(ENV), Type="SecureString", KeyId="alias/ses-mail", Overwrite=True
    )
    before = _described(deployed, WEB_CLIENT)
    token_versions = deployed.versions()
    web_json = google.client_json("web")

    result = cli.run("--web-client-secret", _web_file(tmp_path, web_json))

    assert result.returncode == 0, result.stdout + result.stderr
    parameter = deployed.parameter(WEB_CLIENT)
    assert parameter["Type"] == "SecureString"
    assert json.loads(parameter["Value"]) == web_json
    assert parameter["Version"] == before["Version"] + 1
    assert _described(deployed, WEB_CLIENT)["KeyId"] == "alias/ses-mail"
    assert f"Stored {WEB_CLIENT} (version {parameter['Version']})." in result.stdout
    lines = result.stdout.splitlines()
    redirect = renewal_url.rstrip("/") + names.RENEWAL_CALLBACK_PATH
    assert f"  {redirect}" in lines
    assert "redirect URI" in lines[lines.index(f"  {redirect}") - 1]
    # The fake's web client registers only a loopback URI: the operator is told it needs the callback.
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(f"warning: none of this client's redirect URIs ends with {names.RENEWAL_CALLBACK_PATH}")
    # One set-up action: no consent, no token, no drain, no metric.
    _untouched(google)
    assert deployed.versions() == token_versions
    assert deployed.executions() == []
    assert deployed.token_hours() == []
    (record,) = deployed.audit_records()
    assert record["action"] == names.AUDIT_ACTION_WEB_CLIENT_STORED == "web-client.stored"
    assert {k: record[k] for k in ("who", "account", "env", "source", "tool", "client_id", "parameter", "version")} == {
        "who": CALLER_ARN,
        "account": ACCOUNT,
        "env": ENV,
        "source": "refresh-cli",
        "tool": PROG,
        "client_id": google.web_client_id,
        "parameter": WEB_CLIENT,
        "version": parameter["Version"],
    }
    # The secret is nowhere but in the parameter (the cli fixture checks every output for it too).
    assert google.web_client_secret not in deployed.audit_raw()
    assert google.web_client_secret not in result.stdout + result.stderr


def test_a_client_that_lists_the_callback_gets_no_warning(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    renewal_url = deploy_renewal_function(deployed)
    google.web_redirect_uris.add(renewal_url.rstrip("/") + names.RENEWAL_CALLBACK_PATH)

    result = cli.run("--web-client-secret", _web_file(tmp_path, google.client_json("web")))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    _untouched(google)


def test_without_the_renewal_function_url_it_says_how_to_find_the_redirect_uri(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    result = cli.run("--web-client-secret", _web_file(tmp_path, google.client_json("web")))

    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(deployed.parameter(WEB_CLIENT)["Value"]) == google.client_json("web")
    assert f"`pulumi stack output renewalUrl --stack {ENV}`" in result.stdout
    assert f"function URL of {names.renewal_function(ENV)} could not be read (ResourceNotFoundException)" in (
        result.stdout
    )
    assert "'callback'" in result.stdout
    assert len(deployed.audit_records()) == 1
    _untouched(google)


def test_a_missing_audit_log_group_is_a_warning_after_storing(
    deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    deployed.client("logs").delete_log_group(logGroupName=names.audit_log_group(ENV))
    google.web_redirect_uris.add("https://renewal.example/callback")

    result = cli.run("--web-client-secret", _web_file(tmp_path, google.client_json("web")))

    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"warning: the audit log group {names.audit_log_group(ENV)} does not exist, so no audit record was "
        f"written; `pulumi up --stack {ENV}` creates it"
    ]
    assert json.loads(deployed.parameter(WEB_CLIENT)["Value"]) == google.client_json("web")


def _installed(google: RefreshFakeGoogle) -> str:
    return json.dumps(google.client_json("installed"))


def _no_secret(google: RefreshFakeGoogle) -> str:
    client = google.client_json("web")
    del client["web"]["client_secret"]
    return json.dumps(client)


REFUSED: dict[str, tuple[Callable[[RefreshFakeGoogle], str | None], tuple[str, ...]]] = {
    "installed-client": (_installed, ("is a 'Desktop app' OAuth client", "'Web application'")),
    "invalid-json": (lambda google: '{"web": ', ("is not valid JSON", "'Web application'", "--web-client-secret")),
    "not-a-client": (lambda google: json.dumps({"service_account": {}}), ("has no 'web' section",)),
    "no-client-secret": (_no_secret, ("'web' section lacks client_secret", "--web-client-secret FILE")),
    "missing-file": (lambda google: None, ("cannot read", "No such file")),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_file_that_is_not_a_usable_web_client_is_refused_and_nothing_is_written(
    name: str, deployed: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    make, expected = REFUSED[name]
    content = make(google)
    path = _web_file(tmp_path, content) if content is not None else str(tmp_path / "nowhere.json")
    before = _described(deployed, WEB_CLIENT)

    result = cli.run("--web-client-secret", path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == result.error_lines and len(result.error_lines) == 1, result.stderr
    for phrase in expected:
        assert phrase in result.error_lines[0]
    assert f"--env {ENV} --client-secret FILE" not in result.error_lines[0]  # never the installed client's fix
    assert _described(deployed, WEB_CLIENT)["Version"] == before["Version"]
    assert deployed.parameter(WEB_CLIENT)["Value"] == names.placeholder_value(ENV)
    assert deployed.audit_records() == []
    _untouched(google)


def test_a_stack_that_is_not_deployed_is_refused(
    cloud: Cloud, cli: Cli, google: RefreshFakeGoogle, tmp_path: Path
) -> None:
    result = cli.run("--web-client-secret", _web_file(tmp_path, google.client_json("web")))

    assert result.returncode == 1
    assert result.error_lines == [
        f"error: the SSM parameter {WEB_CLIENT} does not exist in region {REGION}; deploy the stack first "
        f"(`pulumi up --stack {ENV}`), or pass the stack's --region, and rerun"
    ]
    assert cloud.ssm.describe_parameters()["Parameters"] == []
    _untouched(google)


@pytest.mark.parametrize(
    "extra",
    [
        ["--client-secret", "client.json"],
        ["--wait"],
        ["--no-retry"],
        ["--no-browser"],
        ["--mailbox", "default"],
        ["--lifetime-days", "3"],
    ],
    ids=["client-secret", "wait", "no-retry", "no-browser", "mailbox", "lifetime-days"],
)
def test_renewal_options_with_web_client_secret_are_usage_errors(cli: Cli, extra: list[str]) -> None:
    result = cli.run_argv([*CLI, "--env", ENV, "--web-client-secret", "web.json", *extra])

    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert f"cannot be combined with {extra[0]}" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_web_client_secret(cli: Cli) -> None:
    result = cli.run_argv([*CLI, "--help"])

    assert result.returncode == 0
    assert "--web-client-secret FILE" in result.stdout
