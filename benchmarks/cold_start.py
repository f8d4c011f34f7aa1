"""Cold start: a fresh process imports the handler and serves its first invocation.

    .venv/bin/python -m benchmarks.cold_start [--runs 15] [--smoke]

Three kinds of fresh process, interleaved round by round (the order rotates each round) so
machine noise hits all of them alike:

- ours: ``import handlers.forwarder`` + one invocation with one SQS record, from a copy of the
  Lambda archive without byte code (what /var/task holds) - so the handler code is compiled
  on every cold start, as on Lambda;
- reference: ``import forwarder_reference`` + the same invocation, in the reference virtualenv;
- floor: ``import boto3`` + creating the clients the forwarder's happy path uses (s3, ssm).

AWS is moto's server on 127.0.0.1 (AWS_ENDPOINT_URL), Google is FakeGoogle on 127.0.0.1, both
started here. The time is measured inside the child from just before the import to the end of
the invocation (the interpreter's own start-up is the same for all three and is left out);
``process`` is the whole child process seen from outside, for reference.

What-if rows (full runs; ``--no-what-if`` leaves them out) measure ours with changes that are
not in the product, to show what it would buy: ``+pyc`` ships byte code compiled for the
runtime's Python in the archive. (A ``+botocore`` row led to building the AWS clients on plain
botocore; that is now the product.)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common

TARGET_RATIO = 1.15


def measure(runs: int, *, with_reference: bool = True, what_if: bool = False) -> dict[str, Any]:
    common.isolate_aws_environ()
    with (
        common.MotoServer() as moto,
        common.BenchGoogle(store_bodies=False) as google,
        common.task_roots() as roots,
        tempfile.TemporaryDirectory() as tmp,
    ):
        world = common.AwsWorld(moto.url).create()
        world.install_token(google)
        impls = common.implementations(roots, with_reference=with_reference)
        if what_if:
            impls.update(common.what_if_implementations(roots))
        kinds: list[str] = [k for k in ("floor", "ours", "reference") if k in impls]
        kinds += [k for k in impls if k not in kinds]
        samples: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        # Round 0 is a warm-up (file cache, moto's lazily loaded backends) and is discarded.
        for round_no in range(runs + 1):
            order = kinds[round_no % len(kinds) :] + kinds[: round_no % len(kinds)]
            for kind in order:
                impl = impls[kind]
                message_id = f"cold-{kind}-{round_no}"
                world.store(message_id)
                event = common.write_event(Path(tmp), message_id, [message_id])
                env = common.child_environ(world, google, moto.url, impl.task_root)
                result = common.run_child(impl, "coldstart", env, str(event))
                if result["failures"]:
                    raise RuntimeError(f"{kind} failed to deliver {message_id}: {result}")
                if round_no:
                    samples[kind].append(result)
        delivered = len(google.messages)
        token_calls = len(google.token_requests)
    stats: dict[str, dict[str, float]] = {}
    for name, results in samples.items():
        totals = [r["total_ms"] for r in results]
        stats[name] = {
            "median_ms": common.median(totals),
            "p90_ms": common.percentile(totals, 90),
            "min_ms": min(totals),
            "import_median_ms": common.median([r["import_ms"] for r in results]),
            "invoke_median_ms": common.median([r["invoke_ms"] for r in results]),
            "process_median_ms": common.median([r["process_wall_ms"] for r in results]),
            "runs": len(results),
        }
    floor = stats["floor"]["median_ms"]
    for figures in stats.values():
        figures["ratio_vs_floor"] = figures["median_ms"] / floor
    return {"runs": runs, "stats": stats, "delivered": delivered, "token_calls": token_calls}


def report(result: dict[str, Any]) -> str:
    stats = result["stats"]
    rows = [
        [
            kind,
            s["runs"],
            s["median_ms"],
            s["p90_ms"],
            s["min_ms"],
            s["import_median_ms"],
            s["invoke_median_ms"],
            s["process_median_ms"],
            f"{s['ratio_vs_floor']:.2f}x",
        ]
        for kind, s in stats.items()
    ]
    headers = [
        "process",
        "runs",
        "median ms",
        "p90 ms",
        "min ms",
        "import ms",
        "1st invoke ms",
        "process ms",
        "vs floor",
    ]
    lines = [
        "Cold start: fresh process, import + first invocation (1 SQS record), median of interleaved runs",
        common.table(headers, rows),
    ]
    ours = stats["ours"]["ratio_vs_floor"]
    lines.append(
        f"target: ours <= {TARGET_RATIO:.2f}x floor -> {'MET' if ours <= TARGET_RATIO else 'NOT MET'} ({ours:.2f}x)"
    )
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> common.Summary:
    stats = result["stats"]
    ours = stats["ours"]
    ref = stats.get("reference")
    return common.Summary(
        "cold start (median)",
        f"{ours['median_ms']:.0f} ms = {ours['ratio_vs_floor']:.2f}x floor",
        f"{ref['median_ms']:.0f} ms = {ref['ratio_vs_floor']:.2f}x floor" if ref else "(not installed)",
        f"<= {TARGET_RATIO:.2f}x floor ({stats['floor']['median_ms']:.0f} ms)",
        ours["ratio_vs_floor"] <= TARGET_RATIO,
        f"{ours['runs']} runs each, p90 ours {ours['p90_ms']:.0f} ms",
    )


def run(smoke: bool = False, runs: int | None = None, what_if: bool | None = None) -> common.Summary:
    result = measure(
        runs or (2 if smoke else 21),
        with_reference=not smoke or common.reference_available(),
        what_if=not smoke if what_if is None else what_if,
    )
    print(report(result), flush=True)
    if not smoke:
        common.save_result("cold_start", result)
    return summary(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=None, help="runs per kind (default 21; smoke 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--no-what-if", action="store_true", help="leave out the what-if variants of ours")
    args = parser.parse_args()
    run(args.smoke, args.runs, False if args.no_what_if else None)


if __name__ == "__main__":
    main()
