"""benchmarks/cost.py: what it counts is the program's graph, its totals add up, and it runs (smoke size)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import cost
from sesmail import names
from tests.infra.harness import ProgramRun, run_program, stack_config

ONE, THREE = "1 mailbox", "3 mailboxes"


@pytest.fixture(scope="module")
def result() -> Iterator[dict[str, Any]]:
    """One smoke-size measure for the module (it sets test AWS variables: put the environment back)."""
    saved = dict(os.environ)
    try:
        yield cost.measure(smoke=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def programs() -> dict[str, ProgramRun]:
    return {
        ONE: run_program(stack_config()),
        THREE: run_program(stack_config(mailboxes=cost._mailbox_config(cost.THREE_MAILBOXES))),
    }


def test_the_counts_are_the_program_graph(result: dict[str, Any], programs: dict[str, ProgramRun]) -> None:
    for variant, run in programs.items():
        graph = result["variants"][variant]["graph"]
        assert graph["alarms"] == len(run.of_type(cost.ALARM))
        assert graph["dashboards"] == len(run.of_type(cost.DASHBOARD)) == 1
        assert graph["kms_keys"] == len(run.of_type(cost.KMS_KEY)) == 1
        assert graph["secrets"] == len(run.of_type(cost.SECRET)) == 0
        assert graph["advanced_parameters"] == 0  # Standard tier: free
        assert set(graph["functions"]) == {f.inputs["name"] for f in run.of_type(cost.FUNCTION)}
        assert set(graph["schedules"]) == {r.inputs["name"] for r in run.of_type(cost.RULE)}
        assert graph["by_type"] == dict(Counter(r.type for r in run.custom_resources))
    # Per mailbox: 3 token alarms, retry queue depth and age, retry DLQ, mailbox refused, canary;
    # shared: 7 (the monitor's two, inbound DLQ, forwarder, processor failed and timed out, undelivered).
    assert result["variants"][ONE]["graph"]["alarms"] == 8 + 7
    assert result["variants"][THREE]["graph"]["alarms"] == 3 * 8 + 7
    assert result["variants"][ONE]["graph"]["retain_days"] == names.DEFAULT_RETAIN_DAYS


def test_schedules_are_counted_in_runs_a_day() -> None:
    assert cost.runs_per_day(names.TOKEN_MONITOR_SCHEDULE) == 96
    assert cost.runs_per_day(names.CANARY_SCHEDULE) == 1
    assert cost.runs_per_day(names.RECONCILE_DAILY_SCHEDULE) == 1
    with pytest.raises(ValueError):
        cost.runs_per_day("cron(0/5 * * * ? *)")


def test_totals_are_positive_and_the_sums_of_their_items(result: dict[str, Any]) -> None:
    for v in (*result["variants"].values(), result["reference"]):
        assert v["idle_total"] == pytest.approx(sum(i["dollars"] for i in v["idle"]))
        assert v["idle_total_free_tier"] == pytest.approx(sum(i["dollars_free_tier"] for i in v["idle"]))
        assert v["per_1000_total"] == pytest.approx(sum(i["dollars"] for i in v["per_1000"]))
        assert v["idle_total"] > 0 and v["per_1000_total"] > 0
        assert all(0 <= i["dollars_free_tier"] <= i["dollars"] + 1e-12 for i in v["idle"])
    one = result["variants"][ONE]
    rows = {i["name"]: i for i in one["idle"]}
    assert rows["CloudWatch alarms"]["dollars"] == pytest.approx(15 * 0.10)
    assert rows["CloudWatch alarms"]["dollars_free_tier"] == pytest.approx(5 * 0.10)  # 10 free
    assert rows["CloudWatch dashboard"]["dollars"] == pytest.approx(3.00)
    assert rows["KMS key (the SNS topics')"]["dollars"] == pytest.approx(1.00)
    assert one["idle_total"] > result["reference"]["idle_total"]


def test_free_tier_is_shared_by_the_items_of_a_meter() -> None:
    items = [cost.Item("a", {"cw_alarm": 12}, "graph"), cost.Item("b", {"cw_alarm": 8}, "graph")]
    assert cost.free_tier_costs(items) == pytest.approx([12 * 0.05, 8 * 0.05])  # 10 of 20 free
    assert [i.cost() for i in items] == pytest.approx([1.2, 0.8])


def test_every_metric_of_the_stack_is_priced_and_the_monitor_sends_what_the_catalogue_says(
    result: dict[str, Any],
) -> None:
    assert {m.name for m in cost.METRICS} == cost.metric_constants()
    every_run = {m.name for m in cost.METRICS if m.idle_hours_per_day == 24}
    for variant in (ONE, THREE):
        mailboxes = result["variants"][variant]["graph"]["mailboxes"]
        for run in result["variants"][variant]["monitor"].values():
            expected = {f"{names.METRIC_TOKEN_HOURS}{{'Mailbox': '{m}'}}" for m in mailboxes}
            assert set(run["metric_series"]) == expected | (every_run - {names.METRIC_TOKEN_HOURS})


def test_the_measured_calls(result: dict[str, Any]) -> None:
    forwarder = result["forwarder"]
    # What benchmarks/throughput.py counts: the GetObject, the claim, its completion, the marker.
    assert forwarder["calls_per_message"] == {"S3:GetObject": 1.0, "S3:PutObject": 3.0}
    assert forwarder["reconcile"]["calls"] == {"S3:ListObjectsV2": 2}
    assert result["canary"]["calls"] == {"SES:SendRawEmail": 1, "SSM:GetParameters": 1}
    states = result["execution_states"]
    assert states[0] == "SelectMailbox" and "Reconcile" in states and states[-1] == "Done"


def test_the_report_names_the_largest_idle_cost(result: dict[str, Any]) -> None:
    text = cost.report(result)
    top = cost.largest(result["variants"][ONE]["idle"])
    assert f"largest idle cost: {top['name']}" in text
    assert "per 1,000 messages" in text and "reference" in text
    row = cost.summary(result).row()
    assert row[0].startswith("cost") and "/month idle" in row[1] and "per 1,000" in row[2]
