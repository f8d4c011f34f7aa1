"""The retry processor's real definition, executed by moto's Step Functions interpreter.

The Lambda invoke is routed to the real forwarder handler in-process (one warm forwarder per
interpreter thread, as Lambda runs one container per concurrent invocation), Gmail is the fake
on 127.0.0.1, and the interpreter's retry sleeps are recorded instead of slept.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pytest

from sesmail import names
from sesmail.local.google import error_body
from sesmail.runtime.errors import MailboxRefusedError, PermanentError, TokenExpiredError
from sesmail.runtime.events import SETUP_NOTIFICATION_ID
from sesmail.runtime.retry_processor import UNKNOWN_MAILBOX_ERROR
from tests.conftest import REGION, raw_message
from tests.drain_world import DrainWorld


def test_drains_more_than_three_batches_exactly_once(drain: DrainWorld) -> None:
    drain.install_token()
    for i in range(35):
        drain.park(f"m{i:02d}")

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 35, "failed": 0, "batches": 4, "reconciled": 0}
    imported = sorted(m.raw for m in drain.google.messages)
    assert imported == sorted(raw_message(f"m{i:02d}") for i in range(35))
    assert drain.queue_depth(drain.retry_queue_url) == 0
    assert drain.queue_depth(drain.retry_dlq_url) == 0
    sums = drain.metric_sums()
    assert sums[names.METRIC_RETRY_DELIVERED] == 35
    assert sums[names.METRIC_RETRY_FAILED] == 0
    assert sums[names.METRIC_RETRY_COMPLETED] == 1


def test_poison_messages_go_to_the_retry_dlq_with_their_reason(drain: DrainWorld) -> None:
    drain.install_token()
    for i in range(12):
        drain.park(f"m{i:02d}")
    drain.park("gone", stored=False)  # its S3 object was deleted: permanent
    drain.park("junk", body="this is not a notification")

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"])["delivered"] == 12
    assert json.loads(result["output"])["failed"] == 2
    assert len(drain.google.messages) == 12
    dead = drain.drain(drain.retry_dlq_url)
    reasons = {
        json.loads(m["Body"])["mail"]["messageId"] if m["Body"].startswith("{") else m["Body"]: m["MessageAttributes"]
        for m in dead
    }
    assert set(reasons) == {"gone", "this is not a notification"}
    assert reasons["gone"]["error_type"]["StringValue"] == "PermanentError"
    assert "NoSuchKey" in reasons["gone"]["error"]["StringValue"]
    assert "not JSON" in reasons["this is not a notification"]["error"]["StringValue"]
    assert drain.queue_depth(drain.retry_queue_url) == 0
    assert drain.metric_sums()[names.METRIC_RETRY_FAILED] == 2


def test_gmail_503_twice_is_retried_with_the_backoff_and_delivered(drain: DrainWorld) -> None:
    drain.install_token()
    drain.park("m1")
    drain.google.fail_gmail(503, times=names.INPROCESS_MAX_ATTEMPTS + 1)  # outlasts one invocation

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert len(drain.google.messages) == 1
    assert drain.interpreter_sleeps == [names.RETRY_INITIAL_BACKOFF_SECONDS]
    assert drain.queue_depth(drain.retry_queue_url) == 0


def test_transient_failures_beyond_the_retries_end_in_the_dlq_not_lost(drain: DrainWorld) -> None:
    drain.install_token()
    drain.park("m1")
    drain.google.fail_gmail(503, times=100)

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert drain.interpreter_sleeps == [30, 60, 120]
    [dead] = drain.drain(drain.retry_dlq_url)
    assert dead["MessageAttributes"]["error_type"]["StringValue"] == "TransientError"
    assert drain.google.messages == []


def test_dead_token_fails_the_execution_and_leaves_everything_queued(drain: DrainWorld) -> None:
    drain.google.revoke(drain.install_token())
    for i in range(15):
        drain.park(f"m{i:02d}")

    result = drain.run()

    assert result["status"] == "FAILED"
    assert result["error"] == "TokenExpiredError"
    assert "python -m sesmail.refresh --env test" in result["cause"]
    assert drain.google.messages == []
    assert drain.queue_depth(drain.retry_queue_url) == 15
    assert drain.queue_depth(drain.retry_dlq_url) == 0
    assert names.METRIC_RETRY_COMPLETED not in drain.metric_sums()


def test_already_delivered_messages_are_deleted_without_a_second_import(drain: DrainWorld) -> None:
    drain.install_token()
    drain.park("m1")
    assert drain.run()["status"] == "SUCCEEDED"
    drain.park("m1", stored=False)  # parked again later (an operator redrove an old copy)
    result = drain.run()
    assert result["status"] == "SUCCEEDED", result
    assert len(drain.google.messages) == 1
    assert json.loads(result["output"])["delivered"] == 1
    assert drain.queue_depth(drain.retry_queue_url) == 0


def test_empty_queue_succeeds_at_once(drain: DrainWorld) -> None:
    result = drain.run()
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 0, "failed": 0, "batches": 0, "reconciled": 0}
    assert drain.google.import_requests == 0


def _shim_moto_start_execution_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's interpreter passes ``states:startExecution`` parameters to boto3 as written.

    Step Functions documents them as ``StateMachineArn`` / ``Input`` / ``Name`` (what real AWS
    accepts, and what the definition uses); boto3's model spells them camelCase. moto 5.2.5
    leaves the translation out, so this test adds it rather than bending the definition.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    original = StateTaskServiceSfn._normalise_parameters

    def normalise(self: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        original(self, parameters, *args, **kwargs)
        for key in [k for k in parameters if k in ("StateMachineArn", "Input", "Name")]:
            parameters[key[0].lower() + key[1:]] = parameters.pop(key)

    monkeypatch.setattr(StateTaskServiceSfn, "_normalise_parameters", normalise)


@pytest.mark.parametrize("mailbox", [None, "alice"])
def test_long_backlogs_hand_over_to_a_fresh_execution_of_the_same_mailbox(
    drain: DrainWorld, monkeypatch: pytest.MonkeyPatch, mailbox: str | None
) -> None:
    """Past the batch cap (kept small here) the execution publishes, starts a successor and ends.

    The successor drains the same mailbox: ``default`` for an execution started without one.
    """
    _shim_moto_start_execution_parameters(monkeypatch)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    capped = drain.definition(batches_per_execution=2)
    sfn.update_state_machine(stateMachineArn=drain.state_machine_arn, definition=json.dumps(capped))
    if mailbox is None:
        drain.install_token()
    else:  # the real forwarder's mailbox table is its owner's to test
        drain.stub_forwarder = _delivered
    expected = mailbox or names.DEFAULT_MAILBOX
    for i in range(25):
        drain.park(f"m{i:02d}", mailbox=expected)
    drain.park("other", mailbox="bob" if mailbox else "alice")

    first = drain.run({} if mailbox is None else {"mailbox": mailbox})

    assert first["status"] == "SUCCEEDED", (first.get("error"), first.get("cause"))
    assert json.loads(first["output"]) == {"delivered": 20, "failed": 0, "batches": 2, "reconciled": 0}
    [successor] = [
        e
        for e in sfn.list_executions(stateMachineArn=drain.state_machine_arn)["executions"]
        if e["executionArn"] != first["executionArn"]
    ]
    second = drain.wait(successor["executionArn"])
    assert second["status"] == "SUCCEEDED", second
    assert json.loads(second["input"]) == {"continuedFrom": first["executionArn"], "mailbox": expected}
    assert json.loads(second["output"]) == {"delivered": 5, "failed": 0, "batches": 1, "reconciled": 0}
    assert len(drain.invocations) == 25
    assert {p["mailbox"] for p in drain.invocations} == {expected}
    if mailbox is None:
        assert len(drain.google.messages) == 25
    assert drain.queue_depth(drain.queues[expected].queue_url) == 0
    assert drain.queue_depth(drain.queues["bob" if mailbox else "alice"].queue_url) == 1


def test_a_batch_with_nothing_delivered_counts_zero_without_a_guard(drain: DrainWorld) -> None:
    """The tally's ``$.batch[*].delivered`` matches nothing here: AWS and moto yield ``[]``, not an error."""
    drain.install_token()
    for i in range(3):
        drain.park(f"gone{i}", stored=False)

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 0, "failed": 3, "batches": 1, "reconciled": 0}
    assert len(drain.drain(drain.retry_dlq_url)) == 3


def test_a_parked_ses_setup_notification_is_deleted_and_counted_nowhere(drain: DrainWorld) -> None:
    """Parked by a release that took it for mail: removed, never imported, never dead-lettered."""
    drain.install_token()
    drain.park(SETUP_NOTIFICATION_ID)
    drain.park("m1")

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 1, "failed": 0, "batches": 1, "reconciled": 0}
    assert [m.raw for m in drain.google.messages] == [raw_message("m1")]
    assert drain.queue_depth(drain.retry_queue_url) == drain.queue_depth(drain.retry_dlq_url) == 0


def test_a_refused_mailbox_fails_the_execution_and_leaves_everything_queued(drain: DrainWorld) -> None:
    """Gmail API disabled: every message would fail alike, so none is dead-lettered."""
    drain.install_token()
    for i in range(4):
        drain.park(f"m{i}")
    drain.google.fail_gmail(403, error_body(403, "Gmail API has not been used", "accessNotConfigured"), times=50)

    result = drain.run()

    assert (result["status"], result["error"]) == ("FAILED", "MailboxRefusedError")
    assert drain.google.messages == []
    assert drain.queue_depth(drain.retry_queue_url) == 4
    assert drain.queue_depth(drain.retry_dlq_url) == 0
    assert drain.interpreter_sleeps == []  # not retried: it is no transient


def test_a_rate_limit_that_outlasts_the_retries_stops_the_drain_without_dead_lettering(drain: DrainWorld) -> None:
    """Gmail's quota: retried with the backoff, then the rest waits for the next run, not the DLQ."""
    drain.install_token()
    for i in range(3):
        drain.park(f"m{i}")
    drain.google.fail_gmail(429, error_body(429, "Quota exceeded", "rateLimitExceeded"), times=500)

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["stoppedBy"] == "rate-limited"
    assert drain.google.messages == []
    assert drain.queue_depth(drain.retry_dlq_url) == 0
    assert drain.interpreter_sleeps[:1] == [names.RETRY_INITIAL_BACKOFF_SECONDS]
    assert names.METRIC_RETRY_COMPLETED not in drain.metric_sums()


# --- Mailboxes: one state machine, the input {"mailbox": NAME} picks the queue ----------------------


def _delivered(payload: dict[str, Any]) -> dict[str, Any]:
    """A forwarder that delivers everything (the real one's mailbox handling is tested with it)."""
    return {"status": "delivered", "gmailMessageId": "g"}


def _message_id(payload: dict[str, Any]) -> str:
    message_id: str = json.loads(payload["notification"])["mail"]["messageId"]
    return message_id


def _visible_and_in_flight(drain: DrainWorld, url: str) -> tuple[int, int]:
    attributes = drain.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_an_execution_for_a_mailbox_drains_only_that_mailboxs_queue(drain: DrainWorld) -> None:
    drain.stub_forwarder = _delivered
    for i in range(12):
        drain.park(f"alice-{i:02d}", mailbox="alice")
    for i in range(3):
        drain.park(f"default-{i}")
        drain.park(f"bob-{i}", mailbox="bob")

    result = drain.run({"mailbox": "alice"})

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 12, "failed": 0, "batches": 2, "reconciled": 0}
    assert sorted(_message_id(p) for p in drain.invocations) == [f"alice-{i:02d}" for i in range(12)]
    assert all(p["source"] == names.RETRY_PROCESSOR_SOURCE for p in drain.invocations)
    assert {p["mailbox"] for p in drain.invocations} == {"alice"}
    assert drain.queue_depth(drain.queues["alice"].queue_url) == 0
    assert _visible_and_in_flight(drain, drain.retry_queue_url) == (3, 0)  # never received
    assert _visible_and_in_flight(drain, drain.queues["bob"].queue_url) == (3, 0)


def test_a_failure_goes_to_the_dlq_of_the_mailbox_it_came_from(drain: DrainWorld) -> None:
    def forwarder(payload: dict[str, Any]) -> dict[str, Any]:
        if _message_id(payload) == "poison":
            raise PermanentError("NoSuchKey: gone")
        return _delivered(payload)

    drain.stub_forwarder = forwarder
    drain.park("poison", mailbox="bob", stored=False)
    drain.park("fine", mailbox="bob")

    result = drain.run({"mailbox": "bob"})

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 1, "failed": 1, "batches": 1, "reconciled": 0}
    [dead] = drain.drain(drain.queues["bob"].dlq_url)
    assert json.loads(dead["Body"])["mail"]["messageId"] == "poison"
    assert dead["MessageAttributes"]["error_type"]["StringValue"] == "PermanentError"
    assert drain.queue_depth(drain.retry_dlq_url) == drain.queue_depth(drain.queues["alice"].dlq_url) == 0
    assert drain.queue_depth(drain.queues["bob"].queue_url) == 0


@pytest.mark.parametrize("execution_input", [{}, {"trigger": "token-monitor"}, {"mailbox": "default"}])
def test_an_input_without_a_mailbox_drains_the_default_queue(
    drain: DrainWorld, execution_input: dict[str, Any]
) -> None:
    """Every execution started before mailboxes existed, and the real forwarder behind it."""
    drain.install_token()
    drain.park("m1")
    drain.park("m2")
    drain.park("a1", mailbox="alice")

    result = drain.run(execution_input)

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 2, "failed": 0, "batches": 1, "reconciled": 0}
    assert sorted(m.raw for m in drain.google.messages) == sorted(raw_message(m) for m in ("m1", "m2"))
    assert {p["mailbox"] for p in drain.invocations} == {names.DEFAULT_MAILBOX}
    assert drain.queue_depth(drain.retry_queue_url) == 0
    assert _visible_and_in_flight(drain, drain.queues["alice"].queue_url) == (1, 0)


@pytest.mark.parametrize("mailbox", ["carol", "Alice", "", 7, None, ["alice"], {"name": "alice"}])
def test_an_unknown_mailbox_fails_without_receiving_anything(drain: DrainWorld, mailbox: Any) -> None:
    drain.stub_forwarder = _delivered
    for name in drain.queues:
        drain.park(f"{name}-1", mailbox=name)

    result = drain.run({"mailbox": mailbox})

    assert (result["status"], result["error"]) == ("FAILED", UNKNOWN_MAILBOX_ERROR)
    assert "default, alice, bob" in result["cause"]
    assert "nothing was received" in result["cause"]
    assert drain.invocations == []
    for queues in drain.queues.values():
        assert _visible_and_in_flight(drain, queues.queue_url) == (1, 0)
    assert drain.metric_sums() == {}


def test_executions_for_two_mailboxes_run_side_by_side(drain: DrainWorld) -> None:
    """Each forwarder call waits until the other mailbox's execution has called too: they overlap."""
    called = {mailbox: threading.Event() for mailbox in ("alice", "bob")}
    overlapped: list[bool] = []

    def forwarder(payload: dict[str, Any]) -> dict[str, Any]:
        mailbox = payload["mailbox"]
        assert _message_id(payload).startswith(f"{mailbox}-")
        called[mailbox].set()
        other = "bob" if mailbox == "alice" else "alice"
        overlapped.append(called[other].wait(timeout=30))
        return _delivered(payload)

    drain.stub_forwarder = forwarder
    for i in range(15):
        drain.park(f"alice-{i:02d}", mailbox="alice")
        drain.park(f"bob-{i:02d}", mailbox="bob")

    alice, bob = drain.start({"mailbox": "alice"}), drain.start({"mailbox": "bob"})
    results = [drain.wait(alice), drain.wait(bob)]

    for result in results:
        assert result["status"] == "SUCCEEDED", result
        assert json.loads(result["output"]) == {"delivered": 15, "failed": 0, "batches": 2, "reconciled": 0}
    assert overlapped and all(overlapped)
    assert sorted(_message_id(p) for p in drain.invocations if p["mailbox"] == "alice") == [
        f"alice-{i:02d}" for i in range(15)
    ]
    assert sorted(_message_id(p) for p in drain.invocations if p["mailbox"] == "bob") == [
        f"bob-{i:02d}" for i in range(15)
    ]
    for mailbox in ("alice", "bob"):
        assert drain.queue_depth(drain.queues[mailbox].queue_url) == 0
        assert drain.queue_depth(drain.queues[mailbox].dlq_url) == 0
    assert drain.metric_sums()[names.METRIC_RETRY_DELIVERED] == 30


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            TokenExpiredError("invalid_grant"),
            "refresh token of mailbox alice is still expired or revoked; nothing was deleted. "
            f"Renew it with: {names.refresh_command('test', 'alice')}",
        ),
        (MailboxRefusedError("accessNotConfigured"), "Gmail refuses mailbox alice or our setup"),
    ],
)
def test_a_stop_names_the_mailbox_and_leaves_only_its_queue_touched(
    drain: DrainWorld, error: Exception, cause: str
) -> None:
    def forwarder(payload: dict[str, Any]) -> dict[str, Any]:
        raise error

    drain.stub_forwarder = forwarder
    for i in range(3):
        drain.park(f"alice-{i}", mailbox="alice")
    drain.park("default-1")

    result = drain.run({"mailbox": "alice"})

    assert (result["status"], result["error"]) == ("FAILED", type(error).__name__)
    assert cause in result["cause"]
    assert drain.queue_depth(drain.queues["alice"].queue_url) == 3
    assert drain.queue_depth(drain.queues["alice"].dlq_url) == 0
    assert _visible_and_in_flight(drain, drain.retry_queue_url) == (1, 0)
