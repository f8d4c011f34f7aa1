"""The daily canary: its HMAC key, its Lambda (sends one message through SES) and its schedule.

What it proves and how it is read are elsewhere: the forwarder recognises the canary
(``sesmail.runtime.canary``), the ``CanaryDelivered`` alarms (one per mailbox) live with every other
alarm in ``Monitoring``, and the saved query "canary-story" with the other queries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.archive import REPO_ROOT
from sesmail.infra.context import AwsContext
from sesmail.infra.lambda_package import FunctionSpec, on_schedule, python_function
from sesmail.infra.tokens import generated_secret


class Canary(pulumi.ComponentResource):
    """``names.canary_function(env)``, run once a day by EventBridge, and the key it signs with.

    The key is generated once (``tokens.generated_secret``): a later ``pulumi up`` keeps it.
    """

    address: str
    key: aws.ssm.Parameter
    log_group: aws.cloudwatch.LogGroup
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    function: aws.lambda_.Function
    schedule: aws.cloudwatch.EventRule
    permission: aws.lambda_.Permission
    target: aws.cloudwatch.EventTarget

    def __init__(
        self,
        name: str,
        *,
        env: str,
        address: str,
        aws_context: AwsContext,
        tags: Mapping[str, str],
        archive_root: Path = REPO_ROOT,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:Canary", name, None, opts)
        self.address = address
        self.key = generated_secret(
            f"{name}-key",
            parameter_name=names.canary_key_parameter(env),
            description="HMAC key of the ses-mail canary (the canary signs, the forwarder checks)",
            tags=tags,
            parent=self,
        )
        domain = address.rpartition("@")[2]
        identity_arn = policies.ses_identity_arn(
            aws_context.partition, aws_context.region, aws_context.account_id, domain
        )
        spec = FunctionSpec(
            function_name=names.canary_function(env),
            role_name=names.canary_role(env),
            description=f"ses-mail {env}: sends the daily canary from and to {address}",
            handler=names.CANARY_HANDLER,
            timeout_seconds=names.CANARY_TIMEOUT_SECONDS,
            memory_mb=names.CANARY_MEMORY_MB,
            log_retention_days=names.CANARY_LOG_RETENTION_DAYS,
        )
        self.log_group, self.role, self.role_policy, self.function = python_function(
            name,
            spec,
            parent=self,
            policy=lambda log_group_arn: pulumi.Output.all(key=self.key.arn, logs=log_group_arn).apply(
                lambda arns: json.dumps(
                    policies.canary_policy(
                        key_parameter_arn=arns["key"],
                        identity_arn=identity_arn,
                        address=address,
                        log_group_arn=arns["logs"],
                    )
                )
            ),
            environment={names.ENV_VAR_ENV: env, names.ENV_VAR_CANARY_ADDRESS: address},
            tags=tags,
            archive_root=archive_root,
        )
        self.schedule, self.permission, self.target = on_schedule(
            name,
            self.function,
            rule_name=names.canary_schedule_rule(env),
            expression=names.CANARY_SCHEDULE,
            description=f"ses-mail {env}: send the daily canary",
            parent=self,
            tags=tags,
        )
        self.register_outputs({"functionName": self.function.name, "keyParameter": self.key.name})
