"""One measured process: ``python _child.py MODE MODULE [ARGS]`` (started by the benchmarks).

Runs under either virtualenv (ours or the reference's), so it imports only the standard
library before it starts the clock. The result is one JSON line after ``BENCH_RESULT `` on
stdout (the handlers' own log lines go there too).

Modes:
  coldstart EVENT      import MODULE, then one invocation; the floor (MODULE "") imports boto3
                       and creates the clients the forwarder's happy path uses (s3, ssm)
  forward EVENT        import MODULE, one invocation; peak RSS
  idle                 import MODULE and create the same clients, no invocation; peak RSS
  batches EVENTS       import MODULE, then one invocation per event in a JSON list of events
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import importlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402


class Context:
    """The Lambda context object's fields that handlers (and Powertools) read."""

    function_name = "ses-mail-gmail-forwarder-bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ses-mail-gmail-forwarder-bench"
    log_group_name = "/aws/lambda/ses-mail-gmail-forwarder-bench"
    log_stream_name = "bench"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 120

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def maxrss_kib() -> int:
    """Peak RSS of this process, in KiB.

    ``VmHWM`` (the high-water mark of this address space), not ``ru_maxrss``: Linux carries
    ``ru_maxrss`` across fork+execve, so a child started by a big parent (the benchmark, which
    holds the 39 MiB message) could never report less than the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def failures(result: Any) -> int:
    if isinstance(result, dict) and isinstance(result.get("batchItemFailures"), list):
        return len(result["batchItemFailures"])
    return 0


def floor() -> None:
    import boto3

    boto3.client("s3")
    boto3.client("ssm")


def idle(module_name: str) -> None:
    importlib.import_module(module_name)
    if module_name == "handlers.forwarder":
        from sesmail.runtime.forwarder import Forwarder

        forwarder = Forwarder.from_environ()
        forwarder._clients.s3  # noqa: B018 - creating the client is the point
        forwarder._clients.ssm  # noqa: B018
    # The reference creates its clients (and reads SSM, and builds the Gmail service) at import.


def main() -> dict[str, Any]:
    mode, module_name, *args = sys.argv[1:]
    if mode == "coldstart":
        event = json.loads(open(args[0]).read())  # noqa: SIM115
        start = time.perf_counter()
        if not module_name:
            floor()
            done = time.perf_counter()
            return {"import_ms": ms(done - start), "invoke_ms": 0.0, "total_ms": ms(done - start), "failures": 0}
        module = importlib.import_module(module_name)
        imported = time.perf_counter()
        result = module.handler(event, Context())
        done = time.perf_counter()
        return {
            "import_ms": ms(imported - start),
            "invoke_ms": ms(done - imported),
            "total_ms": ms(done - start),
            "since_interpreter_ms": ms(done - T0),
            "failures": failures(result),
            "result": result,
        }
    if mode == "forward":
        event = json.loads(open(args[0]).read())  # noqa: SIM115
        module = importlib.import_module(module_name)
        before = maxrss_kib()
        result = module.handler(event, Context())
        return {"maxrss_kib": maxrss_kib(), "before_invoke_kib": before, "failures": failures(result)}
    if mode == "idle":
        idle(module_name)
        return {"maxrss_kib": maxrss_kib(), "failures": 0}
    if mode == "batches":
        events = json.loads(open(args[0]).read())  # noqa: SIM115
        module = importlib.import_module(module_name)
        start = time.perf_counter()
        failed = sum(failures(module.handler(event, Context())) for event in events)
        elapsed = time.perf_counter() - start
        messages = sum(len(event["Records"]) for event in events)
        return {"messages": messages, "failures": failed, "elapsed_s": elapsed}
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    outcome = main()
    sys.stdout.flush()
    print("BENCH_RESULT " + json.dumps(outcome, default=str), flush=True)
