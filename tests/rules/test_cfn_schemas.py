"""The Lambda, alarm and EventBridge rule resources of the graph fit AWS's own resource schemas, as cfn-lint ships them.

moto accepts a function URL with any auth type, a permission with any key, a reserved concurrency
of -5 and an alarm description of any length. The CloudFormation registry schemas (JSON Schema,
published by AWS for every resource type and bundled with cfn-lint) carry the services'
enumerations, patterns and bounds. Each resource's Pulumi inputs are written the way
CloudFormation names them and validated against its type's schema (us-east-1's); an input the
mapping does not know fails, so a new property cannot slip past unchecked. A Pulumi event target
is one entry of its rule's ``Targets`` in CloudFormation: it is checked as a rule holding it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import pytest

from tests.infra.harness import ProgramRun, Registration, run_program, stack_config

#: Pulumi input → CloudFormation property, per type; ``None`` marks inputs CloudFormation has
#: elsewhere (tags are checked by tests/infra, the code archive by the archive tests).
Convert = Callable[[Any], Any]
MAPPINGS: dict[str, tuple[str, dict[str, tuple[str, Convert] | None]]] = {
    "aws:lambda/function:Function": (
        "AWS::Lambda::Function",
        {
            "name": ("FunctionName", str),
            "description": ("Description", str),
            "role": ("Role", str),
            "runtime": ("Runtime", str),
            "architectures": ("Architectures", list),
            "handler": ("Handler", str),
            "timeout": ("Timeout", int),
            "memorySize": ("MemorySize", int),
            "reservedConcurrentExecutions": ("ReservedConcurrentExecutions", int),
            "environment": ("Environment", lambda e: {"Variables": dict(e["variables"])}),
            "loggingConfig": (
                "LoggingConfig",
                lambda c: {"LogFormat": c["logFormat"], "LogGroup": c["logGroup"]},
            ),
            "code": None,
            "tags": None,
        },
    ),
    "aws:lambda/functionUrl:FunctionUrl": (
        "AWS::Lambda::Url",
        {
            "functionName": ("TargetFunctionArn", str),
            "authorizationType": ("AuthType", str),
            "invokeMode": ("InvokeMode", str),
        },
    ),
    "aws:lambda/permission:Permission": (
        "AWS::Lambda::Permission",
        {
            "action": ("Action", str),
            "function": ("FunctionName", str),
            "principal": ("Principal", str),
            "sourceArn": ("SourceArn", str),
            "functionUrlAuthType": ("FunctionUrlAuthType", str),
            "invokedViaFunctionUrl": ("InvokedViaFunctionUrl", bool),
        },
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": (
        "AWS::CloudWatch::Alarm",
        {
            "name": ("AlarmName", str),
            "alarmDescription": ("AlarmDescription", str),
            "namespace": ("Namespace", str),
            "metricName": ("MetricName", str),
            "dimensions": ("Dimensions", lambda d: [{"Name": k, "Value": v} for k, v in d.items()]),
            "statistic": ("Statistic", str),
            "period": ("Period", int),
            "evaluationPeriods": ("EvaluationPeriods", int),
            "datapointsToAlarm": ("DatapointsToAlarm", int),
            "threshold": ("Threshold", float),
            "comparisonOperator": ("ComparisonOperator", str),
            "treatMissingData": ("TreatMissingData", str),
            "alarmActions": ("AlarmActions", list),
            "okActions": ("OKActions", list),
            "tags": None,
        },
    ),
    "aws:cloudwatch/eventRule:EventRule": (
        "AWS::Events::Rule",
        {
            "name": ("Name", str),
            "description": ("Description", str),
            "scheduleExpression": ("ScheduleExpression", str),
            "tags": None,
        },
    ),
    "aws:cloudwatch/eventTarget:EventTarget": (
        "AWS::Events::Rule",
        {
            "rule": ("Name", str),
            "targetId": ("Id", str),
            "arn": ("Arn", str),
            "input": ("Input", str),
            "inputTransformer": (
                "InputTransformer",
                lambda t: {
                    **({"InputPathsMap": dict(t["inputPaths"])} if t.get("inputPaths") else {}),
                    "InputTemplate": t["inputTemplate"],
                },
            ),
        },
    ),
}
#: What the schema requires but the program leaves to Pulumi's packaging (the zip of the archive).
PLACEHOLDERS = {"AWS::Lambda::Function": {"Code": {"ZipFile": "def handler(event, context): pass"}}}
#: Where CloudFormation nests what a Pulumi resource holds: an event target is one of its rule's
#: ``Targets``, whose ``Id`` Pulumi generates when the program gives none.
RULE_KEYS = {"Name"}
RESHAPE: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "aws:cloudwatch/eventTarget:EventTarget": lambda p: {
        **{k: v for k, v in p.items() if k in RULE_KEYS},
        "Targets": [{"Id": "generated-by-pulumi", **{k: v for k, v in p.items() if k not in RULE_KEYS}}],
    },
}


@cache
def schema(type_name: str) -> dict[str, Any]:
    base = resources.files("cfnlint") / "data" / "schemas"
    index = json.loads((base / "providers" / "us-east-1.json").read_text(encoding="utf-8"))
    document: dict[str, Any] = json.loads((base / "resources" / f"{index[type_name]}.json").read_text("utf-8"))
    return document


def cfn_properties(resource: Registration) -> tuple[str, dict[str, Any]]:
    type_name, mapping = MAPPINGS[resource.type]
    properties: dict[str, Any] = dict(PLACEHOLDERS.get(type_name, {}))
    unknown = sorted(set(resource.inputs) - set(mapping) - {"__defaults"})
    assert not unknown, f"{resource.type} {resource.name}: no CloudFormation mapping for {unknown}; add them"
    for key, value in resource.inputs.items():
        target = mapping.get(key)
        if target is None or value is None:
            continue
        name, convert = target
        properties[name] = convert(value)
    reshape = RESHAPE.get(resource.type)
    return type_name, reshape(properties) if reshape else properties


def problems(resource: Registration) -> list[str]:
    type_name, properties = cfn_properties(resource)
    validator = jsonschema.Draft7Validator(schema(type_name))
    return [
        f"{resource.name}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(properties)
    ]


@pytest.fixture(scope="module", params=["single", "mailboxes"])
def run(request: pytest.FixtureRequest) -> ProgramRun:
    """The example stack with a Gmail address (so the page and its links exist), and one with mailboxes."""
    if request.param == "single":
        return run_program(stack_config(gmailAddress="owner@gmail.com"))
    mailboxes = [
        {"name": "alice", "recipients": ["alice@example.com"], "gmailAddress": "alice@gmail.com"},
        {"name": "bob", "recipients": ["bob@example.com", "example.com"]},
    ]
    return run_program(stack_config(mailboxes=mailboxes, recipients=None, extraLabels=None))


def test_every_lambda_and_alarm_resource_fits_aws_s_schema(run: ProgramRun) -> None:
    checked: dict[str, int] = {}
    found: list[str] = []
    for resource in run.custom_resources:
        if resource.type in MAPPINGS:
            checked[resource.type] = checked.get(resource.type, 0) + 1
            found += problems(resource)
    assert not found, "\n".join(found)
    assert set(checked) == set(MAPPINGS), checked  # every mapped type is in the graph, so each check ran


@pytest.mark.parametrize(
    ("type_", "inputs", "message"),
    [
        ("aws:lambda/functionUrl:FunctionUrl", {"functionName": "f", "authorizationType": "PUBLIC"}, "is not one of"),
        ("aws:lambda/function:Function", {"role": "arn", "reservedConcurrentExecutions": -1}, "less than the minimum"),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", {"alarmDescription": "x" * 1025}, "is too long"),
        (
            "aws:lambda/permission:Permission",
            {"action": "lambda:Invoke Function", "function": "f", "principal": "*"},
            "does not match",
        ),
        ("aws:cloudwatch/eventRule:EventRule", {"name": "r", "scheduleExpression": "daily at 4"}, "does not match"),
        ("aws:cloudwatch/eventRule:EventRule", {"name": "r" * 65, "scheduleExpression": "rate(1 day)"}, "is too long"),
        ("aws:cloudwatch/eventTarget:EventTarget", {"rule": "r", "arn": "", "targetId": "t"}, "should be non-empty"),
        (
            "aws:cloudwatch/eventTarget:EventTarget",
            {"rule": "r", "arn": "a", "inputTransformer": {"inputPaths": {"time": "$.time"}, "inputTemplate": ""}},
            "should be non-empty",
        ),
    ],
)
def test_the_schemas_refuse_what_aws_refuses(type_: str, inputs: Mapping[str, Any], message: str) -> None:
    resource = Registration(type=type_, name="probe")
    resource.inputs = dict(inputs)
    found = problems(resource)
    assert any(message in p for p in found), found


def test_an_input_without_a_mapping_is_noticed() -> None:
    resource = Registration(type="aws:lambda/functionUrl:FunctionUrl", name="probe")
    resource.inputs = {"functionName": "f", "authorizationType": "NONE", "cors": {"allowOrigins": ["*"]}}
    with pytest.raises(AssertionError, match="no CloudFormation mapping for \\['cors'\\]"):
        problems(resource)
