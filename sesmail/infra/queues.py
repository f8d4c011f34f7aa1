"""An SQS queue with its dead-letter queue: the shape both the inbound and retry paths use."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from sesmail import names


@dataclass(frozen=True)
class DeadLetteredQueue:
    queue: aws.sqs.Queue
    dlq: aws.sqs.Queue


def redrive_policy(dlq_arn: str, max_receive_count: int) -> str:
    return json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})


def dead_lettered_queue(
    logical_name: str,
    *,
    name: str,
    dlq_name: str,
    visibility_timeout_seconds: int,
    retention_seconds: int,
    max_receive_count: int,
    parent: pulumi.Resource,
    tags: Mapping[str, str],
) -> DeadLetteredQueue:
    """Both queues encrypted with SSE-SQS (SQS-owned keys: no key policy to get wrong).

    The DLQ keeps messages for SQS's maximum: a message's age counts from its *original*
    enqueue time, so a DLQ retention shorter than the source's would drop fresh dead letters.
    """
    dlq = aws.sqs.Queue(
        f"{logical_name}-dlq",
        name=dlq_name,
        message_retention_seconds=names.DLQ_RETENTION_SECONDS,
        sqs_managed_sse_enabled=True,
        tags=dict(tags),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    queue = aws.sqs.Queue(
        logical_name,
        name=name,
        visibility_timeout_seconds=visibility_timeout_seconds,
        message_retention_seconds=retention_seconds,
        sqs_managed_sse_enabled=True,
        redrive_policy=dlq.arn.apply(lambda arn: redrive_policy(arn, max_receive_count)),
        tags=dict(tags),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return DeadLetteredQueue(queue=queue, dlq=dlq)
