"""The daily canary, end to end: a day it reaches both mailboxes, then a day SES does not receive it.

The whole program deployed into moto with two mailboxes (alice and bob, each renewed through the
real CLI as their own Google account). Day 1: EventBridge fires the canary's schedule; the canary
function signs a message with the key the program put in SSM and sends it with SES
``SendRawEmail``; SES receives it (``SimulatedSes.receive_sent``: moto only stores a sent message)
per the active receipt rule; the forwarder recognises it and imports it into both Gmail accounts
archived and read under ``ses-mail/canary``, printing ``CanaryDelivered`` per mailbox. Those EMF
lines become metrics in moto (CloudWatch Logs' extraction), and each mailbox's canary alarm then
reads not breaching.

Day 2: the receipt rule is disabled. The canary is sent, SES receives nothing, nothing reaches
either account and no ``CanaryDelivered`` is printed. The alarm's range is 26 hours, which cannot
pass in real time, so the reading applies the alarm's own rule (26 of 26 hourly periods below 1,
missing data breaching) to the datapoints of the simulated day 2 only (``since``: after day 1's
datapoint): every period is missing, hence breaching, and the alarm is in ALARM. The same reading
over the real range, which still holds day 1's datapoint, is not breaching.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sesmail import names
from sesmail.local.edges import Carried
from sesmail.local.world import ENV, System, assert_no_secret_anywhere, emf_counts, log_records
from tests.infra.harness import stack_config as example_stack

ALICE, BOB = "alice@gmail.com", "bob@gmail.com"
ACCOUNTS = {"alice": ALICE, "bob": BOB}
MAILBOXES = [
    {"name": "alice", "recipients": ["alice@example.com"], "gmailAddress": ALICE},
    {"name": "bob", "recipients": ["bob@example.com"], "gmailAddress": BOB},
]
CANARY_ADDRESS = names.canary_address("example.com")
CANARY_EVENTS = (names.EVENT_CANARY_SENT, names.EVENT_CANARY_RECOGNISED, names.EVENT_CANARY_DELIVERED)


@pytest.fixture
def stack_config() -> dict[str, Any]:
    """The example stack (canary on by default) with two mailboxes instead of recipients and extraLabels."""
    return example_stack(mailboxes=MAILBOXES, recipients=None, extraLabels=None)


def _canary_story(output: str) -> list[tuple[str, str, str | None]]:
    """The canary's steps in the logs (the lines with ``canaryId``): (canary id, event, mailbox)."""
    return [
        (r["canaryId"], r["event"], r.get("mailbox"))
        for r in log_records(output)
        if "canaryId" in r and r.get("event") in CANARY_EVENTS
    ]


def _fire_canary(system: System) -> tuple[dict[str, str], Carried]:
    """EventBridge runs the canary; what it sent goes out through SES to the receiving side."""
    [sent] = system.scheduler.fire(names.canary_schedule_rule(ENV))
    return sent, system.ses.receive_sent()


@pytest.mark.slow
def test_a_canary_day_then_a_silent_day(system: System, capfd: pytest.CaptureFixture[str]) -> None:
    google = system.google
    for mailbox, account in ACCOUNTS.items():
        google.consent_account = account
        renewed = system.refresh("--mailbox", mailbox, "--client-secret", str(system.client_secret_file), "--no-retry")
        assert renewed.returncode == 0, renewed.stderr
    for mailbox in ACCOUNTS:
        alarm = system.canary_alarm(mailbox).alarm
        assert alarm["Dimensions"] == [{"Name": names.MAILBOX_DIMENSION, "Value": mailbox}]
        rule = {k: alarm[k] for k in ("Statistic", "Period", "EvaluationPeriods", "DatapointsToAlarm")}
        assert rule == {"Statistic": "Sum", "Period": 3600, "EvaluationPeriods": 26, "DatapointsToAlarm": 26}
        assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["TreatMissingData"]) == (
            "LessThanThreshold",
            1,
            "breaching",
        )

    # --- Day 1: the canary goes out through SES and comes back into both mailboxes. ---------------------
    system.clock.set(hours=6)
    sent, carried = _fire_canary(system)
    assert sent["address"] == CANARY_ADDRESS
    [message] = carried.sent
    assert (message.ses_message_id, message.source, message.destinations) == (
        sent["sesMessageId"],
        CANARY_ADDRESS,
        (CANARY_ADDRESS,),
    )
    assert carried.not_received == []
    [arrival] = carried.arrivals
    assert arrival.raw == message.raw and f"{names.CANARY_HEADER}: v1; id={sent['canaryId']};".encode() in arrival.raw
    assert arrival.notification["receipt"]["recipients"] == [CANARY_ADDRESS]
    poll = system.inbound.poll()
    # SES's "topic subscribed" notice and the canary; nothing failed.
    assert (poll.records, poll.item_failures, poll.function_errors) == (2, [], [])
    for account in ACCOUNTS.values():
        [imported] = google.messages_for(account)
        assert imported.raw == arrival.raw
        label_names = {label["id"]: label["name"] for label in google.labels_for(account)}
        assert [label_names[i] for i in imported.label_ids] == [names.CANARY_LABEL], "archived and read"
        assert not {"INBOX", "UNREAD"} & set(imported.label_ids)
    for url in (system.output("inboundQueueUrl"), system.output("inboundDlqUrl")):
        assert system.depth(url) == 0, url

    day1 = capfd.readouterr()
    assert emf_counts(day1.out)[names.METRIC_CANARY_DELIVERED] == 2
    shipped = system.ship_metrics(day1.out)
    assert shipped.rejected == []
    canary_points = sorted(
        (d["Dimensions"][0]["Value"], d["Value"])
        for _, d in shipped.datapoints
        if d["MetricName"] == names.METRIC_CANARY_DELIVERED
    )
    assert canary_points == [("alice", 1.0), ("bob", 1.0)]
    for mailbox in ACCOUNTS:
        reading = system.canary_alarm(mailbox).evaluate()
        # This hour's canary; the 25 hours before it have no datapoint (missing = breaching): 25 of 26.
        assert (reading.values[-1], reading.breaching_periods, reading.state) == (1.0, 25, "OK"), reading
    canary_id = sent["canaryId"]
    assert _canary_story(day1.out) == [
        (canary_id, names.EVENT_CANARY_SENT, None),
        (canary_id, names.EVENT_CANARY_RECOGNISED, None),
        (canary_id, names.EVENT_CANARY_DELIVERED, "alice"),
        (canary_id, names.EVENT_CANARY_DELIVERED, "bob"),
    ]

    # --- Day 2: the receipt rule is disabled; SES receives no canary. ------------------------------------
    ses = system.client("ses")
    rule_set = names.receipt_rule_set(ENV)
    receipt_rule = ses.describe_receipt_rule(RuleSetName=rule_set, RuleName=names.receipt_rule(ENV))["Rule"]
    ses.update_receipt_rule(RuleSetName=rule_set, Rule={**receipt_rule, "Enabled": False})
    since = system.fresh_metric_window()  # after day 1's datapoints
    system.clock.set(days=1, hours=6)
    sent_again, carried = _fire_canary(system)
    assert sent_again["canaryId"] != canary_id
    assert carried.arrivals == []
    assert [m.ses_message_id for m in carried.not_received] == [sent_again["sesMessageId"]]
    poll = system.inbound.poll()
    assert poll.records == 0
    assert {a: len(google.messages_for(a)) for a in ACCOUNTS.values()} == {ALICE: 1, BOB: 1}

    day2 = capfd.readouterr()
    assert names.METRIC_CANARY_DELIVERED not in emf_counts(day2.out)
    shipped = system.ship_metrics(day2.out)
    assert shipped.rejected == []
    assert _canary_story(day2.out) == [(sent_again["canaryId"], names.EVENT_CANARY_SENT, None)]
    for mailbox in ACCOUNTS:
        alarm = system.canary_alarm(mailbox)
        silent = alarm.evaluate(since=since)
        assert (silent.values, silent.breaching_periods, silent.state) == ((None,) * 26, 26, "ALARM"), silent
        assert silent.breaching
        # Only ``since`` isolates the simulated day: the real range still holds day 1's canary.
        assert not alarm.evaluate().breaching

    # --- No secret anywhere: not Google's, not the canary's key. ------------------------------------------
    sinks = {
        "handlers' stdout": day1.out + day2.out,
        "handlers' stderr": day1.err + day2.err,
        **{f"CLI run {i} output": r.stdout + r.stderr for i, r in enumerate(system.cli.results)},
    }
    assert_no_secret_anywhere(system, sinks)
    key = system.client("ssm").get_parameter(Name=names.canary_key_parameter(ENV), WithDecryption=True)["Parameter"]
    assert len(key["Value"]) >= 16 and not names.is_placeholder(key["Value"])
    everywhere = {
        **sinks,
        "the canary message": arrival.raw.decode(),
        "audit log": json.dumps(system.audit_records()),
        "Lambda results": json.dumps([i.result for i in system.runtime.invocations], default=str),
    }
    for sink, text in everywhere.items():
        assert key["Value"] not in text, f"the canary key reached the {sink}"
