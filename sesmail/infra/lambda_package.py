"""The Lambda packages of the stack, and the plumbing each function shares.

The mail path's functions ship the same files (``archive.lambda_source_files``) and differ only
in their handler; the renewal page ships those plus its own (``archive.RENEWAL``). So there is
one definition of each package and one check that it holds every handler module the stack names
for it: a missing module fails ``pulumi up`` before anything is deployed, instead of failing
every invocation afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.archive import RENEWAL, REPO_ROOT, RUNTIME, lambda_source_files, program_of

#: Every Lambda handler of the stack, by the archive that must contain its module.
LAMBDA_HANDLERS: Mapping[str, tuple[str, ...]] = {
    RUNTIME: (names.FORWARDER_HANDLER, names.TOKEN_MONITOR_HANDLER, names.CANARY_HANDLER),
    RENEWAL: (names.RENEWAL_HANDLER,),
}


class MissingHandlerError(pulumi.RunError):
    """The archive would not contain the module a Lambda handler names."""


def handler_module_path(handler: str = names.FORWARDER_HANDLER) -> str:
    """``handlers.forwarder.handler`` → ``handlers/forwarder.py`` (its path in the archive)."""
    module = handler.rpartition(".")[0]
    return module.replace(".", "/") + ".py"


def lambda_archive(root: Path = REPO_ROOT, *, program: str = RUNTIME) -> pulumi.AssetArchive:
    """``program``'s deployment package: exactly the files of ``archive.lambda_source_files``."""
    files = lambda_source_files(root, program=program)
    shipped = {name for name, _ in files}
    for handler in LAMBDA_HANDLERS[program]:
        if handler_module_path(handler) not in shipped:
            raise MissingHandlerError(
                f"{handler_module_path(handler)} is missing under {root}: the Lambda whose handler is "
                f"{handler} would fail on every invocation"
            )
    return pulumi.AssetArchive({name: pulumi.FileAsset(str(path)) for name, path in files})


@dataclass(frozen=True)
class FunctionSpec:
    """What differs between the stack's Lambda functions; everything else is shared below."""

    function_name: str
    role_name: str
    description: str
    handler: str
    timeout_seconds: int
    memory_mb: int
    log_retention_days: int
    #: None: the account's unreserved pool (Lambda's default, -1); a number caps the function there.
    reserved_concurrency: int | None = None


class PythonFunction(NamedTuple):
    """The four resources of one function; a tuple, so a component unpacks it into attributes."""

    log_group: aws.cloudwatch.LogGroup
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    function: aws.lambda_.Function


def python_function(
    name: str,
    spec: FunctionSpec,
    *,
    parent: pulumi.Resource,
    policy: Callable[[pulumi.Output[str]], pulumi.Input[str]],
    environment: Mapping[str, pulumi.Input[str]],
    tags: Mapping[str, str],
    archive_root: Path = REPO_ROOT,
) -> PythonFunction:
    """A function of the shared package with its own log group, role and least-privilege policy.

    ``policy`` receives the log group's ARN and returns the role's policy JSON. The log group
    is ours (not Lambda's on first run) so it has a retention and goes away with the stack; the
    function waits for it and for the policy, so no log line lands in an unmanaged group and
    the first invocation already has its permissions.
    """
    child = pulumi.ResourceOptions(parent=parent)
    log_group = aws.cloudwatch.LogGroup(
        f"{name}-logs",
        name=names.lambda_log_group(spec.function_name),
        retention_in_days=spec.log_retention_days,
        tags=dict(tags),
        opts=child,
    )
    role = aws.iam.Role(
        f"{name}-role",
        name=spec.role_name,
        description=spec.description,
        assume_role_policy=json.dumps(policies.lambda_assume_role_policy()),
        tags=dict(tags),
        opts=child,
    )
    role_policy = aws.iam.RolePolicy(
        f"{name}-policy", name="least-privilege", role=role.name, policy=policy(log_group.arn), opts=child
    )
    function = aws.lambda_.Function(
        f"{name}-function",
        name=spec.function_name,
        description=spec.description,
        role=role.arn,
        runtime=names.FORWARDER_RUNTIME,
        architectures=[names.FORWARDER_ARCHITECTURE],
        handler=spec.handler,
        code=lambda_archive(archive_root, program=program_of(spec.handler)),
        timeout=spec.timeout_seconds,
        memory_size=spec.memory_mb,
        reserved_concurrent_executions=spec.reserved_concurrency,
        environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(environment)),
        # Text: our lines already are JSON objects; Lambda's JSON format would wrap them again.
        logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=log_group.name),
        tags=dict(tags),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[log_group, role_policy]),
    )
    return PythonFunction(log_group, role, role_policy, function)


class Schedule(NamedTuple):
    """An EventBridge rule that runs a function, the permission for exactly that rule, and the target."""

    rule: aws.cloudwatch.EventRule
    permission: aws.lambda_.Permission
    target: aws.cloudwatch.EventTarget


def on_schedule(
    name: str,
    function: aws.lambda_.Function,
    *,
    rule_name: str,
    expression: str,
    description: str,
    parent: pulumi.Resource,
    tags: Mapping[str, str],
    input_transformer: aws.cloudwatch.EventTargetInputTransformerArgs | None = None,
) -> Schedule:
    """Run ``function`` on ``expression``; only this rule may invoke it (``source_arn``), no other rule.

    ``input_transformer``: what the function receives instead of EventBridge's scheduled event
    (its template's string placeholders quoted, ``"<time>"``, to stay valid JSON).
    """
    child = pulumi.ResourceOptions(parent=parent)
    rule = aws.cloudwatch.EventRule(
        f"{name}-schedule",
        name=rule_name,
        description=description,
        schedule_expression=expression,
        tags=dict(tags),
        opts=child,
    )
    permission = aws.lambda_.Permission(
        f"{name}-invoke-permission",
        action="lambda:InvokeFunction",
        function=function.name,
        principal=policies.EVENTS_PRINCIPAL,
        source_arn=rule.arn,
        opts=child,
    )
    target = aws.cloudwatch.EventTarget(
        f"{name}-target",
        rule=rule.name,
        arn=function.arn,
        input_transformer=input_transformer,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[permission]),
    )
    return Schedule(rule, permission, target)
