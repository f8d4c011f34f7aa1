"""ses-mail Pulumi program: read the stack config, build the components, export the outputs.

Thin on purpose: every resource lives in a component of ``sesmail/infra`` and every name in
``sesmail/names.py``. The stack name is the environment (``pulumi up --stack test`` → ``test``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi runs this file with the project directory as working directory; make the local
# packages importable however the interpreter was started.
_ROOT = str(Path(__file__).resolve().parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pulumi  # noqa: E402

from sesmail import names  # noqa: E402
from sesmail.infra import config as stack_config  # noqa: E402
from sesmail.infra import context  # noqa: E402
from sesmail.infra.alerts import Alerts  # noqa: E402
from sesmail.infra.canary import Canary  # noqa: E402
from sesmail.infra.encryption import TopicKey  # noqa: E402
from sesmail.infra.forwarder import Forwarder  # noqa: E402
from sesmail.infra.mail_intake import MailIntake  # noqa: E402
from sesmail.infra.monitoring import Monitoring  # noqa: E402
from sesmail.infra.renewal import RenewalPage  # noqa: E402
from sesmail.infra.retry import Retry  # noqa: E402
from sesmail.infra.retry_processor import RetryProcessor  # noqa: E402
from sesmail.infra.tagging import resource_tags  # noqa: E402
from sesmail.infra.token_monitor import TokenMonitor  # noqa: E402
from sesmail.infra.tokens import Tokens  # noqa: E402
from sesmail.infra.watched import Watched  # noqa: E402

config = stack_config.load()
aws_context = context.lookup()  # fails here, before any resource, outside SES receiving regions
env = config.env
tags = resource_tags(env)

topic_key = TopicKey("topic-key", env=env, aws_context=aws_context, tags=tags)
alerts = Alerts(
    "alerts",
    env=env,
    alert_emails=config.alert_emails,
    topic_key=topic_key,
    aws_context=aws_context,
    tags=tags,
)
mailboxes = config.mailboxes
tokens = Tokens("tokens", env=env, tags=tags, mailboxes=mailboxes.names, table=mailboxes)
retry = Retry("retry", env=env, tags=tags, mailboxes=mailboxes.names)
canary = (
    Canary("canary", env=env, address=config.canary_address, aws_context=aws_context, tags=tags)
    if config.canary_address
    else None
)
intake = MailIntake("mail-intake", config=config, aws_context=aws_context, topic_key=topic_key, tags=tags)
forwarder = Forwarder(
    "forwarder",
    env=env,
    extra_labels=config.extra_labels,
    auth_failures=config.auth_failures,
    tokens=tokens,
    mailboxes=mailboxes,
    canary=canary,
    intake=intake,
    retry=retry,
    tags=tags,
)
retry_processor = RetryProcessor(
    "retry-processor", env=env, retry=retry, forwarder=forwarder, aws_context=aws_context, tags=tags
)
token_monitor = TokenMonitor(
    "token-monitor", env=env, tokens=tokens, retry=retry, mailboxes=mailboxes, aws_context=aws_context, tags=tags
)
renewal = RenewalPage(
    "renewal",
    env=env,
    mailboxes=mailboxes,
    tokens=tokens,
    retry=retry,
    aws_context=aws_context,
    token_lifetime_days=config.token_lifetime_days,
    reserved_concurrency=config.renewal_concurrency,
    tags=tags,
)
monitoring = Monitoring(
    "monitoring",
    env=env,
    aws_context=aws_context,
    alerts_topic_arn=alerts.topic_arn,
    watched=Watched(
        forwarder_function=forwarder.function.name,
        forwarder_log_group=forwarder.log_group.name,
        token_monitor_function=token_monitor.function.name,
        token_monitor_log_group=token_monitor.log_group.name,
        audit_log_group=tokens.audit_log.name,
        inbound_queue=intake.inbound_queue.name,
        inbound_dlq=intake.inbound_dlq.name,
        retry_queue=retry.queue.name,
        retry_dlq=retry.dlq.name,
        state_machine_arn=retry_processor.state_machine.arn,
    ),
    mailboxes=mailboxes.names,
    canary_log_group=canary.log_group.name if canary else None,
    renewal_url=renewal.url,
    renewable=renewal.renewable,
    tags=tags,
)

pulumi.export("emailBucket", intake.bucket.id)
pulumi.export("inboundQueueUrl", intake.inbound_queue.url)
pulumi.export("inboundDlqUrl", intake.inbound_dlq.url)
pulumi.export("retryQueueUrl", retry.queue_url)
pulumi.export("retryDlqUrl", retry.dlq_url)
pulumi.export("stateMachineArn", retry_processor.state_machine.arn)
pulumi.export("alertsTopicArn", alerts.topic_arn)
pulumi.export("forwarderFunctionName", forwarder.function.name)
pulumi.export("clientCredentialsParameter", tokens.client_credentials.name)
pulumi.export("refreshTokenParameter", tokens.refresh_token.name)
pulumi.export("mxRecord", names.mx_record(aws_context.region))
pulumi.export("dnsRecords", intake.dns_records)
pulumi.export("renewalUrl", renewal.url)
pulumi.export(
    "mailboxes",
    {
        mailbox.name: {
            "recipients": list(mailbox.recipients or config.recipients or config.domains),
            "gmailAddress": mailbox.gmail_address,
            "tokenParameter": tokens.refresh_tokens[mailbox.name].name,
            "retryQueueUrl": retry.queues[mailbox.name].queue.url,
            "renewalLink": (
                renewal.url.apply(lambda url, m=mailbox.name: names.renewal_link(url, m))
                if mailbox.gmail_address
                else None
            ),
        }
        for mailbox in mailboxes.mailboxes
    },
)
