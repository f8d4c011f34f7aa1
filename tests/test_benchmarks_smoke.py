"""The benchmarks still run: ``python -m benchmarks.run_all --smoke`` at tiny sizes.

The figures come from full runs (README, "Performance"); this only keeps the scripts from
rotting as the code they measure changes. The reference forwarder takes part only where its
own virtualenv exists (``bash benchmarks/setup.sh``), never in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_runs_at_smoke_size() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("=== summary", 1)[-1]
    for measure in ("cold start", "archive", "memory", "token calls", "drain", "throughput"):
        assert measure in summary, summary
