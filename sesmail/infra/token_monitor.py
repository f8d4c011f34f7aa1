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
from sesmail.infra.lambda_package import lambda_archive
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
        function_name = names.token_monitor_function(env)

        # Ours (not Lambda's on first run): it has a retention and goes away with the stack.
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=names.lambda_log_group(function_name),
            retention_in_days=names.TOKEN_MONITOR_LOG_RETENTION_DAYS,
            tags=dict(tags),
            opts=child,
        )
        self.role = aws.iam.Role(
            f"{name}-role",
            name=names.token_monitor_role(env),
            description=f"ses-mail {env}: the token monitor Lambda",
            assume_role_policy=json.dumps(policies.lambda_assume_role_policy()),
            tags=dict(tags),
            opts=child,
        )
        self.role_policy = aws.iam.RolePolicy(
            f"{name}-policy",
            name="least-privilege",
            role=self.role.name,
            policy=pulumi.Output.all(
                expiry_parameter_arn=tokens.refresh_token_expiry.arn,
                log_group_arn=self.log_group.arn,
            ).apply(
                lambda arns: json.dumps(policies.token_monitor_policy(**arns, namespace=names.metric_namespace(env)))
            ),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description=f"ses-mail {env}: publishes the Gmail token's hours left every 15 minutes",
            role=self.role.arn,
            runtime=names.FORWARDER_RUNTIME,
            architectures=[names.FORWARDER_ARCHITECTURE],
            handler=names.TOKEN_MONITOR_HANDLER,
            code=lambda_archive(archive_root),
            timeout=names.TOKEN_MONITOR_TIMEOUT_SECONDS,
            memory_size=names.TOKEN_MONITOR_MEMORY_MB,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={names.ENV_VAR_ENV: env}),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=self.log_group.name),
            tags=dict(tags),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group, self.role_policy]),
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
