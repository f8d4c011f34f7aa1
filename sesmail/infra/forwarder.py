"""The forwarder Lambda: archive, role and least-privilege policy, log group, SQS trigger."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.archive import REPO_ROOT
from sesmail.infra.canary import Canary
from sesmail.infra.lambda_package import (  # noqa: F401  (re-exported: tests and callers import them here)
    FunctionSpec,
    MissingHandlerError,
    handler_module_path,
    lambda_archive,
    python_function,
)
from sesmail.infra.mail_intake import MailIntake
from sesmail.infra.retry import Retry
from sesmail.infra.tokens import Tokens
from sesmail.runtime.mailboxes import MailboxTable
from sesmail.runtime.verdicts import AuthFailures


def forwarder_environment(
    *,
    env: str,
    retry_queue_url: pulumi.Input[str],
    inbound_dlq_url: pulumi.Input[str],
    email_bucket: pulumi.Input[str],
    extra_labels: Sequence[str],
    auth_failures: AuthFailures = AuthFailures.SPAM,
    mailboxes: MailboxTable | None = None,
    canary_address: str | None = None,
) -> dict[str, pulumi.Input[str]]:
    """The handler's environment contract (DESIGN.md); GMAIL_LABELS only when labels exist.

    With ``ses-mail:mailboxes``, MAILBOXES carries the table (each mailbox's labels in it) and
    RETRY_QUEUE_URL names the primary mailbox's queue, from which the others' URLs are derived.
    """
    variables: dict[str, pulumi.Input[str]] = {
        names.ENV_VAR_ENV: env,
        names.ENV_VAR_RETRY_QUEUE_URL: retry_queue_url,
        names.ENV_VAR_INBOUND_DLQ_URL: inbound_dlq_url,
        names.ENV_VAR_EMAIL_BUCKET: email_bucket,
        names.ENV_VAR_AUTH_FAILURES: auth_failures.value,
    }
    if extra_labels:
        variables[names.ENV_VAR_GMAIL_LABELS] = ",".join(extra_labels)
    if mailboxes is not None and mailboxes.configured:
        variables[names.ENV_VAR_MAILBOXES] = mailboxes.to_json()
    if canary_address:
        variables[names.ENV_VAR_CANARY_ADDRESS] = canary_address
    return variables


class Forwarder(pulumi.ComponentResource):
    """``names.forwarder_function(env)``: Python on arm64, triggered by the inbound queue."""

    log_group: aws.cloudwatch.LogGroup
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    function: aws.lambda_.Function
    event_source_mapping: aws.lambda_.EventSourceMapping

    def __init__(
        self,
        name: str,
        *,
        env: str,
        extra_labels: Sequence[str],
        auth_failures: AuthFailures,
        tokens: Tokens,
        mailboxes: MailboxTable | None = None,
        canary: Canary | None = None,
        intake: MailIntake,
        retry: Retry,
        tags: Mapping[str, str],
        archive_root: Path = REPO_ROOT,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:Forwarder", name, None, opts)
        spec = FunctionSpec(
            function_name=names.forwarder_function(env),
            role_name=names.forwarder_role(env),
            description=f"ses-mail {env}: imports mail received by SES into Gmail",
            handler=names.FORWARDER_HANDLER,
            timeout_seconds=names.FORWARDER_TIMEOUT_SECONDS,
            memory_mb=names.FORWARDER_MEMORY_MB,
            log_retention_days=names.FORWARDER_LOG_RETENTION_DAYS,
        )
        self.log_group, self.role, self.role_policy, self.function = python_function(
            name,
            spec,
            parent=self,
            policy=lambda log_group_arn: pulumi.Output.all(
                client_credentials_parameter_arn=tokens.client_credentials.arn,
                web_client_credentials_parameter_arn=tokens.web_client_credentials.arn,
                refresh_token_parameter_arns=pulumi.Output.all(*(p.arn for p in tokens.refresh_tokens.values())),
                bucket_arn=intake.bucket.arn,
                inbound_queue_arn=intake.inbound_queue.arn,
                retry_queue_arns=pulumi.Output.all(*(q.queue.arn for q in retry.queues.values())),
                inbound_dlq_arn=intake.inbound_dlq.arn,
                log_group_arn=log_group_arn,
                canary_key_parameter_arn=canary.key.arn if canary else None,
            ).apply(lambda arns: json.dumps(policies.forwarder_policy(**arns))),
            environment=forwarder_environment(
                env=env,
                retry_queue_url=retry.queue.url,
                inbound_dlq_url=intake.inbound_dlq.url,
                email_bucket=intake.bucket.id,
                extra_labels=extra_labels,
                auth_failures=auth_failures,
                mailboxes=mailboxes,
                canary_address=canary.address if canary else None,
            ),
            tags=tags,
            archive_root=archive_root,
        )
        # Lambda checks the role can receive from the queue when the mapping is created, hence
        # depends_on the policy. Concurrency: Gmail's per-user quota is 240 imports a minute
        # (names.GMAIL_QUOTA_UNITS_PER_MINUTE / names.GMAIL_IMPORT_QUOTA_UNITS); one invocation
        # imports its batch sequentially, so 2 concurrent pollers (AWS's minimum) stay inside
        # it even together with the retry processor, and a burst just waits in the queue.
        self.event_source_mapping = aws.lambda_.EventSourceMapping(
            f"{name}-inbound-trigger",
            event_source_arn=intake.inbound_queue.arn,
            function_name=self.function.arn,
            batch_size=names.SQS_BATCH_SIZE,
            function_response_types=["ReportBatchItemFailures"],
            scaling_config=aws.lambda_.EventSourceMappingScalingConfigArgs(
                maximum_concurrency=names.FORWARDER_MAX_CONCURRENCY
            ),
            enabled=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role_policy]),
        )
        self.register_outputs({"functionName": self.function.name, "functionArn": self.function.arn})
