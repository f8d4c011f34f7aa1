"""Drain: parked messages through the real retry-processor definition, against Gmail's quota.

    .venv/bin/python -m benchmarks.drain [--messages 1000] [--smoke]

The state machine is ``sesmail.retry_processor.build_definition`` run by moto's Step Functions
interpreter (in-process). Its Lambda invokes are routed to the real forwarder: a pool of warm
forwarders, one per concurrent invocation, reused afterwards - what Lambda does with containers.
Gmail is FakeGoogle on 127.0.0.1 enforcing the per-user quota of ``sesmail.names``
(6,000 units a minute, 25 per import = 4 imports/s, sliding window) with 429 + Retry-After.
All waits are real: the forwarder's in-process Retry-After sleeps and the interpreter's
Retry backoff (30 s, 60 s, ...). 1,000 messages are 100 batches, more than one execution may
take (``RETRY_BATCHES_PER_EXECUTION``), so the chain of executions is followed to its end.

Smoke mode: 20 messages, a 2-second quota window (8 imports a window: the same 4/s), Retry
backoffs scaled by the same 2/60, and one batch per execution so the hand-over runs too.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from benchmarks import common
from sesmail import names

TARGET_SHARE = 0.80


class _Context:
    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + names.FORWARDER_TIMEOUT_SECONDS

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


class _LambdaPool:
    """Warm forwarders: an invoke takes an idle one or starts a new one (a cold start)."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.containers = 0
        self.invocations = 0
        self.delivered_at: list[float] = []

    def invoke(self, body: str, response_headers: Any) -> bytes:
        from sesmail.aws import AwsClients
        from sesmail.forwarder import Forwarder

        with self._lock:
            forwarder = self._idle.pop() if self._idle else None
            self.invocations += 1
            if forwarder is None:
                self.containers += 1
        if forwarder is None:
            forwarder = Forwarder(self._settings, AwsClients())
        try:
            result = forwarder.handle(json.loads(body or "{}"), _Context())
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        finally:
            with self._lock:
                self._idle.append(forwarder)
        if result.get("status") == "delivered":
            with self._lock:
                self.delivered_at.append(time.monotonic())
        return json.dumps(result).encode()


def _fake_lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handlers/forwarder.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _moto_start_execution_shim() -> contextlib.AbstractContextManager[None]:
    """moto 5.2's interpreter passes ``states:startExecution`` parameters to boto3 unconverted.

    Step Functions' optimized integration takes ``StateMachineArn``/``Input``/``Name``; boto3's
    StartExecution wants ``stateMachineArn``/``input``/``name``. LocalStack (where moto's parser
    comes from) converts them; moto stubs the conversion out, so the hand-over fails there with
    ``States.Runtime: 'StateMachineArn'``. This converts the three keys, and, as Step Functions
    does when no ``Name`` is given, names the execution with a UUID (moto would name every such
    execution "None", so the second hand-over would collide with the first).
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    original = StateTaskServiceSfn._normalise_parameters

    def normalise(
        self: Any, parameters: dict[str, Any], boto_service_name: Any = None, service_action_name: Any = None
    ) -> None:
        original(self, parameters, boto_service_name, service_action_name)
        if service_action_name is None and self._get_boto_service_action() == "start_execution":
            for key in ("StateMachineArn", "Input", "Name"):
                if key in parameters:
                    parameters[key[0].lower() + key[1:]] = parameters.pop(key)
            parameters.setdefault("name", str(uuid.uuid4()))

    return _patched(StateTaskServiceSfn, "_normalise_parameters", normalise)


def measure(messages: int, *, smoke: bool) -> dict[str, Any]:
    import boto3
    from moto import mock_aws
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    from sesmail.forwarder import ForwarderSettings
    from sesmail.retry_processor import build_definition
    from tests.fakes import google as fake_google

    common.isolate_aws_environ()
    window = 2.0 if smoke else fake_google.QUOTA_WINDOW_SECONDS
    scale = window / 60.0
    units = round(names.GMAIL_QUOTA_UNITS_PER_MINUTE * scale)
    quota_rate = units / names.GMAIL_IMPORT_QUOTA_UNITS / window
    batches_per_execution = 1 if smoke else names.RETRY_BATCHES_PER_EXECUTION
    backoff_waits: list[float] = []

    def backoff_sleep(seconds: float) -> None:
        backoff_waits.append(seconds)
        time.sleep(seconds * scale)

    config: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock_aws(config=config))
        stack.enter_context(_patched(fake_google, "QUOTA_WINDOW_SECONDS", window))
        stack.enter_context(_patched(names, "RETRY_BATCHES_PER_EXECUTION", batches_per_execution))
        stack.enter_context(_patched(retrier_decl, "time", SimpleNamespace(sleep=backoff_sleep)))
        stack.enter_context(_moto_start_execution_shim())
        # The interpreter logs every unmatched IsPresent probe at ERROR level: noise here.
        stack.enter_context(_patched(logging.getLogger("moto.stepfunctions.parser"), "level", logging.CRITICAL))
        google = stack.enter_context(common.BenchGoogle(store_bodies=False))
        world = common.AwsWorld().create()
        world.install_token(google)
        sqs = world.sqs
        retry_dlq_url = sqs.create_queue(QueueName=names.retry_dlq(common.ENV))["QueueUrl"]
        settings = ForwarderSettings.from_environ(world.forwarder_environ(google))
        pool = _LambdaPool(settings)

        def invoke(backend: Any, name: str, qualifier: Any, body: str, headers: Any, response_headers: Any) -> bytes:
            return pool.invoke(body, response_headers)

        stack.enter_context(_patched(LambdaSimpleBackend, "invoke", invoke))

        role = boto3.client("iam", region_name=common.REGION).create_role(
            RoleName="forwarder", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        function_arn = boto3.client("lambda", region_name=common.REGION).create_function(
            FunctionName=names.forwarder_function(common.ENV),
            Runtime="python3.12",
            Role=role,
            Handler=names.FORWARDER_HANDLER,
            Code={"ZipFile": _fake_lambda_zip()},
        )["FunctionArn"]
        limit: dict[str, int] = {}
        parameters = inspect.signature(build_definition).parameters
        if "batches_per_execution" in parameters:
            limit["batches_per_execution"] = batches_per_execution
        extra: dict[str, str] = {"partition": "aws"} if "partition" in parameters else {}
        definition = build_definition(
            env=common.ENV,
            retry_queue_url=world.retry_queue_url,
            retry_dlq_url=retry_dlq_url,
            forwarder_function=function_arn,
            **limit,
            **extra,
        )
        sfn = boto3.client("stepfunctions", region_name=common.REGION)
        machine = sfn.create_state_machine(
            name=names.retry_state_machine(common.ENV), definition=json.dumps(definition), roleArn=role
        )["stateMachineArn"]

        digests: dict[str, str] = {}
        for i in range(messages):
            message_id = f"drain-{i:05d}"
            raw = common.raw_message(message_id, 4096)
            world.store(message_id, raw)
            digests[hashlib.sha256(raw).hexdigest()] = message_id
            sqs.send_message(QueueUrl=world.retry_queue_url, MessageBody=json.dumps(common.notification(message_id)))

        google.quota_units_per_minute = units
        sink = stack.enter_context(open(os.devnull, "w"))
        stack.enter_context(contextlib.redirect_stdout(sink))
        started = time.monotonic()
        executions = _run_chain(sfn, machine, batches_per_execution, timeout=120 if smoke else 3600)
        elapsed = time.monotonic() - started

        imported = google.messages
        dead = _drain(sqs, retry_dlq_url)
        left = _drain(sqs, world.retry_queue_url)
        import_requests = google.import_requests
        internal_errors = google.internal_errors

    per_message: dict[str, int] = {}
    for message in imported:
        message_id = digests.get(message.sha256, f"unknown-{message.sha256[:8]}")
        per_message[message_id] = per_message.get(message_id, 0) + 1
    dead_ids = {json.loads(m["Body"])["mail"]["messageId"] for m in dead}
    left_ids = {json.loads(m["Body"])["mail"]["messageId"] for m in left}
    lost = set(digests.values()) - set(per_message) - dead_ids - left_ids
    rate = len(imported) / elapsed
    steady = _steady_rate(pool.delivered_at, started, window)
    return {
        "messages": messages,
        "smoke": smoke,
        "elapsed_s": elapsed,
        "imported": len(imported),
        "imports_per_s": rate,
        "quota_imports_per_s": quota_rate,
        "share_of_quota": rate / quota_rate,
        "steady_imports_per_s": steady,
        "ideal_elapsed_s": max(0.0, (messages - units / names.GMAIL_IMPORT_QUOTA_UNITS) / quota_rate),
        "rate_limited_429": import_requests - len(imported),
        "duplicates": sum(count - 1 for count in per_message.values()),
        "dead_lettered": len(dead_ids),
        "left_in_retry_queue": len(left_ids),
        "lost": len(lost),
        "executions": executions,
        "backoff_waits_s": backoff_waits,
        "lambda_containers": pool.containers,
        "invocations": pool.invocations,
        "fake_internal_errors": internal_errors,
    }


def _run_chain(sfn: Any, machine: str, batches_per_execution: int, timeout: float) -> list[dict[str, Any]]:
    """Start one execution and follow its hand-overs (states:startExecution) until the last ends."""
    deadline = time.monotonic() + timeout
    arn = sfn.start_execution(stateMachineArn=machine, name=f"drain-{uuid.uuid4().hex}", input="{}")["executionArn"]
    chain = []
    while True:
        described = _wait(sfn, arn, deadline)
        output = json.loads(described.get("output") or "{}")
        chain.append(
            {
                "status": described["status"],
                "output": output,
                "error": described.get("error"),
                "cause": (described.get("cause") or "")[:500],
            }
        )
        if described["status"] != "SUCCEEDED" or output.get("batches", 0) < batches_per_execution:
            return chain
        arn = _successor(sfn, machine, arn, deadline)


def _wait(sfn: Any, arn: str, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.05)
    raise TimeoutError(f"execution {arn} did not finish in time")


def _successor(sfn: Any, machine: str, arn: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        for execution in sfn.list_executions(stateMachineArn=machine)["executions"]:
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            if json.loads(described.get("input") or "{}").get("continuedFrom") == arn:
                return str(execution["executionArn"])
        time.sleep(0.05)
    raise TimeoutError(f"no execution continued from {arn}")


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
        if not batch:
            return out
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        out.extend(batch)


def _steady_rate(stamps: list[float], started: float, window: float) -> float:
    """Imports per second after the first quota window (which starts full, so bursts)."""
    later = sorted(t for t in stamps if t >= started + window)
    if len(later) < 2:
        return float("nan")
    return (len(later) - 1) / (later[-1] - later[0])


def met(result: dict[str, Any]) -> bool:
    return bool(
        result["share_of_quota"] >= TARGET_SHARE
        and result["lost"] == 0
        and result["duplicates"] == 0
        and result["left_in_retry_queue"] == 0
        and all(e["status"] == "SUCCEEDED" for e in result["executions"])
    )


def report(result: dict[str, Any]) -> str:
    rows = [
        ["messages parked", result["messages"]],
        ["executions (hand-overs followed)", len(result["executions"])],
        ["execution statuses", ", ".join(e["status"] for e in result["executions"])],
        ["elapsed s", result["elapsed_s"]],
        ["imported", result["imported"]],
        ["imports/s", result["imports_per_s"]],
        ["quota's rate, imports/s", result["quota_imports_per_s"]],
        ["share of the quota's rate", f"{result['share_of_quota'] * 100:.0f} %"],
        ["steady rate after the first window, imports/s", result["steady_imports_per_s"]],
        ["ideal elapsed s (full window at start, then the rate)", result["ideal_elapsed_s"]],
        ["answers 429 (rate limited)", result["rate_limited_429"]],
        ["Step Functions backoff waits (unscaled s)", len(result["backoff_waits_s"])],
        ["dead-lettered", result["dead_lettered"]],
        ["left in the retry queue", result["left_in_retry_queue"]],
        ["lost (in neither Gmail, the DLQ nor the retry queue)", result["lost"]],
        ["duplicates", result["duplicates"]],
        ["forwarder containers / invocations", f"{result['lambda_containers']} / {result['invocations']}"],
    ]
    for execution in result["executions"]:
        if execution["status"] != "SUCCEEDED":
            rows.append(["failed execution", f"{execution['error']}: {execution['cause'][:100]}"])
    verdict = "MET" if met(result) else "NOT MET"
    return "\n".join(
        [
            "Drain: retry queue -> real state machine (moto interpreter) -> forwarder -> Gmail fake with quota",
            common.table(["", "value"], rows),
            f"target: >= {TARGET_SHARE * 100:.0f} % of the quota's rate, 0 lost, 0 duplicates, queue drained"
            f" -> {verdict}",
        ]
    )


def summary(result: dict[str, Any]) -> common.Summary:
    return common.Summary(
        f"drain, {result['messages']} msgs",
        f"{result['imports_per_s']:.2f} imports/s = {result['share_of_quota'] * 100:.0f} % of quota",
        "-",
        f">= {TARGET_SHARE * 100:.0f} % of {result['quota_imports_per_s']:.0f}/s, 0 lost, 0 dup",
        met(result),
        f"{result['elapsed_s']:.0f} s, lost {result['lost']}, dup {result['duplicates']}, "
        f"DLQ {result['dead_lettered']}, 429s {result['rate_limited_429']}",
    )


def run(smoke: bool = False, messages: int | None = None) -> common.Summary:
    result = measure(messages or (20 if smoke else 1000), smoke=smoke)
    print(report(result), flush=True)
    if not smoke:
        common.save_result("drain", result)
    return summary(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None, help="messages (default 1000; smoke 20)")
    parser.add_argument("--smoke", action="store_true", help="20 messages, 2-second quota window")
    args = parser.parse_args()
    run(args.smoke, args.messages)


if __name__ == "__main__":
    main()
