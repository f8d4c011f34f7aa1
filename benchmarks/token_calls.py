"""Token calls: token-endpoint requests while forwarding 1,000 messages in batches of 10.

    .venv/bin/python -m benchmarks.token_calls [--messages 1000] [--smoke]

1. Real time: one warm child process per implementation (ours, the reference) handles 100 SQS
   events of 10 records each, against moto's server and FakeGoogle on 127.0.0.1. The fake counts
   every POST to its token endpoint.
2. Simulated time (ours only): the same 1,000 messages spread over three hours of a simulated
   clock shared by the forwarder and the fake (whose access tokens live 3,599 s, as Google's
   do), to show the cache renews once per access-token lifetime (less the safety margin).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common
from sesmail import names

BATCH = names.SQS_BATCH_SIZE
SIMULATED_SECONDS = 3 * 3600


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _batches(prefix: str, count: int) -> list[list[str]]:
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    return [ids[i : i + BATCH] for i in range(0, count, BATCH)]


def measure(messages: int, *, with_reference: bool = True) -> dict[str, Any]:
    common.isolate_aws_environ()
    results: dict[str, Any] = {"messages": messages, "batch": BATCH}
    with (
        common.MotoServer() as moto,
        common.BenchGoogle(store_bodies=False) as google,
        common.task_roots() as roots,
        tempfile.TemporaryDirectory() as tmp,
    ):
        world = common.AwsWorld(moto.url).create()
        world.install_token(google)
        impls = common.implementations(roots, with_reference=with_reference)
        for kind in ("ours", "reference"):
            if kind not in impls:
                continue
            impl = impls[kind]
            batches = _batches(f"tok-{kind}", messages)
            for batch in batches:
                for message_id in batch:
                    world.store(message_id)
            events_path = Path(tmp) / f"{kind}-events.json"
            events_path.write_text(json.dumps([common.sqs_event(batch) for batch in batches]))
            tokens_before, imports_before = len(google.token_requests), len(google.messages)
            env = common.child_environ(world, google, moto.url, impl.task_root)
            outcome = common.run_child(impl, "batches", env, str(events_path), timeout=1800)
            results[kind] = {
                "token_requests": len(google.token_requests) - tokens_before,
                "imported": len(google.messages) - imports_before,
                "failures": outcome["failures"],
                "elapsed_s": outcome["elapsed_s"],
                "messages_per_s": messages / outcome["elapsed_s"],
            }
        results["simulated"] = _simulated(world, google, moto.url, messages)
    return results


def _simulated(world: common.AwsWorld, google: common.BenchGoogle, moto_url: str, messages: int) -> dict[str, Any]:
    """Ours in this process, with the forwarder's and the fake's clocks moved together."""
    from sesmail.runtime.aws import AwsClients
    from sesmail.runtime.forwarder import Forwarder, ForwarderSettings

    os.environ["AWS_ENDPOINT_URL"] = moto_url
    try:
        clock = _Clock()
        settings = ForwarderSettings.from_environ(world.forwarder_environ(google))
        forwarder = Forwarder(settings, AwsClients(), clock=clock)
        batches = _batches("tok-sim", messages)
        for batch in batches:
            for message_id in batch:
                world.store(message_id)
        step = SIMULATED_SECONDS / len(batches)
        before = len(google.token_requests)
        failures = 0
        with open(os.devnull, "w") as sink:
            for batch in batches:
                result = _quietly(sink, forwarder.handle, common.sqs_event(batch), None)
                failures += len(result["batchItemFailures"])
                clock.now += step
                google.advance_time(step)
        lifetime = google.access_token_lifetime
        usable = max(lifetime - names.ACCESS_TOKEN_SAFETY_MARGIN_SECONDS, lifetime / 2)
        return {
            "simulated_s": SIMULATED_SECONDS,
            "access_token_lifetime_s": lifetime,
            "usable_s": usable,
            "expected": _expected_mints(len(batches), step, usable),
            "token_requests": len(google.token_requests) - before,
            "failures": failures,
        }
    finally:
        del os.environ["AWS_ENDPOINT_URL"]


def _expected_mints(batches: int, step: float, usable: float) -> int:
    """Mints a perfect cache needs: one whenever a batch starts after the cached token's use-by time."""
    mints, use_by = 0, -math.inf
    for k in range(batches):
        now = k * step
        if now >= use_by:
            mints, use_by = mints + 1, now + usable
    return mints


def _quietly(sink: Any, function: Any, *args: Any) -> Any:
    """Run with the forwarder's JSON log lines (stdout) sent to /dev/null."""
    import contextlib

    with contextlib.redirect_stdout(sink):
        return function(*args)


def report(result: dict[str, Any]) -> str:
    rows = []
    for kind in ("ours", "reference"):
        r = result.get(kind)
        if r:
            rows.append(
                [kind, result["messages"], r["imported"], r["failures"], r["token_requests"], r["messages_per_s"]]
            )
    sim = result["simulated"]
    lines = [
        f"Token calls: {result['messages']} messages in batches of {result['batch']}, one warm process",
        common.table(["process", "messages", "imported", "failures", "token requests", "msgs/s"], rows),
        "",
        f"ours over {sim['simulated_s'] / 3600:g} simulated hours"
        f" (access tokens live {sim['access_token_lifetime_s']} s,"
        f" reused for {sim['usable_s']:g} s): {sim['token_requests']} token requests"
        f" (1 per lifetime = {sim['expected']}), {sim['failures']} failures",
    ]
    ok = _met(result)
    lines.append(f"target: 1 per access-token lifetime -> {'MET' if ok else 'NOT MET'}")
    return "\n".join(lines)


def _met(result: dict[str, Any]) -> bool:
    sim = result["simulated"]
    ours = result["ours"]
    return bool(ours["token_requests"] == 1 and sim["token_requests"] == sim["expected"] and not ours["failures"])


def summary(result: dict[str, Any]) -> common.Summary:
    ours, ref, sim = result["ours"], result.get("reference"), result["simulated"]
    return common.Summary(
        f"token calls, {result['messages']} msgs",
        f"{ours['token_requests']} (and {sim['token_requests']} over {sim['simulated_s'] / 3600:g} h simulated)",
        f"{ref['token_requests']}" if ref else "(not installed)",
        "1 per access-token lifetime",
        _met(result),
        f"{ours['imported']} imported, {ours['failures']} failures",
    )


def run(smoke: bool = False, messages: int | None = None) -> common.Summary:
    result = measure(messages or (20 if smoke else 1000))
    print(report(result), flush=True)
    if not smoke:
        common.save_result("token_calls", result)
    return summary(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None, help="messages (default 1000; smoke 20)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    run(args.smoke, args.messages)


if __name__ == "__main__":
    main()
