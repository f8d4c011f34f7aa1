"""Record every AWS operation a program attempts, and say which IAM permission each one needs.

Recording is a botocore event hook (``before-parameter-build``) on every client, so it sees each
call the code makes, before it is sent, whether it then succeeds or not (a refused call needs its
permission as much as a granted one). Only the request fields that name a resource are kept:
never a parameter value, so no token or client secret reaches the record.

``python -m tests.rules.aws_calls ARGS`` runs ``python -m sesmail.refresh ARGS`` exactly as an
operator does, with every client it creates recorded as JSON lines into ``$SESMAIL_TEST_AWS_CALLS``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CALL_LOG_VARIABLE = "SESMAIL_TEST_AWS_CALLS"

#: Request fields that name the resource a call acts on (and, for metrics, the condition key).
RESOURCE_FIELDS = (
    "Name",
    "Names",
    "QueueName",
    "QueueUrl",
    "stateMachineArn",
    "executionArn",
    "logGroupName",
    "logStreamName",
    "Namespace",
    "FunctionName",
    "Bucket",
    "Key",
)

#: botocore signing name → IAM service prefix, where they differ.
_IAM_PREFIX = {"monitoring": "cloudwatch"}


@dataclass(frozen=True)
class AwsCall:
    service: str  # IAM service prefix: ssm, sqs, states, logs, cloudwatch, sts
    operation: str  # API operation name, e.g. GetParameter
    region: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"

    def to_json(self) -> str:
        return json.dumps(
            {"service": self.service, "operation": self.operation, "region": self.region, "params": dict(self.params)}
        )

    @classmethod
    def from_json(cls, line: str) -> AwsCall:
        data = json.loads(line)
        return cls(data["service"], data["operation"], data["region"], data["params"])


def record_calls(client: Any, sink: Callable[[AwsCall], None]) -> None:
    """Report every operation ``client`` is asked to perform to ``sink``."""
    region = str(client.meta.region_name)

    def before_parameter_build(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        signing_name = str(model.service_model.signing_name)
        kept = {key: params[key] for key in RESOURCE_FIELDS if key in params}
        sink(AwsCall(_IAM_PREFIX.get(signing_name, signing_name), str(model.name), region, kept))

    client.meta.events.register("before-parameter-build", before_parameter_build)


def record_every_client(sink: Callable[[AwsCall], None]) -> None:
    """From now on, every botocore (and so boto3) client this process creates is recorded."""
    import botocore.session

    create_client = botocore.session.Session.create_client

    def recording_create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        record_calls(client, sink)
        return client

    botocore.session.Session.create_client = recording_create_client


# --- what IAM authorizes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorization IAM makes for a call: action, resource ARN and the request's condition keys."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


#: Calls that need no IAM permission at all (AWS documents that they cannot even be denied).
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}


def iam_requests(call: AwsCall, *, partition: str, account: str) -> list[Request]:
    """The IAM authorizations ``call`` needs, per the Service Authorization Reference.

    Raises ``KeyError`` for an operation this table does not know yet, so a new call in the code
    is noticed here instead of passing unchecked.
    """
    region, p = call.region, call.params
    arn = f"arn:{partition}"
    if call.action in NEEDS_NO_PERMISSION:
        return []
    if call.action in {"ssm:DescribeParameters"}:
        return [Request(call.action, "*")]  # no resource type
    if call.action in {"ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"}:
        return [Request(call.action, f"{arn}:ssm:{region}:{account}:parameter{p['Name']}")]
    if call.action == "ssm:GetParameters":
        return [Request(call.action, f"{arn}:ssm:{region}:{account}:parameter{name}") for name in p["Names"]]
    if call.action == "sqs:GetQueueUrl":
        return [Request(call.action, f"{arn}:sqs:{region}:{account}:{p['QueueName']}")]
    if call.action in {"sqs:GetQueueAttributes"}:
        queue_account, queue_name = urlsplit(p["QueueUrl"]).path.strip("/").split("/")[-2:]
        return [Request(call.action, f"{arn}:sqs:{region}:{queue_account}:{queue_name}")]
    if call.action in {"states:StartExecution", "states:ListExecutions"}:
        return [Request(call.action, p["stateMachineArn"])]
    if call.action == "states:DescribeExecution":
        return [Request(call.action, p["executionArn"])]
    if call.action in {"logs:CreateLogStream", "logs:PutLogEvents"}:  # both act on the log stream
        group, stream = p["logGroupName"], p["logStreamName"]
        return [Request(call.action, f"{arn}:logs:{region}:{account}:log-group:{group}:log-stream:{stream}")]
    if call.action == "lambda:GetFunctionUrlConfig":
        return [Request(call.action, f"{arn}:lambda:{region}:{account}:function:{p['FunctionName']}")]
    if call.action == "s3:ListObjectsV2":  # authorized as s3:ListBucket, on the bucket
        return [Request("s3:ListBucket", f"{arn}:s3:::{p['Bucket']}")]
    if call.action == "s3:GetObject":
        return [Request(call.action, f"{arn}:s3:::{p['Bucket']}/{p['Key']}")]
    if call.action == "cloudwatch:PutMetricData":
        return [Request(call.action, "*", {"cloudwatch:namespace": p["Namespace"]})]  # no resource type
    raise KeyError(f"no IAM mapping for {call.action} yet: add it to tests/rules/aws_calls.py")


def main() -> None:
    """Run the refresh CLI as ``python -m sesmail.refresh`` would, recording into $SESMAIL_TEST_AWS_CALLS."""
    log_path = os.environ[CALL_LOG_VARIABLE]

    def append(call: AwsCall) -> None:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(call.to_json() + "\n")

    record_every_client(append)
    sys.argv = ["sesmail.refresh", *sys.argv[1:]]
    runpy.run_module("sesmail.refresh", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
