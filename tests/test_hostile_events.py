"""Hostile events: whatever an SQS record, an SNS envelope or a retry invocation contains, one bad
record never takes down the rest of its batch, and it ends where an operator can see why.

The contract, per record of an inbound SQS batch:

- a record with a ``messageId`` and a string ``body`` is always settled: delivered, or copied
  unchanged to the inbound DLQ with a readable ``error`` attribute and ``error_type`` =
  ``PermanentError``; it is never a batch item failure, so SQS does not redeliver garbage five times;
- a record without a string ``messageId`` or ``body`` cannot be dead-lettered (there is nothing
  to copy, or nothing to name it by) and is reported as a batch item failure: SQS redrives it
  into the inbound DLQ after ``INBOUND_QUEUE_MAX_RECEIVE_COUNT`` receives. A record without a
  messageId is reported by its index; Lambda treats an identifier it does not know as "the
  whole batch failed", which loses nothing (delivered mail carries its S3 tag, so the redelivery
  answers "already delivered"). Real SQS events always carry both fields.

On the retry-processor path the forwarder raises exactly ``PermanentError`` (by name, for Step
Functions) with a bounded reason, and the state machine moves the message to the retry DLQ.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sesmail import names
from sesmail.runtime.errors import MalformedEventError, PermanentError
from sesmail.runtime.events import SqsRecord, notification_from_sqs_body, parse_notification
from sesmail.runtime.retry_queue import MAX_REASON_CHARS
from tests.conftest import BUCKET, World, raw_message, ses_notification, sns_envelope, sqs_record, strict_sqs
from tests.drain_world import DrainWorld

#: The world fixture is built once per test and shared by its examples on purpose: every
#: example uses fresh message ids, drains the DLQ it asserts on, and counts imports as deltas,
#: so nothing one example leaves behind can change another's verdict.
SHARED_WORLD = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Longest reason a parser failure may give (before retry_queue caps attributes at 1000).
MAX_PARSER_REASON = 300

# --- strategies ------------------------------------------------------------------------------------

# Text as JSON can carry it: control characters and lone surrogates included (json.dumps
# escapes them, so the body itself stays valid for SQS, but the decoded value does not).
any_text = st.text(st.characters(codec=None, categories=None), max_size=40)
#: What an SQS body can hold (SQS refuses other characters at SendMessage).
sqs_chars = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff") | st.sampled_from(
    "\t\n\r"
)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)

# Every place of a notification a hostile edit can reach.
PATHS: list[tuple[str, ...]] = [
    ("notificationType",),
    ("mail",),
    ("mail", "messageId"),
    ("mail", "timestamp"),
    ("receipt",),
    ("receipt", "action"),
    ("receipt", "action", "type"),
    ("receipt", "action", "bucketName"),
    ("receipt", "action", "objectKey"),
    ("receipt", "spamVerdict"),
    ("receipt", "virusVerdict"),
    ("receipt", "spamVerdict", "status"),
]


def _ghost() -> dict[str, Any]:
    """A well-formed notification for a message that was never stored (its object is missing)."""
    return ses_notification(f"ghost-{uuid.uuid4().hex}")


def _edit(document: dict[str, Any], path: tuple[str, ...], value: Any, *, delete: bool) -> dict[str, Any]:
    node: Any = document
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return document
        node = node[key]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return document


@st.composite
def mutated_notifications(draw: st.DrawFn) -> dict[str, Any]:
    document = _ghost()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        _edit(document, path, draw(json_values), delete=draw(st.booleans()))
    return document


@st.composite
def keys_outside_the_rules(draw: st.DrawFn) -> dict[str, Any]:
    """Object keys S3 or the forwarder's IAM policy would refuse."""
    document = _ghost()
    key = draw(
        st.sampled_from(["../" + "x" * 10, "", "inbound/" + "k" * 1100, "inbound/\ud800", "elsewhere/x"])
        | any_text.map(lambda t: "other/" + t)
    )
    document["receipt"]["action"]["objectKey"] = key
    return document


def _wrap(document: Any, how: str) -> str:
    if how == "bare":
        return json.dumps(document)
    return sns_envelope(document)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> str:
    """An SQS record body that must end in the inbound DLQ (never delivered, never a crash)."""
    kind = draw(
        st.sampled_from(
            [
                "text",
                "json",
                "truncated-envelope",
                "truncated-message",
                "mutated",
                "key",
                "deep",
                "message-type",
                "kind",
                "bucket",
                "ids",
            ]
        )
    )
    if kind == "text":
        return draw(st.text(sqs_chars, max_size=80))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "truncated-envelope":
        envelope = sns_envelope(_ghost())
        return envelope[: draw(st.integers(0, len(envelope) - 1))]
    if kind == "truncated-message":
        message = json.dumps(_ghost())
        envelope = json.loads(sns_envelope({}))
        envelope["Message"] = message[: draw(st.integers(0, len(message) - 1))]
        return json.dumps(envelope)
    if kind == "mutated":
        return _wrap(draw(mutated_notifications()), draw(st.sampled_from(["bare", "sns"])))
    if kind == "key":
        return _wrap(draw(keys_outside_the_rules()), draw(st.sampled_from(["bare", "sns"])))
    if kind == "deep":
        depth = draw(st.integers(1_000, 60_000))
        nested = "[" * depth + "]" * depth
        return nested if draw(st.booleans()) else json.dumps({"Type": "Notification", "Message": nested})
    if kind == "message-type":  # an SNS envelope whose Message is not a string
        envelope = json.loads(sns_envelope({}))
        envelope["Message"] = draw(json_values.filter(lambda v: not isinstance(v, str)))
        return json.dumps(envelope)
    if kind == "ids":  # hand-edited ids and timestamps: control characters, lone surrogates, anything
        document = _ghost()
        document["mail"]["messageId"] = draw(any_text.filter(bool))
        document["mail"]["timestamp"] = draw(any_text)
        return _wrap(document, draw(st.sampled_from(["bare", "sns"])))
    if kind == "bucket":  # an event for another bucket (another stack's, or hand-edited)
        other = draw(st.sampled_from(["ses-mail-prod-inbound", BUCKET.upper(), BUCKET + "-old"]) | any_text)
        assume(other != BUCKET)
        return _wrap(
            ses_notification(f"ghost-{uuid.uuid4().hex}", bucket=other), draw(st.sampled_from(["bare", "sns"]))
        )
    document = _ghost()  # unknown notificationType (Bounce, Complaint, or anything)
    document["notificationType"] = draw(st.sampled_from(["Bounce", "Complaint", "Delivery", "received"]) | any_text)
    return _wrap(document, draw(st.sampled_from(["bare", "sns"])))


def _attrs(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


def _readable(reason: str) -> bool:
    return 0 < len(reason) <= MAX_REASON_CHARS and reason.isprintable()


# --- the parsers alone ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(document=json_values | mutated_notifications() | keys_outside_the_rules())
def test_parse_notification_accepts_or_says_why(document: Any) -> None:
    try:
        note = parse_notification(document, expected_bucket=BUCKET)
    except MalformedEventError as error:
        assert 0 < len(error.reason) <= MAX_PARSER_REASON
        return
    # Whatever passed is something the forwarder can act on.
    assert note.bucket == BUCKET
    assert note.key.startswith(names.INBOUND_PREFIX)
    assert len(note.key.encode("utf-8")) <= 1024
    assert isinstance(note.message_id, str) and note.message_id
    assert isinstance(note.timestamp, str)
    assert json.loads(note.to_json()) == json.loads(json.dumps(document))


@settings(max_examples=200, deadline=None)
@given(body=hostile_bodies() | st.text(sqs_chars))
def test_sqs_body_parsing_never_raises_anything_but_a_malformed_event(body: str) -> None:
    try:
        parse_notification(notification_from_sqs_body(body), expected_bucket=BUCKET)
    except MalformedEventError as error:
        assert 0 < len(error.reason) <= MAX_PARSER_REASON


@settings(max_examples=200, deadline=None)
@given(
    record=json_values
    | st.fixed_dictionaries({"messageId": json_values, "body": json_values, "attributes": json_values})
    | st.fixed_dictionaries(
        {"messageId": any_text, "body": any_text, "attributes": st.dictionaries(any_text, json_values)}
    )
)
def test_sqs_record_parsing_needs_a_message_id_and_a_body(record: Any) -> None:
    usable = (
        isinstance(record, dict) and isinstance(record.get("messageId"), str) and isinstance(record.get("body"), str)
    )
    if not usable:
        with pytest.raises(MalformedEventError):
            SqsRecord.from_event(record)
        return
    parsed = SqsRecord.from_event(record)
    assert (parsed.message_id, parsed.body) == (record["messageId"], record["body"])
    assert isinstance(parsed.receive_count, int)  # a junk count falls back to 1; it is only reported


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    """json.loads raises RecursionError (not ValueError) past ~1,000 levels; 256 KiB allow 128k."""
    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(MalformedEventError, match="nested too deeply"):
        notification_from_sqs_body(nested)
    with pytest.raises(MalformedEventError, match="nested too deeply"):
        notification_from_sqs_body(json.dumps({"Type": "Notification", "Message": nested}))
    with pytest.raises(MalformedEventError, match="nested too deeply"):
        parse_notification(nested)


def test_hostile_values_are_quoted_briefly() -> None:
    note = ses_notification("x")
    note["notificationType"] = "B" * 200_000
    with pytest.raises(MalformedEventError) as error:
        parse_notification(note)
    assert len(error.value.reason) < 200 and "200000 characters" in error.value.reason
    note["notificationType"] = [[["deep"]]]
    with pytest.raises(MalformedEventError, match=r"notificationType \(a JSON array\)"):
        parse_notification(note)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("inbound/" + "k" * 1100, "S3 keys are at most 1024"),
        ("inbound/\ud800", "not valid Unicode"),
        ("private/secret", "outside 'inbound/'"),
    ],
)
def test_object_keys_s3_or_iam_would_refuse_are_permanent(key: str, message: str) -> None:
    note = ses_notification("x")
    note["receipt"]["action"]["objectKey"] = key
    with pytest.raises(MalformedEventError, match=message):
        parse_notification(note, expected_bucket=BUCKET)


# --- the forwarder entry: the inbound SQS batch -----------------------------------------------------


@settings(SHARED_WORLD, max_examples=60)
@given(
    hostile=st.lists(hostile_bodies(), min_size=1, max_size=8),
    good_count=st.integers(0, 2),
    data=st.data(),
)
def test_bad_records_are_dead_lettered_and_good_ones_delivered(
    world: World, hostile: list[str], good_count: int, data: st.DataObject
) -> None:
    if world.forwarder is None:
        world.install_token()
        strict_sqs(world.cold_start()._clients.sqs)
    before = len(world.google.messages)
    goods = [f"good-{uuid.uuid4().hex}" for _ in range(good_count)]
    records = [sqs_record(body, f"bad-{i}") for i, body in enumerate(hostile)]
    for message_id in goods:
        position = data.draw(st.integers(0, len(records)))
        records.insert(position, sqs_record(sns_envelope(world.store_mail(message_id)), message_id))

    result = world.handle({"Records": records})

    assert result == {"batchItemFailures": []}
    imported = world.google.messages[before:]
    assert sorted(m.raw or b"" for m in imported) == sorted(raw_message(g) for g in goods)
    dead = world.drain(world.inbound_dlq_url)
    assert Counter(m["Body"] for m in dead) == Counter(hostile)  # unchanged, so a redrive replays them
    for message in dead:
        attributes = _attrs(message)
        assert attributes[names.ATTR_ERROR_TYPE] == "PermanentError"
        assert _readable(attributes[names.ATTR_ERROR]), attributes[names.ATTR_ERROR]
    assert world.drain(world.retry_queue_url) == []


@settings(SHARED_WORLD, max_examples=40)
@given(junk=st.lists(json_values, min_size=1, max_size=5))
def test_records_without_id_or_body_are_batch_item_failures_and_the_rest_delivered(
    world: World, junk: list[Any]
) -> None:
    assume(not any(isinstance(j, dict) and isinstance(j.get("messageId"), str) for j in junk))
    if world.forwarder is None:
        world.install_token()
    before = len(world.google.messages)
    good = f"good-{uuid.uuid4().hex}"
    records = [*junk, sqs_record(sns_envelope(world.store_mail(good)), good)]

    result = world.handle({"Records": records})

    # Reported by index: nothing else names them. (Lambda then retries the whole batch; see top.)
    assert result == {"batchItemFailures": [{"itemIdentifier": str(i)} for i in range(len(junk))]}
    assert [m.raw for m in world.google.messages[before:]] == [raw_message(good)]
    assert world.drain(world.inbound_dlq_url) == []


def test_record_with_an_id_but_no_usable_body_is_reported_by_its_id(world: World) -> None:
    world.install_token()
    good = world.store_mail("good")
    event = {
        "Records": [
            {"messageId": "no-body"},
            {"messageId": "number-body", "body": 42},
            {"messageId": 7, "body": "{}"},
            sqs_record(sns_envelope(good), "good"),
            "junk",
        ]
    }

    result = world.handle(event)

    assert result == {
        "batchItemFailures": [
            {"itemIdentifier": "no-body"},
            {"itemIdentifier": "number-body"},
            {"itemIdentifier": "2"},
            {"itemIdentifier": "4"},
        ]
    }
    assert [m.raw for m in world.google.messages] == [raw_message("good")]
    assert world.drain(world.inbound_dlq_url) == []  # nothing to dead-letter: SQS redrives them
    assert world.drain(world.retry_queue_url) == []


def test_hostile_ids_and_gmail_error_text_still_reach_a_strict_dlq(world: World) -> None:
    """A NUL in a hand-edited messageId or a control byte in Gmail's error page would make real
    SQS refuse the DLQ copy (InvalidParameterValue): the attributes are sanitised instead."""
    world.install_token()
    strict_sqs(world.cold_start()._clients.sqs)
    ghost = ses_notification("ghost\x00\x1b\ud800")
    ghost["receipt"]["action"]["objectKey"] = "inbound/ghost"
    world.store_mail("m1")
    world.google.fail_gmail(400, body=b"<html>\x00\x07 bad request \xff</html>")

    records = [sqs_record(json.dumps(ghost), "g"), sqs_record(sns_envelope(ses_notification("m1")), "m")]

    result = world.handle({"Records": records})

    assert result == {"batchItemFailures": []}
    dead = {m["Body"]: _attrs(m) for m in world.drain(world.inbound_dlq_url)}
    assert len(dead) == 2
    ghost_attrs = dead[json.dumps(ghost)]
    assert "NoSuchKey" in ghost_attrs[names.ATTR_ERROR]
    assert ghost_attrs["sesMessageId"] == "ghost\ufffd\ufffd\ufffd"
    [gmail_attrs] = [a for body, a in dead.items() if body != json.dumps(ghost)]
    assert "Gmail refused the message (400)" in gmail_attrs[names.ATTR_ERROR]
    assert "bad request" in gmail_attrs[names.ATTR_ERROR]


def test_unknown_event_shapes_raise_a_permanent_error(world: World) -> None:
    for event in (None, [], "text", 42, {"Records": "x"}, {"source": "someone-else"}):
        with pytest.raises(PermanentError, match="neither an SQS/SES batch"):
            world.handle(event)


def test_ses_lambda_action_records_that_are_malformed_go_to_the_dlq(world: World) -> None:
    world.install_token()
    good = world.store_mail("good")
    receipt = {k: v for k, v in good["receipt"].items() if k != "action"}
    records = [
        {"eventSource": "aws:ses", "ses": {"mail": good["mail"], "receipt": receipt}},
        {"eventSource": "aws:ses", "ses": {"mail": {"messageId": 5}, "receipt": {}}},
        {"eventSource": "aws:ses", "ses": "junk"},
        {"eventSource": "aws:ses"},
    ]

    assert world.handle({"Records": records}) == {"disposition": "CONTINUE"}

    assert [m.raw for m in world.google.messages] == [raw_message("good")]
    dead = world.drain(world.inbound_dlq_url)
    assert sorted(m["Body"] for m in dead) == sorted(json.dumps(r) for r in records[1:])
    assert all(_readable(_attrs(m)[names.ATTR_ERROR]) for m in dead)


# --- the retry-processor path --------------------------------------------------------------------------


def _retry(notification: Any) -> dict[str, Any]:
    return {"source": names.RETRY_PROCESSOR_SOURCE, "notification": notification}


@settings(SHARED_WORLD, max_examples=80)
@given(notification=hostile_bodies() | json_values | mutated_notifications())
def test_retry_invocation_raises_exactly_permanent_error_with_a_bounded_reason(world: World, notification: Any) -> None:
    """Nothing is stored in this world, so no notification can be deliverable."""
    if world.forwarder is None:
        world.install_token()
    with pytest.raises(PermanentError) as raised:
        world.handle(_retry(notification))
    assert type(raised.value) is PermanentError  # by name: what the state machine's Catch matches
    assert 0 < len(str(raised.value)) <= MAX_REASON_CHARS


def test_retry_path_reasons_are_bounded_even_when_gmail_rambles(world: World) -> None:
    """The reason becomes the execution's error Cause (Step Functions payloads: 256 KiB) and the
    retry DLQ's error attribute: a 300,000-character Gmail error message must not travel whole."""
    world.install_token()
    world.google.fail_gmail(400, body={"error": {"code": 400, "message": "x" * 300_000, "status": "INVALID_ARGUMENT"}})
    with pytest.raises(PermanentError) as raised:
        world.handle(_retry(world.store_mail("m1")))
    assert str(raised.value).startswith("Gmail refused the message (400): INVALID_ARGUMENT: xxx")
    assert len(str(raised.value)) == MAX_REASON_CHARS


def test_state_machine_moves_hostile_retry_messages_to_the_retry_dlq(drain: DrainWorld) -> None:
    drain.install_token()
    hostile = [
        "not json",
        "[" * 50_000 + "]" * 50_000,
        json.dumps({"notificationType": "Bounce", "mail": {}}),
        json.dumps({**ses_notification("x"), "notificationType": "N" * 100_000}),
        json.dumps(ses_notification("other-bucket", bucket="someone-elses-bucket")),
        json.dumps(_edit(ses_notification("no-action"), ("receipt", "action"), None, delete=True)),
        sns_envelope(ses_notification("ghost")),  # an SNS envelope is not what the retry queue holds
    ]
    for body in hostile:
        drain.sqs.send_message(QueueUrl=drain.retry_queue_url, MessageBody=body)
    for i in range(3):
        drain.park(f"m{i}")

    result = drain.run()

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"delivered": 3, "failed": len(hostile), "batches": 1, "reconciled": 0}
    assert sorted(m.raw or b"" for m in drain.google.messages) == sorted(raw_message(f"m{i}") for i in range(3))
    dead = drain.drain(drain.retry_dlq_url)
    assert sorted(m["Body"] for m in dead) == sorted(hostile)
    for message in dead:
        attributes = _attrs(message)
        assert attributes[names.ATTR_ERROR_TYPE] == "PermanentError", attributes
        assert attributes[names.ATTR_ERROR].startswith("PermanentError: ")
        assert len(attributes[names.ATTR_ERROR]) < 2 * MAX_REASON_CHARS
    assert drain.queue_depth(drain.retry_queue_url) == 0
