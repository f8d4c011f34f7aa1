"""IAM, key, topic, queue and bucket policy documents as plain dicts (pure: no pulumi import).

Every function takes resolved strings and returns a JSON-ready document, so the components wrap
them in ``Output.apply(json.dumps)`` and the tests check the exact statements. Real AWS enforces
these policies; moto and the Pulumi mocks do not, so each rule below carries its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sesmail import names

PolicyDocument = dict[str, Any]

VERSION = "2012-10-17"
SES_PRINCIPAL = "ses.amazonaws.com"
SNS_PRINCIPAL = "sns.amazonaws.com"
CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"
LAMBDA_PRINCIPAL = "lambda.amazonaws.com"

FORWARDER_SSM_ACTIONS = ("ssm:GetParameter", "ssm:GetParameters")
#: On ``inbound/*``: read the mail, and the ``gmail-message-id`` tag older deliveries wrote.
#: ``s3:PutObjectTagging`` is gone: delivery claims replaced the tag as the idempotency record,
#: so the forwarder never writes to a mail object any more. ``s3:GetObjectTagging`` stays until
#: the last tagged object has expired (``retainDays`` after the upgrade); tags are read only for
#: objects whose GetObject says they have some.
FORWARDER_S3_OBJECT_ACTIONS = ("s3:GetObject", "s3:GetObjectTagging")
#: On ``claims/*``: conditional PutObject (If-None-Match / If-Match) and reading a claim found
#: in place. S3 requires s3:GetObject besides s3:PutObject for an If-Match write.
FORWARDER_CLAIM_ACTIONS = ("s3:GetObject", "s3:PutObject")
FORWARDER_SEND_ACTIONS = ("sqs:SendMessage",)
FORWARDER_CONSUME_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
)
FORWARDER_LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
#: The canary key is read with ``AwsClients.read_parameters`` (GetParameters), by both functions.
CANARY_SSM_ACTIONS = ("ssm:GetParameters",)


def document(*statements: dict[str, Any]) -> PolicyDocument:
    return {"Version": VERSION, "Statement": list(statements)}


#: The one action that publishes metrics; it has no resource type.
METRIC_ACTIONS = ("cloudwatch:PutMetricData",)


def metrics_of_namespace(sid: str, namespace: str) -> dict[str, Any]:
    """Publishing metrics, in the stack's namespace only.

    PutMetricData supports no resource-level permission (its only resource is "*"); the
    ``cloudwatch:namespace`` condition is the narrowest scope IAM offers, so the role can write
    metrics of this stack's namespace and no other.
    """
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(METRIC_ACTIONS),
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
    }


def account_root(partition: str, account_id: str) -> str:
    return f"arn:{partition}:iam::{account_id}:root"


def receipt_rule_arn(partition: str, region: str, account_id: str, rule_set: str, rule: str) -> str:
    """The ``aws:SourceArn`` SES presents when our receipt rule writes to S3 or publishes to SNS.

    Computed, not read from the rule resource: the rule must be created *after* the bucket and
    topic policies that name it (SES tests its write access when the rule is created), so taking
    the ARN from the resource would be a dependency cycle.
    """
    return f"arn:{partition}:ses:{region}:{account_id}:receipt-rule-set/{rule_set}:receipt-rule/{rule}"


def object_arn(bucket_arn: str, prefix: str) -> str:
    return f"{bucket_arn}/{prefix}*"


def log_streams_arn(log_group_arn: str) -> str:
    """Every log stream of a log group: what ``logs:CreateLogStream`` and ``logs:PutLogEvents`` act on.

    Both actions have the *log-stream* resource type only (AWS's Service Authorization Reference),
    so the bare log-group ARN granted them nothing; ``tests/rules`` checks that against the
    reference. ``{group}:*`` is the form the Lambda console writes into its own logging policies.
    """
    return f"{log_group_arn}:*"


def topic_key_policy(partition: str, account_id: str) -> PolicyDocument:
    """Key policy of the CMK that encrypts both SNS topics.

    An encrypted topic that an AWS service publishes to needs a customer-managed key whose
    policy lets that service generate data keys: the AWS-managed ``alias/aws/sns`` key cannot be
    granted to SES or CloudWatch, so with it SES and alarm notifications would fail silently.
    ``Resource: "*"`` in a key policy means "this key" (AWS requires exactly that form).
    """
    service_use = ["kms:GenerateDataKey*", "kms:Decrypt"]
    same_account = {"StringEquals": {"aws:SourceAccount": account_id}}
    return document(
        {
            # Without this statement the key would become unmanageable (AWS's default key policy).
            "Sid": "AccountAdministersKey",
            "Effect": "Allow",
            "Principal": {"AWS": account_root(partition, account_id)},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "SesAndCloudWatchPublishToEncryptedTopics",
            "Effect": "Allow",
            "Principal": {"Service": [SES_PRINCIPAL, CLOUDWATCH_PRINCIPAL]},
            "Action": service_use,
            "Resource": "*",
            "Condition": same_account,
        },
        {
            # SNS itself delivers to the (SSE-SQS) inbound queue; SSE-SQS needs nothing from this
            # key, but SNS may use it on the topic's behalf, limited to this account's topics.
            "Sid": "SnsUsesKeyForThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": SNS_PRINCIPAL},
            "Action": service_use,
            "Resource": "*",
            "Condition": same_account,
        },
    )


def notification_topic_policy(topic_arn: str, account_id: str, rule_arn: str) -> PolicyDocument:
    """Only our receipt rule (SES in this account) may publish mail notifications."""
    return document(
        {
            "Sid": "SesReceiptRulePublishes",
            "Effect": "Allow",
            "Principal": {"Service": SES_PRINCIPAL},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": rule_arn},
            },
        }
    )


def alerts_topic_policy(topic_arn: str, partition: str, region: str, account_id: str) -> PolicyDocument:
    """CloudWatch alarms of this account and region may publish alerts."""
    return document(
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": CLOUDWATCH_PRINCIPAL},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:*"},
            },
        }
    )


def inbound_queue_policy(queue_arn: str, topic_arn: str) -> PolicyDocument:
    """Only our notification topic may send to the inbound queue (SNS → SQS delivery).

    Without a queue policy real SQS rejects SNS's deliveries (moto does not check), and without
    the ``aws:SourceArn`` condition any topic in any account could inject messages.
    """
    return document(
        {
            "Sid": "NotificationTopicDelivers",
            "Effect": "Allow",
            "Principal": {"Service": SNS_PRINCIPAL},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        }
    )


def email_bucket_policy(bucket_arn: str, account_id: str, rule_arn: str) -> PolicyDocument:
    """TLS only; SES may write under ``inbound/`` only, and only for our account's receipt rule."""
    return document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, object_arn(bucket_arn, "")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": "SesReceiptRuleWritesInbound",
            "Effect": "Allow",
            "Principal": {"Service": SES_PRINCIPAL},
            "Action": "s3:PutObject",
            "Resource": object_arn(bucket_arn, names.INBOUND_PREFIX),
            # Both conditions guard against the confused deputy: another account's SES rule
            # naming our bucket cannot write here.
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account_id},
                "ArnLike": {"aws:SourceArn": rule_arn},
            },
        },
    )


def lambda_assume_role_policy() -> PolicyDocument:
    return document(
        {
            "Effect": "Allow",
            "Principal": {"Service": LAMBDA_PRINCIPAL},
            "Action": "sts:AssumeRole",
        }
    )


def forwarder_policy(
    *,
    client_credentials_parameter_arn: str,
    refresh_token_parameter_arns: list[str],
    bucket_arn: str,
    inbound_queue_arn: str,
    retry_queue_arns: list[str],
    inbound_dlq_arn: str,
    log_group_arn: str,
    canary_key_parameter_arn: str | None = None,
    web_client_credentials_parameter_arn: str | None = None,
) -> PolicyDocument:
    """The forwarder's whole permission set (DESIGN.md, Security): the OAuth clients and exactly the
    configured mailboxes' refresh tokens, the mail under ``inbound/`` (read only), its delivery
    claims under ``claims/``, exactly the mailboxes' retry queues, the inbound queues and its logs.

    No ``kms:*`` statement: the two SecureStrings use the AWS-managed ``aws/ssm`` key, whose key
    policy already lets any principal of the account decrypt *through SSM*; the queues use
    SSE-SQS and the bucket SSE-S3, neither of which involves a KMS permission. Metrics go out as
    Embedded Metric Format log lines, so no ``cloudwatch:PutMetricData`` either.
    """
    canary = (
        [
            {
                # Only to check a message addressed to the canary: its signature, with this key.
                "Sid": "ReadCanaryKey",
                "Effect": "Allow",
                "Action": list(CANARY_SSM_ACTIONS),
                "Resource": canary_key_parameter_arn,
            }
        ]
        if canary_key_parameter_arn
        else []
    )
    return document(
        *canary,
        {
            # GetParameters too: the runtime reads the clients and the token in one call. The
            # web client is the renewal page's: a token renewed from a phone mints only with it.
            # The expiry parameter (and every other path) stays unreadable.
            "Sid": "ReadOAuthParameters",
            "Effect": "Allow",
            "Action": list(FORWARDER_SSM_ACTIONS),
            "Resource": _oauth_parameters(
                client_credentials_parameter_arn, web_client_credentials_parameter_arn, refresh_token_parameter_arns
            ),
        },
        {
            "Sid": "ReadInboundMail",
            "Effect": "Allow",
            "Action": list(FORWARDER_S3_OBJECT_ACTIONS),
            "Resource": object_arn(bucket_arn, names.INBOUND_PREFIX),
        },
        {
            # Delivery claims (exactly once per message and mailbox): written only under claims/,
            # so the forwarder can neither overwrite mail nor write anywhere else in the bucket.
            "Sid": "ClaimDeliveries",
            "Effect": "Allow",
            "Action": list(FORWARDER_CLAIM_ACTIONS),
            "Resource": object_arn(bucket_arn, names.CLAIMS_PREFIX),
        },
        {
            # The reconcile lists inbound/ and claims/ (two LIST sweeps, no GET per message). It
            # also lets S3 answer 404 NoSuchKey instead of 403 AccessDenied for a missing object,
            # so the classifier sees a permanent error rather than a retriable permission problem.
            # It reveals key names (message ids) of this one bucket, never object contents. No
            # s3:prefix condition: S3's 404-or-403 decision for GetObject is not a list request
            # and carries no prefix, so a conditioned grant would not take effect there.
            "Sid": "ListMailAndClaims",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
        },
        {
            "Sid": "ParkForRetryOrDeadLetter",
            "Effect": "Allow",
            "Action": list(FORWARDER_SEND_ACTIONS),
            "Resource": [*retry_queue_arns, inbound_dlq_arn],
        },
        {
            # What the SQS event source mapping does with the function's role.
            "Sid": "ConsumeInboundQueue",
            "Effect": "Allow",
            "Action": list(FORWARDER_CONSUME_ACTIONS),
            "Resource": inbound_queue_arn,
        },
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": list(FORWARDER_LOG_ACTIONS),
            "Resource": log_streams_arn(log_group_arn),
        },
    )


STATES_PRINCIPAL = "states.amazonaws.com"
#: Step Functions' log delivery and X-Ray calls support no resource-level permissions (AWS
#: documents ``Resource: "*"`` for exactly these actions).
STATES_LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
)
STATES_TRACING_ACTIONS = (
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
)


def states_assume_role_policy(account_id: str) -> PolicyDocument:
    return document(
        {
            "Effect": "Allow",
            "Principal": {"Service": STATES_PRINCIPAL},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }
    )


def retry_processor_policy(
    *,
    retry_queue_arns: list[str],
    retry_dlq_arns: list[str],
    forwarder_function_arn: str,
    state_machine_arn: str,
    namespace: str,
) -> PolicyDocument:
    """The retry processor's whole permission set: exactly every mailbox's retry queue (drained)
    and retry DLQ (written), the forwarder, a successor of itself, its metrics.

    One state machine serves every mailbox (its input names one), so it needs all of them.
    """
    if not retry_queue_arns or not retry_dlq_arns:
        raise ValueError("the retry processor needs at least one mailbox's retry queue and DLQ")
    return document(
        {
            "Sid": "DrainRetryQueue",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
            "Resource": list(retry_queue_arns),
        },
        {
            "Sid": "DeadLetterUndeliverable",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": list(retry_dlq_arns),
        },
        {
            "Sid": "InvokeForwarder",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": [forwarder_function_arn, f"{forwarder_function_arn}:*"],
        },
        {
            # Long backlogs continue in a fresh execution of this same state machine.
            "Sid": "ContinueInNewExecution",
            "Effect": "Allow",
            "Action": "states:StartExecution",
            "Resource": state_machine_arn,
        },
        metrics_of_namespace("PublishRetryMetrics", namespace),
        {
            "Sid": "DeliverExecutionLogs",
            "Effect": "Allow",
            "Action": list(STATES_LOG_DELIVERY_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "Tracing",
            "Effect": "Allow",
            "Action": list(STATES_TRACING_ACTIONS),
            "Resource": "*",
        },
    )


# --- Token monitor --------------------------------------------------------------------------------

EVENTS_PRINCIPAL = "events.amazonaws.com"
TOKEN_MONITOR_SSM_ACTIONS = ("ssm:GetParameter",)
#: What ``AwsClients.read_parameters`` calls: both OAuth values in one request.
TOKEN_MONITOR_MINT_ACTIONS = ("ssm:GetParameters",)
TOKEN_MONITOR_QUEUE_ACTIONS = ("sqs:GetQueueAttributes",)
TOKEN_MONITOR_STATES_ACTIONS = ("states:ListExecutions", "states:StartExecution")
#: On the executions (not the state machine): which mailbox an execution drains is in its input.
TOKEN_MONITOR_DESCRIBE_ACTIONS = ("states:DescribeExecution",)
TOKEN_MONITOR_LOG_ACTIONS = FORWARDER_LOG_ACTIONS


def execution_arns(state_machine_arn: str) -> str:
    """Every execution of a state machine: what ``states:DescribeExecution`` acts on.

    ``arn:{partition}:states:{region}:{account}:execution:{state-machine-name}:*`` (the
    *execution* resource type of the Service Authorization Reference; the state machine's own ARN
    grants it nothing).
    """
    prefix, marker, name = state_machine_arn.partition(":stateMachine:")
    if not marker or not name:
        raise ValueError(f"{state_machine_arn!r} is not a state machine ARN")
    return f"{prefix}:execution:{name}:*"


def _one_or_many(arns: str | Sequence[str]) -> str | list[str]:
    """A single ARN as a string (the document of a stack without mailboxes stays as it was), else a list."""
    if isinstance(arns, str):
        return arns
    unique = list(dict.fromkeys(arns))
    if not unique:
        raise ValueError("a statement needs at least one resource")
    return unique[0] if len(unique) == 1 else unique


def _as_arn_list(arns: str | Sequence[str]) -> list[str]:
    return [arns] if isinstance(arns, str) else list(arns)


def _oauth_parameters(client: str, web_client: str | None, tokens: str | Sequence[str]) -> list[str]:
    """The OAuth client JSONs (installed, and the renewal page's web one) and the refresh tokens."""
    return list(dict.fromkeys([client, *([web_client] if web_client else []), *_as_arn_list(tokens)]))


def token_monitor_policy(
    *,
    expiry_parameter_arns: str | Sequence[str],
    client_credentials_parameter_arn: str,
    refresh_token_parameter_arns: str | Sequence[str],
    retry_queue_arns: str | Sequence[str],
    state_machine_arn: str,
    namespace: str,
    log_group_arn: str,
    describe_executions: bool = False,
    web_client_credentials_parameter_arn: str | None = None,
) -> PolicyDocument:
    """The token monitor's whole permission set, for every mailbox of the stack.

    The hours need each mailbox's expiry parameter only. Starting the retry processor while mail
    is parked (DESIGN.md, "Nothing waits forever") needs each retry queue's depth, the retry
    processor's executions, and the OAuth parameters (the shared client JSON and each mailbox's
    refresh token): minting an access token is the only proof that a token works, so the monitor
    reads the secrets the forwarder reads (never writes them, never touches a message). No
    ``kms:*``: the SecureStrings use the AWS-managed ``aws/ssm`` key, which any principal of the
    account may use through SSM.

    ``describe_executions`` (a stack with mailboxes other than ``default``): the monitor reads an
    execution's input to learn which mailbox it drains (hand-over executions have generated
    names), so it may describe this state machine's executions, and nothing else's.
    """
    tell_drains_apart = [
        {
            "Sid": "TellDrainsApartByMailbox",
            "Effect": "Allow",
            "Action": list(TOKEN_MONITOR_DESCRIBE_ACTIONS),
            "Resource": execution_arns(state_machine_arn),
        }
    ]
    return document(
        {
            "Sid": "ReadTokenExpiryOnly",
            "Effect": "Allow",
            "Action": list(TOKEN_MONITOR_SSM_ACTIONS),
            "Resource": _one_or_many(expiry_parameter_arns),
        },
        {
            "Sid": "ProveTokenByMinting",
            "Effect": "Allow",
            "Action": list(TOKEN_MONITOR_MINT_ACTIONS),
            "Resource": _oauth_parameters(
                client_credentials_parameter_arn, web_client_credentials_parameter_arn, refresh_token_parameter_arns
            ),
        },
        {
            "Sid": "SeeParkedMail",
            "Effect": "Allow",
            "Action": list(TOKEN_MONITOR_QUEUE_ACTIONS),
            "Resource": _one_or_many(retry_queue_arns),
        },
        {
            "Sid": "StartRetryProcessorWhenIdle",
            "Effect": "Allow",
            "Action": list(TOKEN_MONITOR_STATES_ACTIONS),
            "Resource": state_machine_arn,
        },
        *(tell_drains_apart if describe_executions else []),
        metrics_of_namespace("PublishTokenMetrics", namespace),
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": list(TOKEN_MONITOR_LOG_ACTIONS),
            "Resource": log_streams_arn(log_group_arn),
        },
    )


# --- Canary ---------------------------------------------------------------------------------------

CANARY_SEND_ACTIONS = ("ses:SendRawEmail",)


def ses_identity_arn(partition: str, region: str, account_id: str, identity: str) -> str:
    return f"arn:{partition}:ses:{region}:{account_id}:identity/{identity}"


def canary_policy(*, key_parameter_arn: str, identity_arn: str, address: str, log_group_arn: str) -> PolicyDocument:
    """The canary sends one message a day, from and to its own address, and nothing else.

    ``ses:SendRawEmail`` is authorised against the sending identity and, in the SES sandbox, the
    recipients' identities: the canary's address is on the domain's identity in both roles. The
    ``ses:FromAddress`` condition keeps the role from sending as anyone else of the domain.
    """
    return document(
        {
            "Sid": "ReadTheCanaryKey",
            "Effect": "Allow",
            "Action": list(CANARY_SSM_ACTIONS),
            "Resource": key_parameter_arn,
        },
        {
            "Sid": "SendTheCanaryFromItsOwnAddress",
            "Effect": "Allow",
            "Action": list(CANARY_SEND_ACTIONS),
            "Resource": identity_arn,
            "Condition": {"StringEquals": {"ses:FromAddress": address}},
        },
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": list(FORWARDER_LOG_ACTIONS),
            "Resource": log_streams_arn(log_group_arn),
        },
    )


# --- Renewal page ---------------------------------------------------------------------------------

#: ``AwsClients.read_parameters`` (the web client and the secret) and the store's snapshot of the
#: values it replaces (GetParameters); the writes themselves.
RENEWAL_READ_ACTIONS = ("ssm:GetParameters",)
RENEWAL_WRITE_ACTIONS = ("ssm:PutParameter",)
#: The store checks which of its parameters exist before it writes; DescribeParameters has no
#: resource type (the Service Authorization Reference lists none), so it can only be granted on "*".
#: It reveals parameter names and metadata, never values.
RENEWAL_DESCRIBE_ACTIONS = ("ssm:DescribeParameters",)
RENEWAL_QUEUE_ACTIONS = ("sqs:GetQueueAttributes",)
RENEWAL_STATES_ACTIONS = ("states:StartExecution",)
RENEWAL_LOG_ACTIONS = FORWARDER_LOG_ACTIONS
PUBLIC_PRINCIPAL = "*"


def renewal_policy(
    *,
    web_client_credentials_parameter_arn: str,
    renewal_secret_parameter_arn: str,
    refresh_token_parameter_arns: Sequence[str],
    expiry_parameter_arns: Sequence[str],
    retry_queue_arns: Sequence[str],
    state_machine_arn: str,
    namespace: str,
    audit_log_group_arn: str,
    log_group_arn: str,
) -> PolicyDocument:
    """The renewal page's whole permission set: what a renewal from a phone does, for the mailboxes
    that can be renewed there (those with a ``gmailAddress``), and nothing else.

    It reads the web client and its signing secret (never the installed client: its tokens are
    the CLI's), replaces exactly those mailboxes' token and expiry (reading them first, to put them
    back if a write fails), publishes their hours, writes the audit record, starts their drain and
    shows their queue's depth. It can read no mail, no claim, no message in a queue.
    """
    tokens = [*refresh_token_parameter_arns, *expiry_parameter_arns]
    # No renewable mailbox (no gmailAddress yet): the page refuses every mailbox, and may touch none.
    per_mailbox = [
        {
            "Sid": "StoreRenewedTokens",
            "Effect": "Allow",
            "Action": list(RENEWAL_WRITE_ACTIONS),
            "Resource": tokens,
        },
        {
            "Sid": "ShowMailOnItsWay",
            "Effect": "Allow",
            "Action": list(RENEWAL_QUEUE_ACTIONS),
            "Resource": list(retry_queue_arns),
        },
    ]
    return document(
        {
            "Sid": "ReadWebClientSecretAndTokens",
            "Effect": "Allow",
            "Action": list(RENEWAL_READ_ACTIONS),
            "Resource": [web_client_credentials_parameter_arn, renewal_secret_parameter_arn, *tokens],
        },
        *(per_mailbox if tokens else []),
        {
            "Sid": "SeeWhichParametersExist",
            "Effect": "Allow",
            "Action": list(RENEWAL_DESCRIBE_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "DeliverTheBacklog",
            "Effect": "Allow",
            "Action": list(RENEWAL_STATES_ACTIONS),
            "Resource": state_machine_arn,
        },
        metrics_of_namespace("ClearTheTokenAlarm", namespace),
        {
            "Sid": "WriteAuditRecordsAndOwnLogs",
            "Effect": "Allow",
            "Action": list(RENEWAL_LOG_ACTIONS),
            "Resource": [log_streams_arn(audit_log_group_arn), log_streams_arn(log_group_arn)],
        },
    )
