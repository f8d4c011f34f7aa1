"""Where mail waits while the token is dead: the retry queue and its dead-letter queue."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra.queues import dead_lettered_queue


class Retry(pulumi.ComponentResource):
    """Retry queue (14 days, 15 min visibility, redrive to the retry DLQ) and the retry DLQ.

    The retry processor state machine (a later issue) drains the queue; this component exposes
    the ARNs and URLs it and its IAM role will need.
    """

    queue: aws.sqs.Queue
    dlq: aws.sqs.Queue

    def __init__(
        self,
        name: str,
        *,
        env: str,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:Retry", name, None, opts)
        queues = dead_lettered_queue(
            f"{name}-queue",
            name=names.retry_queue(env),
            dlq_name=names.retry_dlq(env),
            visibility_timeout_seconds=names.RETRY_QUEUE_VISIBILITY_SECONDS,
            retention_seconds=names.RETRY_QUEUE_RETENTION_SECONDS,
            max_receive_count=names.RETRY_QUEUE_MAX_RECEIVE_COUNT,
            parent=self,
            tags=tags,
        )
        self.queue = queues.queue
        self.dlq = queues.dlq
        self.register_outputs(
            {
                "queueArn": self.queue.arn,
                "queueUrl": self.queue.url,
                "dlqArn": self.dlq.arn,
                "dlqUrl": self.dlq.url,
            }
        )

    @property
    def queue_arn(self) -> pulumi.Output[str]:
        return self.queue.arn

    @property
    def queue_url(self) -> pulumi.Output[str]:
        return self.queue.url

    @property
    def dlq_arn(self) -> pulumi.Output[str]:
        return self.dlq.arn

    @property
    def dlq_url(self) -> pulumi.Output[str]:
        return self.dlq.url
