"""The forwarder end to end: moto's S3/SSM/SQS, the fake Google over real HTTP, all three event shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sesmail import names
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.errors import PermanentError, TokenExpiredError, TransientError
from sesmail.runtime.events import SETUP_NOTIFICATION_ID
from sesmail.runtime.forwarder import Forwarder
from tests.conftest import BUCKET, FakeContext, World, raw_message, ses_notification, sns_envelope, sqs_record


def _attrs(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


def test_happy_path_imports_exact_bytes_with_labels_and_params(world: World) -> None:
    world.install_token()
    raw = raw_message("m1", body=b"caf\xe9 8-bit\nbare LF line\r\nCRLF line\r\n")
    note = world.store_mail("m1", raw)

    result = world.handle(world.sqs_event(note))

    assert result == {"batchItemFailures": []}
    [imported] = world.google.messages
    assert imported.raw == raw
    assert imported.label_ids == ["INBOX", "UNREAD"]
    assert imported.params["uploadType"] == "multipart"
    assert imported.params["internalDateSource"] == "dateHeader"
    claim = world.claim("m1")
    assert claim is not None and claim["state"] == "delivered" and claim["gmailMessageId"] == imported.id
    assert claim["holder"] == "req-0001"  # the Lambda request id of the invocation that imported it
    # The mail object itself is only read: no tag, nothing written to it.
    assert world.s3.get_object_tagging(Bucket=BUCKET, Key="inbound/m1")["TagSet"] == []
    assert world.drain(world.retry_queue_url) == []
    assert world.drain(world.inbound_dlq_url) == []


def test_extra_labels_are_added(world: World) -> None:
    world.install_token()
    extra = (world.google.add_label("Receipts"), world.google.add_label("Family/School"))  # Gmail knows them
    world.cold_start(extra_labels=extra)
    world.handle(world.sqs_event(world.store_mail("m1")))
    assert world.google.messages[0].label_ids == ["INBOX", "UNREAD", *extra]


@pytest.mark.parametrize(("spam", "virus"), [("FAIL", "PASS"), ("PASS", "FAIL")])
def test_spam_or_virus_verdict_fail_lands_in_spam(world: World, spam: str, virus: str) -> None:
    world.install_token()
    world.handle(world.sqs_event(world.store_mail("m1", spam=spam, virus=virus)))
    assert world.google.messages[0].label_ids == ["SPAM"]


def test_bare_ses_notification_is_accepted_for_raw_delivery(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    result = world.handle({"Records": [sqs_record(json.dumps(note), "sqs-0")]})
    assert result == {"batchItemFailures": []}
    assert len(world.google.messages) == 1


def test_access_token_is_minted_once_for_many_messages(world: World) -> None:
    world.install_token()
    for batch in range(3):
        notes = [world.store_mail(f"m{batch}-{i}") for i in range(10)]
        assert world.handle(world.sqs_event(*notes)) == {"batchItemFailures": []}
    assert len(world.google.messages) == 30
    grants = [r for r in world.google.token_requests if r["grant_type"] == "refresh_token"]
    assert len(grants) == 1


def test_revoked_token_parks_mail_in_retry_queue_and_acknowledges(world: World) -> None:
    token = world.install_token()
    world.google.revoke(token)
    notes = [world.store_mail("m1"), world.store_mail("m2")]

    result = world.handle(world.sqs_event(*notes), FakeContext(request_id="req-42"))

    assert result == {"batchItemFailures": []}
    assert world.google.messages == []
    parked = world.drain(world.retry_queue_url)
    assert sorted(json.loads(m["Body"])["mail"]["messageId"] for m in parked) == ["m1", "m2"]
    attrs = _attrs(parked[0])
    assert attrs[names.ATTR_ERROR_TYPE] == "TokenExpiredError"
    assert attrs[names.ATTR_ORIGINAL_TIMESTAMP] == "2026-11-23T10:00:01.000Z"
    assert attrs[names.ATTR_ATTEMPT_COUNT] == "1"
    assert attrs[names.ATTR_ORIGINAL_REQUEST_ID] == "req-42"
    assert "invalid_grant" in attrs[names.ATTR_ERROR]
    # The body is the SES notification itself, ready for the retry processor.
    assert json.loads(parked[0]["Body"])["receipt"]["action"]["type"] == "S3"


def test_dead_token_is_not_retried_against_google_for_every_message(world: World) -> None:
    token = world.install_token()
    world.google.revoke(token)
    world.handle(world.sqs_event(*[world.store_mail(f"m{i}") for i in range(5)]))
    grants = [r for r in world.google.token_requests if r["grant_type"] == "refresh_token"]
    # One try; the SSM re-read finds the same token, and the other four only re-check SSM.
    assert len(grants) == 1
    assert len(world.drain(world.retry_queue_url)) == 5


def test_placeholder_parameters_park_mail_with_the_fix(world: World) -> None:
    for name in (names.client_credentials_parameter("test"), names.refresh_token_parameter("test")):
        world.ssm.put_parameter(Name=name, Value=names.placeholder_value("test"), Type="SecureString")
    world.handle(world.sqs_event(world.store_mail("m1")))
    [parked] = world.drain(world.retry_queue_url)
    assert "python -m sesmail.refresh --env test" in _attrs(parked)[names.ATTR_ERROR]


def test_missing_parameters_park_mail(world: World) -> None:
    assert world.handle(world.sqs_event(world.store_mail("m1"))) == {"batchItemFailures": []}
    assert len(world.drain(world.retry_queue_url)) == 1


def test_renewal_while_warm_is_picked_up_by_the_reread(world: World) -> None:
    old = world.install_token()
    world.handle(world.sqs_event(world.store_mail("m1")))  # warm: access token cached
    world.google.revoke(old)  # revocation also kills the cached access token
    new = world.install_token()  # the operator ran the refresh CLI

    result = world.handle(world.sqs_event(world.store_mail("m2")))

    assert result == {"batchItemFailures": []}
    assert [m.raw for m in world.google.messages] == [raw_message("m1"), raw_message("m2")]
    grants = [r["refresh_token"] for r in world.google.token_requests if r["grant_type"] == "refresh_token"]
    assert grants == [old, old, new]
    assert world.drain(world.retry_queue_url) == []


def test_renewal_after_token_was_known_dead(world: World) -> None:
    old = world.install_token()
    world.google.revoke(old)
    world.handle(world.sqs_event(world.store_mail("m1")))  # parked, container remembers "dead"
    world.install_token()
    world.handle(world.sqs_event(world.store_mail("m2")))
    assert len(world.google.messages) == 1
    assert len(world.drain(world.retry_queue_url)) == 1


def test_refresh_token_is_never_written_by_the_forwarder(world: World) -> None:
    token = world.install_token()
    before = world.ssm.get_parameter(Name=names.refresh_token_parameter("test"), WithDecryption=True)["Parameter"]
    world.google.revoke(token)
    world.handle(world.sqs_event(world.store_mail("m1")))
    after = world.ssm.get_parameter(Name=names.refresh_token_parameter("test"), WithDecryption=True)["Parameter"]
    assert after["Version"] == before["Version"] and after["Value"] == before["Value"]


def test_429_and_503_then_success_imports_once_honouring_retry_after(world: World) -> None:
    world.install_token()
    world.google.fail_gmail(429, headers={"Retry-After": "7"})
    world.google.fail_gmail(503)

    result = world.handle(world.sqs_event(world.store_mail("m1")))

    assert result == {"batchItemFailures": []}
    assert len(world.google.messages) == 1
    assert world.sleeps == [7.0, 2.0]


def test_persistent_503_becomes_a_batch_item_failure_not_a_loss(world: World) -> None:
    world.install_token()
    world.google.fail_gmail(503, times=2 * names.INPROCESS_MAX_ATTEMPTS)
    notes = [world.store_mail("m1"), world.store_mail("m2")]

    result = world.handle(world.sqs_event(*notes))

    assert result == {"batchItemFailures": [{"itemIdentifier": "sqs-0"}, {"itemIdentifier": "sqs-1"}]}
    assert world.google.import_requests == 2 * names.INPROCESS_MAX_ATTEMPTS
    assert world.drain(world.inbound_dlq_url) == []
    assert world.drain(world.retry_queue_url) == []


def test_in_process_retries_respect_the_remaining_time(world: World) -> None:
    world.install_token()
    world.google.fail_gmail(503, headers={"Retry-After": "5"}, times=3)
    # 12 s left and 10 s are kept in reserve: no time to wait 5 s.
    result = world.handle(world.sqs_event(world.store_mail("m1")), FakeContext(remaining_seconds=12))
    assert result == {"batchItemFailures": [{"itemIdentifier": "sqs-0"}]}
    assert world.sleeps == []


def test_missing_s3_object_goes_to_the_inbound_dlq_with_its_reason(world: World) -> None:
    world.install_token()
    note = ses_notification("gone")  # never stored
    event = world.sqs_event(note)

    result = world.handle(event)

    assert result == {"batchItemFailures": []}
    [dead] = world.drain(world.inbound_dlq_url)
    assert dead["Body"] == event["Records"][0]["body"]  # unchanged, so a redrive replays it
    assert "NoSuchKey" in _attrs(dead)[names.ATTR_ERROR]
    assert _attrs(dead)[names.ATTR_ERROR_TYPE] == "PermanentError"
    assert world.google.messages == []


def test_gmail_400_is_permanent(world: World) -> None:
    world.install_token()
    world.google.fail_gmail(
        400, body={"error": {"code": 400, "message": "Invalid message", "status": "INVALID_ARGUMENT"}}
    )
    assert world.handle(world.sqs_event(world.store_mail("m1"))) == {"batchItemFailures": []}
    [dead] = world.drain(world.inbound_dlq_url)
    assert "Invalid message" in _attrs(dead)[names.ATTR_ERROR]


def test_same_notification_twice_imports_once(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    world.handle(world.sqs_event(note))
    world.cold_start()  # even another container sees the S3 tag
    assert world.handle(world.sqs_event(note)) == {"batchItemFailures": []}
    assert len(world.google.messages) == 1


def test_failing_sqs_send_while_token_dead_is_a_batch_item_failure(world: World) -> None:
    token = world.install_token()
    world.google.revoke(token)
    world.cold_start(retry_queue_url=world.retry_queue_url + "-does-not-exist")
    result = world.handle(world.sqs_event(world.store_mail("m1")))
    assert result == {"batchItemFailures": [{"itemIdentifier": "sqs-0"}]}


def test_failing_dlq_send_keeps_the_record(world: World) -> None:
    world.install_token()
    world.cold_start(inbound_dlq_url=world.inbound_dlq_url + "-does-not-exist")
    result = world.handle(world.sqs_event(ses_notification("gone")))
    assert result == {"batchItemFailures": [{"itemIdentifier": "sqs-0"}]}


MALFORMED_BODIES = [
    "not json",
    "[1, 2, 3]",
    json.dumps({"Type": "Notification", "Message": "{truncated"}),
    json.dumps({"notificationType": "Bounce"}),
    json.dumps({"notificationType": "Received", "mail": {"messageId": "x"}}),
    json.dumps({"notificationType": "Received", "mail": {"messageId": "x"}, "receipt": {"recipients": []}}),
    json.dumps(ses_notification("x", bucket="someone-elses-bucket")),
]


def test_malformed_records_are_dead_lettered_and_the_rest_of_the_batch_delivered(world: World) -> None:
    world.install_token()
    good = world.store_mail("good")
    records = [sqs_record(body, f"bad-{i}") for i, body in enumerate(MALFORMED_BODIES)]
    records.insert(3, sqs_record(sns_envelope(good), "good"))

    result = world.handle({"Records": records})

    assert result == {"batchItemFailures": []}
    assert [m.raw for m in world.google.messages] == [raw_message("good")]
    dead = world.drain(world.inbound_dlq_url)
    assert sorted(m["Body"] for m in dead) == sorted(MALFORMED_BODIES)
    assert all(_attrs(m)[names.ATTR_ERROR] for m in dead)


def test_record_without_message_id_or_body_is_a_failure_not_a_crash(world: World) -> None:
    world.install_token()
    good = world.store_mail("good")
    event = {"Records": ["junk", {"messageId": "no-body"}, sqs_record(sns_envelope(good), "good")]}
    result = world.handle(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": "0"}, {"itemIdentifier": "no-body"}]}
    assert len(world.google.messages) == 1


def test_subscription_notice_is_acknowledged_without_delivery(world: World) -> None:
    body = json.dumps({"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"})
    assert world.handle({"Records": [sqs_record(body, "n")]}) == {"batchItemFailures": []}
    assert world.drain(world.inbound_dlq_url) == []


def _setup_notification(world: World) -> dict[str, Any]:
    """What SES writes and announces when the receipt rule with the S3 action is created."""
    return world.store_mail(SETUP_NOTIFICATION_ID, raw=b"This is a test message from Amazon SES.\r\n")


def test_ses_setup_notification_is_acknowledged_never_parked_imported_or_dead_lettered(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Created with the receipt rule, before any token exists: it must not fire the retry alarm."""
    result = world.handle(world.sqs_event(_setup_notification(world)))  # no token installed yet

    assert result == {"batchItemFailures": []}
    assert world.drain(world.retry_queue_url) == []
    assert world.drain(world.inbound_dlq_url) == []
    assert world.google.import_requests == 0
    ignored = [r for r in caplog.records if getattr(r, "event", None) == "delivery.ignored"]
    assert [(r.levelname, r.reason) for r in ignored] == [  # type: ignore[attr-defined]
        ("INFO", "SES setup notification (SES tested its write access when the receipt rule was created)")
    ]


def test_ses_setup_notification_from_the_lambda_action_or_the_retry_processor_is_dropped(world: World) -> None:
    note = _setup_notification(world)
    assert world.handle(_ses_event(note)) == {"disposition": "CONTINUE"}
    # One parked by an earlier release: the processor is told to delete it, uncounted.
    retry = {"source": names.RETRY_PROCESSOR_SOURCE, "notification": json.dumps(note)}
    assert world.handle(retry) == {"status": names.RETRY_STATUS_IGNORED}
    assert world.drain(world.retry_queue_url) == world.drain(world.inbound_dlq_url) == []
    assert world.google.import_requests == 0


def test_unknown_event_shape_raises_a_clear_error(world: World) -> None:
    with pytest.raises(PermanentError, match="neither an SQS/SES batch nor a retry-processor"):
        world.handle({"hello": "world"})


# --- SES Lambda-action events ---------------------------------------------------------------------


def _ses_event(note: dict[str, Any]) -> dict[str, Any]:
    receipt = {k: v for k, v in note["receipt"].items() if k != "action"}
    receipt["action"] = {
        "type": "Lambda",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f",
        "invocationType": "Event",
    }
    return {
        "Records": [
            {"eventSource": "aws:ses", "eventVersion": "1.0", "ses": {"mail": note["mail"], "receipt": receipt}}
        ]
    }


def test_ses_lambda_action_event_is_delivered(world: World) -> None:
    world.install_token()
    result = world.handle(_ses_event(world.store_mail("m1", spam="FAIL")))
    assert result == {"disposition": "CONTINUE"}
    assert world.google.messages[0].label_ids == ["SPAM"]


def test_ses_lambda_action_parks_transient_failures(world: World) -> None:
    world.install_token()
    world.google.fail_gmail(503, times=5)
    assert world.handle(_ses_event(world.store_mail("m1"))) == {"disposition": "CONTINUE"}
    [parked] = world.drain(world.retry_queue_url)
    assert _attrs(parked)[names.ATTR_ERROR_TYPE] == "TransientError"
    assert json.loads(parked["Body"])["receipt"]["action"]["objectKey"] == "inbound/m1"


# --- retry-processor invocations --------------------------------------------------------------------


def _retry_event(note: dict[str, Any] | str) -> dict[str, Any]:
    return {"source": names.RETRY_PROCESSOR_SOURCE, "notification": note}


def test_retry_invocation_delivers_then_reports_already_delivered(world: World) -> None:
    world.install_token()
    note = world.store_mail("m1")
    first = world.handle(_retry_event(note))
    second = world.handle(_retry_event(json.dumps(note)))  # the queue body as a string works too
    assert first == {"status": "delivered", "gmailMessageId": world.google.messages[0].id}
    assert second == {"status": "already-delivered", "gmailMessageId": world.google.messages[0].id}
    assert len(world.google.messages) == 1


def test_retry_invocation_raises_the_contract_classes_by_name(world: World) -> None:
    token = world.install_token()
    with pytest.raises(PermanentError) as permanent:
        world.handle(_retry_event(ses_notification("gone")))
    assert type(permanent.value) is PermanentError

    world.google.fail_gmail(503, times=5)
    with pytest.raises(TransientError) as transient:
        world.handle(_retry_event(world.store_mail("m1")))
    assert type(transient.value) is TransientError

    world.google.revoke(token)
    world.cold_start()
    with pytest.raises(TokenExpiredError) as dead:
        world.handle(_retry_event(world.store_mail("m2")))
    assert type(dead.value) is TokenExpiredError  # not a subclass: Step Functions matches the name


def test_retry_invocation_with_placeholder_token_raises_token_expired_by_name(world: World) -> None:
    with pytest.raises(TokenExpiredError) as dead:
        world.handle(_retry_event(world.store_mail("m1")))
    assert type(dead.value) is TokenExpiredError


def test_gmail_401_on_cached_token_retries_with_a_fresh_one(world: World) -> None:
    world.install_token()
    world.handle(world.sqs_event(world.store_mail("m1")))
    world.google.expire_access_tokens()
    world.handle(world.sqs_event(world.store_mail("m2")))
    assert len(world.google.messages) == 2
    assert world.drain(world.retry_queue_url) == []


def test_claim_completion_failure_after_import_still_counts_as_delivered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.install_token()
    forwarder = world.cold_start()
    s3 = forwarder._clients.s3
    real_put_object = s3.put_object

    def refuse_completion(**kwargs: Any) -> Any:
        if "IfMatch" in kwargs:  # the create (IfNoneMatch) goes through, the completion does not
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "PutObject")
        return real_put_object(**kwargs)

    monkeypatch.setattr(s3, "put_object", refuse_completion)
    assert world.handle(world.sqs_event(world.store_mail("m1"))) == {"batchItemFailures": []}
    assert len(world.google.messages) == 1
    claim = world.claim("m1")
    assert claim is not None and claim["state"] == "claimed"  # what the lease then protects


def test_no_secret_appears_in_logs(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    token = world.install_token()
    world.handle(world.sqs_event(world.store_mail("m1")))
    world.google.revoke(token)
    world.google.expire_access_tokens()
    world.handle(world.sqs_event(world.store_mail("m2")))
    out = capsys.readouterr().out
    secrets = [token, world.google.client_secret, *world.google.issued_access_tokens()]
    assert out.strip(), "the forwarder logged nothing"
    for line in out.strip().splitlines():
        json.loads(line)  # every line is one JSON object
    for secret in secrets:
        assert secret not in out


def test_retry_failures_are_logged_with_the_message_id(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TokenExpiredError):
        world.handle(_retry_event(world.store_mail("m7")))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"timestamp"')]
    [failure] = [line for line in lines if line.get("event") == "retry.failed"]
    assert failure["messageId"] == "m7"
    assert failure["failureClass"] == "TokenExpiredError"


def test_records_left_when_time_runs_out_go_back_to_sqs_unprocessed(world: World) -> None:
    """Starting a record past the deadline risks a timeout that fails (and re-parks) the whole batch."""
    world.install_token()
    now = [0.0]
    forwarder = Forwarder(world.settings(), AwsClients(), sleep=world.sleeps.append, clock=lambda: now[0])
    world.forwarder = forwarder
    handle_one = forwarder._handle_sqs_record

    def slow_record(raw_record: Any, invocation: Any) -> bool:
        handled = handle_one(raw_record, invocation)
        now[0] += 200.0  # this record used up the invocation
        return handled

    forwarder._handle_sqs_record = slow_record  # type: ignore[method-assign]
    notes = [world.store_mail(f"m{i}") for i in range(4)]

    result = world.handle(world.sqs_event(*notes), FakeContext(remaining_seconds=120))

    assert [m.raw for m in world.google.messages] == [raw_message("m0")]
    assert result == {"batchItemFailures": [{"itemIdentifier": f"sqs-{i}"} for i in (1, 2, 3)]}
    assert world.drain(world.retry_queue_url) == []


def test_a_dead_token_publishes_zero_hours_left(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A token revoked before its stored expiry is invisible to the monitor; the forwarder tells the alarms."""
    token = world.install_token()
    world.handle(world.sqs_event(world.store_mail("m1")))
    assert names.METRIC_TOKEN_HOURS not in capsys.readouterr().out  # healthy: the monitor's job
    world.google.revoke(token)
    world.handle(world.sqs_event(world.store_mail("m2")))
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [gauge] = [d for d in documents if names.METRIC_TOKEN_HOURS in d]
    assert gauge[names.METRIC_TOKEN_HOURS] == 0
    [metric] = gauge["_aws"]["CloudWatchMetrics"]
    assert metric["Namespace"] == "SESMail/test"
    assert metric["Metrics"] == [{"Name": names.METRIC_TOKEN_HOURS, "Unit": names.METRIC_TOKEN_HOURS_UNIT}]
