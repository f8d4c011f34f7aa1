"""What the refresh CLI tests drive: moto's server in a process, the CLI as a subprocess, the fake Google.

The CLI runs exactly as an operator runs it (``python -m sesmail.refresh``), with AWS reached
through ``AWS_ENDPOINT_URL`` (moto's server on 127.0.0.1), Google through the client JSON's
``auth_uri``/``token_uri`` (the fake on 127.0.0.1), and the browser through ``BROWSER``
(``sesmail/local/fake_browser.py``). Every run's output is kept, so the fixture can check at the
end that no token or client secret ever reached it. The operator's side (:class:`Cli`, the
scripted browser, :class:`RefreshFakeGoogle`) lives in :mod:`sesmail.local.operator`, which the
end-to-end world shares; the stack stand-ins and moto's child process are the tests' own.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from sesmail import names
from sesmail.local.google import FakeGoogle
from sesmail.local.operator import (
    CLI,
    ENV,
    REGION,
    REPO_ROOT,
    Cli,
    CliResult,
    LiveCli,
    RefreshFakeGoogle,
)
from sesmail.runtime.retry_processor import DELIVERED, FAILED

__all__ = [
    "ACCOUNT",
    "CALLER_ARN",
    "CLI",
    "ENV",
    "FAILING_PROCESSOR",
    "PARAMETERS",
    "REGION",
    "SUCCEEDING_PROCESSOR",
    "WEB_CLIENT",
    "Cli",
    "CliResult",
    "Cloud",
    "LiveCli",
    "MotoServer",
    "RefreshFakeGoogle",
    "deploy_renewal_function",
    "deploy_stack",
    "install_retry_processor",
    "reporting_processor",
]

ACCOUNT = "123456789012"
#: The identity moto's STS reports for any credentials it does not know.
CALLER_ARN = f"arn:aws:sts::{ACCOUNT}:user/moto"
MOTO_SCRIPT = Path(__file__).resolve().with_name("moto_process.py")

PARAMETERS = (
    names.client_credentials_parameter(ENV),
    names.refresh_token_parameter(ENV),
    names.refresh_token_expiry_parameter(ENV),
)
#: The renewal page's web client JSON (``--web-client-secret FILE``); not one of the token's parameters.
WEB_CLIENT = names.web_client_credentials_parameter(ENV)


# --- moto ----------------------------------------------------------------------------------------


class MotoServer:
    """moto's ThreadedMotoServer in a child process (see moto_process.py for why)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(MOTO_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"moto server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _post(self, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(
            self.url + path, data=body, method="POST", headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def reset(self) -> None:
        """Empty every backend, stop enforcing IAM, and let Step Functions really execute."""
        self._post("/moto-api/reset", b"", "text/plain")
        self.enforce_iam(False)
        self._post(
            "/moto-api/config",
            json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
            "application/json",
        )

    def enforce_iam(self, enforce: bool) -> None:
        """moto checks signatures and IAM policies from the next request on (or stops checking)."""
        self._post("/moto-api/reset-auth", b"0" if enforce else b"inf", "text/plain")


# --- AWS as the tests see it ---------------------------------------------------------------------


@dataclass
class Cloud:
    """boto3 clients on moto's server, plus reads of what the CLI leaves behind."""

    moto: MotoServer
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service,
                endpoint_url=self.moto.url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._clients[service]

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def sfn(self) -> Any:
        return self.client("stepfunctions")

    def put_parameter(self, name: str, value: str) -> None:
        self.ssm.put_parameter(Name=name, Value=value, Type=self.parameter_type(name), Overwrite=True)

    def parameter_type(self, name: str) -> str:
        return "String" if name == names.refresh_token_expiry_parameter(ENV) else "SecureString"

    def versions(self) -> dict[str, int]:
        """{name: version} of the token parameters that exist."""
        found = self.ssm.get_parameters(Names=list(PARAMETERS), WithDecryption=True)["Parameters"]
        return {p["Name"]: int(p["Version"]) for p in found}

    def parameter(self, name: str) -> dict[str, Any]:
        return dict(self.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"])

    def parameter_json(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.parameter(name)["Value"]))

    def token_hours(self) -> list[float]:
        """Every TokenHoursUntilExpiration datapoint published in the last hour."""
        now = datetime.now(UTC)
        result = self.client("cloudwatch").get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "hours",
                    "MetricStat": {
                        "Metric": {"Namespace": names.metric_namespace(ENV), "MetricName": names.METRIC_TOKEN_HOURS},
                        "Period": 60,
                        "Stat": "Maximum",
                    },
                }
            ],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=5),
        )
        return [float(v) for v in result["MetricDataResults"][0]["Values"]]

    def audit_records(self) -> list[dict[str, Any]]:
        events = self.client("logs").filter_log_events(logGroupName=names.audit_log_group(ENV))["events"]
        return [json.loads(e["message"]) for e in events]

    def audit_raw(self) -> str:
        events = self.client("logs").filter_log_events(logGroupName=names.audit_log_group(ENV))["events"]
        return "\n".join(e["message"] for e in events)

    def executions(self) -> list[dict[str, Any]]:
        arn = names.state_machine_arn(ENV, REGION, ACCOUNT, "aws")
        return list(self.sfn.list_executions(stateMachineArn=arn)["executions"])

    def retry_queue_url(self) -> str:
        return str(self.sqs.get_queue_url(QueueName=names.retry_queue(ENV))["QueueUrl"])

    @contextlib.contextmanager
    def iam_enforced(self) -> Iterator[None]:
        self.moto.enforce_iam(True)
        try:
            yield
        finally:
            self.moto.enforce_iam(False)

    def operator_credentials(self, allowed_actions: Sequence[str]) -> dict[str, str]:
        """An IAM user allowed only ``allowed_actions``: its keys, as environment variables."""
        iam = self.client("iam")
        iam.create_user(UserName="operator")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(allowed_actions), "Resource": "*"}],
        }
        iam.put_user_policy(UserName="operator", PolicyName="refresh", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="operator")["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


# --- the retry processor stand-in ----------------------------------------------------------------

#: Succeeds after a short wait, so ``--wait`` sees it RUNNING first. The real definition (built in
#: Python from sesmail.names) replaces these in ``install_retry_processor`` once it exists.
SUCCEEDING_PROCESSOR: dict[str, Any] = {
    "StartAt": "Drain",
    "States": {
        "Drain": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
        "Done": {"Type": "Succeed"},
    },
}
FAILING_PROCESSOR: dict[str, Any] = {
    "StartAt": "TokenDead",
    "States": {
        "TokenDead": {
            "Type": "Fail",
            "Error": "TokenExpiredError",
            "Cause": "Gmail rejected a freshly minted access token",
        }
    },
}


def reporting_processor(delivered: int, failed: int) -> dict[str, Any]:
    """Succeeds after a short wait with the real processor's output shape: its totals."""
    return {
        "StartAt": "Drain",
        "States": {
            "Drain": {"Type": "Wait", "Seconds": 1, "Next": "Totals"},
            "Totals": {"Type": "Pass", "Result": {DELIVERED: delivered, FAILED: failed, "batches": 1}, "End": True},
        },
    }


def install_retry_processor(cloud: Cloud, definition: Mapping[str, Any]) -> str:
    """Create (or replace) the retry processor state machine under its real name."""
    sfn = cloud.sfn
    arn = names.state_machine_arn(ENV, REGION, ACCOUNT, "aws")
    with contextlib.suppress(sfn.exceptions.StateMachineDoesNotExist):
        sfn.describe_state_machine(stateMachineArn=arn)
        sfn.delete_state_machine(stateMachineArn=arn)
    return str(
        sfn.create_state_machine(
            name=names.retry_state_machine(ENV),
            definition=json.dumps(definition),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/{names.retry_state_machine(ENV)}",
        )["stateMachineArn"]
    )


def deploy_stack(cloud: Cloud, google: FakeGoogle, *, processor: Mapping[str, Any] | None) -> None:
    """What ``pulumi up`` leaves behind (placeholders), plus the client JSON uploaded by an earlier run."""
    for name in (*PARAMETERS, WEB_CLIENT):
        extra = {} if cloud.parameter_type(name) == "String" else {"KeyId": "alias/aws/ssm"}
        cloud.ssm.put_parameter(Name=name, Value=names.placeholder_value(ENV), Type=cloud.parameter_type(name), **extra)
    cloud.sqs.create_queue(QueueName=names.retry_queue(ENV))
    cloud.sqs.create_queue(QueueName=names.retry_dlq(ENV))
    cloud.client("logs").create_log_group(logGroupName=names.audit_log_group(ENV))
    if processor is not None:
        install_retry_processor(cloud, processor)
    cloud.put_parameter(names.client_credentials_parameter(ENV), json.dumps(google.client_json()))


def deploy_renewal_function(cloud: Cloud) -> str:
    """The renewal page's function with its function URL, as ``pulumi up`` makes them; returns the URL."""
    role = cloud.client("iam").create_role(
        RoleName=names.renewal_role(ENV),
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("handlers/renewal.py", "def handler(event, context):\n    return {}\n")
    function = cloud.client("lambda")
    function.create_function(
        FunctionName=names.renewal_function(ENV),
        Runtime="python3.12",
        Role=role,
        Handler=names.RENEWAL_HANDLER,
        Code={"ZipFile": archive.getvalue()},
    )
    return str(
        function.create_function_url_config(FunctionName=names.renewal_function(ENV), AuthType="NONE")["FunctionUrl"]
    )
