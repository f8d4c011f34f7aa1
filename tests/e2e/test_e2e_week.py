"""A week in the life: the whole Pulumi program deployed into moto, driven only through its edges.

Day 0 the operator installs a token and mail flows into Gmail. On day 1 Google revokes the
token; for six days mail keeps arriving and waits in the retry queue while the token monitor
counts down the stored expiry, until, a day before it, the expiring alarm's metric crosses its
threshold. The operator runs the refresh CLI with ``--wait``: the retry processor delivers the
backlog, and Gmail ends up holding every message exactly once, sorted by its Date header.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from sesmail import names
from sesmail.local.edges import Arrival, header, mailbox
from sesmail.local.world import ENV, System, assert_no_secret_anywhere, emf_counts, events, log_records
from sesmail.runtime.retry_processor import target_state

DAYS_OF_OUTAGE = 6
MESSAGES_PER_DAY = 5


def test_stack_outputs_are_moto_s_own_urls_and_arns(system: System) -> None:
    """The stack outputs are moto's URLs and ARNs, and the behaviour-carrying settings arrived."""
    sqs, outputs = system.client("sqs"), system.deployment.outputs
    for key, queue in (
        ("inboundQueueUrl", names.inbound_queue(ENV)),
        ("inboundDlqUrl", names.inbound_dlq(ENV)),
        ("retryQueueUrl", names.retry_queue(ENV)),
        ("retryDlqUrl", names.retry_dlq(ENV)),
    ):
        assert outputs[key] == sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        assert outputs[key].startswith(system.server.url)
    retry = sqs.get_queue_attributes(QueueUrl=outputs["retryQueueUrl"], AttributeNames=["All"])["Attributes"]
    assert int(retry["VisibilityTimeout"]) == names.RETRY_QUEUE_VISIBILITY_SECONDS
    assert int(retry["MessageRetentionPeriod"]) == names.RETRY_QUEUE_RETENTION_SECONDS
    redrive = json.loads(retry["RedrivePolicy"])
    dlq_arn = sqs.get_queue_attributes(QueueUrl=outputs["retryDlqUrl"], AttributeNames=["QueueArn"])["Attributes"]
    assert redrive == {
        "deadLetterTargetArn": dlq_arn["QueueArn"],
        "maxReceiveCount": names.RETRY_QUEUE_MAX_RECEIVE_COUNT,
    }

    machine = system.client("stepfunctions").describe_state_machine(stateMachineArn=outputs["stateMachineArn"])
    definition = json.loads(machine["definition"])
    target = definition["States"][target_state(names.DEFAULT_MAILBOX)]["Result"]  # what {"mailbox": "default"} drains
    assert (target["queueUrl"], target["dlqUrl"]) == (outputs["retryQueueUrl"], outputs["retryDlqUrl"])
    forwarder = system.client("lambda").get_function(FunctionName=outputs["forwarderFunctionName"])["Configuration"]
    deliver = definition["States"]["DeliverBatch"]["ItemProcessor"]["States"]["Deliver"]
    assert deliver["Parameters"]["FunctionName"] == forwarder["FunctionArn"]
    assert forwarder["Environment"]["Variables"][names.ENV_VAR_RETRY_QUEUE_URL] == outputs["retryQueueUrl"]
    assert system.client("s3").head_bucket(Bucket=outputs["emailBucket"])
    ssm = system.client("ssm")
    for key in ("clientCredentialsParameter", "refreshTokenParameter"):
        parameter = ssm.get_parameter(Name=outputs[key], WithDecryption=True)["Parameter"]
        assert parameter["Type"] == "SecureString" and names.is_placeholder(parameter["Value"])
    # The subscription delivers SNS envelopes (not raw) into the inbound queue.
    [subscription] = [
        s
        for s in system.client("sns").list_subscriptions()["Subscriptions"]
        if s["Protocol"] == "sqs" and s["Endpoint"].endswith(f":{names.inbound_queue(ENV)}")
    ]
    attributes = system.client("sns").get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])
    assert attributes["Attributes"]["RawMessageDelivery"] == "false"


@pytest.mark.slow
def test_a_week_in_the_life(system: System, capfd: pytest.CaptureFixture[str]) -> None:
    google = system.google
    bucket = system.output("emailBucket")
    retry_url, retry_dlq_url = system.output("retryQueueUrl"), system.output("retryDlqUrl")
    inbound_url, inbound_dlq_url = system.output("inboundQueueUrl"), system.output("inboundDlqUrl")

    # --- Day 0. Deployed, no token yet: the monitor says so, and the alarm fires. --------------------
    monitor, alarm = system.run_token_monitor()
    assert monitor["hoursLeft"] == 0 and monitor["error"] and alarm.breaching

    # The operator uploads the OAuth client and consents in the browser.
    first = system.refresh("--client-secret", str(system.client_secret_file), "--no-retry")
    assert first.returncode == 0, first.stderr
    [token] = google.issued_refresh_tokens()
    parameter = system.client("ssm").get_parameter(Name=system.output("refreshTokenParameter"), WithDecryption=True)
    stored = json.loads(parameter["Parameter"]["Value"])
    assert stored["token"] == token
    # The week counts from the moment the token was issued (the CLI runs on the real clock).
    system.clock.restart(datetime.fromisoformat(stored["created_at"]))
    monitor, alarm = system.run_token_monitor()
    assert (monitor["error"], monitor["hoursLeft"], alarm.breaching) == (None, 168, False)

    sent: list[Arrival] = []
    for i in range(3):
        system.clock.set(minutes=10 * (i + 1))
        sent.append(system.ses.receive(f"m{i:02d}"))
    poll = system.inbound.poll()
    # SES's "topic subscribed" notice and the three messages, in one batch; nothing failed.
    assert (poll.records, poll.item_failures, poll.function_errors) == (4, [], [])
    assert len(google.messages) == 3

    # --- Day 1: the token is revoked. Mail keeps arriving for six days and waits. -----------------------
    google.revoke(token)
    countdown = []
    for day in range(1, DAYS_OF_OUTAGE + 1):
        system.clock.set(days=day)
        monitor, alarm = system.run_token_monitor()
        countdown.append((day, monitor["hoursLeft"], alarm.breaching))
        for n in range(MESSAGES_PER_DAY):
            system.clock.set(days=day, hours=8 + 2 * n)
            sent.append(system.ses.receive(f"m{len(sent):02d}"))
        poll = system.inbound.poll()
        assert (poll.records, poll.item_failures, poll.function_errors) == (MESSAGES_PER_DAY, [], [])
    assert len(google.messages) == 3, "nothing reaches Gmail with a revoked token"
    assert (system.depth(inbound_url), system.depth(retry_url)) == (0, 30)
    # The monitor knows only the stored expiry: quiet while a day or more is left (24 h is not
    # "less than 24") ...
    assert countdown == [(d, 168 - 24 * d, False) for d in range(1, DAYS_OF_OUTAGE + 1)]
    # ... and an hour later the expiring alarm's metric crosses its threshold.
    system.clock.set(days=DAYS_OF_OUTAGE, hours=1)
    monitor, alarm = system.run_token_monitor()
    assert (monitor["hoursLeft"], alarm.value, alarm.breaching) == (23, 23, True)

    # Each parked message carries what the runbook needs (DESIGN.md, failure classes).
    parked = system.read_queue(retry_url, put_back=True)
    assert sorted(json.loads(m["Body"])["mail"]["messageId"] for m in parked) == sorted(a.message_id for a in sent[3:])
    for message in parked:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        note = json.loads(message["Body"])
        assert attributes[names.ATTR_ERROR_TYPE] == "TokenExpiredError"
        assert attributes[names.ATTR_ORIGINAL_TIMESTAMP] == note["mail"]["timestamp"]
        assert attributes[names.ATTR_ATTEMPT_COUNT] == "1"
        assert attributes[names.ATTR_ORIGINAL_REQUEST_ID]

    # --- The operator renews the token and waits for the backlog. --------------------------------------
    since = system.fresh_metric_window()
    second = system.refresh("--wait")
    assert second.returncode == 0, second.stderr
    assert "0 delivered from the bucket, 30 from the retry queue, 0 moved to the retry DLQ" in second.stdout
    [execution] = system.executions()
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"]) == {"delivered": 30, "failed": 0, "batches": 3, "reconciled": 0}
    assert system.metric_sum(names.METRIC_RETRY_DELIVERED) == 30
    assert system.metric_sum(names.METRIC_RETRY_COMPLETED) == 1
    assert system.interpreter_sleeps == [], "no Step Functions retry was needed"
    # The CLI published the new token's hours at once (it runs on the real clock: a week ahead) ...
    renewed = system.expiring_alarm().reading(since)
    assert renewed.value is not None and renewed.value > 24 * 6.9 and not renewed.breaching
    # ... but the alarm's statistic is the *minimum* over an hour, and that hour still holds the
    # monitor's last reading: the alarm clears when the low value leaves its period (within the
    # hour), not at the moment of the renewal.
    assert system.expiring_alarm().reading(system.last_monitor_window) == alarm

    # --- Gmail holds every message exactly once, in Date order; nothing is left anywhere. ---------------
    imported = google.messages
    assert len(imported) == 33
    assert sorted(m.raw or b"" for m in imported) == sorted(a.raw for a in sent)
    assert [header(m, "Message-ID") for m in mailbox(imported)] == [f"<{a.message_id}@mail.example.org>" for a in sent]
    assert {m.params.get("internalDateSource") for m in imported} == {"dateHeader"}
    assert all(m.label_ids == ["INBOX", "UNREAD"] for m in imported)
    gmail_ids = {m.id for m in imported}
    assert {system.delivered_gmail_id(bucket, a.message_id) for a in sent} == gmail_ids
    for url in (retry_url, retry_dlq_url, inbound_url, inbound_dlq_url):
        assert system.depth(url) == 0, url

    # Warm containers reuse their access token: a handful of mints, not one per message (the
    # monitor's attempts with the dead token are counted below, from its log lines).
    mints = [r for r in google.token_requests if r.get("grant_type") == "refresh_token"]
    assert [r["action"] for r in system.audit_records()] == [names.AUDIT_ACTION_TOKEN_RENEWED] * 2

    # --- The logs tell the story, and no secret is in them (or anywhere else). -------------------------
    out, err = capfd.readouterr()
    records = log_records(out)
    assert len(events(records, "delivery.parked")) == 30
    assert len(events(records, "delivery.imported")) == 33
    assert len(events(records, "delivery.ignored")) == 1
    assert all(r.get("env") == ENV and r.get("requestId") and r.get("level") for r in records)
    metrics = emf_counts(out)
    assert (metrics[names.METRIC_FORWARDED], metrics[names.METRIC_PARKED]) == (33, 30)
    assert metrics[names.METRIC_FAILED] == 0
    # The monitor tried the dead token once per run that found mail parked, and started nothing:
    # the only execution is the one the renewal started.
    decisions = [r["reason"] for r in events(records, names.EVENT_RETRY_AUTOSTART_SKIPPED)]
    assert decisions == ["queue-empty"] * 3 + ["token-dead"] * DAYS_OF_OUTAGE
    assert events(records, names.EVENT_RETRY_AUTOSTART) == events(records, names.EVENT_RETRY_AUTOSTART_FAILED) == []
    assert len(mints) - decisions.count("token-dead") < 12, len(mints)
    assert_no_secret_anywhere(
        system,
        {
            "handlers' stdout": out,
            "handlers' stderr": err,
            **{f"CLI run {i} output": r.stdout + r.stderr for i, r in enumerate(system.cli.results)},
        },
    )
