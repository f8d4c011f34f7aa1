"""Reconcile: what comparing the bucket with the claims costs, and how much one invocation delivers.

    .venv/bin/python -m benchmarks.reconcile [--objects 10000] [--smoke]

AWS is moto in-process (the same botocore stack and HTTP-shaped requests the Lambda makes), Google
the zero-latency in-process stand-in of ``benchmarks.throughput``. Three measures:

1. **idle** — the daily case: ``--objects`` stored messages, every one delivered (its claim and
   ``delivered`` marker), so the plan finds nothing owed. Wall time and S3 requests by operation.
2. **unseen** — the SNS -> SQS link was broken: the same number of stored messages, none ever seen
   by the forwarder, so the plan reads each one's header block (one ranged GET each, 8 at a time).
3. **deliver** — the forwarder's reconcile over those unseen messages with the invocation time of
   the deployed function (``names.FORWARDER_TIMEOUT_SECONDS``): runs until ``complete``, each run
   handing over (``partial``) as the retry processor's loop would re-invoke it.

The dollar figures use AWS list prices (us-east-1, as of ``PRICES_AS_OF``); moto's timings are a
stand-in for S3's (real LIST pages take tens of milliseconds, real GETs ~10-30 ms).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

from benchmarks import common
from benchmarks.throughput import ZeroLatencyGoogle
from sesmail import names
from sesmail.local.edges import SimulatedClock

PRICES_AS_OF = "2026-12-01"
S3_LIST_PER_1000 = 0.005  # ListObjectsV2 (a "PUT, COPY, POST, LIST" request), S3 Standard
S3_GET_PER_1000 = 0.0004
S3_PUT_PER_1000 = 0.005
LAMBDA_ARM_PER_GB_SECOND = 0.0000133334
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
#: Stored mail looks this old to the plan (past RECONCILE_MIN_AGE_SECONDS and the alarm's day).
AGE = timedelta(days=2)


class S3Calls(Counter[str]):
    def __init__(self, client: Any) -> None:
        super().__init__()
        client.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self[model.name] += 1


def _store(world: common.AwsWorld, prefix: str, count: int, *, delivered: bool) -> list[str]:
    ids = [f"{prefix}-{i:06d}" for i in range(count)]
    for message_id in ids:
        world.store(message_id, common.raw_message(message_id, 2048))
        if delivered:
            for key in (
                names.claim_key(message_id),
                names.claim_marker_key(message_id, names.DEFAULT_MAILBOX, names.CLAIM_MARKER_DELIVERED),
            ):
                world.s3.put_object(Bucket=common.BUCKET, Key=key, Body=b"")
    return ids


def _plan(world: common.AwsWorld) -> dict[str, Any]:
    from sesmail.runtime.mailboxes import MailboxTable
    from sesmail.runtime.reconcile import Planner

    calls = S3Calls(world.s3)
    planner = Planner(lambda: world.s3, common.BUCKET, MailboxTable.single(), now=lambda: datetime.now(UTC) + AGE)
    started = time.perf_counter()
    plan = planner.plan([names.DEFAULT_MAILBOX])
    seconds = time.perf_counter() - started
    dollars = calls["ListObjectsV2"] * S3_LIST_PER_1000 / 1000 + calls["GetObject"] * S3_GET_PER_1000 / 1000
    return {
        "seconds": round(seconds, 2),
        "owed": len(plan.owed),
        "settled": plan.settled,
        "requests": dict(calls),
        "s3_dollars": round(dollars, 6),
    }


def _deliver(world: common.AwsWorld) -> dict[str, Any]:
    """The forwarder's reconcile, run after run, each with the deployed function's time."""
    import sesmail.runtime.reconcile
    from sesmail.runtime.aws import AwsClients
    from sesmail.runtime.forwarder import Forwarder, ForwarderSettings

    google = ZeroLatencyGoogle()
    settings = ForwarderSettings(
        env=common.ENV,
        retry_queue_url=world.retry_queue_url,
        inbound_dlq_url=world.inbound_dlq_url,
        gmail_api_base_url="https://gmail.invalid",
        email_bucket=common.BUCKET,
    )
    forwarder = Forwarder(settings, AwsClients(), http=google)
    runs: list[dict[str, Any]] = []
    later = SimulatedClock(datetime.now(UTC) + AGE).datetime_class()  # stored mail looks AGE old
    with patch.object(sesmail.runtime.reconcile, "datetime", later):
        while not runs or runs[-1]["status"] == "partial":
            started = time.perf_counter()
            answer = forwarder.handle({"source": names.RECONCILE_SOURCE}, _Context())
            runs.append({**answer, "seconds": round(time.perf_counter() - started, 1)})
    seconds = sum(r["seconds"] for r in runs)
    gb_seconds = seconds * names.FORWARDER_MEMORY_MB / 1024
    return {
        "runs": [{k: r[k] for k in ("status", "handled", "delivered", "seconds")} for r in runs],
        "delivered": sum(r["delivered"] for r in runs),
        "imports": google.imports,
        "seconds": round(seconds, 1),
        "lambda_dollars": round(gb_seconds * LAMBDA_ARM_PER_GB_SECOND + len(runs) * LAMBDA_PER_REQUEST, 6),
    }


class _Context:
    """A Lambda context whose time is the deployed function's timeout, counted from its creation."""

    aws_request_id = "bench-reconcile"

    def __init__(self) -> None:
        self._deadline = time.monotonic() + names.FORWARDER_TIMEOUT_SECONDS

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def measure(objects: int, *, deliver: bool = True) -> dict[str, Any]:
    from moto import mock_aws

    common.isolate_aws_environ()
    result: dict[str, Any] = {"objects": objects, "prices_as_of": PRICES_AS_OF}
    with mock_aws():
        world = common.AwsWorld().create()
        _store(world, "done", objects, delivered=True)
        result["idle"] = _plan(world)
    with mock_aws(), common.BenchGoogle(store_bodies=False) as google:
        world = common.AwsWorld().create()
        world.install_token(google)  # its client and token; the imports go to the in-process stand-in
        _store(world, "lost", objects, delivered=False)
        result["unseen"] = _plan(world)
        if deliver:
            result["deliver"] = _deliver(world)
    idle = result["idle"]
    daily_lambda = idle["seconds"] * names.FORWARDER_MEMORY_MB / 1024 * LAMBDA_ARM_PER_GB_SECOND
    result["idle_month_dollars"] = round(30 * (idle["s3_dollars"] + daily_lambda + LAMBDA_PER_REQUEST), 4)
    return result


def report(result: dict[str, Any]) -> str:
    n = result["objects"]
    rows = [
        [
            name,
            result[name]["seconds"],
            result[name]["requests"].get("ListObjectsV2", 0),
            result[name]["requests"].get("GetObject", 0),
            result[name]["owed"],
            f"${result[name]['s3_dollars']:.4f}",
        ]
        for name in ("idle", "unseen")
    ]
    lines = [
        f"Reconcile over {n:,} stored messages (moto in-process; prices {result['prices_as_of']}, us-east-1)",
        common.table(["plan", "seconds", "LIST", "GET", "owed", "S3 cost"], rows),
        f"idle, once a day for a month: ${result['idle_month_dollars']:.4f} (S3 requests and Lambda time)",
    ]
    deliver = result.get("deliver")
    if deliver:
        per_run = ", ".join(f"{r['handled']} in {r['seconds']} s ({r['status']})" for r in deliver["runs"])
        lines.append(
            f"deliver all {n:,}: {len(deliver['runs'])} invocation(s) of {names.FORWARDER_TIMEOUT_SECONDS} s at most: "
            f"{per_run}; {deliver['imports']} imports, Lambda ${deliver['lambda_dollars']:.4f}"
        )
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> common.Summary:
    idle = result["idle"]
    deliver = result.get("deliver") or {"runs": []}
    ours = (
        f"{result['objects']:,} objects: plan {idle['seconds']} s, "
        f"{idle['requests'].get('ListObjectsV2', 0)} LIST, ${result['idle_month_dollars']:.4f}/month idle"
    )
    invocations = len(deliver["runs"])
    met = invocations <= 1 or all(r["status"] == "partial" for r in deliver["runs"][:-1])
    note = f"delivering all: {invocations} invocation(s), handing over" if invocations else ""
    return common.Summary("reconcile", ours, "-", "one invocation or hand over", met, note)


def run(smoke: bool = False, objects: int | None = None) -> common.Summary:
    result = measure(objects or (60 if smoke else 10_000))
    print(report(result), flush=True)
    if not smoke:
        common.save_result("reconcile", result)
    return summary(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=None, help="stored messages (default 10,000; smoke 60)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    run(args.smoke, args.objects)


if __name__ == "__main__":
    main()
