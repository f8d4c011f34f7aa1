"""Drain: parked messages through the real retry-processor definition, against Gmail's quota.

    .venv/bin/python -m benchmarks.drain [--messages 1000] [--smoke] [--mailboxes 1]

The state machine is ``sesmail.runtime.retry_processor.build_definition`` run by moto's Step Functions
interpreter (in-process). Its Lambda invokes are routed to the real forwarder: a pool of warm
forwarders, one per concurrent invocation, reused afterwards - what Lambda does with containers.
Gmail is FakeGoogle on 127.0.0.1 enforcing the per-user quota of ``sesmail.names``
(6,000 units a minute, 25 per import = 4 imports/s, sliding window) with 429 + Retry-After.
All waits are real: the forwarder's in-process Retry-After sleeps and the interpreter's
Retry backoff (30 s, 60 s, ...). 1,000 messages are 100 batches, more than one execution may
take (``RETRY_BATCHES_PER_EXECUTION``), so the chain of executions is followed to its end.

``--mailboxes 2``: two mailboxes (alice, bob) drained at once, each with ``--messages`` parked in
its own retry queue, its own token of its own Gmail account, and the forwarder's ``MAILBOXES``
table; one state machine built from both mailboxes' queues, and two execution chains
(``{"mailbox": "alice"}``, ``{"mailbox": "bob"}``) started at the same moment, each followed
through its hand-overs. The fake's quota is per account, as Gmail's per-user quota is: each
mailbox is measured against its own quota's rate, and together they must beat one account's.

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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from benchmarks import common
from sesmail import names
from sesmail.local import google as fake_google
from sesmail.runtime.mailboxes import Mailbox, MailboxTable, queue_url_for

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
        self.delivered_by: dict[str, list[float]] = {}  # the invoke's mailbox -> delivery times

    def invoke(self, body: str, response_headers: Any) -> bytes:
        from sesmail.runtime.aws import AwsClients
        from sesmail.runtime.forwarder import Forwarder

        with self._lock:
            forwarder = self._idle.pop() if self._idle else None
            self.invocations += 1
            if forwarder is None:
                self.containers += 1
        if forwarder is None:
            forwarder = Forwarder(self._settings, AwsClients())
        event: dict[str, Any] = {}
        try:
            event = json.loads(body or "{}")
            result = forwarder.handle(event, _Context())
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        finally:
            with self._lock:
                self._idle.append(forwarder)
        if result.get("status") == "delivered":
            now = time.monotonic()
            mailbox = str(event.get(names.RETRY_MAILBOX_KEY, names.DEFAULT_MAILBOX))
            with self._lock:
                self.delivered_at.append(now)
                self.delivered_by.setdefault(mailbox, []).append(now)
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


class _DrainGoogle(common.BenchGoogle):
    """BenchGoogle that also counts its 429s per account (the quota it refused is that account's)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate_limited: Counter[str] = Counter()

    def _take_quota(self, *args: Any, **kwargs: Any) -> int | None:
        retry_after: int | None = super()._take_quota(*args, **kwargs)
        if retry_after is not None:  # called under the fake's lock
            self.rate_limited[kwargs.get("account", args[1] if len(args) > 1 else fake_google.DEFAULT_ACCOUNT)] += 1
        return retry_after


@dataclass
class _Rig:
    """The drain's world: moto with the real state machine, warm forwarders, the Gmail fake."""

    stack: contextlib.ExitStack
    google: _DrainGoogle
    world: common.AwsWorld
    sfn: Any
    machine: str
    pool: _LambdaPool
    #: mailbox -> (retry queue URL, retry DLQ URL)
    queues: dict[str, tuple[str, str]]
    window: float
    units: int
    quota_rate: float
    batches_per_execution: int
    backoff_waits: list[float]
    timeout: float

    def park(self, mailbox: str, prefix: str, messages: int, recipient: str | None = None) -> dict[str, str]:
        """Store ``messages`` raw messages and park their notifications in ``mailbox``'s retry queue.

        Returns sha256 of each raw message -> its message id.
        """
        digests: dict[str, str] = {}
        for i in range(messages):
            message_id = f"{prefix}-{i:05d}"
            raw = common.raw_message(message_id, 4096)
            self.world.store(message_id, raw)
            digests[hashlib.sha256(raw).hexdigest()] = message_id
            note = common.notification(message_id)
            if recipient is not None:
                note["mail"]["destination"] = note["receipt"]["recipients"] = [recipient]
            self.world.sqs.send_message(QueueUrl=self.queues[mailbox][0], MessageBody=json.dumps(note))
        return digests

    def go(self) -> None:
        """Switch Gmail's quota on and the forwarders' log lines off: what follows is measured."""
        self.google.quota_units_per_minute = self.units
        sink = self.stack.enter_context(open(os.devnull, "w"))  # noqa: SIM115 - the stack closes it
        self.stack.enter_context(contextlib.redirect_stdout(sink))


@contextlib.contextmanager
def _rig(smoke: bool, table: MailboxTable | None = None) -> Iterator[_Rig]:
    """Without ``table``: one deployment as before mailboxes (``default``'s queues, no ``MAILBOXES``).

    With it: every mailbox's retry queue and DLQ, its own account's token, ``MAILBOXES`` set and
    ``RETRY_QUEUE_URL`` naming the first mailbox's queue (the others' are derived from it).
    """
    import boto3
    from moto import mock_aws
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    from sesmail.runtime.forwarder import ForwarderSettings
    from sesmail.runtime.retry_processor import build_definition

    common.isolate_aws_environ()
    window = 2.0 if smoke else fake_google.QUOTA_WINDOW_SECONDS
    scale = window / 60.0
    units = round(names.GMAIL_QUOTA_UNITS_PER_MINUTE * scale)
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
        google = _DrainGoogle(store_bodies=False)
        stack.enter_context(google)
        world = common.AwsWorld().create()
        sqs = world.sqs
        environ = world.forwarder_environ(google)
        queues: dict[str, tuple[str, str]] = {}
        if table is None:
            world.install_token(google)
            queues[names.DEFAULT_MAILBOX] = (
                world.retry_queue_url,
                sqs.create_queue(QueueName=names.retry_dlq(common.ENV))["QueueUrl"],
            )
        else:
            for mailbox in table.mailboxes:
                world.install_token(google, mailbox=mailbox.name, account=mailbox.gmail_address)
                queues[mailbox.name] = (
                    sqs.create_queue(
                        QueueName=names.retry_queue(common.ENV, mailbox.name),
                        Attributes={"VisibilityTimeout": str(names.RETRY_QUEUE_VISIBILITY_SECONDS)},
                    )["QueueUrl"],
                    sqs.create_queue(QueueName=names.retry_dlq(common.ENV, mailbox.name))["QueueUrl"],
                )
            first = queues[table.mailboxes[0].name][0]
            for name, (url, _) in queues.items():  # what the forwarder derives must be the queue drained
                if queue_url_for(first, common.ENV, name) != url:
                    raise RuntimeError(f"queue_url_for({first!r}, {name!r}) is not {url!r}")
            environ[names.ENV_VAR_RETRY_QUEUE_URL] = first
            environ[names.ENV_VAR_MAILBOXES] = table.to_json()
        pool = _LambdaPool(ForwarderSettings.from_environ(environ))

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
        limit: dict[str, Any] = {}
        parameters = inspect.signature(build_definition).parameters
        if "batches_per_execution" in parameters:
            limit["batches_per_execution"] = batches_per_execution
        extra: dict[str, Any] = {"partition": "aws"} if "partition" in parameters else {}
        queue_args: dict[str, Any]
        if "mailboxes" in parameters:  # one state machine for every mailbox
            from sesmail.runtime.retry_processor import MailboxQueues

            queue_args = {"mailboxes": [MailboxQueues(name, url, dlq) for name, (url, dlq) in queues.items()]}
        elif table is None:
            queue_args = {"retry_queue_url": world.retry_queue_url, "retry_dlq_url": queues[names.DEFAULT_MAILBOX][1]}
        else:
            raise RuntimeError("this build_definition takes no mailboxes: it cannot drain several")
        definition = build_definition(
            env=common.ENV,
            forwarder_function=function_arn,
            **queue_args,
            **limit,
            **extra,
        )
        sfn = boto3.client("stepfunctions", region_name=common.REGION)
        machine = sfn.create_state_machine(
            name=names.retry_state_machine(common.ENV), definition=json.dumps(definition), roleArn=role
        )["stateMachineArn"]
        yield _Rig(
            stack=stack,
            google=google,
            world=world,
            sfn=sfn,
            machine=machine,
            pool=pool,
            queues=queues,
            window=window,
            units=units,
            quota_rate=units / names.GMAIL_IMPORT_QUOTA_UNITS / window,
            batches_per_execution=batches_per_execution,
            backoff_waits=backoff_waits,
            timeout=120 if smoke else 3600,
        )


def _settle(
    imported: list[Any], digests: dict[str, str], dead: list[dict[str, Any]], left: list[dict[str, Any]]
) -> dict[str, Any]:
    """Where each parked message ended: imported (how often), dead-lettered, still queued, or lost."""
    per_message: dict[str, int] = {}
    for message in imported:
        message_id = digests.get(message.sha256, f"unknown-{message.sha256[:8]}")
        per_message[message_id] = per_message.get(message_id, 0) + 1
    dead_ids = {json.loads(m["Body"])["mail"]["messageId"] for m in dead}
    left_ids = {json.loads(m["Body"])["mail"]["messageId"] for m in left}
    lost = set(digests.values()) - set(per_message) - dead_ids - left_ids
    return {
        "imported": len(imported),
        "duplicates": sum(count - 1 for count in per_message.values()),
        "dead_lettered": len(dead_ids),
        "left_in_retry_queue": len(left_ids),
        "lost": len(lost),
        "not_parked_here": sum(1 for message_id in per_message if message_id.startswith("unknown-")),
    }


def measure(messages: int, *, smoke: bool) -> dict[str, Any]:
    """One mailbox (``default``, no mailbox table): ``messages`` parked, one chain of executions."""
    with _rig(smoke) as rig:
        digests = rig.park(names.DEFAULT_MAILBOX, "drain", messages)
        rig.go()
        started = time.monotonic()
        executions = _run_chain(rig.sfn, rig.machine, rig.batches_per_execution, timeout=rig.timeout)
        elapsed = time.monotonic() - started

        google = rig.google
        imported = google.messages
        retry_queue_url, retry_dlq_url = rig.queues[names.DEFAULT_MAILBOX]
        dead = _drain(rig.world.sqs, retry_dlq_url)
        left = _drain(rig.world.sqs, retry_queue_url)
        import_requests = google.import_requests
        internal_errors = google.internal_errors

    settled = _settle(imported, digests, dead, left)
    rate = len(imported) / elapsed
    steady = _steady_rate(rig.pool.delivered_at, started, rig.window)
    return {
        "messages": messages,
        "smoke": smoke,
        "elapsed_s": elapsed,
        "imported": len(imported),
        "imports_per_s": rate,
        "quota_imports_per_s": rig.quota_rate,
        "share_of_quota": rate / rig.quota_rate,
        "steady_imports_per_s": steady,
        "ideal_elapsed_s": max(0.0, (messages - rig.units / names.GMAIL_IMPORT_QUOTA_UNITS) / rig.quota_rate),
        "rate_limited_429": import_requests - len(imported),
        "duplicates": settled["duplicates"],
        "dead_lettered": settled["dead_lettered"],
        "left_in_retry_queue": settled["left_in_retry_queue"],
        "lost": settled["lost"],
        "executions": executions,
        "backoff_waits_s": rig.backoff_waits,
        "lambda_containers": rig.pool.containers,
        "invocations": rig.pool.invocations,
        "fake_internal_errors": internal_errors,
    }


def mailbox_table(count: int) -> MailboxTable:
    """``count`` mailboxes, each its own recipient and Gmail account: alice, bob, ..."""
    known = ("alice", "bob", "carol", "dave", "erin", "frank")
    mailbox_names = [known[i] if i < len(known) else f"mailbox-{i + 1}" for i in range(count)]
    return MailboxTable(
        tuple(Mailbox(name, (f"{name}@example.com",), (), f"{name}@gmail.com") for name in mailbox_names),
        configured=True,
    )


def measure_mailboxes(messages: int, *, smoke: bool, mailboxes: int = 2) -> dict[str, Any]:
    """Several mailboxes drained at once: ``messages`` parked in each one's retry queue, one state
    machine, one execution chain per mailbox (``{"mailbox": NAME}``) started at the same moment."""
    table = mailbox_table(mailboxes)
    with _rig(smoke, table) as rig:
        digests = {m.name: rig.park(m.name, m.name, messages, recipient=m.recipients[0]) for m in table.mailboxes}
        rig.go()
        deadline = time.monotonic() + rig.timeout
        chains: dict[str, list[dict[str, Any]]] = {}
        finished: dict[str, float] = {}
        crashed: dict[str, str] = {}
        started = time.monotonic()
        first = {m.name: _start(rig.sfn, rig.machine, {names.RETRY_MAILBOX_KEY: m.name}) for m in table.mailboxes}

        def follow(mailbox: str) -> None:
            try:
                chains[mailbox] = _follow(rig.sfn, rig.machine, first[mailbox], rig.batches_per_execution, deadline)
            except Exception as exc:  # reported, and the verdict is NOT MET
                crashed[mailbox] = f"{type(exc).__name__}: {exc}"
                chains[mailbox] = []
            finished[mailbox] = time.monotonic() - started

        threads = [threading.Thread(target=follow, args=(m.name,), name=f"follow-{m.name}") for m in table.mailboxes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started

        google = rig.google
        imported = {m.name: google.messages_for(str(m.gmail_address)) for m in table.mailboxes}
        dead = {name: _drain(rig.world.sqs, dlq) for name, (_, dlq) in rig.queues.items()}
        left = {name: _drain(rig.world.sqs, url) for name, (url, _) in rig.queues.items()}
        import_requests = google.import_requests
        internal_errors = google.internal_errors
        all_imported = len(google.messages)
        rate_limited = dict(google.rate_limited)

    per_mailbox: dict[str, dict[str, Any]] = {}
    for mailbox in table.mailboxes:
        name = mailbox.name
        settled = _settle(imported[name], digests[name], dead[name], left[name])
        others = [m for other, ms in imported.items() if other != name for m in ms]
        rate = settled["imported"] / finished[name]
        per_mailbox[name] = {
            "account": mailbox.gmail_address,
            "messages": messages,
            **settled,
            # This mailbox's messages that another mailbox's account received.
            "in_other_accounts": sum(1 for m in others if m.sha256 in digests[name]),
            "elapsed_s": finished[name],
            "imports_per_s": rate,
            "share_of_quota": rate / rig.quota_rate,
            "steady_imports_per_s": _steady_rate(rig.pool.delivered_by.get(name, []), started, rig.window),
            "rate_limited_429": rate_limited.get(str(mailbox.gmail_address), 0),
            "executions": chains[name],
            "follow_error": crashed.get(name),
        }
    combined = all_imported / elapsed
    return {
        "mailboxes": list(table.names),
        "messages_per_mailbox": messages,
        "smoke": smoke,
        "elapsed_s": elapsed,
        "imported": all_imported,
        "quota_imports_per_s": rig.quota_rate,
        "combined_imports_per_s": combined,
        "combined_share_of_one_quota": combined / rig.quota_rate,
        "rate_limited_429": import_requests - all_imported,
        "per_mailbox": per_mailbox,
        "backoff_waits_s": rig.backoff_waits,
        "lambda_containers": rig.pool.containers,
        "invocations": rig.pool.invocations,
        "fake_internal_errors": internal_errors,
    }


def _run_chain(sfn: Any, machine: str, batches_per_execution: int, timeout: float) -> list[dict[str, Any]]:
    """Start one execution and follow its hand-overs (states:startExecution) until the last ends."""
    deadline = time.monotonic() + timeout
    return _follow(sfn, machine, _start(sfn, machine, {}), batches_per_execution, deadline)


def _start(sfn: Any, machine: str, execution_input: dict[str, Any]) -> str:
    return str(
        sfn.start_execution(
            stateMachineArn=machine, name=f"drain-{uuid.uuid4().hex}", input=json.dumps(execution_input)
        )["executionArn"]
    )


def _follow(sfn: Any, machine: str, arn: str, batches_per_execution: int, deadline: float) -> list[dict[str, Any]]:
    """Follow the execution ``arn`` and its successors until one ends without handing over."""
    chain = []
    while True:
        described = _wait(sfn, arn, deadline)
        output = json.loads(described.get("output") or "{}")
        chain.append(
            {
                "status": described["status"],
                "mailbox": json.loads(described.get("input") or "{}").get(names.RETRY_MAILBOX_KEY),
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


def met_mailboxes(result: dict[str, Any]) -> bool:
    """Each mailbox at >= TARGET_SHARE of its own quota's rate, nothing lost, duplicated, left or
    misdelivered, and together faster than one account's quota allows (the quotas are independent)."""
    return bool(
        all(_mailbox_met(name, row) for name, row in result["per_mailbox"].items())
        and result["combined_imports_per_s"] > result["quota_imports_per_s"]
    )


def _mailbox_met(name: str, row: dict[str, Any]) -> bool:
    return bool(
        row["share_of_quota"] >= TARGET_SHARE
        and row["imported"] == row["messages"]
        and row["lost"] == 0
        and row["duplicates"] == 0
        and row["left_in_retry_queue"] == 0
        and row["in_other_accounts"] == 0
        and row["not_parked_here"] == 0
        and row["follow_error"] is None
        and row["executions"]
        and all(e["status"] == "SUCCEEDED" and e["mailbox"] == name for e in row["executions"])
    )


def report_mailboxes(result: dict[str, Any]) -> str:
    per = result["per_mailbox"]
    quota = result["quota_imports_per_s"]

    def row(label: str, key: str, total: Any = "") -> list[Any]:
        return [label, *(per[name][key] for name in per), total]

    def total(key: str) -> int:
        return sum(int(r[key]) for r in per.values())

    rows = [
        ["Gmail account", *(r["account"] for r in per.values()), "-"],
        row("messages parked", "messages", total("messages")),
        ["executions (hand-overs followed)", *(len(r["executions"]) for r in per.values()), ""],
        ["execution statuses", *(", ".join(e["status"] for e in r["executions"]) or "-" for r in per.values()), ""],
        row("elapsed s", "elapsed_s", result["elapsed_s"]),
        row("imported into its own account", "imported", result["imported"]),
        row("imports/s", "imports_per_s", result["combined_imports_per_s"]),
        [
            "share of one account's quota rate",
            *(f"{r['share_of_quota'] * 100:.0f} %" for r in per.values()),
            f"{result['combined_share_of_one_quota'] * 100:.0f} %",
        ],
        row("steady rate after the first window, imports/s", "steady_imports_per_s"),
        row("answers 429 (its account's quota)", "rate_limited_429", result["rate_limited_429"]),
        row("dead-lettered", "dead_lettered", total("dead_lettered")),
        row("left in its retry queue", "left_in_retry_queue", total("left_in_retry_queue")),
        row("lost (in neither its Gmail, its DLQ nor its queue)", "lost", total("lost")),
        row("duplicates", "duplicates", total("duplicates")),
        row("its messages in another account", "in_other_accounts", total("in_other_accounts")),
    ]
    notes = [
        f"quota's rate per account: {quota:.2f} imports/s; Step Functions backoff waits:"
        f" {len(result['backoff_waits_s'])}; forwarder containers / invocations:"
        f" {result['lambda_containers']} / {result['invocations']}",
        f"combined {result['combined_imports_per_s']:.2f} imports/s"
        f" {'>' if result['combined_imports_per_s'] > quota else '<='} one account's {quota:.2f}/s:"
        f" {'the quotas are independent' if result['combined_imports_per_s'] > quota else 'NOT independent'}",
    ]
    for name, r in per.items():
        if r["follow_error"]:
            notes.append(f"{name}: following its executions failed: {r['follow_error']}")
        for execution in r["executions"]:
            if execution["status"] != "SUCCEEDED":
                notes.append(f"{name}: failed execution {execution['error']}: {execution['cause'][:100]}")
    verdict = "MET" if met_mailboxes(result) else "NOT MET"
    return "\n".join(
        [
            f"Drain, {len(per)} mailboxes at once: their retry queues -> one state machine (one execution chain"
            " per mailbox) -> forwarder -> Gmail fake with a quota per account",
            common.table(["", *per, "combined"], rows),
            *notes,
            f"target: each mailbox >= {TARGET_SHARE * 100:.0f} % of its own quota's rate, 0 lost, 0 duplicates,"
            f" queues drained, combined > one account's rate -> {verdict}",
        ]
    )


def summary_mailboxes(result: dict[str, Any]) -> common.Summary:
    per = result["per_mailbox"]
    shares = " / ".join(f"{r['share_of_quota'] * 100:.0f}" for r in per.values())
    return common.Summary(
        f"drain, {len(per)} mailboxes x {result['messages_per_mailbox']} msgs",
        f"{shares} % of each own quota; {result['combined_imports_per_s']:.2f} imports/s together",
        "-",
        f">= {TARGET_SHARE * 100:.0f} % of each {result['quota_imports_per_s']:.0f}/s, 0 lost, 0 dup",
        met_mailboxes(result),
        f"{result['elapsed_s']:.0f} s, lost {sum(r['lost'] for r in per.values())},"
        f" dup {sum(r['duplicates'] for r in per.values())}, DLQ {sum(r['dead_lettered'] for r in per.values())},"
        f" 429s {result['rate_limited_429']}",
    )


def run(smoke: bool = False, messages: int | None = None, mailboxes: int = 1) -> common.Summary:
    count = messages or (20 if smoke else 1000)
    if mailboxes > 1:
        several = measure_mailboxes(count, smoke=smoke, mailboxes=mailboxes)
        print(report_mailboxes(several), flush=True)
        if not smoke:
            common.save_result("drain-mailboxes", several)
        return summary_mailboxes(several)
    result = measure(count, smoke=smoke)
    print(report(result), flush=True)
    if not smoke:
        common.save_result("drain", result)
    return summary(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None, help="messages per mailbox (default 1000; smoke 20)")
    parser.add_argument("--mailboxes", type=int, default=1, help="mailboxes drained at once (default 1)")
    parser.add_argument("--smoke", action="store_true", help="20 messages, 2-second quota window")
    args = parser.parse_args()
    if args.mailboxes < 1:
        parser.error("--mailboxes must be at least 1")
    run(args.smoke, args.messages, args.mailboxes)


if __name__ == "__main__":
    main()
