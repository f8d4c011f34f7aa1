"""Every benchmark in one run, then one summary table.

    bash benchmarks/setup.sh                      # once: the reference's own virtualenv
    .venv/bin/python -m benchmarks.run_all        # full sizes (the drain alone takes ~5 minutes)
    .venv/bin/python -m benchmarks.run_all --smoke   # tiny sizes, well under a minute

Each measure also runs alone: ``python -m benchmarks.<name> [--smoke]`` with ``<name>`` one of
cold_start, archive_size, memory, token_calls, drain, throughput, reconcile, cost. Without the reference
virtualenv the smoke run leaves the reference out; a full run requires it.
The benchmarks run one after another, never in parallel: they share the machine's two cores.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from benchmarks import archive_size, cold_start, common, cost, drain, memory, reconcile, throughput, token_calls

MEASURES: dict[str, Callable[[bool], common.Summary]] = {
    "cold_start": cold_start.run,
    "archive_size": archive_size.run,
    "memory": memory.run,
    "token_calls": token_calls.run,
    "drain": drain.run,
    "throughput": throughput.run,
    "reconcile": reconcile.run,
    "cost": cost.run,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every benchmark still runs")
    parser.add_argument("--only", nargs="+", choices=sorted(MEASURES), help="run only these")
    args = parser.parse_args()
    if not args.smoke and not common.reference_available():
        print("the reference virtualenv is missing: run `bash benchmarks/setup.sh` first", file=sys.stderr)
        return 2
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']} ({machine['platform']})")
    summaries: list[common.Summary] = []
    failed: list[str] = []
    started = time.monotonic()
    for name, run in MEASURES.items():
        if args.only and name not in args.only:
            continue
        print(f"\n=== {name} {'(smoke)' if args.smoke else ''}".rstrip(), flush=True)
        began = time.monotonic()
        try:
            summaries.append(run(args.smoke))
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.monotonic() - began:.0f} s)", flush=True)
    print(
        f"\n=== summary ({'smoke sizes: not the figures' if args.smoke else 'full sizes'},"
        f" {time.monotonic() - started:.0f} s)"
    )
    print(common.table(common.SUMMARY_HEADERS, [s.row(args.smoke) for s in summaries], align_numbers=False))
    if failed:
        print(f"benchmarks that crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
