"""Run the whole Pulumi program (``__main__.py``) under ``pulumi.runtime.set_mocks`` and record it.

Each :func:`run_program` call starts from scratch (fresh mocks, monitor, root stack and config),
so tests are independent, run in any order, in one process with the moto tests and under
pytest-xdist. Besides the inputs the mocks see, a recording monitor keeps what only the engine
normally sees: parent, ``ignore_changes`` and dependencies (explicit ``depends_on`` included).

The infra tests use it as it is (through ``tests/infra/harness.py``); :mod:`sesmail.local.deploy`
extends the mocks to create the resources in moto, for the end-to-end scenarios and the demo.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc as pulumi_rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

from sesmail import names
from sesmail.local.account import ACCOUNT_ID, PARTITION, REGION, STACK

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN = REPO_ROOT / "__main__.py"
EXAMPLE_STACK_FILE = REPO_ROOT / "Pulumi.test.yaml"

PROJECT = names.PROJECT

STACK_TYPE = "pulumi:pulumi:Stack"
PROVIDER_TYPE_PREFIX = "pulumi:providers:"
COMPONENT_TYPE_PREFIX = "sesmail:infra:"


def is_secret(value: Any) -> bool:
    """Inputs marked secret reach the mocks wrapped in Pulumi's secret signature."""
    return isinstance(value, dict) and value.get(pulumi_rpc._special_sig_key) == pulumi_rpc._special_secret_sig


def unsecret(value: Any) -> Any:
    return value["value"] if is_secret(value) else value


@dataclass
class Registration:
    """One resource as the engine would have received it."""

    type: str
    name: str
    urn: str = ""
    parent: str = ""
    custom: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)

    @property
    def physical_name(self) -> str | None:
        keys = ("bucket",) if self.type == "aws:s3/bucket:Bucket" else ("name", "ruleSetName")
        for key in keys:
            value = self.inputs.get(key)
            if isinstance(value, str):
                return value
        return None

    def json_input(self, key: str) -> Any:
        return json.loads(self.inputs[key])

    def depends_on(self, other: Registration) -> bool:
        return other.urn in self.dependencies


@dataclass
class ProgramRun:
    resources: list[Registration]
    outputs: dict[str, Any]
    calls: list[str]

    def __iter__(self) -> Iterator[Registration]:
        return iter(self.resources)

    @property
    def custom_resources(self) -> list[Registration]:
        return [r for r in self.resources if r.custom and not r.type.startswith(PROVIDER_TYPE_PREFIX)]

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, **inputs: Any) -> Registration:
        """The single resource of ``type_`` whose inputs contain ``inputs``."""
        matches = [r for r in self.of_type(type_) if all(r.inputs.get(k) == v for k, v in inputs.items())]
        if len(matches) != 1:
            raise AssertionError(
                f"expected exactly one {type_} with {inputs}, found {len(matches)}: {[m.name for m in matches]}"
            )
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise KeyError(urn)


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers the three AWS lookups and invents realistic ids, ARNs and URLs."""

    def __init__(self, *, region: str, account_id: str, partition: str) -> None:
        self.region = region
        self.account_id = account_id
        self.partition = partition
        self.calls: list[str] = []
        self.registrations: dict[tuple[str, str], Registration] = {}
        self._lock = threading.Lock()

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append(args.token)
        region, account, partition = self.region, self.account_id, self.partition
        if args.token == "aws:index/getRegion:getRegion":
            return {
                "region": region,
                "name": region,
                "id": region,
                "endpoint": f"ec2.{region}.amazonaws.com",
                "description": region,
            }, []
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": account,
                "arn": f"arn:{partition}:iam::{account}:user/tester",
                "id": account,
                "userId": "AIDATESTER",
            }, []
        if args.token == "aws:index/getPartition:getPartition":
            return {
                "partition": partition,
                "dnsSuffix": "amazonaws.com",
                "id": partition,
                "reverseDnsPrefix": "com.amazonaws",
            }, []
        raise NotImplementedError(f"the program made an unexpected call: {args.token}")

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id, state = self._state(args.typ, args.name, dict(args.inputs))
        with self._lock:
            registration = self.registrations.setdefault(
                (args.typ, args.name), Registration(type=args.typ, name=args.name)
            )
            registration.inputs = dict(args.inputs)
            registration.state = state
            registration.custom = bool(args.custom)
        return resource_id, state

    def _state(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        region, account, partition = self.region, self.account_id, self.partition
        physical = inputs.get("name") or name
        state = dict(inputs)
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs["bucket"]
            return bucket, {**state, "bucket": bucket, "arn": f"arn:{partition}:s3:::{bucket}"}
        if typ == "aws:sqs/queue:Queue":
            url = f"https://sqs.{region}.amazonaws.com/{account}/{physical}"
            arn = f"arn:{partition}:sqs:{region}:{account}:{physical}"
            return url, {**state, "arn": arn, "url": url, "name": physical}
        if typ == "aws:sns/topic:Topic":
            arn = f"arn:{partition}:sns:{region}:{account}:{physical}"
            return arn, {**state, "arn": arn, "name": physical}
        if typ == "aws:kms/key:Key":
            key_id = f"key-{name}"
            return key_id, {**state, "keyId": key_id, "arn": f"arn:{partition}:kms:{region}:{account}:key/{key_id}"}
        if typ == "aws:ssm/parameter:Parameter":
            arn = f"arn:{partition}:ssm:{region}:{account}:parameter{physical}"
            return physical, {**state, "arn": arn, "name": physical}
        if typ == "aws:iam/role:Role":
            return physical, {**state, "arn": f"arn:{partition}:iam::{account}:role/{physical}", "name": physical}
        if typ == "aws:lambda/function:Function":
            arn = f"arn:{partition}:lambda:{region}:{account}:function:{physical}"
            return physical, {**state, "arn": arn, "name": physical}
        if typ == "aws:lambda/functionUrl:FunctionUrl":
            # AWS's shape: a 32-character id of lower-case letters and digits, then the region.
            url_id = hashlib.sha256(f"{account}/{inputs['functionName']}".encode()).hexdigest()[:32]
            url = f"https://{url_id}.lambda-url.{region}.on.aws/"
            return inputs["functionName"], {**state, "functionUrl": url, "urlId": url_id}
        if typ == "aws:sfn/stateMachine:StateMachine":
            arn = f"arn:{partition}:states:{region}:{account}:stateMachine:{physical}"
            return arn, {**state, "arn": arn, "name": physical}
        if typ == "aws:cloudwatch/logGroup:LogGroup":
            arn = f"arn:{partition}:logs:{region}:{account}:log-group:{physical}"
            return physical, {**state, "arn": arn, "name": physical}
        if typ == "aws:ses/domainIdentity:DomainIdentity":
            domain = inputs["domain"]
            return domain, {
                **state,
                "arn": f"arn:{partition}:ses:{region}:{account}:identity/{domain}",
                "verificationToken": f"verify-{domain}",
            }
        if typ == "aws:ses/domainDkim:DomainDkim":
            domain = inputs["domain"]
            slug = domain.replace(".", "-")
            return domain, {**state, "dkimTokens": [f"dkim{i}-{slug}" for i in (1, 2, 3)]}
        if typ == "aws:ses/receiptRuleSet:ReceiptRuleSet":
            rule_set = inputs["ruleSetName"]
            arn = f"arn:{partition}:ses:{region}:{account}:receipt-rule-set/{rule_set}"
            return rule_set, {**state, "arn": arn}
        if typ == "aws:ses/receiptRule:ReceiptRule":
            arn = (
                f"arn:{partition}:ses:{region}:{account}:receipt-rule-set/"
                f"{inputs['ruleSetName']}:receipt-rule/{physical}"
            )
            return physical, {**state, "arn": arn}
        if typ == "aws:cloudwatch/eventRule:EventRule":
            arn = f"arn:{partition}:events:{region}:{account}:rule/{physical}"
            return physical, {**state, "arn": arn, "name": physical}
        if typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            arn = f"arn:{partition}:cloudwatch:{region}:{account}:alarm:{physical}"
            return physical, {**state, "arn": arn, "name": physical}
        if typ == "aws:cloudwatch/dashboard:Dashboard":
            dashboard = inputs["dashboardName"]
            arn = f"arn:{partition}:cloudwatch::{account}:dashboard/{dashboard}"
            return dashboard, {**state, "dashboardArn": arn}
        return f"{name}-id", state


class RecordingMonitor(MockMonitor):
    """Keeps the request fields ``MockResourceArgs`` leaves out."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording_mocks = mocks

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method name MockMonitor uses
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != STACK_TYPE:
            with self.recording_mocks._lock:
                registration = self.recording_mocks.registrations.setdefault(
                    (request.type, request.name), Registration(type=request.type, name=request.name)
                )
                registration.urn = response.urn
                registration.parent = request.parent
                registration.custom = bool(request.custom)
                registration.ignore_changes = list(request.ignoreChanges)
                registration.dependencies = list(request.dependencies)
        return response


def config_strings(stack_config: Mapping[str, Any]) -> dict[str, str]:
    """Stack-file values as the Pulumi CLI hands them to the program (lists/maps as JSON)."""
    strings: dict[str, str] = {}
    for key, value in stack_config.items():
        if isinstance(value, str):
            strings[key] = value
        elif isinstance(value, bool):
            strings[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            strings[key] = str(value)
        else:
            strings[key] = json.dumps(value)
    return strings


def example_config() -> dict[str, Any]:
    """The ``config:`` block of Pulumi.test.yaml (the documented example stack)."""
    document = yaml.safe_load(EXAMPLE_STACK_FILE.read_text(encoding="utf-8"))
    return dict(document["config"])


def stack_config(**overrides: Any) -> dict[str, Any]:
    """The example config with ``ses-mail:<key>`` overrides (``None`` removes a key)."""
    config = example_config()
    for key, value in overrides.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config


def run_program(
    config: Mapping[str, Any] | None = None,
    *,
    region: str = REGION,
    account_id: str = ACCOUNT_ID,
    partition: str = PARTITION,
    stack: str = STACK,
) -> ProgramRun:
    """Run ``__main__.py`` once under fresh mocks; exceptions of the program propagate."""
    mocks = RecordingMocks(region=region, account_id=account_id, partition=partition)
    monitor = RecordingMonitor(mocks)
    # A fresh root stack: set_mocks only creates one when none exists, and a stale one would
    # carry the previous run's exports.
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    values = dict(stack_config() if config is None else config)
    values["aws:region"] = region
    pulumi.runtime.set_all_config(config_strings(values))

    exported: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[None]:
        runpy.run_path(str(MAIN), run_name="__main__")
        root = pulumi.runtime.get_root_resource()
        outputs = dict(getattr(root, "outputs", {}))
        return pulumi.Output.from_input(outputs).apply(exported.update)

    program()
    resources = [r for r in mocks.registrations.values() if r.urn]
    return ProgramRun(resources=resources, outputs=exported, calls=list(mocks.calls))
