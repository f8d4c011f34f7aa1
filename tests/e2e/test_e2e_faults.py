"""Faults end to end: nothing deliverable is lost or doubled, and nothing undeliverable disappears.

Mail arrives before the operator ever installed a token (the parameters still hold Pulumi's
placeholder), so it waits in the retry queue; one notification on the topic is malformed; one
waiting message loses its raw copy in S3. Then the operator's first renewal drains the queue while
Gmail answers with bursts of 503s and 429s. Afterwards SNS redelivers an old notification, and a
new message arrives during another 503 burst.
"""

from __future__ import annotations

import json

import pytest

from sesmail import names
from sesmail.local.edges import Arrival
from sesmail.local.world import ENV, System, assert_no_secret_anywhere, emf_counts, events, log_records

WAITING = 12


@pytest.mark.slow
def test_faults_lose_nothing_and_double_nothing(system: System, capfd: pytest.CaptureFixture[str]) -> None:
    google, s3 = system.google, system.client("s3")
    retry_url, retry_dlq_url = system.output("retryQueueUrl"), system.output("retryDlqUrl")
    inbound_url, inbound_dlq_url = system.output("inboundQueueUrl"), system.output("inboundDlqUrl")

    # --- Before the first renewal: mail waits; a malformed notification goes straight to the DLQ. -------
    sent: list[Arrival] = []
    for i in range(WAITING):
        system.clock.set(hours=i)
        sent.append(system.ses.receive(f"f{i:02d}"))
    broken = {"notificationType": "Received", "mail": {"messageId": "broken-0001", "timestamp": "2026-11-24T00:00:00Z"}}
    system.ses.publish("bob@example.com", json.dumps(broken))
    poll = system.inbound.poll()
    assert (poll.records, poll.item_failures, poll.function_errors) == (WAITING + 2, [], [])
    assert (system.depth(inbound_url), system.depth(retry_url), system.depth(inbound_dlq_url)) == (0, WAITING, 1)
    assert google.token_requests == [], "nothing to mint with: the token is Pulumi's placeholder"
    for message in system.read_queue(retry_url, put_back=True):
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes[names.ATTR_ERROR_TYPE] == "TokenExpiredError"
        assert "python -m sesmail.refresh --env test" in attributes[names.ATTR_ERROR]  # the fix, on the message

    # The raw copy of one waiting message disappears (an operator cleaned up the bucket by hand).
    lost = sent[5]
    s3.delete_object(Bucket=lost.bucket, Key=lost.key)

    # --- Gmail misbehaves during the drain. ---------------------------------------------------------------
    google.fail_gmail(503, times=2)  # the drain's first imports
    google.burst_after(4, 429, times=5, headers={"Retry-After": "1"})  # quota, mid-drain
    google.burst_after(8, 500, times=2)

    renewal = system.refresh("--client-secret", str(system.client_secret_file), "--wait")
    assert renewal.returncode == 0, renewal.stderr
    assert f"{WAITING - 1} from the retry queue, 1 moved to the retry DLQ" in renewal.stdout
    assert google.bursts_started == [4, 8]
    # Five 429s in a row outlast any invocation's in-process attempts, so Step Functions retried too.
    assert names.RETRY_INITIAL_BACKOFF_SECONDS in system.interpreter_sleeps
    assert set(system.interpreter_sleeps) <= {30, 60, 120}
    [execution] = system.executions()
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["failed"] == 1

    # --- Everything deliverable is in Gmail once; the two bad ones wait in the right DLQs. --------------
    delivered = [a for a in sent if a is not lost]
    assert sorted(m.raw or b"" for m in google.messages) == sorted(a.raw for a in delivered)
    assert google.import_requests == len(delivered) + 2 + 5 + 2  # every failure was retried, nothing else
    for arrival in delivered:
        assert system.delivered_gmail_id(arrival.bucket, arrival.message_id) is not None

    [dead_retry] = system.read_queue(retry_dlq_url)
    assert json.loads(dead_retry["Body"])["mail"]["messageId"] == lost.message_id
    reason = {k: v["StringValue"] for k, v in dead_retry["MessageAttributes"].items()}
    assert reason[names.ATTR_ERROR_TYPE] == "PermanentError"
    assert "NoSuchKey" in reason[names.ATTR_ERROR]

    [dead_inbound] = system.read_queue(inbound_dlq_url)
    envelope = json.loads(dead_inbound["Body"])  # the SQS body as it arrived: the SNS envelope
    assert json.loads(envelope["Message"]) == broken
    reason = {k: v["StringValue"] for k, v in dead_inbound["MessageAttributes"].items()}
    assert reason[names.ATTR_ERROR_TYPE] == "PermanentError"
    assert "receipt" in reason[names.ATTR_ERROR]

    # --- Afterwards: SNS delivers an old notification again; new mail meets a Gmail outage. -------------
    system.ses.publish("bob@example.com", json.dumps(sent[0].notification))
    poll = system.inbound.poll()
    assert (poll.records, poll.item_failures) == (1, [])
    assert len(google.messages) == len(delivered), "already imported: not imported again"

    google.fail_gmail(503, times=names.INPROCESS_MAX_ATTEMPTS)  # outlasts one invocation's own retries
    late = system.ses.receive("late")
    poll = system.inbound.poll()
    assert poll.invocations == 2 and len(poll.item_failures) == 1, "SQS redelivered the failed record"
    assert late.raw in {m.raw for m in google.messages}
    assert len(google.messages) == len(delivered) + 1

    for url in (retry_url, inbound_url):
        assert system.depth(url) == 0, url
    # Still just the two bad ones (in flight since they were read above), nothing else.
    assert system.depth(retry_dlq_url) == 1 and system.depth(inbound_dlq_url) == 1

    out, err = capfd.readouterr()
    records = log_records(out)
    assert events(records, "delivery.dead_lettered")[0]["reason"] == reason[names.ATTR_ERROR]
    assert len(events(records, "delivery.duplicate")) == 1
    assert events(records, "delivery.retry"), "Gmail's failures were retried in-process"
    assert all(r.get("env") == ENV for r in records)
    metrics = emf_counts(out)
    assert (metrics[names.METRIC_FORWARDED], metrics[names.METRIC_PARKED]) == (len(delivered) + 1, WAITING)
    assert metrics[names.METRIC_ALREADY_DELIVERED] == 1
    assert_no_secret_anywhere(
        system,
        {
            "handlers' stdout": out,
            "handlers' stderr": err,
            "renewal output": renewal.stdout + renewal.stderr,
            "inbound DLQ": json.dumps(dead_inbound),
            "retry DLQ": json.dumps(dead_retry),
        },
    )
