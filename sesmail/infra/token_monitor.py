"""The token monitor Lambda, its least-privilege role, log group, 15-minute schedule and daily reconcile rule."""

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
from sesmail.infra.retry import Retry
from sesmail.infra.tokens import Tokens
from sesmail.runtime.mailboxes import MailboxTable
from sesmail.runtime.retry_run import inputs_tell_mailboxes_apart

#: A stack without ``ses-mail:mailboxes``: the one mailbox ``default`` (the table is immutable).
NO_MAILBOXES_CONFIGURED = MailboxTable.single()
#: What the daily rule's target passes the function: the action and EventBridge's scheduled
#: ``time`` (the same in every delivery of the event, so the day's execution names repeat). The
#: placeholder is quoted: it stands for a string, and the template must stay valid JSON.
DAILY_RECONCILE_INPUT_PATHS = {"time": "$.time"}
DAILY_RECONCILE_INPUT_TEMPLATE = json.dumps({"action": names.RETRY_TRIGGER_DAILY_RECONCILE, "time": "<time>"})


class TokenMonitor(pulumi.ComponentResource):
    """``names.token_monitor_function(env)``, run by EventBridge every 15 minutes, and once a day
    (``names.RECONCILE_DAILY_SCHEDULE``, rule ``names.daily_reconcile_rule(env)``) with
    ``{"action": "daily-reconcile", "time": ...}``: then it starts a retry-processor execution, which
    reconciles first, for every mailbox whose token works, even with an empty retry queue (DESIGN.md,
    "Reconcile: S3 is the source of truth"). Each rule has its own invoke permission.

    Same package as the forwarder (``lambda_package.lambda_archive``), its own handler. It reads
    every mailbox's expiry parameter and writes metrics of ``SESMail/{env}`` only; to start the
    retry processor while mail is parked (DESIGN.md, "Nothing waits forever") it may also read
    every mailbox's retry queue depth, list, start and (with mailboxes other than ``default``)
    describe executions of the retry processor, and read the OAuth client JSON and every
    mailbox's refresh token to prove a token by minting. It writes no parameter and touches no
    message.

    ``mailboxes``: the stack's table. Configured, it reaches the function as ``MAILBOXES``;
    ``RETRY_QUEUE_URL`` stays the primary mailbox's queue (the others' URLs are derived from it).
    ``tokens`` and ``retry`` must hold every mailbox of the table.
    """

    log_group: aws.cloudwatch.LogGroup
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    function: aws.lambda_.Function
    schedule: aws.cloudwatch.EventRule
    target: aws.cloudwatch.EventTarget
    permission: aws.lambda_.Permission
    daily_schedule: aws.cloudwatch.EventRule
    daily_target: aws.cloudwatch.EventTarget
    daily_permission: aws.lambda_.Permission

    def __init__(
        self,
        name: str,
        *,
        env: str,
        tokens: Tokens,
        retry: Retry,
        aws_context: AwsContext,
        tags: Mapping[str, str],
        archive_root: Path = REPO_ROOT,
        mailboxes: MailboxTable = NO_MAILBOXES_CONFIGURED,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:TokenMonitor", name, None, opts)
        missing = [
            m
            for m in mailboxes.names
            if m not in tokens.refresh_tokens or m not in tokens.refresh_token_expiries or m not in retry.queues
        ]
        if missing:
            raise ValueError(
                f"the token monitor serves mailbox(es) {', '.join(missing)} without token parameters or a "
                "retry queue: give Tokens and Retry the same mailboxes"
            )
        # Named, not taken from the RetryProcessor: the monitor needs nothing of it but its ARN, so
        # the two components stay independent (RetryProcessor derives the same ARN the same way).
        machine_arn = names.state_machine_arn(env, aws_context.region, aws_context.account_id, aws_context.partition)
        served = mailboxes.names
        environment: dict[str, pulumi.Input[str]] = {
            names.ENV_VAR_ENV: env,
            # The primary mailbox's (``retry.queue`` when Retry has the table's mailboxes).
            names.ENV_VAR_RETRY_QUEUE_URL: retry.queues[mailboxes.primary.name].queue.url,
            names.ENV_VAR_STATE_MACHINE_ARN: machine_arn,
        }
        if mailboxes.configured:
            environment[names.ENV_VAR_MAILBOXES] = mailboxes.to_json()
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
                expiry_parameter_arns=pulumi.Output.all(*(tokens.refresh_token_expiries[m].arn for m in served)),
                client_credentials_parameter_arn=tokens.client_credentials.arn,
                web_client_credentials_parameter_arn=tokens.web_client_credentials.arn,
                refresh_token_parameter_arns=pulumi.Output.all(*(tokens.refresh_tokens[m].arn for m in served)),
                retry_queue_arns=pulumi.Output.all(*(retry.queues[m].queue.arn for m in served)),
                log_group_arn=log_group_arn,
            ).apply(
                lambda arns: json.dumps(
                    policies.token_monitor_policy(
                        **arns,
                        state_machine_arn=machine_arn,
                        namespace=names.metric_namespace(env),
                        describe_executions=inputs_tell_mailboxes_apart(served),
                    )
                )
            ),
            environment=environment,
            tags=tags,
            archive_root=archive_root,
        )
        self.schedule, self.permission, self.target = on_schedule(
            name,
            self.function,
            rule_name=names.token_monitor_schedule_rule(env),
            expression=names.TOKEN_MONITOR_SCHEDULE,
            description=f"ses-mail {env}: run the token monitor",
            parent=self,
            tags=tags,
        )
        self.daily_schedule, self.daily_permission, self.daily_target = on_schedule(
            f"{name}-daily-reconcile",
            self.function,
            rule_name=names.daily_reconcile_rule(env),
            expression=names.RECONCILE_DAILY_SCHEDULE,
            description=f"ses-mail {env}: start the daily reconcile of every mailbox through the token monitor",
            parent=self,
            tags=tags,
            input_transformer=aws.cloudwatch.EventTargetInputTransformerArgs(
                input_paths=DAILY_RECONCILE_INPUT_PATHS,
                input_template=DAILY_RECONCILE_INPUT_TEMPLATE,
            ),
        )
        self.register_outputs(
            {
                "functionName": self.function.name,
                "scheduleRule": self.schedule.name,
                "dailyReconcileRule": self.daily_schedule.name,
            }
        )
