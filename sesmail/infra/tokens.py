"""The SSM parameters of the OAuth token lifecycle, created with placeholders, and the audit log."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.runtime.mailboxes import MailboxTable

#: SecureStrings use the AWS-managed SSM key; the forwarder's policy relies on that (see
#: ``policies.forwarder_policy``), so it is spelled out rather than left to the default.
SSM_MANAGED_KEY = "alias/aws/ssm"
#: Bytes of randomness in a generated secret (256 bits, HMAC-SHA256's own strength).
SECRET_BYTES = 32


def generated_secret(
    name: str, *, parameter_name: str, description: str, tags: Mapping[str, str], parent: pulumi.Resource
) -> aws.ssm.Parameter:
    """A SecureString holding a random key, generated once, when the parameter is created.

    ``ignore_changes`` keeps every later ``pulumi up`` from rolling it (a new random value each run
    would otherwise replace it); Pulumi holds it as a secret, so the state is encrypted like SSM.
    """
    return aws.ssm.Parameter(
        name,
        name=parameter_name,
        type="SecureString",
        key_id=SSM_MANAGED_KEY,
        value=pulumi.Output.secret(secrets.token_urlsafe(SECRET_BYTES)),
        description=description,
        tags=dict(tags),
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["value"]),
    )


class Tokens(pulumi.ComponentResource):
    """Client credentials and refresh token (SecureString), expiry metadata (String), audit log.

    Pulumi writes ``names.placeholder_value(env)`` once and then ignores the value
    (``ignore_changes=["value"]``): the refresh CLI owns the real contents, and a later
    ``pulumi up`` must never put the placeholder back over a working token.
    """

    client_credentials: aws.ssm.Parameter
    #: The renewal page's "Web application" client JSON (``--web-client-secret``). Tokens renewed
    #: from a phone belong to it, so the forwarder and the monitor read it too.
    web_client_credentials: aws.ssm.Parameter
    #: Per mailbox: its refresh token and expiry. ``refresh_token``/``refresh_token_expiry`` are the
    #: primary mailbox's (``default`` when there is one), what the single-valued outputs name.
    refresh_tokens: dict[str, aws.ssm.Parameter]
    refresh_token_expiries: dict[str, aws.ssm.Parameter]
    refresh_token: aws.ssm.Parameter
    refresh_token_expiry: aws.ssm.Parameter
    #: The mailbox table (String, no secret) when the stack configures ``mailboxes`` or
    #: ``gmailAddress``: where the refresh CLI learns which Google account a mailbox's token must
    #: come from. Pulumi owns its value (no ignore_changes).
    mailbox_table: aws.ssm.Parameter | None
    audit_log: aws.cloudwatch.LogGroup

    def __init__(
        self,
        name: str,
        *,
        env: str,
        tags: Mapping[str, str],
        mailboxes: Sequence[str] = (names.DEFAULT_MAILBOX,),
        table: MailboxTable | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:Tokens", name, None, opts)
        keep_value = pulumi.ResourceOptions(parent=self, ignore_changes=["value"])

        def parameter(
            suffix: str,
            parameter_name: str,
            *,
            secret: bool,
            description: str,
            mailbox: str = names.DEFAULT_MAILBOX,
            placeholder: str | None = None,
        ) -> aws.ssm.Parameter:
            return aws.ssm.Parameter(
                f"{name}-{suffix}",
                name=parameter_name,
                type="SecureString" if secret else "String",
                key_id=SSM_MANAGED_KEY if secret else None,
                value=placeholder or names.placeholder_value(env, mailbox),
                description=description,
                tags=dict(tags),
                opts=keep_value,
            )

        self.client_credentials = parameter(
            "client-credentials",
            names.client_credentials_parameter(env),
            secret=True,
            description="OAuth client JSON from Google's console (set by the refresh CLI)",
        )
        self.web_client_credentials = parameter(
            "web-client-credentials",
            names.web_client_credentials_parameter(env),
            secret=True,
            description="Web application OAuth client JSON of the renewal page (refresh CLI --web-client-secret)",
            placeholder=names.web_client_placeholder_value(env),
        )
        self.refresh_tokens, self.refresh_token_expiries = {}, {}
        for mailbox in mailboxes:
            suffix = "" if mailbox == names.DEFAULT_MAILBOX else f"-{mailbox}"
            whose = "" if mailbox == names.DEFAULT_MAILBOX else f" of mailbox {mailbox}"
            self.refresh_tokens[mailbox] = parameter(
                f"refresh-token{suffix}",
                names.refresh_token_parameter(env, mailbox),
                secret=True,
                description=f"Gmail OAuth refresh token JSON{whose} (set by the refresh CLI)",
                mailbox=mailbox,
            )
            self.refresh_token_expiries[mailbox] = parameter(
                f"refresh-token-expiry{suffix}",
                names.refresh_token_expiry_parameter(env, mailbox),
                secret=False,
                description=f"Refresh token expiry metadata{whose}, no secret (read by the token monitor)",
                mailbox=mailbox,
            )
        primary = names.DEFAULT_MAILBOX if names.DEFAULT_MAILBOX in self.refresh_tokens else mailboxes[0]
        self.refresh_token = self.refresh_tokens[primary]
        self.refresh_token_expiry = self.refresh_token_expiries[primary]
        self.mailbox_table = None
        if table is not None and (table.configured or any(m.gmail_address for m in table.mailboxes)):
            self.mailbox_table = aws.ssm.Parameter(
                f"{name}-mailboxes",
                name=names.mailboxes_parameter(env),
                type="String",
                value=table.to_json(),
                description="ses-mail mailboxes: name, recipients, labels, Gmail address (from the stack config)",
                tags=dict(tags),
                opts=pulumi.ResourceOptions(parent=self),
            )
        # Where the refresh CLI records each renewal (who, when, which version; never the token).
        self.audit_log = aws.cloudwatch.LogGroup(
            f"{name}-audit-log",
            name=names.audit_log_group(env),
            retention_in_days=names.AUDIT_LOG_RETENTION_DAYS,
            tags=dict(tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs(
            {
                "auditLogGroup": self.audit_log.name,
                "clientCredentialsParameter": self.client_credentials.name,
                "webClientCredentialsParameter": self.web_client_credentials.name,
                "refreshTokenParameter": self.refresh_token.name,
                "refreshTokenExpiryParameter": self.refresh_token_expiry.name,
            }
        )
