"""The alerts topic every alarm notifies, with the operator's e-mail subscriptions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.context import AwsContext
from sesmail.infra.encryption import TopicKey


class Alerts(pulumi.ComponentResource):
    """Encrypted SNS topic ``names.alerts_topic(env)`` that CloudWatch alarms publish to.

    Each address of ``alertEmails`` gets an e-mail subscription; AWS mails a confirmation link
    first, and nothing is delivered to an address until it has been clicked.
    """

    topic: aws.sns.Topic
    topic_policy: aws.sns.TopicPolicy
    subscriptions: list[aws.sns.TopicSubscription]
    topic_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        env: str,
        alert_emails: Sequence[str],
        topic_key: TopicKey,
        aws_context: AwsContext,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:Alerts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(
            f"{name}-topic",
            name=names.alerts_topic(env),
            kms_master_key_id=topic_key.key_arn,
            tags=dict(tags),
            opts=child,
        )
        self.topic_policy = aws.sns.TopicPolicy(
            f"{name}-topic-policy",
            arn=self.topic.arn,
            policy=self.topic.arn.apply(
                lambda arn: json.dumps(
                    policies.alerts_topic_policy(arn, aws_context.partition, aws_context.region, aws_context.account_id)
                )
            ),
            opts=child,
        )
        self.subscriptions = [
            aws.sns.TopicSubscription(
                f"{name}-email-{address}",
                topic=self.topic.arn,
                protocol="email",
                endpoint=address,
                opts=child,
            )
            for address in alert_emails
        ]
        self.topic_arn = self.topic.arn
        self.register_outputs({"topicArn": self.topic_arn})
