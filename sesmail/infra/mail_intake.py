"""Mail intake: SES receives, stores the raw message in S3 and notifies SNS, which feeds SQS."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.config import StackConfig
from sesmail.infra.context import AwsContext
from sesmail.infra.dns import DnsRecord, domain_records
from sesmail.infra.encryption import TopicKey
from sesmail.infra.queues import dead_lettered_queue

#: STARTTLS "Optional": SES then accepts mail from the (few) legitimate servers that cannot do
#: TLS. "Require" would bounce them, and this project exists so that no mail gets lost; the
#: hop from the sending server is outside our control, SES→S3 is TLS either way.
TLS_POLICY = "Optional"


class MailIntake(pulumi.ComponentResource):
    """Bucket, SES identities and receipt rule, notification topic, inbound queue and its DLQ.

    Ordering that real AWS enforces (the mocks and moto do not): SES tests its permissions when
    the receipt rule is created (it writes a setup object to the bucket and publishes to the
    topic), so the rule ``depends_on`` the bucket policy, the topic policy and the key.
    """

    bucket: aws.s3.Bucket
    bucket_policy: aws.s3.BucketPolicy
    notification_topic: aws.sns.Topic
    notification_topic_policy: aws.sns.TopicPolicy
    inbound_queue: aws.sqs.Queue
    inbound_dlq: aws.sqs.Queue
    rule_set: aws.ses.ReceiptRuleSet | None
    active_rule_set: aws.ses.ActiveReceiptRuleSet | None
    rule: aws.ses.ReceiptRule
    identities: dict[str, aws.ses.DomainIdentity]
    dkims: dict[str, aws.ses.DomainDkim]
    dns_records: pulumi.Output[list[DnsRecord]]

    def __init__(
        self,
        name: str,
        *,
        config: StackConfig,
        aws_context: AwsContext,
        topic_key: TopicKey,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:MailIntake", name, None, opts)
        env = config.env
        ctx = aws_context
        rule_set_name = config.rule_set_name or names.receipt_rule_set(env)
        rule_name = names.receipt_rule(env)
        rule_arn = policies.receipt_rule_arn(ctx.partition, ctx.region, ctx.account_id, rule_set_name, rule_name)
        child = pulumi.ResourceOptions(parent=self)

        # --- Raw mail storage -------------------------------------------------------------------
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=names.email_bucket(env, ctx.account_id, ctx.region),
            force_destroy=False,
            tags=dict(tags),
            opts=child,
        )
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-bucket-ownership",
            bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-bucket-public-access",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        # SSE-S3: SES's S3 action writes into it without any key permission.
        encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-bucket-encryption",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    )
                )
            ],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-bucket-lifecycle",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-inbound-mail",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=names.INBOUND_PREFIX),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=config.retain_days),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=1
                    ),
                ),
                # A delivery claim is worth keeping exactly as long as the mail it guards: a
                # redelivery after that finds no mail (a permanent failure) anyway.
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-delivery-claims",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=names.CLAIMS_PREFIX),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=config.retain_days),
                ),
            ],
            opts=child,
        )
        # After the public access block and ownership controls: S3 rejects concurrent
        # configuration changes of one bucket ("OperationAborted").
        self.bucket_policy = aws.s3.BucketPolicy(
            f"{name}-bucket-policy",
            bucket=self.bucket.id,
            policy=self.bucket.arn.apply(
                lambda arn: json.dumps(policies.email_bucket_policy(arn, ctx.account_id, rule_arn))
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access, ownership]),
        )

        # --- Notification topic → inbound queue -------------------------------------------------
        self.notification_topic = aws.sns.Topic(
            f"{name}-notifications",
            name=names.inbound_notification_topic(env),
            kms_master_key_id=topic_key.key_arn,
            tags=dict(tags),
            opts=child,
        )
        self.notification_topic_policy = aws.sns.TopicPolicy(
            f"{name}-notifications-policy",
            arn=self.notification_topic.arn,
            policy=self.notification_topic.arn.apply(
                lambda arn: json.dumps(policies.notification_topic_policy(arn, ctx.account_id, rule_arn))
            ),
            opts=child,
        )
        queues = dead_lettered_queue(
            f"{name}-queue",
            name=names.inbound_queue(env),
            dlq_name=names.inbound_dlq(env),
            visibility_timeout_seconds=names.INBOUND_QUEUE_VISIBILITY_SECONDS,
            retention_seconds=names.INBOUND_QUEUE_RETENTION_SECONDS,
            max_receive_count=names.INBOUND_QUEUE_MAX_RECEIVE_COUNT,
            parent=self,
            tags=tags,
        )
        self.inbound_queue = queues.queue
        self.inbound_dlq = queues.dlq
        topic_arn = self.notification_topic.arn
        queue_policies = [
            aws.sqs.QueuePolicy(
                f"{logical}-policy",
                queue_url=queue.url,
                policy=pulumi.Output.all(queue.arn, topic_arn).apply(
                    lambda arns: json.dumps(policies.inbound_queue_policy(arns[0], arns[1]))
                ),
                opts=child,
            )
            # The DLQ also accepts the topic: it is the subscription's redrive target.
            for logical, queue in ((f"{name}-queue", self.inbound_queue), (f"{name}-queue-dlq", self.inbound_dlq))
        ]
        aws.sns.TopicSubscription(
            f"{name}-subscription",
            topic=topic_arn,
            protocol="sqs",
            endpoint=self.inbound_queue.arn,
            # Envelope delivery (the handler accepts both): the SNS metadata stays visible in
            # the queue and the retry/DLQ bodies, which helps when tracing a message.
            raw_message_delivery=False,
            # Deliveries SNS cannot make (e.g. a broken queue policy) land in the inbound DLQ
            # instead of being dropped after SNS's retries.
            redrive_policy=self.inbound_dlq.arn.apply(lambda arn: json.dumps({"deadLetterTargetArn": arn})),
            opts=pulumi.ResourceOptions(parent=self, depends_on=queue_policies),
        )

        # --- SES identities ---------------------------------------------------------------------
        self.identities = {}
        self.dkims = {}
        for domain in config.domains:
            identity = aws.ses.DomainIdentity(f"{name}-identity-{domain}", domain=domain, opts=child)
            self.identities[domain] = identity
            self.dkims[domain] = aws.ses.DomainDkim(f"{name}-dkim-{domain}", domain=identity.domain, opts=child)

        # --- Receipt rule (in our own rule set, or in the existing active one) ----------------
        self.rule_set = None
        self.active_rule_set = None
        rule_set_input: pulumi.Input[str] = rule_set_name
        if not config.uses_existing_rule_set:
            self.rule_set = aws.ses.ReceiptRuleSet(f"{name}-rule-set", rule_set_name=rule_set_name, opts=child)
            rule_set_input = self.rule_set.rule_set_name
        self.rule = aws.ses.ReceiptRule(
            f"{name}-rule",
            name=rule_name,
            rule_set_name=rule_set_input,
            recipients=list(config.receipt_recipients),
            enabled=True,
            scan_enabled=True,
            tls_policy=TLS_POLICY,
            s3_actions=[
                aws.ses.ReceiptRuleS3ActionArgs(
                    bucket_name=self.bucket.id,
                    object_key_prefix=names.INBOUND_PREFIX,
                    topic_arn=topic_arn,
                    position=1,
                )
            ],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    self.bucket_policy,
                    encryption,
                    self.notification_topic_policy,
                    topic_key.key,
                ],
            ),
        )
        if self.rule_set is not None:
            # Activated last, once the rule exists: SES allows one active set per region, and
            # an active set without our rule would reject the domains' mail.
            self.active_rule_set = aws.ses.ActiveReceiptRuleSet(
                f"{name}-active-rule-set",
                rule_set_name=self.rule_set.rule_set_name,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.rule]),
            )

        region = ctx.region

        def records_of(domain: str) -> pulumi.Output[list[DnsRecord]]:
            identity, dkim = self.identities[domain], self.dkims[domain]
            return pulumi.Output.all(identity.verification_token, dkim.dkim_tokens).apply(
                lambda values: domain_records(domain, region, values[0], values[1])
            )

        def flatten(lists: list[list[DnsRecord]]) -> list[DnsRecord]:
            return [record for records in lists for record in records]

        self.dns_records = pulumi.Output.all(*(records_of(d) for d in config.domains)).apply(flatten)
        self.register_outputs(
            {
                "bucket": self.bucket.id,
                "inboundQueueUrl": self.inbound_queue.url,
                "inboundDlqUrl": self.inbound_dlq.url,
                "dnsRecords": self.dns_records,
            }
        )
