"""The retry processor: the Step Functions state machine that drains a mailbox's retry queue.

Its definition is :func:`sesmail.runtime.retry_processor.build_definition` (pure Python, executed by
the tests in moto's interpreter) over every mailbox's queues; an execution's input
``{"mailbox": NAME}`` picks one. This component deploys exactly that document with a role that
can touch only the mailboxes' retry queues and retry DLQs, the forwarder and our metric namespace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra import policies
from sesmail.infra.context import AwsContext
from sesmail.infra.forwarder import Forwarder
from sesmail.infra.retry import Retry
from sesmail.runtime.retry_processor import MailboxQueues, build_definition


class RetryProcessor(pulumi.ComponentResource):
    log_group: aws.cloudwatch.LogGroup
    role: aws.iam.Role
    role_policy: aws.iam.RolePolicy
    state_machine: aws.sfn.StateMachine

    def __init__(
        self,
        name: str,
        *,
        env: str,
        retry: Retry,
        forwarder: Forwarder,
        aws_context: AwsContext,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:RetryProcessor", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Named, not taken from the resource: the role's policy must name the machine (it
        # starts a successor of itself) before the machine exists.
        machine_arn = names.state_machine_arn(env, aws_context.region, aws_context.account_id, aws_context.partition)

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=names.state_machine_log_group(env),
            retention_in_days=names.FORWARDER_LOG_RETENTION_DAYS,
            tags=dict(tags),
            opts=child,
        )
        self.role = aws.iam.Role(
            f"{name}-role",
            name=names.retry_processor_role(env),
            description=f"ses-mail {env}: the retry processor state machine",
            assume_role_policy=json.dumps(policies.states_assume_role_policy(aws_context.account_id)),
            tags=dict(tags),
            opts=child,
        )
        self.role_policy = aws.iam.RolePolicy(
            f"{name}-policy",
            name="least-privilege",
            role=self.role.name,
            policy=pulumi.Output.all(
                retry_queue_arns=pulumi.Output.all(*(pair.queue.arn for pair in retry.queues.values())),
                retry_dlq_arns=pulumi.Output.all(*(pair.dlq.arn for pair in retry.queues.values())),
                forwarder_function_arn=forwarder.function.arn,
            ).apply(
                lambda arns: json.dumps(
                    policies.retry_processor_policy(
                        **arns, state_machine_arn=machine_arn, namespace=names.metric_namespace(env)
                    )
                )
            ),
            opts=child,
        )
        mailboxes = list(retry.queues)
        definition = pulumi.Output.all(
            queue_urls=pulumi.Output.all(*(retry.queues[m].queue.url for m in mailboxes)),
            dlq_urls=pulumi.Output.all(*(retry.queues[m].dlq.url for m in mailboxes)),
            forwarder_function=forwarder.function.arn,
        ).apply(
            lambda values: json.dumps(
                build_definition(
                    env=env,
                    partition=aws_context.partition,
                    mailboxes=[
                        MailboxQueues(mailbox, queue_url, dlq_url)
                        for mailbox, queue_url, dlq_url in zip(
                            mailboxes, values["queue_urls"], values["dlq_urls"], strict=True
                        )
                    ],
                    forwarder_function=values["forwarder_function"],
                )
            )
        )
        self.state_machine = aws.sfn.StateMachine(
            f"{name}-state-machine",
            name=names.retry_state_machine(env),
            type="STANDARD",
            role_arn=self.role.arn,
            definition=definition,
            logging_configuration=aws.sfn.StateMachineLoggingConfigurationArgs(
                level=names.STATE_MACHINE_LOG_LEVEL,
                include_execution_data=False,
                log_destination=self.log_group.arn.apply(lambda arn: f"{arn}:*"),
            ),
            tracing_configuration=aws.sfn.StateMachineTracingConfigurationArgs(enabled=True),
            tags=dict(tags),
            # Step Functions validates the role's permissions (log delivery included) on create.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role_policy, self.log_group]),
        )
        self.register_outputs({"stateMachineArn": self.state_machine.arn})
