"""The phone renewal page: its function, its public function URL and its signing secret.

What the page does is in ``sesmail.renewal`` (DESIGN.md, "Renewing from a phone"); the web OAuth
client it needs lives with the other OAuth parameters (``Tokens.web_client_credentials``), since
the forwarder and the monitor read it too. Every token alarm links here (``Monitoring``).
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
from sesmail.infra.lambda_package import FunctionSpec, python_function
from sesmail.infra.retry import Retry
from sesmail.infra.tokens import Tokens, generated_secret
from sesmail.runtime.mailboxes import MailboxTable

#: Function URLs without IAM authentication: the page is for a person with a phone and a browser.
#: Its own defences (state bound to a signed cookie, PKCE, the id token's account) do the rest.
PUBLIC = "NONE"


def renewal_environment(
    *,
    env: str,
    mailboxes: MailboxTable,
    retry_queue_url: pulumi.Input[str],
    state_machine_arn: str,
    token_lifetime_days: int,
) -> dict[str, pulumi.Input[str]]:
    """What ``sesmail.renewal.settings.Settings.from_environ`` reads.

    The table travels as ``MAILBOXES`` when the stack configures mailboxes (each entry carries its
    ``gmailAddress``); a stack without them passes the one address as ``GMAIL_ADDRESS``.
    """
    variables: dict[str, pulumi.Input[str]] = {
        names.ENV_VAR_ENV: env,
        names.ENV_VAR_RETRY_QUEUE_URL: retry_queue_url,
        names.ENV_VAR_STATE_MACHINE_ARN: state_machine_arn,
        names.ENV_VAR_TOKEN_LIFETIME_DAYS: str(token_lifetime_days),
    }
    if mailboxes.configured:
        variables[names.ENV_VAR_MAILBOXES] = mailboxes.to_json()
    elif mailboxes.primary.gmail_address:
        variables[names.ENV_VAR_GMAIL_ADDRESS] = mailboxes.primary.gmail_address
    return variables


class RenewalPage(pulumi.ComponentResource):
    """``names.renewal_function(env)`` behind a public function URL, output as ``renewalUrl``.

    Renewable are the mailboxes with a ``gmailAddress``: the page refuses every other one (404), and
    the role may write only their token parameters. A stack without any still gets the page (its
    URL is a stack output to register with Google before the first address is configured), with a
    role that can write no token at all.

    The signing secret is generated once (``tokens.generated_secret``): rolling it at every
    ``pulumi up`` would end the flows in progress.
    """

    secret: aws.ssm.Parameter
    log_group: aws.cloudwatch.LogGroup
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    function: aws.lambda_.Function
    function_url: aws.lambda_.FunctionUrl
    url_permission: aws.lambda_.Permission
    invoke_permission: aws.lambda_.Permission
    url: pulumi.Output[str]
    renewable: tuple[str, ...]

    def __init__(
        self,
        name: str,
        *,
        env: str,
        mailboxes: MailboxTable,
        tokens: Tokens,
        retry: Retry,
        aws_context: AwsContext,
        token_lifetime_days: int,
        reserved_concurrency: int,
        tags: Mapping[str, str],
        archive_root: Path = REPO_ROOT,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:RenewalPage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.renewable = tuple(m.name for m in mailboxes.mailboxes if m.gmail_address)
        self.secret = generated_secret(
            f"{name}-secret",
            parameter_name=names.renewal_secret_parameter(env),
            description="Signing secret of the ses-mail renewal page's cookies (generated once)",
            tags=tags,
            parent=self,
        )
        machine_arn = names.state_machine_arn(env, aws_context.region, aws_context.account_id, aws_context.partition)
        scope = self.renewable
        spec = FunctionSpec(
            function_name=names.renewal_function(env),
            role_name=names.renewal_role(env),
            description=f"ses-mail {env}: renew a mailbox's Gmail token from a phone",
            handler=names.RENEWAL_HANDLER,
            timeout_seconds=names.RENEWAL_TIMEOUT_SECONDS,
            memory_mb=names.RENEWAL_MEMORY_MB,
            log_retention_days=names.RENEWAL_LOG_RETENTION_DAYS,
            reserved_concurrency=reserved_concurrency or None,
        )
        self.log_group, self.role, self.role_policy, self.function = python_function(
            name,
            spec,
            parent=self,
            policy=lambda log_group_arn: pulumi.Output.all(
                web_client_credentials_parameter_arn=tokens.web_client_credentials.arn,
                renewal_secret_parameter_arn=self.secret.arn,
                refresh_token_parameter_arns=pulumi.Output.all(*(tokens.refresh_tokens[m].arn for m in scope)),
                expiry_parameter_arns=pulumi.Output.all(*(tokens.refresh_token_expiries[m].arn for m in scope)),
                retry_queue_arns=pulumi.Output.all(*(retry.queues[m].queue.arn for m in scope)),
                audit_log_group_arn=tokens.audit_log.arn,
                log_group_arn=log_group_arn,
            ).apply(
                lambda arns: json.dumps(
                    policies.renewal_policy(
                        **arns, state_machine_arn=machine_arn, namespace=names.metric_namespace(env)
                    )
                )
            ),
            environment=renewal_environment(
                env=env,
                mailboxes=mailboxes,
                retry_queue_url=retry.queues[mailboxes.primary.name].queue.url,
                state_machine_arn=machine_arn,
                token_lifetime_days=token_lifetime_days,
            ),
            tags=tags,
            archive_root=archive_root,
        )
        self.function_url = aws.lambda_.FunctionUrl(
            f"{name}-url",
            function_name=self.function.name,
            authorization_type=PUBLIC,
            invoke_mode="BUFFERED",
            opts=child,
        )
        # Since October 2025 a public function URL needs both statements in the function's
        # resource policy: InvokeFunctionUrl for the URL's auth type, and InvokeFunction limited
        # to invocations that come through a function URL (so "*" cannot call Invoke directly).
        self.url_permission = aws.lambda_.Permission(
            f"{name}-url-permission",
            action="lambda:InvokeFunctionUrl",
            function=self.function.name,
            principal=policies.PUBLIC_PRINCIPAL,
            function_url_auth_type=PUBLIC,
            opts=child,
        )
        self.invoke_permission = aws.lambda_.Permission(
            f"{name}-invoke-permission",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal=policies.PUBLIC_PRINCIPAL,
            invoked_via_function_url=True,
            opts=child,
        )
        self.url = self.function_url.function_url
        self.register_outputs({"functionName": self.function.name, "url": self.url})
