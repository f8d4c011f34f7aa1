"""The benchmarks still run: ``python -m benchmarks.run_all --smoke`` at tiny sizes.

The figures come from full runs (docs/performance.md); this only keeps the scripts from
rotting as the code they measure changes. The reference forwarder takes part only where its
own virtualenv exists (``bash benchmarks/setup.sh``), never in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import RESULT_MARKER

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


def test_two_mailboxes_drain_at_once_at_smoke_size() -> None:
    """Two mailboxes' retry queues drained by one state machine at once, each into its own account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    script = (
        "import json\n"
        "from benchmarks import common, drain\n"
        "result = drain.measure_mailboxes(20, smoke=True, mailboxes=2)\n"
        "print(drain.report_mailboxes(result))\n"
        "print(common.RESULT_MARKER + json.dumps(result, default=str))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(line for line in reversed(proc.stdout.splitlines()) if line.startswith(RESULT_MARKER))
    result = json.loads(line[len(RESULT_MARKER) :])

    per_mailbox = result["per_mailbox"]
    assert sorted(per_mailbox) == ["alice", "bob"], proc.stdout[-3000:]
    for name, row in per_mailbox.items():
        assert row["account"] == f"{name}@gmail.com"
        assert row["lost"] == 0, (name, row)
        assert row["duplicates"] == 0, (name, row)
        assert row["in_other_accounts"] == 0, (name, row)
        # Drained: every message in its own account, nothing left queued or dead-lettered.
        assert row["imported"] == 20, (name, row)
        assert row["left_in_retry_queue"] == 0, (name, row)
        assert row["dead_lettered"] == 0, (name, row)
        assert row["executions"], (name, row)
        assert all(e["status"] == "SUCCEEDED" and e["mailbox"] == name for e in row["executions"]), row
    assert result["imported"] == 40
    assert result["fake_internal_errors"] == []
