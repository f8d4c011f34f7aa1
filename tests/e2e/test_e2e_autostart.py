"""Nothing waits forever: mail parked by Gmail's quota reaches Gmail with no command run.

The operator installed a token once (``--no-retry``: the CLI starts nothing). Then Gmail's quota
runs out: every import is answered 429 with a ``Retry-After`` longer than the forwarder waits
in-process, so each message is redelivered by SQS until, on its last receive before the inbound
DLQ, the forwarder parks it in the retry queue. The quota resets. Nobody runs anything: the
token monitor's next scheduled run finds the parked mail, proves the token by minting, finds no
drain running and starts the retry processor, which delivers everything exactly once.
"""

from __future__ import annotations

import json

import pytest

from sesmail import names
from sesmail.local.edges import Arrival
from sesmail.local.world import ENV, System, assert_no_secret_anywhere, events, log_records
from tests.drain_world import finished_execution

PARKED = 3


@pytest.mark.slow
def test_mail_parked_by_a_quota_is_delivered_by_the_monitor_alone(
    system: System, capfd: pytest.CaptureFixture[str]
) -> None:
    google = system.google
    retry_url, inbound_url = system.output("retryQueueUrl"), system.output("inboundQueueUrl")
    inbound_dlq_url, retry_dlq_url = system.output("inboundDlqUrl"), system.output("retryDlqUrl")

    # --- The operator installs a token and starts nothing; the monitor has nothing to do. ---------
    install = system.refresh("--client-secret", str(system.client_secret_file), "--no-retry")
    assert install.returncode == 0, install.stderr
    assert system.inbound.poll().records == 1  # SES's "topic subscribed" notice, acknowledged
    monitor, _ = system.run_token_monitor()
    assert (monitor["retry"]["action"], monitor["retry"]["reason"]) == ("skipped", "queue-empty")

    # --- Gmail's quota is exhausted: mail is redelivered by SQS, then parked (not dead-lettered). --
    google.quota_units_per_minute = 0  # every import: 429, Retry-After 60 s (> the 20 s waited in-process)
    sent: list[Arrival] = []
    for i in range(PARKED):
        system.clock.advance(minutes=2)
        sent.append(system.ses.receive(f"q{i}"))
    poll = system.inbound.poll()
    assert poll.records == PARKED * names.INBOUND_QUEUE_MAX_RECEIVE_COUNT, "each received until its last chance"
    assert google.messages == []
    assert (system.depth(inbound_url), system.depth(inbound_dlq_url), system.depth(retry_url)) == (0, 0, PARKED)
    for message in system.read_queue(retry_url, put_back=True):
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes[names.ATTR_ERROR].startswith("rate-limited"), attributes

    # --- The quota resets. No command: the monitor's next scheduled run starts the drain. -----------
    google.quota_units_per_minute = None
    system.clock.advance(minutes=15)
    monitor, _ = system.run_token_monitor()
    started = monitor["retry"]
    assert (started["action"], started["reason"], started["waiting"]) == ("started", "mail-parked", PARKED)
    execution = finished_execution(system.client("stepfunctions"), started["executionArn"], timeout=120.0)
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["input"]) == {
        "trigger": names.RETRY_TRIGGER_TOKEN_MONITOR,
        names.RETRY_MAILBOX_KEY: names.DEFAULT_MAILBOX,
    }
    assert execution["name"].startswith(f"{names.RETRY_TRIGGER_TOKEN_MONITOR}-")
    assert json.loads(execution["output"])["delivered"] == PARKED

    # Gmail holds each message once; every queue is empty.
    assert sorted(m.raw or b"" for m in google.messages) == sorted(a.raw for a in sent)
    for url in (retry_url, retry_dlq_url, inbound_url, inbound_dlq_url):
        assert system.depth(url) == 0, url

    # The run after that finds nothing parked and starts nothing more.
    system.clock.advance(minutes=15)
    monitor, _ = system.run_token_monitor()
    assert monitor["retry"]["reason"] == "queue-empty"
    assert [e["executionArn"] for e in system.executions()] == [started["executionArn"]]
    assert system.cli.results == [install], "the operator ran nothing after the install"

    out, err = capfd.readouterr()
    records = log_records(out)
    [autostart] = events(records, names.EVENT_RETRY_AUTOSTART)
    assert (autostart["executionArn"], autostart["waiting"], autostart["env"]) == (
        started["executionArn"],
        PARKED,
        ENV,
    )
    assert len(events(records, names.EVENT_RETRY_AUTOSTART_SKIPPED)) == 2
    assert events(records, names.EVENT_RETRY_AUTOSTART_FAILED) == []
    assert len(events(records, names.EVENT_DELIVERY_PARKED)) == PARKED
    assert_no_secret_anywhere(
        system,
        {"handlers' stdout": out, "handlers' stderr": err, "install output": install.stdout + install.stderr},
    )
