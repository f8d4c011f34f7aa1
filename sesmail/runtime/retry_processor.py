"""The retry processor's Step Functions definition, built from :mod:`sesmail.names` constants.

One state machine serves every mailbox. An execution's input ``{"mailbox": NAME}`` picks the
mailbox (an input without ``mailbox`` means ``default``: every execution started before mailboxes
existed, and the successors they hand over to); a name the deployment does not have fails at
once (``UnknownMailbox``) without receiving anything. A Choice state picks the mailbox's Pass
state, which sets ``$.target`` (its name, retry queue URL, DLQ URL and renewal command); every
later state reads the queues from there, and the Fail causes name the mailbox. Executions for
different mailboxes therefore run side by side without knowing of each other.

It first reconciles the mailbox (not in a successor): the forwarder, invoked with
``{"source": "reconcile", "mailbox": NAME}``, delivers what the mail bucket says is owed and no
queue holds (:mod:`sesmail.runtime.reconcile`), again while it answers ``partial``; its count is
the totals' ``reconciled``; a dead token, a refused mailbox or the quota stop it as below, and any
other failure of it leaves the drain to run. Then it drains the mailbox's whole retry queue,
batch after batch, until a receive comes back empty:

    Receive (<= 10) -> Map (bounded concurrency) over the messages:
        invoke the forwarder {"source": "retry-processor", "notification": <body>, "mailbox": NAME}
          delivered / already-delivered       -> delete the message
          ignored (not mail) / rejected (policy) -> delete it, counted in neither total
          TransientError (and Lambda hiccups)  -> retried: 30 s, x2, 3 attempts
          PermanentError, retries exhausted,
          or an answer without a status        -> copy to the retry DLQ with the reason, then delete
          TokenExpiredError, MailboxRefusedError -> stop everything, delete nothing, FAIL
          RateLimitedError (after the retries)  -> stop, delete nothing, end with stoppedBy: rate-limited
    -> tally -> receive again ... -> publish RetryMessagesDelivered / RetryMessagesFailed /
       RetryProcessingCompleted -> succeed with the totals.

A message is deleted only after it was delivered or is safely in the mailbox's DLQ. Each Map
item is ``{"message": <the SQS API's own shape: MessageId, ReceiptHandle, Body>, "target": ...}``
(``ItemSelector``). An execution at its batch cap hands over to a successor with the same
mailbox. Every path that counts is guarded so that a missing field can never turn into a
``States.Runtime`` failure.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
#: Totals key: what the reconcile at the start of the execution delivered.
RECONCILED = "reconciled"
#: The forwarder's reconcile answer when it ran out of time with more to deliver.
RECONCILE_PARTIAL = "partial"
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
#: The Fail state of an execution whose input names no mailbox of this deployment.
UNKNOWN_MAILBOX_ERROR = "UnknownMailbox"
#: Where the chosen mailbox's queues live in the state (and in every Map item).
TARGET = "target"
_MAILBOX_PATH = f"$.{TARGET}.mailbox"
_QUEUE_URL_PATH = f"$.{TARGET}.queueUrl"
_DLQ_URL_PATH = f"$.{TARGET}.dlqUrl"
_REFRESH_COMMAND_PATH = f"$.{TARGET}.refreshCommand"
_RECONCILED_PATH = f"$.reconcile.Payload.{DELIVERED}"
_RECONCILE_STATUS_PATH = "$.reconcile.Payload.status"


@dataclass(frozen=True)
class MailboxQueues:
    """One mailbox's retry queue and retry DLQ, as the state machine drains them."""

    mailbox: str
    queue_url: str
    dlq_url: str


def target_state(mailbox: str) -> str:
    """The Pass state that points the execution at ``mailbox``'s queues."""
    return f"Target-{names.check_mailbox(mailbox)}"


def build_definition(
    *,
    env: str,
    partition: str,
    mailboxes: Sequence[MailboxQueues],
    forwarder_function: str,
    batches_per_execution: int = names.RETRY_BATCHES_PER_EXECUTION,
) -> dict[str, Any]:
    """The Amazon States Language document (a dict; the infra component dumps it to JSON).

    ``mailboxes`` are every mailbox's queues (at least one, each name once); the execution's
    input ``{"mailbox": NAME}`` picks one. ``partition`` (``aws``, ``aws-cn``, ``aws-us-gov``)
    goes into every service-integration ARN.
    """
    known = [names.check_mailbox(m.mailbox) for m in mailboxes]
    if not known:
        raise ValueError("the retry processor needs at least one mailbox's queues")
    if len(set(known)) != len(known):
        raise ValueError(f"a mailbox is listed twice: {known}")
    arn: _Integrations = functools.partial(integration_arn, partition)
    return {
        "Comment": (
            f"Drains the retry queue of the mailbox the input names (key {names.RETRY_MAILBOX_KEY}, "
            f"{names.DEFAULT_MAILBOX} when absent) into Gmail after a token renewal "
            f"(ses-mail {env}: {', '.join(known)})"
        ),
        "StartAt": "SelectMailbox",
        "TimeoutSeconds": names.RETRY_EXECUTION_TIMEOUT_SECONDS,
        "States": {
            "SelectMailbox": _select_mailbox(known),
            **{target_state(m.mailbox): _target(env, m) for m in mailboxes},
            UNKNOWN_MAILBOX_ERROR: {
                "Type": "Fail",
                "Error": UNKNOWN_MAILBOX_ERROR,
                "Cause": (
                    f"The execution input's {names.RETRY_MAILBOX_KEY!r} is not a mailbox of ses-mail {env} "
                    f"(it has: {', '.join(known)}; absent means {names.DEFAULT_MAILBOX}); nothing was received."
                ),
            },
            "Init": {
                "Type": "Pass",
                "Parameters": {DELIVERED: 0, FAILED: 0, "batches": 0, RECONCILED: 0},
                "ResultPath": "$.totals",
                "Next": "ReconcileFirst",
            },
            # A successor (handed over at the batch cap) drains on; its first execution reconciled.
            "ReconcileFirst": {
                "Type": "Choice",
                "Choices": [{"Variable": f"$.{names.RETRY_CONTINUED_FROM_KEY}", "IsPresent": True, "Next": "Receive"}],
                "Default": "Reconcile",
            },
            "Reconcile": _reconcile(arn, forwarder_function),
            # An answer without a count (a forwarder older than the machine, say) is not counted,
            # and never a States.Runtime failure: the drain runs regardless.
            "CheckReconciled": _when_present(_RECONCILED_PATH, {"IsNumeric": True}, "CountReconciled", "Receive"),
            "CountReconciled": {
                "Type": "Pass",
                "Parameters": {
                    "totals": {
                        **{f"{key}.$": f"$.totals.{key}" for key in (DELIVERED, FAILED, "batches")},
                        f"{RECONCILED}.$": f"States.MathAdd($.totals.{RECONCILED}, {_RECONCILED_PATH})",
                    },
                    f"{TARGET}.$": f"$.{TARGET}",
                    "reconcile.$": "$.reconcile",
                },
                "ResultPath": "$",
                "Next": "MoreToReconcile",
            },
            "MoreToReconcile": _when_present(
                _RECONCILE_STATUS_PATH, {"StringEquals": RECONCILE_PARTIAL}, "Reconcile", "Receive"
            ),
            # The drain still runs: the forwarder's log and errors alarm say why the reconcile failed.
            "ReconcileFailed": {"Type": "Pass", "ResultPath": None, "Next": "Receive"},
            "Receive": _receive(arn),
            "AnyMessages": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.receive.Messages[0]", "IsPresent": True, "Next": "DeliverBatch"}],
                "Default": "PublishMetrics",
            },
            "DeliverBatch": _deliver_batch(arn, forwarder_function),
            "Tally": {
                "Type": "Pass",
                # Replaces the whole state: the batch and its message bodies are done with.
                "Parameters": {
                    "totals": {
                        **{f"{outcome}.$": _add_batch_count(outcome) for outcome in (DELIVERED, FAILED)},
                        "batches.$": "States.MathAdd($.totals.batches, 1)",
                        f"{RECONCILED}.$": f"$.totals.{RECONCILED}",
                    },
                    f"{TARGET}.$": f"$.{TARGET}",
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
                    # The successor drains the same mailbox.
                    "Input": {
                        f"{names.RETRY_CONTINUED_FROM_KEY}.$": "$$.Execution.Id",
                        f"{names.RETRY_MAILBOX_KEY}.$": _MAILBOX_PATH,
                    },
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
                "CausePath": _cause(
                    "The Gmail refresh token of mailbox {} is still expired or revoked; nothing was deleted. "
                    "Renew it with: {}",
                    _MAILBOX_PATH,
                    _REFRESH_COMMAND_PATH,
                ),
            },
            "PublishMetricsMailboxRefused": _publish_metrics(arn, env, completed=False, next_state="MailboxRefused"),
            "MailboxRefused": {
                "Type": "Fail",
                "Error": MAILBOX_REFUSED_ERROR,
                "CausePath": _cause(
                    "Gmail refuses mailbox {} or our setup (API disabled, domain policy, a configured label, "
                    "the OAuth client); nothing was deleted. The forwarder log has the reason (event retry.failed).",
                    _MAILBOX_PATH,
                ),
            },
            "PublishMetricsRateLimited": _publish_metrics(arn, env, completed=False, next_state="RateLimited"),
            # Gmail's quota: not a failure anyone must act on. The rest waits in the queue, and the
            # token monitor starts the processor again while mail is queued and the token works.
            "RateLimited": {
                "Type": "Pass",
                "Parameters": {
                    **{f"{key}.$": f"$.totals.{key}" for key in (DELIVERED, FAILED, "batches", RECONCILED)},
                    names.RETRY_STOPPED_BY_KEY: names.RETRY_STOPPED_RATE_LIMITED,
                },
                "End": True,
            },
            "PublishMetricsFailed": _publish_metrics(arn, env, completed=False, next_state="ProcessingFailed"),
            "ProcessingFailed": {
                "Type": "Fail",
                "Error": "RetryProcessingFailed",
                "CausePath": _cause(
                    "A batch of mailbox {} could not be settled; undelivered messages stay in its retry queue.",
                    _MAILBOX_PATH,
                ),
            },
        },
    }


def _select_mailbox(known: list[str]) -> dict[str, Any]:
    """Choice rules run in order: absent first, then not a string, so no comparison meets a missing or odd value."""
    absent = target_state(names.DEFAULT_MAILBOX) if names.DEFAULT_MAILBOX in known else UNKNOWN_MAILBOX_ERROR
    variable = f"$.{names.RETRY_MAILBOX_KEY}"
    return {
        "Type": "Choice",
        "Choices": [
            {"Not": {"Variable": variable, "IsPresent": True}, "Next": absent},
            {"Not": {"Variable": variable, "IsString": True}, "Next": UNKNOWN_MAILBOX_ERROR},
            *({"Variable": variable, "StringEquals": mailbox, "Next": target_state(mailbox)} for mailbox in known),
        ],
        "Default": UNKNOWN_MAILBOX_ERROR,
    }


def _target(env: str, queues: MailboxQueues) -> dict[str, Any]:
    return {
        "Type": "Pass",
        "Result": {
            "mailbox": queues.mailbox,
            "queueUrl": queues.queue_url,
            "dlqUrl": queues.dlq_url,
            "refreshCommand": names.refresh_command(env, queues.mailbox),
        },
        "ResultPath": f"$.{TARGET}",
        "Next": "Init",
    }


def _cause(template: str, *paths: str) -> str:
    """A Fail state's ``CausePath``: ``States.Format`` of a literal template with ``{}`` placeholders.

    The template holds none of the characters an intrinsic string must escape (``' { } \\``)
    besides its placeholders, one per path.
    """
    if any(c in template.replace("{}", "") for c in "'{}\\") or template.count("{}") != len(paths):
        raise ValueError(f"not a plain States.Format template for {len(paths)} values: {template!r}")
    return f"States.Format('{template}', {', '.join(paths)})"


def integration_arn(partition: str, integration: str) -> str:
    """A Step Functions service integration's ``Resource``, e.g. ``arn:aws:states:::lambda:invoke``."""
    return f"arn:{partition}:states:::{integration}"


def _add_batch_count(outcome: str) -> str:
    """``totals.<outcome>`` plus the batch items that ended with that outcome (``[]`` counts 0)."""
    return f"States.MathAdd($.totals.{outcome}, States.ArrayLength($.batch[*].{outcome}))"


def _receive(arn: _Integrations) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": arn(f"{_SQS}:receiveMessage"),
        "Parameters": {
            "QueueUrl.$": _QUEUE_URL_PATH,
            "MaxNumberOfMessages": names.SQS_BATCH_SIZE,
            "WaitTimeSeconds": names.RETRY_RECEIVE_WAIT_SECONDS,
            "MessageAttributeNames": ["All"],
        },
        "ResultPath": "$.receive",
        "Retry": [_retry(["States.ALL"])],
        "Next": "AnyMessages",
    }


def _deliver_batch(arn: _Integrations, function: str) -> dict[str, Any]:
    return {
        "Type": "Map",
        "ItemsPath": "$.receive.Messages",
        # Each item carries the mailbox's queues: a Map item sees only what the selector gives it.
        "ItemSelector": {"message.$": "$$.Map.Item.Value", f"{TARGET}.$": f"$.{TARGET}"},
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
                        "Payload": {
                            "source": names.RETRY_PROCESSOR_SOURCE,
                            "notification.$": "$.message.Body",
                            f"{names.RETRY_MAILBOX_KEY}.$": _MAILBOX_PATH,
                        },
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
                "DeleteDelivered": _delete(arn, outcome=DELIVERED),
                # Not mail (SES's setup notification), or refused by the sender-authentication
                # policy (its raw message stays in S3): removed, counted in neither total.
                "DeleteIgnored": _delete(arn, outcome=names.RETRY_STATUS_IGNORED),
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
                        "QueueUrl.$": _DLQ_URL_PATH,
                        "MessageBody.$": "$.message.Body",
                        "MessageAttributes": {
                            names.ATTR_ERROR: _string_attribute(_REASON),
                            names.ATTR_ERROR_TYPE: _string_attribute("$.error.Error"),
                            "original_message_id": _string_attribute("$.message.MessageId"),
                        },
                    },
                    "ResultPath": None,
                    "Retry": [_retry(["States.ALL"])],
                    "Next": "DeleteDeadLettered",
                },
                "DeleteDeadLettered": _delete(arn, outcome=FAILED),
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


def _when_present(path: str, rule: dict[str, Any], next_state: str, default: str) -> dict[str, Any]:
    """A Choice that applies ``rule`` to ``path`` only when the path is present: comparing an
    absent one is a States.Runtime failure, which no Catch can handle."""
    return {
        "Type": "Choice",
        "Choices": [{"And": [{"Variable": path, "IsPresent": True}, {"Variable": path, **rule}], "Next": next_state}],
        "Default": default,
    }


def _reconcile(arn: _Integrations, function: str) -> dict[str, Any]:
    """Deliver what the bucket says the mailbox is owed (oldest first) before the queue is drained."""
    return {
        "Type": "Task",
        "Resource": arn(LAMBDA_INVOKE),
        "Parameters": {
            "FunctionName": function,
            "Payload": {"source": names.RECONCILE_SOURCE, f"{names.RETRY_MAILBOX_KEY}.$": _MAILBOX_PATH},
        },
        "ResultSelector": {"Payload.$": "$.Payload"},
        "ResultPath": "$.reconcile",
        "Retry": [_retry(RETRIABLE_ERRORS)],
        "Catch": [
            *(_catch([error], f"PublishMetrics{name}") for error, name in _STOPS),
            _catch(["States.ALL"], "ReconcileFailed"),
        ],
        "Next": "CheckReconciled",
    }


def _delete(arn: _Integrations, *, outcome: str) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": arn(f"{_SQS}:deleteMessage"),
        "Parameters": {"QueueUrl.$": _QUEUE_URL_PATH, "ReceiptHandle.$": "$.message.ReceiptHandle"},
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
