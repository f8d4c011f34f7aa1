"""The token monitor Lambda, its least-privilege role, log group and 15-minute schedule."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.archive import REPO_ROOT
from sesmail.infra.lambda_package import FunctionSpec, python_function
from sesmail.infra.tokens import Tokens


class TokenMonitor(pulumi.ComponentResource):
    """``names.token_monitor_function(env)``, run by EventBridge every 15 minutes.

    Same package as the forwarder (``lambda_package.lambda_archive``), its own handler. It may
    read the expiry parameter and nothing else, and write metrics of ``SESMail/{env}`` only.
    """

    log_group: aws.cloudwatch.LogGroup
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    function: aws.lambda_.Function
    schedule: aws.cloudwatch.EventRule
    target: aws.cloudwatch.EventTarget
    permission: aws.lambda_.Permission

    def __init__(
        self,
        name: str,
        *,
        env: str,
        tokens: Tokens,
        tags: Mapping[str, str],
        archive_root: Path = REPO_ROOT,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:TokenMonitor", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = FunctionSpec(
            function_name=names.token_monitor_function(env),
            role_name=names.token_monitor_role(env),
            description=f"ses-mail {env}: publishes the Gmail token's hours left every 15 minutes",
            handler=names.TOKEN_MONITOR_HANDLER,
            timeout_seconds=names.TOKEN_MONITOR_TIMEOUT_SECONDS,
            memory_mb=names.TOKEN_MONITOR_MEMORY_MB,
            log_retention_days=names.TOKEN_MONITOR_LOG_RETENTION_DAYS,
        )
        self.log_group, self.role, self.role_policy, self.function = python_function(
            name,
            spec,
            parent=self,
            policy=lambda log_group_arn: pulumi.Output.all(
                expiry_parameter_arn=tokens.refresh_token_expiry.arn, log_group_arn=log_group_arn
            ).apply(
                lambda arns: json.dumps(policies.token_monitor_policy(**arns, namespace=names.metric_namespace(env)))
            ),
            environment={names.ENV_VAR_ENV: env},
            tags=tags,
            archive_root=archive_root,
        )
        self.schedule = aws.cloudwatch.EventRule(
            f"{name}-schedule",
            name=names.token_monitor_schedule_rule(env),
            description=f"ses-mail {env}: run the token monitor",
            schedule_expression=names.TOKEN_MONITOR_SCHEDULE,
            tags=dict(tags),
            opts=child,
        )
        # Only this rule may invoke the function (source_arn), not any rule of any account.
        self.permission = aws.lambda_.Permission(
            f"{name}-invoke-permission",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal=policies.EVENTS_PRINCIPAL,
            source_arn=self.schedule.arn,
            opts=child,
        )
        self.target = aws.cloudwatch.EventTarget(
            f"{name}-target",
            rule=self.schedule.name,
            arn=self.function.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.permission]),
        )
        self.register_outputs({"functionName": self.function.name, "scheduleRule": self.schedule.name})
