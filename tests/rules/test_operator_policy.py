"""docs/operator-policy.json: IAM's rules accept it, and it grants exactly what the refresh CLI's code calls.

The CLI runs as an operator runs it (``python -m sesmail.refresh``, a subprocess, against moto's
server and the fake Google of tests/refresh), with every AWS operation it attempts recorded by a
botocore hook (tests/rules/aws_calls.py). Each recorded call is mapped to the IAM authorization
it needs and must be allowed by the document, and each statement of the document must be needed
by some recorded call: neither can drift from the code without a failing test here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from sesmail import names
from sesmail.renewal.token_store import ProvenToken, StoreFailed, store_token
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.tokens import ClientConfig, RefreshToken
from tests.refresh.harness import (
    ACCOUNT,
    ENV,
    REGION,
    SUCCEEDING_PROCESSOR,
    Cli,
    Cloud,
    MotoServer,
    RefreshFakeGoogle,
    deploy_renewal_function,
    deploy_stack,
)
from tests.refresh.test_reconcile_cli import BUCKET, reconcile_argv, store
from tests.rules.aws_calls import CALL_LOG_VARIABLE, AwsCall, Request, iam_requests, record_calls
from tests.rules.iam_rules import as_list, check_policy, format_findings, substitute

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO_ROOT / "docs" / "operator-policy.json"
README = REPO_ROOT / "README.md"
PARTITION = "aws"
#: The placeholders the operator replaces (README: "Renewing the Gmail token").
PLACEHOLDERS = {"Partition": PARTITION, "Region": REGION, "Account": ACCOUNT, "Env": ENV}
#: IAM's limit for a customer managed policy, in characters without whitespace.
MANAGED_POLICY_MAX_CHARACTERS = 6144


def operator_policy(values: Mapping[str, str] = PLACEHOLDERS) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(substitute(POLICY_FILE.read_text(encoding="utf-8"), values))
    return document


# --- the document itself -------------------------------------------------------------------------


def test_the_operator_policy_passes_the_iam_rules() -> None:
    findings = check_policy(operator_policy(), policy=str(POLICY_FILE.relative_to(REPO_ROOT)))
    assert not findings, format_findings(findings)


def test_the_operator_policy_is_one_sid_per_purpose_with_exactly_the_documented_placeholders() -> None:
    text = POLICY_FILE.read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{([^}]*)\}", text)) == set(PLACEHOLDERS)
    document = json.loads(text)
    assert document["Version"] == "2012-10-17"
    sids = [statement.get("Sid", "") for statement in document["Statement"]]
    assert all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids  # IAM: Sid is alphanumeric
    assert len(set(sids)) == len(sids), sids
    assert all(statement["Effect"] == "Allow" for statement in document["Statement"])
    # Fits a customer managed policy with the longest environment name and a long partition/region.
    longest = {"Partition": "aws-us-gov", "Region": "ap-southeast-5", "Account": ACCOUNT, "Env": "e" * 24}
    size = len(re.sub(r"\s", "", json.dumps(operator_policy(longest))))
    assert size <= MANAGED_POLICY_MAX_CHARACTERS, size


def test_the_operator_policy_needs_no_kms_permission_because_the_parameters_use_the_aws_managed_key() -> None:
    """SecureStrings under ``alias/aws/ssm``: its key policy lets the account's principals use it through SSM."""
    from sesmail.infra.tokens import SSM_MANAGED_KEY

    assert SSM_MANAGED_KEY == "alias/aws/ssm"
    assert not [a for s in operator_policy()["Statement"] for a in as_list(s["Action"]) if a.startswith("kms:")]


def test_the_readme_s_sed_command_fills_in_every_placeholder(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^sed [^\n]*\\\n\s*docs/operator-policy\.json > (\S+)$", text, re.MULTILINE)
    assert match, "README: the sed command that fills in docs/operator-policy.json"
    (tmp_path / "docs").mkdir()
    shutil.copy(POLICY_FILE, tmp_path / "docs" / POLICY_FILE.name)
    subprocess.run(["bash", "-c", match.group(0)], cwd=tmp_path, check=True, timeout=30)
    filled = (tmp_path / match.group(1)).read_text(encoding="utf-8")
    assert "${" not in filled
    example = {"Partition": "aws", "Region": "eu-west-1", "Account": "123456789012", "Env": "prod"}
    assert json.loads(filled) == operator_policy(example)


# --- the document against the code ---------------------------------------------------------------


def allowing_statements(document: Mapping[str, Any], request: Request) -> list[str]:
    """Sids of the Allow statements that grant ``request`` (IAM's matching: actions case-insensitive)."""
    sids = []
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        if not any(fnmatchcase(request.action.lower(), str(a).lower()) for a in as_list(statement["Action"])):
            continue
        if not any(fnmatchcase(request.resource, str(r)) for r in as_list(statement["Resource"])):
            continue
        if not _conditions_hold(statement.get("Condition", {}), request.context):
            continue
        sids.append(str(statement["Sid"]))
    return sids


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    """StringEquals/StringLike on keys the request carries; any other condition does not hold (fails safe)."""
    for operator, tests in conditions.items():
        for key, wanted in tests.items():
            value = context.get(key)
            if value is None:
                return False
            if operator == "StringEquals" and value not in as_list(wanted):
                return False
            if operator == "StringLike" and not any(fnmatchcase(value, w) for w in as_list(wanted)):
                return False
            if operator not in {"StringEquals", "StringLike"}:
                return False
    return True


def _run_recorded(cli: Cli, log: Path, *args: str, argv: list[str] | None = None) -> list[AwsCall]:
    argv = argv or [sys.executable, "-m", "tests.rules.aws_calls", "--env", ENV, "--port", "0", *args]
    result = cli.run_argv(argv, env={CALL_LOG_VARIABLE: str(log)})
    assert result.returncode == 0, result.stderr
    return [AwsCall.from_json(line) for line in log.read_text(encoding="utf-8").splitlines()]


def _store_with_a_failed_write_after_creating_a_parameter(
    cloud: Cloud, google: RefreshFakeGoogle, monkeypatch: pytest.MonkeyPatch
) -> list[AwsCall]:
    """store_token's rollback, in-process: a parameter that did not exist is created, a later write fails.

    The CLI checks that all three parameters exist before the browser opens; if one disappears
    meanwhile (a ``pulumi destroy``) and a later write fails, the rollback deletes the one it created.
    """
    cloud.ssm.delete_parameter(Name=names.client_credentials_parameter(ENV))
    monkeypatch.setenv("AWS_ENDPOINT_URL", cloud.moto.url)
    ssm = AwsClients(REGION).ssm
    calls: list[AwsCall] = []
    record_calls(ssm, calls.append)

    def fail_the_expiry_write(params: Mapping[str, Any], **_: Any) -> None:
        if params.get("Name") == names.refresh_token_expiry_parameter(ENV):
            raise ConnectionError("network gone")

    ssm.meta.events.register("before-parameter-build.ssm.PutParameter", fail_the_expiry_write)
    # The rollback does not depend on the proof, so no access token is minted for this token.
    client = ClientConfig.from_json(json.dumps(google.client_json()))
    token = RefreshToken.issued_now("1//refresh-token", lifetime=timedelta(days=7), scopes=[names.GMAIL_SCOPE])
    with pytest.raises(StoreFailed) as failed:
        store_token(ssm, ENV, ProvenToken(token, client), client_json=json.dumps(google.client_json()))
    assert failed.value.unrestored == ()
    return calls


def test_the_operator_policy_grants_every_aws_call_of_the_refresh_cli_and_nothing_more(
    cloud: Cloud, google: RefreshFakeGoogle, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy_stack(cloud, google, processor=SUCCEEDING_PROCESSOR)
    cli = Cli(moto_server, tmp_path)
    client_file = tmp_path / "client_secret.json"
    client_file.write_text(json.dumps(google.client_json()), encoding="utf-8")
    web_client_file = tmp_path / "web_client.json"
    web_client_file.write_text(json.dumps(google.client_json("web")), encoding="utf-8")
    deploy_renewal_function(cloud)  # --web-client-secret looks up the page's URL, the redirect URI to register
    runs = {
        "--env test": _run_recorded(cli, tmp_path / "plain.jsonl"),
        "--env test --client-secret FILE --wait": _run_recorded(
            cli, tmp_path / "wait.jsonl", "--client-secret", str(client_file), "--wait"
        ),
        "a failed write rolled back": _store_with_a_failed_write_after_creating_a_parameter(cloud, google, monkeypatch),
        "--env test --web-client-secret FILE": _run_recorded(
            cli, tmp_path / "web.jsonl", "--web-client-secret", str(web_client_file)
        ),
    }
    # --reconcile (two days later, so the stored mail is old enough to be owed): one message the
    # forwarder never saw (its headers are read) and one it claimed but never delivered.
    cloud.client("s3").create_bucket(Bucket=BUCKET)
    store(cloud, "never-seen", "bob@example.com")
    store(cloud, "not-delivered", "bob@example.com", names.DEFAULT_MAILBOX)
    runs["--env test --reconcile --dry-run"] = _run_recorded(
        cli, tmp_path / "reconcile-dry.jsonl", argv=reconcile_argv("--dry-run")
    )
    runs["--env test --reconcile --wait"] = _run_recorded(
        cli, tmp_path / "reconcile.jsonl", argv=reconcile_argv("--wait")
    )
    for result in cli.results:  # as in tests/refresh: no token or client secret in any output
        for secret in google.secrets():
            assert secret not in result.stdout and secret not in result.stderr

    policy = operator_policy()
    used: set[str] = set()
    refused: list[str] = []
    for run, calls in runs.items():
        assert calls, run
        for call in calls:
            for request in iam_requests(call, partition=PARTITION, account=ACCOUNT):
                # The mapping itself follows the reference: the resource fits the action's type.
                fits = check_policy(
                    {"Statement": [{"Effect": "Allow", "Action": request.action, "Resource": request.resource}]},
                    policy="mapping",
                )
                assert not fits, format_findings(fits)
                sids = allowing_statements(policy, request)
                used.update(sids)
                if not sids:
                    context = f" with {dict(request.context)}" if request.context else ""
                    refused.append(f"{run}: {request.action} on {request.resource}{context}")
    assert not refused, "docs/operator-policy.json does not grant:\n" + "\n".join(sorted(set(refused)))
    unused = [s["Sid"] for s in policy["Statement"] if s["Sid"] not in used]
    assert not unused, f"statements no recorded call needs: {unused}"
    # The runs reached the paths they are for.
    actions = {call.action for calls in runs.values() for call in calls}
    assert {
        "states:DescribeExecution",
        "states:ListExecutions",
        "sqs:GetQueueAttributes",
        "ssm:DeleteParameter",
        "lambda:GetFunctionUrlConfig",
        "s3:ListObjectsV2",
        "s3:GetObject",
    } <= actions
    reconciled = {call.action for call in runs["--env test --reconcile --wait"]}
    assert {"s3:GetObject", "states:StartExecution", "states:DescribeExecution"} <= reconciled
