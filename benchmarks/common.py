"""Shared machinery of the benchmarks: fakes, fixtures, child processes, statistics, tables.

Everything runs on this machine only: AWS is moto (in-process, or moto's server on 127.0.0.1
when the measured process must not hold the data), Google is ``sesmail.local.google.FakeGoogle``
on 127.0.0.1, and the X-Ray daemon address of the reference is 127.0.0.1:2000 (UDP, nobody
listens). Nothing here is part of the product.
"""

from __future__ import annotations

import base64
import compileall
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sesmail import names
from sesmail.local import google as fake_google
from sesmail.local.google import FakeGoogle, ImportedMessage

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
CHILD = BENCH / "_child.py"
REFERENCE_DIR = BENCH / "reference"
REFERENCE_VENV = BENCH / ".venv-reference"
REFERENCE_PYTHON = REFERENCE_VENV / "bin" / "python"
RESULTS_DIR = BENCH / "results"

ENV = "bench"
REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "ses-mail-bench-inbound"
JSON_IMPORT_PATH = "/gmail/v1/users/me/messages/import"
RESULT_MARKER = "BENCH_RESULT "


def reference_available() -> bool:
    return REFERENCE_PYTHON.exists()


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- statistics and tables -------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 15 samples, p90 is the 14th smallest."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, align_numbers: bool = True) -> str:
    """A plain-text table; numeric cells are right-aligned unless ``align_numbers`` is false."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out.extend(
        "  ".join(c.rjust(w) if align_numbers and _numeric(c) else c.ljust(w) for c, w in zip(r, widths, strict=True))
        for r in cells
    )
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or (text[0] in "-+." and text[1:2].isdigit()))


@dataclass
class Summary:
    """One line of run_all's summary table."""

    measure: str
    ours: str
    reference: str
    floor_or_target: str
    met: bool | None
    note: str = ""

    def row(self, smoke: bool = False) -> list[str]:
        verdict = "n/a" if self.met is None else ("MET" if self.met else "NOT MET")
        if smoke and self.met is not None:
            verdict = f"({verdict} at smoke size)"
        return [self.measure, self.ours, self.reference, self.floor_or_target, verdict, self.note]


SUMMARY_HEADERS = ["measure", "ours", "reference", "target", "verdict", "note"]


def save_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "time": time.time(), **payload}, indent=2, default=str))
    return path


# --- mail fixtures ---------------------------------------------------------------------------


def raw_message(message_id: str, size: int | None = None) -> bytes:
    """An RFC 5322 message; with ``size``, padded to exactly that many bytes with base64 lines."""
    head = (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: benchmark {message_id}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    body = f"Benchmark message {message_id}.\r\n".encode()
    if size is None or size <= len(head) + len(body):
        return head + body
    need = size - len(head) - len(body)
    # Random base64 lines, as an attachment looks; generated 1 MiB at a time.
    block = base64.encodebytes(os.urandom(768 * 1024)).replace(b"\n", b"\r\n")
    filler = (block * (need // len(block) + 1))[:need]
    return head + body + filler


def notification(message_id: str, bucket: str = BUCKET) -> dict[str, Any]:
    return {
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-11-23T10:00:01.000Z",
            "source": "alice@example.org",
            "messageId": message_id,
            "destination": ["bob@example.com"],
        },
        "receipt": {
            "timestamp": "2026-11-23T10:00:01.000Z",
            "recipients": ["bob@example.com"],
            "spamVerdict": {"status": "PASS"},
            "virusVerdict": {"status": "PASS"},
            "action": {
                "type": "S3",
                "topicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{names.inbound_notification_topic(ENV)}",
                "bucketName": bucket,
                "objectKeyPrefix": names.INBOUND_PREFIX,
                "objectKey": f"{names.INBOUND_PREFIX}{message_id}",
            },
        },
    }


def sqs_event(message_ids: Sequence[str]) -> dict[str, Any]:
    """An SQS event as Lambda delivers it: SNS envelopes carrying SES notifications."""
    records = []
    for index, message_id in enumerate(message_ids):
        envelope = {
            "Type": "Notification",
            "MessageId": f"sns-{message_id}",
            "TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:{names.inbound_notification_topic(ENV)}",
            "Subject": "Amazon SES Email Receipt Notification",
            "Message": json.dumps(notification(message_id)),
            "Timestamp": "2026-11-23T10:00:02.000Z",
        }
        records.append(
            {
                "messageId": f"sqs-{index}-{message_id}",
                "receiptHandle": f"handle-{message_id}",
                "body": json.dumps(envelope),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.inbound_queue(ENV)}",
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


# --- Google: the tests' fake plus the JSON ``raw`` route the reference uses ------------------


class _NoDelayHandler(fake_google._Handler):
    """The tests' handler with Nagle's algorithm off.

    BaseHTTPRequestHandler writes a response's headers and body in two sends; with Nagle on,
    the body waits for the client's delayed ACK, which costs ~40 ms on every request after the
    first on a keep-alive connection. Google's front ends do not do that, and the fake must
    not charge the clients for it.
    """

    disable_nagle_algorithm = True


class _NoDelayServer(fake_google._Server):
    def __init__(self, address: tuple[str, int], fake: FakeGoogle) -> None:
        self.fake = fake
        ThreadingHTTPServer.__init__(self, address, _NoDelayHandler)


class BenchGoogle(FakeGoogle):
    """FakeGoogle without the delayed-ACK stall, also answering the JSON ``raw`` import route.

    The product uses the upload endpoint; the reference uses ``POST /gmail/v1/users/me/messages/import``
    with a JSON ``raw``. Both share the fake's authentication, quota and recording, so their
    numbers are comparable. (Real Gmail would refuse a JSON body this large for the 39 MiB
    message; the benchmark accepts it to measure what building it costs.)
    """

    def __enter__(self) -> BenchGoogle:
        return self.start()

    def start(self) -> BenchGoogle:
        if self._server is not None:
            raise RuntimeError("BenchGoogle is already running")
        self._stopping.clear()
        server = _NoDelayServer(("127.0.0.1", 0), self)
        self._server = server
        self._base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bench-google", daemon=True
        )
        self._thread.start()
        return self

    def _route(self, request: Any) -> Any:
        if request.path == JSON_IMPORT_PATH and request.method == "POST":
            try:
                return self._handle_json_import(request)
            except Exception as exc:  # a bug in the benchmark fake must be visible
                with self._lock:
                    self._internal_errors.append(f"{type(exc).__name__}: {exc}")
                return fake_google._google_error(500, f"bench fake crashed: {exc}")
        return super()._route(request)

    def _handle_json_import(self, request: Any) -> Any:
        with self._lock:
            self._import_requests += 1
            if self._gmail_failures:
                return self._gmail_failures.popleft()
            token = self._authenticate(request.headers.get("Authorization"))
            if not isinstance(token, str):
                return token
            retry_after = self._take_quota()
            if retry_after is not None:
                return fake_google._rate_limited(retry_after)
            keep_raw = self.store_bodies
        request.body.seek(0)
        payload = json.loads(request.body.read())
        raw = base64.urlsafe_b64decode(payload["raw"] + "=" * (-len(payload["raw"]) % 4))
        del payload
        message_id = os.urandom(8).hex()
        message = ImportedMessage(
            id=message_id,
            thread_id=message_id,
            raw=raw if keep_raw else None,
            size=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
            label_ids=[],
            params=dict(request.query),
            access_token=token,
        )
        with self._lock:
            self._messages.append(message)
        return fake_google._Reply.json(200, {"id": message_id, "threadId": message_id})


# --- AWS: moto, in-process or as a server on 127.0.0.1 -----------------------------------------


AWS_TEST_ENVIRON = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def isolate_aws_environ() -> None:
    """This process must never find real credentials or reach a real endpoint."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            del os.environ[key]
    os.environ.update(AWS_TEST_ENVIRON)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """moto's server in its own process, so a measured process never holds moto's data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotoServer:
        env = {**os.environ, **AWS_TEST_ENVIRON}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError("moto server did not start")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


@dataclass
class AwsWorld:
    """The forwarder's AWS resources: bucket, retry queue, inbound DLQ, the two OAuth parameters."""

    endpoint_url: str | None = None
    s3: Any = None
    sqs: Any = None
    ssm: Any = None
    retry_queue_url: str = ""
    inbound_dlq_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def create(self) -> AwsWorld:
        import boto3

        session = boto3.session.Session(region_name=REGION)
        self.s3, self.sqs, self.ssm = (
            session.client(service, endpoint_url=self.endpoint_url) for service in ("s3", "sqs", "ssm")
        )
        self.s3.create_bucket(Bucket=BUCKET)
        self.retry_queue_url = self.sqs.create_queue(
            QueueName=names.retry_queue(ENV),
            Attributes={"VisibilityTimeout": str(names.RETRY_QUEUE_VISIBILITY_SECONDS)},
        )["QueueUrl"]
        self.inbound_dlq_url = self.sqs.create_queue(QueueName=names.inbound_dlq(ENV))["QueueUrl"]
        return self

    def install_token(
        self, google: FakeGoogle, *, mailbox: str = names.DEFAULT_MAILBOX, account: str | None = None
    ) -> str:
        """The OAuth client and ``mailbox``'s refresh token, of ``account`` (the fake's default account when None)."""
        token = google.issue_refresh_token() if account is None else google.issue_refresh_token(account=account)
        self.ssm.put_parameter(
            Name=names.client_credentials_parameter(ENV),
            Value=json.dumps(google.client_json()),
            Type="SecureString",
            Overwrite=True,
        )
        self.ssm.put_parameter(
            Name=names.refresh_token_parameter(ENV, mailbox),
            Value=json.dumps(
                {
                    "token": token,
                    "created_at": "2026-11-20T00:00:00Z",
                    "expires_at": "2026-11-27T00:00:00Z",
                    "scopes": [names.GMAIL_SCOPE],
                }
            ),
            Type="SecureString",
            Overwrite=True,
        )
        return token

    def store(self, message_id: str, raw: bytes | None = None) -> None:
        self.s3.put_object(
            Bucket=BUCKET, Key=f"{names.INBOUND_PREFIX}{message_id}", Body=raw or raw_message(message_id)
        )

    def forwarder_environ(self, google: FakeGoogle) -> dict[str, str]:
        """The function's environment, as the Pulumi program sets it."""
        return {
            names.ENV_VAR_ENV: ENV,
            names.ENV_VAR_RETRY_QUEUE_URL: self.retry_queue_url,
            names.ENV_VAR_INBOUND_DLQ_URL: self.inbound_dlq_url,
            names.ENV_VAR_GMAIL_API_BASE_URL: google.base_url,
            names.ENV_VAR_EMAIL_BUCKET: BUCKET,
        }


# --- child processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Implementation:
    """How to start a child process that runs one implementation's handler."""

    name: str
    python: Path
    task_root: Path  # PYTHONPATH and cwd: the Lambda archive's files, as /var/task holds them
    module: str  # the handler module (empty for the floor)
    extra_env: tuple[tuple[str, str], ...] = ()


@contextlib.contextmanager
def task_roots() -> Iterator[dict[str, Path]]:
    """Copies of the deployable code without byte code, like Lambda's /var/task.

    ``ours`` is exactly the archive the Pulumi program builds (``sesmail.infra.archive``); the
    reference is its one handler file. Children run with PYTHONDONTWRITEBYTECODE=1, so every
    run compiles the handler code again, as a Lambda cold start does from a read-only .py archive.
    """
    from sesmail.infra.archive import lambda_source_files

    with tempfile.TemporaryDirectory(prefix="sesmail-bench-") as tmp:
        ours = Path(tmp) / "ours"
        for name, path in lambda_source_files(REPO):
            target = ours / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        reference = Path(tmp) / "reference"
        reference.mkdir()
        shutil.copyfile(REFERENCE_DIR / "forwarder_reference.py", reference / "forwarder_reference.py")
        floor = Path(tmp) / "floor"
        floor.mkdir()
        # What-if: the same archive with byte code compiled for the runtime's Python.
        ours_pyc = Path(tmp) / "ours-pyc"
        shutil.copytree(ours, ours_pyc)
        compileall.compile_dir(str(ours_pyc), quiet=1)
        yield {"ours": ours, "reference": reference, "floor": floor, "ours-pyc": ours_pyc}


def implementations(roots: dict[str, Path], *, with_reference: bool = True) -> dict[str, Implementation]:
    found = {
        "ours": Implementation("ours", Path(sys.executable), roots["ours"], "handlers.forwarder"),
        "floor": Implementation("floor", Path(sys.executable), roots["floor"], ""),
    }
    if with_reference and reference_available():
        found["reference"] = Implementation("reference", REFERENCE_PYTHON, roots["reference"], "forwarder_reference")
    return found


def what_if_implementations(roots: dict[str, Path]) -> dict[str, Implementation]:
    """Ours with changes that are not made (yet), to show what each would save on a cold start."""
    python = Path(sys.executable)
    return {"ours+pyc": Implementation("ours+pyc", python, roots["ours-pyc"], "handlers.forwarder")}


def child_environ(world: AwsWorld, google: FakeGoogle, moto_url: str, task_root: Path) -> dict[str, str]:
    """A Lambda-like environment: no inherited AWS settings, endpoints on 127.0.0.1."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(AWS_TEST_ENVIRON)
    env.update(world.forwarder_environ(google))
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "PYTHONPATH": str(task_root),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            # What Lambda sets; X-Ray and Powertools (reference) behave as they do in Lambda.
            "AWS_LAMBDA_FUNCTION_NAME": names.forwarder_function(ENV),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(names.FORWARDER_MEMORY_MB),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "LAMBDA_TASK_ROOT": str(task_root),
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "POWERTOOLS_SERVICE_NAME": "gmail-forwarder",
        }
    )
    return env


def run_child(impl: Implementation, mode: str, env: dict[str, str], *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``_child.py MODE`` in a fresh interpreter; its result is the line after the marker."""
    started = time.perf_counter()
    proc = subprocess.run(
        [str(impl.python), str(CHILD), mode, impl.module, *args],
        env={**env, **dict(impl.extra_env)},
        cwd=impl.task_root,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    wall = (time.perf_counter() - started) * 1000
    stdout = proc.stdout.decode("utf-8", "replace")
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            result["process_wall_ms"] = wall
            return result
    raise RuntimeError(
        f"{impl.name} {mode} child failed (exit {proc.returncode}):\n{stdout[-3000:]}\n"
        f"{proc.stderr.decode('utf-8', 'replace')[-3000:]}"
    )


def write_event(directory: Path, name: str, message_ids: Sequence[str]) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(sqs_event(message_ids)))
    return path


def mib(kib: float) -> float:
    return kib / 1024
