"""The customer-managed KMS key that encrypts both SNS topics."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.context import AwsContext


class TopicKey(pulumi.ComponentResource):
    """CMK (with yearly rotation) that SES, CloudWatch and SNS may use for the topics.

    Why not the free AWS-managed ``alias/aws/sns`` key: its key policy cannot be changed, and it
    does not let SES or CloudWatch generate data keys, so an encrypted topic with that key
    silently drops every notification those services publish.
    """

    key: aws.kms.Key
    alias: aws.kms.Alias
    key_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        env: str,
        aws_context: AwsContext,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:TopicKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"ses-mail {env}: encrypts the SES notification and alerts SNS topics",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=json.dumps(policies.topic_key_policy(aws_context.partition, aws_context.account_id)),
            tags=dict(tags),
            opts=child,
        )
        self.alias = aws.kms.Alias(
            f"{name}-alias",
            name=names.topic_key_alias(env),
            target_key_id=self.key.key_id,
            opts=child,
        )
        self.key_arn = self.key.arn
        self.register_outputs({"keyArn": self.key_arn})
