"""Where mail waits while the token is dead: the retry queue and its dead-letter queue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra.queues import DeadLetteredQueue, dead_lettered_queue


class Retry(pulumi.ComponentResource):
    """One retry queue (14 days, 15 min visibility, redrive to its DLQ) and retry DLQ per mailbox.

    A dead token of one mailbox parks only that mailbox's mail, in its own queue, so one drain
    never waits on another account. ``queue``/``dlq`` are the primary mailbox's (``default``
    when there is one): what the single-valued stack outputs name.
    """

    queues: dict[str, DeadLetteredQueue]
    queue: aws.sqs.Queue
    dlq: aws.sqs.Queue

    def __init__(
        self,
        name: str,
        *,
        env: str,
        tags: Mapping[str, str],
        mailboxes: Sequence[str] = (names.DEFAULT_MAILBOX,),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:Retry", name, None, opts)
        self.queues = {
            mailbox: dead_lettered_queue(
                _logical(f"{name}-queue", mailbox),
                name=names.retry_queue(env, mailbox),
                dlq_name=names.retry_dlq(env, mailbox),
                visibility_timeout_seconds=names.RETRY_QUEUE_VISIBILITY_SECONDS,
                retention_seconds=names.RETRY_QUEUE_RETENTION_SECONDS,
                max_receive_count=names.RETRY_QUEUE_MAX_RECEIVE_COUNT,
                parent=self,
                tags=tags,
            )
            for mailbox in mailboxes
        }
        primary = self.queues.get(names.DEFAULT_MAILBOX) or self.queues[mailboxes[0]]
        self.queue = primary.queue
        self.dlq = primary.dlq
        self.register_outputs(
            {
                "queueArn": self.queue.arn,
                "queueUrl": self.queue.url,
                "dlqArn": self.dlq.arn,
                "dlqUrl": self.dlq.url,
                "queueUrls": {mailbox: pair.queue.url for mailbox, pair in self.queues.items()},
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


def _logical(base: str, mailbox: str) -> str:
    """The default mailbox keeps the logical names it had before mailboxes (no replacement on upgrade)."""
    return base if mailbox == names.DEFAULT_MAILBOX else f"{base}-{mailbox}"
