"""The retry processor's Step Functions definition, built from :mod:`sesmail.names` constants.

It drains the whole retry queue, batch after batch, until a receive comes back empty:

    Receive (<= 10) -> Map (bounded concurrency) over the messages:
        invoke the forwarder {"source": "retry-processor", "notification": <body>}
          delivered / already-delivered       -> delete the message
          ignored (not mail) / rejected (policy) -> delete it, counted in neither total
          TransientError (and Lambda hiccups)  -> retried: 30 s, x2, 3 attempts
          PermanentError, retries exhausted,
          or an answer without a status        -> copy to the retry DLQ with the reason, then delete
          TokenExpiredError, MailboxRefusedError -> stop everything, delete nothing, FAIL
          RateLimitedError (after the retries)  -> stop, delete nothing, end with stoppedBy: rate-limited
    -> tally -> receive again ... -> publish RetryMessagesDelivered / RetryMessagesFailed /
       RetryProcessingCompleted -> succeed with the totals.

A message is deleted only after it was delivered or is safely in the DLQ. Items are the SQS
API's own shape (``MessageId``, ``ReceiptHandle``, ``Body``). Every path that counts is
guarded so that a missing field can never turn into a ``States.Runtime`` failure.

Counting needs no JSONPath filter: each item ends as ``{"delivered": 1}`` or ``{"failed": 1}``,
and the tally takes ``States.ArrayLength($.batch[*].delivered)``. AWS allows only Reference
Paths (no ``@ .. , : ? *``) in a Choice rule's ``Variable``, which is where the first version
filtered, and ``CreateStateMachine`` refused it; a wildcard path inside ``Parameters`` is an
ordinary Path, and with nothing to match it yields ``[]`` (Jayway's indefinite-path rule, which
moto's interpreter follows too), so an all-failed or all-delivered batch needs no guard.
JSONata (``$count(...)``) would read as well, but moto's interpreter evaluates JSONata only
through a JVM bridge, which would leave every drain test without an interpreter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sesmail import names

#: Step Functions' service integrations (``Resource`` is ``arn:{partition}:states:::{integration}``).
LAMBDA_INVOKE = "lambda:invoke"
START_EXECUTION = "states:startExecution"
_SQS = "aws-sdk:sqs"
_CLOUDWATCH_PUT = "aws-sdk:cloudwatch:putMetricData"

#: Errors worth retrying with the backoff constants: ours, and Lambda's own service hiccups.
RETRIABLE_ERRORS = [
    "TransientError",
    "RateLimitedError",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
#: ``integration_arn`` with the deployment's partition bound.
_Integrations = Callable[[str], str]
TOKEN_DEAD_ERROR = "TokenExpiredError"
MAILBOX_REFUSED_ERROR = "MailboxRefusedError"
RATE_LIMITED_ERROR = "RateLimitedError"
DELIVERED = "delivered"
FAILED = "failed"
#: Errors that stop the drain with everything undelivered left in the queue: (errorType, state suffix).
_STOPS = (
    (TOKEN_DEAD_ERROR, "TokenDead"),
    (MAILBOX_REFUSED_ERROR, "MailboxRefused"),
    (RATE_LIMITED_ERROR, "RateLimited"),
)
#: The DLQ's ``error`` attribute: never empty (SQS refuses empty attribute values).
_REASON = "States.Format('{}: {}', $.error.Error, $.error.Cause)"
#: Payload statuses that mean "Gmail has it".
DELIVERED_STATUSES = ("delivered", "already-delivered")


def build_definition(
    *,
    env: str,
    partition: str,
    retry_queue_url: str,
    retry_dlq_url: str,
    forwarder_function: str,
    batches_per_execution: int = names.RETRY_BATCHES_PER_EXECUTION,
) -> dict[str, Any]:
    """The Amazon States Language document (a dict; the infra component dumps it to JSON).

    ``partition`` (``aws``, ``aws-cn``, ``aws-us-gov``) goes into every service-integration ARN.
    """
    arn: _Integrations = functools.partial(integration_arn, partition)
    return {
        "Comment": f"Drains {names.retry_queue(env)} into Gmail after a token renewal (ses-mail)",
        "StartAt": "Init",
        "TimeoutSeconds": names.RETRY_EXECUTION_TIMEOUT_SECONDS,
        "States": {
            "Init": {
                "Type": "Pass",
                "Parameters": {DELIVERED: 0, FAILED: 0, "batches": 0},
                "ResultPath": "$.totals",
                "Next": "Receive",
            },
            "Receive": _receive(arn, retry_queue_url),
            "AnyMessages": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.receive.Messages[0]", "IsPresent": True, "Next": "DeliverBatch"}],
                "Default": "PublishMetrics",
            },
            "DeliverBatch": _deliver_batch(arn, env, retry_queue_url, retry_dlq_url, forwarder_function),
            "Tally": {
                "Type": "Pass",
                # Replaces the whole state: the batch and its message bodies are done with.
                "Parameters": {
                    "totals": {
                        **{f"{outcome}.$": _add_batch_count(outcome) for outcome in (DELIVERED, FAILED)},
                        "batches.$": "States.MathAdd($.totals.batches, 1)",
                    }
                },
                "ResultPath": "$",
                "Next": "MoreBatchesAllowed",
            },
            "MoreBatchesAllowed": {
                "Type": "Choice",
                "Choices": [
                    {
                        "Variable": "$.totals.batches",
                        "NumericLessThan": batches_per_execution,
                        "Next": "Receive",
                    }
                ],
                "Default": "PublishMetrics",
            },
            "PublishMetrics": _publish_metrics(arn, env, completed=True, next_state="HandOverIfCapped"),
            "HandOverIfCapped": {
                "Type": "Choice",
                "Choices": [
                    {
                        "Variable": "$.totals.batches",
                        "NumericGreaterThanEquals": batches_per_execution,
                        "Next": "ContinueInNewExecution",
                    }
                ],
                "Default": "Done",
            },
            "ContinueInNewExecution": {
                "Type": "Task",
                "Resource": arn(START_EXECUTION),
                "Parameters": {
                    "StateMachineArn.$": "$$.StateMachine.Id",
                    "Input": {f"{names.RETRY_CONTINUED_FROM_KEY}.$": "$$.Execution.Id"},
                },
                "ResultPath": None,
                "Retry": [_retry(["States.ALL"])],
                "Next": "Done",
            },
            "Done": {"Type": "Succeed", "OutputPath": "$.totals"},
            "PublishMetricsTokenDead": _publish_metrics(arn, env, completed=False, next_state="TokenDead"),
            "TokenDead": {
                "Type": "Fail",
                "Error": TOKEN_DEAD_ERROR,
                "Cause": (
                    "The Gmail refresh token is still expired or revoked; nothing was deleted. "
                    f"Renew it with: python -m sesmail.refresh --env {env}"
                ),
            },
            "PublishMetricsMailboxRefused": _publish_metrics(arn, env, completed=False, next_state="MailboxRefused"),
            "MailboxRefused": {
                "Type": "Fail",
                "Error": MAILBOX_REFUSED_ERROR,
                "Cause": (
                    "Gmail refuses the mailbox or our setup (API disabled, domain policy, a configured label, "
                    "the OAuth client); nothing was deleted. The forwarder's log has the reason (event retry.failed)."
                ),
            },
            "PublishMetricsRateLimited": _publish_metrics(arn, env, completed=False, next_state="RateLimited"),
            # Gmail's quota: not a failure anyone must act on. The rest waits in the queue, and the
            # token monitor starts the processor again while mail is queued and the token works.
            "RateLimited": {
                "Type": "Pass",
                "Parameters": {
                    **{f"{key}.$": f"$.totals.{key}" for key in (DELIVERED, FAILED, "batches")},
                    names.RETRY_STOPPED_BY_KEY: names.RETRY_STOPPED_RATE_LIMITED,
                },
                "End": True,
            },
            "PublishMetricsFailed": _publish_metrics(arn, env, completed=False, next_state="ProcessingFailed"),
            "ProcessingFailed": {
                "Type": "Fail",
                "Error": "RetryProcessingFailed",
                "Cause": "A batch could not be settled; undelivered messages stay in the retry queue.",
            },
        },
    }


def integration_arn(partition: str, integration: str) -> str:
    """A Step Functions service integration's ``Resource``, e.g. ``arn:aws:states:::lambda:invoke``."""
    return f"arn:{partition}:states:::{integration}"


def _add_batch_count(outcome: str) -> str:
    """``totals.<outcome>`` plus the batch items that ended with that outcome (``[]`` counts 0)."""
    return f"States.MathAdd($.totals.{outcome}, States.ArrayLength($.batch[*].{outcome}))"


def _receive(arn: _Integrations, queue_url: str) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": arn(f"{_SQS}:receiveMessage"),
        "Parameters": {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": names.SQS_BATCH_SIZE,
            "WaitTimeSeconds": names.RETRY_RECEIVE_WAIT_SECONDS,
            "MessageAttributeNames": ["All"],
        },
        "ResultPath": "$.receive",
        "Retry": [_retry(["States.ALL"])],
        "Next": "AnyMessages",
    }


def _deliver_batch(arn: _Integrations, env: str, queue_url: str, dlq_url: str, function: str) -> dict[str, Any]:
    return {
        "Type": "Map",
        "ItemsPath": "$.receive.Messages",
        "MaxConcurrency": names.RETRY_MAP_MAX_CONCURRENCY,
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "INLINE"},
            "StartAt": "Deliver",
            "States": {
                "Deliver": {
                    "Type": "Task",
                    "Resource": arn(LAMBDA_INVOKE),
                    "Parameters": {
                        "FunctionName": function,
                        # The body stays a string: a body that is not JSON must reach the
                        # forwarder (and end in the DLQ), not break the execution here.
                        "Payload": {"source": names.RETRY_PROCESSOR_SOURCE, "notification.$": "$.Body"},
                    },
                    "ResultSelector": {"Payload.$": "$.Payload"},
                    "ResultPath": "$.result",
                    "Retry": [_retry(RETRIABLE_ERRORS)],
                    "Catch": [
                        *(_catch([error], f"Stop{name}") for error, name in _STOPS),
                        _catch(["States.ALL"], "MoveToDlq"),
                    ],
                    "Next": "CheckDelivered",
                },
                "CheckDelivered": {
                    "Type": "Choice",
                    "Choices": [
                        {
                            "And": [
                                {"Variable": "$.result.Payload.status", "IsPresent": True},
                                {
                                    "Or": [
                                        {"Variable": "$.result.Payload.status", "StringEquals": status}
                                        for status in DELIVERED_STATUSES
                                    ]
                                },
                            ],
                            "Next": "DeleteDelivered",
                        },
                        {
                            "And": [
                                {"Variable": "$.result.Payload.status", "IsPresent": True},
                                {
                                    "Or": [
                                        {"Variable": "$.result.Payload.status", "StringEquals": status}
                                        for status in (names.RETRY_STATUS_IGNORED, names.RETRY_STATUS_REJECTED)
                                    ]
                                },
                            ],
                            "Next": "DeleteIgnored",
                        },
                    ],
                    "Default": "UnexpectedAnswer",
                },
                "DeleteDelivered": _delete(arn, queue_url, outcome=DELIVERED),
                # Not mail (SES's setup notification), or refused by the sender-authentication
                # policy (its raw message stays in S3): removed, counted in neither total.
                "DeleteIgnored": _delete(arn, queue_url, outcome=names.RETRY_STATUS_IGNORED),
                "UnexpectedAnswer": {
                    "Type": "Pass",
                    "Parameters": {
                        "Error": "UnexpectedForwarderAnswer",
                        "Cause": "the forwarder answered without a delivered status; not deleting it unseen",
                    },
                    "ResultPath": "$.error",
                    "Next": "MoveToDlq",
                },
                "MoveToDlq": {
                    "Type": "Task",
                    "Resource": arn(f"{_SQS}:sendMessage"),
                    "Parameters": {
                        "QueueUrl": dlq_url,
                        "MessageBody.$": "$.Body",
                        "MessageAttributes": {
                            names.ATTR_ERROR: _string_attribute(_REASON),
                            names.ATTR_ERROR_TYPE: _string_attribute("$.error.Error"),
                            "original_message_id": _string_attribute("$.MessageId"),
                        },
                    },
                    "ResultPath": None,
                    "Retry": [_retry(["States.ALL"])],
                    "Next": "DeleteDeadLettered",
                },
                "DeleteDeadLettered": _delete(arn, queue_url, outcome=FAILED),
                # Stops the whole batch: every other message would fail alike, and nothing is deleted.
                **{f"Stop{name}": {"Type": "Fail", "Error": error, "Cause": error} for error, name in _STOPS},
            },
        },
        "ResultPath": "$.batch",
        "Catch": [
            *(_catch([error], f"PublishMetrics{name}") for error, name in _STOPS),
            _catch(["States.ALL"], "PublishMetricsFailed"),
        ],
        "Next": "Tally",
    }


def _delete(arn: _Integrations, queue_url: str, *, outcome: str) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": arn(f"{_SQS}:deleteMessage"),
        "Parameters": {"QueueUrl": queue_url, "ReceiptHandle.$": "$.ReceiptHandle"},
        # The item's whole result: what the tally counts with ``$.batch[*].<outcome>``.
        "ResultSelector": {outcome: 1},
        "Retry": [_retry(["States.ALL"])],
        "End": True,
    }


def _publish_metrics(arn: _Integrations, env: str, *, completed: bool, next_state: str) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [
        {"MetricName": names.METRIC_RETRY_DELIVERED, "Value.$": f"$.totals.{DELIVERED}", "Unit": "Count"},
        {"MetricName": names.METRIC_RETRY_FAILED, "Value.$": f"$.totals.{FAILED}", "Unit": "Count"},
    ]
    if completed:
        metrics.append({"MetricName": names.METRIC_RETRY_COMPLETED, "Value": 1, "Unit": "Count"})
    return {
        "Type": "Task",
        "Resource": arn(_CLOUDWATCH_PUT),
        "Parameters": {"Namespace": names.metric_namespace(env), "MetricData": metrics},
        "ResultPath": None,
        "Retry": [_retry(["States.ALL"])],
        # A metric that cannot be published must not turn a finished drain into a failure.
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": next_state}],
        "Next": next_state,
    }


def _catch(errors: list[str], next_state: str) -> dict[str, Any]:
    return {"ErrorEquals": errors, "ResultPath": "$.error", "Next": next_state}


def _retry(errors: list[str]) -> dict[str, Any]:
    return {
        "ErrorEquals": errors,
        "IntervalSeconds": names.RETRY_INITIAL_BACKOFF_SECONDS,
        "BackoffRate": names.RETRY_BACKOFF_RATE,
        "MaxAttempts": names.RETRY_MAX_ATTEMPTS,
        "MaxDelaySeconds": names.RETRY_MAX_BACKOFF_SECONDS,
    }


def _string_attribute(path: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue.$": path}
