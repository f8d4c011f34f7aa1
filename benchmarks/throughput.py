"""Throughput: forwarder messages per second in one warm process, and where the time goes.

    .venv/bin/python -m benchmarks.throughput [--messages 500] [--google inproc|loopback] [--smoke]

AWS is moto in-process; Google is a zero-latency fake:
- ``inproc`` (default): the forwarder's HTTP client is replaced by an in-process stand-in that
  answers the token endpoint and drains the streamed upload body chunk by chunk, so nothing but
  the forwarder, boto3 and moto is measured;
- ``loopback``: FakeGoogle over real HTTP on 127.0.0.1 (the forwarder's own keep-alive client
  included).

The forwarder handles SQS events of 10 records (8 KiB messages) after one warm-up batch; five
timed passes per variant, alternating, and their median is reported, with the S3 requests each
message cost (counted by operation on the forwarder's own client). Then one more pass per
variant runs under cProfile, and the top entries by cumulative and by own time are printed,
overall and for ses-mail's own code only. The first mode also measures, in the same process,
delivery as it was before the delivery claims (see ``VARIANTS``): the claim's cost per message.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from benchmarks import common
from sesmail import names
from sesmail.runtime.http import Body, HttpClient, Response

MESSAGE_BYTES = 8 * 1024
BATCH = names.SQS_BATCH_SIZE
OURS = (f"{os.sep}sesmail{os.sep}", f"{os.sep}handlers{os.sep}")


class ZeroLatencyGoogle(HttpClient):
    """Google's token and upload endpoints answered in-process, body consumed like a socket would."""

    def __init__(self) -> None:
        super().__init__()
        self.token_requests = 0
        self.imports = 0
        self.bytes_received = 0

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        timeout: float = 30.0,
    ) -> Response:
        if url.endswith("/token"):
            self.token_requests += 1
            payload = {"access_token": "ya29.zero-" + secrets.token_urlsafe(16), "expires_in": 3599}
            return Response(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())
        received = 0
        chunks: Iterable[bytes] = [body] if isinstance(body, bytes) else (body or [])
        for chunk in chunks:
            received += len(chunk)
        if headers is None or received != int(headers["Content-Length"]):
            return Response(400, {}, b'{"error": {"message": "length mismatch"}}')
        self.imports += 1
        self.bytes_received += received
        gmail_id = secrets.token_hex(8)
        return Response(
            200, {"Content-Type": "application/json"}, json.dumps({"id": gmail_id, "threadId": gmail_id}).encode()
        )


def _events(world: common.AwsWorld, prefix: str, messages: int) -> list[dict[str, Any]]:
    ids = [f"{prefix}-{i:05d}" for i in range(messages)]
    for message_id in ids:
        world.store(message_id, common.raw_message(message_id, MESSAGE_BYTES))
    return [common.sqs_event(ids[i : i + BATCH]) for i in range(0, messages, BATCH)]


def _handle_all(forwarder: Any, events: list[dict[str, Any]]) -> int:
    failures = 0
    for event in events:
        failures += len(forwarder.handle(event, None)["batchItemFailures"])
    return failures


#: Variants measured side by side. "tag record (before claims)" restores, by a patch, how delivery
#: recorded an import before the delivery claims: GetObject, the import, then the Gmail id written
#: as the object's ``gmail-message-id`` tag (PutObjectTagging) — 2 S3 requests and no protection
#: against concurrent duplicates. The current code claims first: GetObject, PutObject
#: If-None-Match (the claim), the import, PutObject If-Match (its completion) — 3 requests.
CURRENT = "current (claims)"
BEFORE = "tag record (before claims)"
VARIANTS = {CURRENT: "claims", BEFORE: "tag"}


def _tag_based_deliver_once(self: Any, note: Any, holder: str, deadline: float, labels: Any = None) -> Any:
    """``Deliverer._deliver_once`` as it was before claims (git history), for comparison only."""
    from sesmail.runtime.delivery import Delivery, recorded_gmail_id
    from sesmail.runtime.gmail import labels_for

    message = self._store.open(note)
    try:
        tags = self._store.tags(note) if message.tag_count else []
        existing = recorded_gmail_id(tags)
        if existing:
            return Delivery("already-delivered", existing)
        labels = labels_for(note.is_spam, self._extra_labels)
        imported = self._importer.import_message(self._store.opener(note, message), labels)
    finally:
        message.body.close()
    kept = [t for t in tags if t["Key"] != names.GMAIL_ID_TAG]
    self._store.s3().put_object_tagging(
        Bucket=note.bucket,
        Key=note.key,
        Tagging={"TagSet": [*kept, {"Key": names.GMAIL_ID_TAG, "Value": imported.gmail_id}]},
    )
    return Delivery("delivered", imported.gmail_id)


@contextlib.contextmanager
def _variant(kind: str) -> Iterator[None]:
    from sesmail.runtime.delivery import Deliverer

    if kind == "claims":
        yield
        return
    original = Deliverer._deliver_once
    Deliverer._deliver_once = _tag_based_deliver_once  # type: ignore[method-assign]
    try:
        yield
    finally:
        Deliverer._deliver_once = original  # type: ignore[method-assign]


def _count_s3_requests(client: Any) -> Counter[str]:
    """S3 operations the forwarder's own client sends, by name (botocore's before-call event)."""
    counts: Counter[str] = Counter()

    def count(model: Any, **kwargs: Any) -> None:
        counts[model.name] += 1

    client.meta.events.register("before-call.s3", count)
    return counts


def measure(
    messages: int,
    google_mode: str = "inproc",
    passes: int = 3,
    top: int = 15,
    variants: tuple[str, ...] = (CURRENT,),
) -> dict[str, Any]:
    """Passes of each variant alternate, so drift on a shared machine hits them alike."""
    from moto import mock_aws

    from sesmail.runtime.aws import AwsClients
    from sesmail.runtime.forwarder import Forwarder, ForwarderSettings

    common.isolate_aws_environ()
    rates: dict[str, list[float]] = {v: [] for v in variants}
    profiles: dict[str, Any] = {}
    calls: dict[str, float] = {}
    s3_requests: dict[str, Counter[str]] = {v: Counter() for v in variants}
    with mock_aws(), contextlib.ExitStack() as stack:
        world = common.AwsWorld().create()
        google = stack.enter_context(common.BenchGoogle(store_bodies=False))
        world.install_token(google)
        http: HttpClient = ZeroLatencyGoogle() if google_mode == "inproc" else HttpClient()
        settings = ForwarderSettings.from_environ(world.forwarder_environ(google))
        clients = AwsClients()
        forwarder = Forwarder(settings, clients, http=http)
        counted = _count_s3_requests(clients.s3)
        sink = stack.enter_context(open(os.devnull, "w"))
        stack.enter_context(contextlib.redirect_stdout(sink))
        if _handle_all(forwarder, _events(world, "warm", BATCH)):
            raise RuntimeError("warm-up batch failed")
        for n in range(passes):
            for variant in variants:
                events = _events(world, f"pass{n}-{len(rates[variant])}-{VARIANTS[variant]}", messages)
                counted.clear()
                with _variant(VARIANTS[variant]):
                    started = time.perf_counter()
                    failures = _handle_all(forwarder, events)
                    elapsed = time.perf_counter() - started
                s3_requests[variant] += counted
                if failures:
                    raise RuntimeError(f"{failures} deliveries failed")
                rates[variant].append(messages / elapsed)
        for variant in variants:
            events = _events(world, f"profiled-{VARIANTS[variant]}", messages)
            profiler = cProfile.Profile()
            with _variant(VARIANTS[variant]):
                profiler.enable()
                _handle_all(forwarder, events)
                profiler.disable()
            profiles[variant] = _profile_tables(profiler, messages, top)
            calls[variant] = _aws_calls(profiler) / messages
        imported = http.imports if isinstance(http, ZeroLatencyGoogle) else len(google.messages)
    expected = BATCH + messages * (passes + 1) * len(variants)
    if imported != expected:
        raise RuntimeError(f"imported {imported} messages, expected {expected}")
    return {
        "messages": messages,
        "google": google_mode,
        "message_bytes": MESSAGE_BYTES,
        "variants": {
            v: {
                "rates": rates[v],
                "best_msgs_per_s": max(rates[v]),
                "median_msgs_per_s": common.median(rates[v]),
                "aws_calls_per_msg": calls[v],
                "s3_requests_per_msg": sum(s3_requests[v].values()) / (messages * passes),
                "s3_requests_by_operation": {op: n / (messages * passes) for op, n in sorted(s3_requests[v].items())},
                "profile": profiles[v],
            }
            for v in variants
        },
    }


def _aws_calls(profiler: cProfile.Profile) -> int:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    for (filename, _line, function), (_cc, count, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        if function == "_make_api_call" and filename.endswith("botocore/client.py"):
            return int(count)
    return 0


def _profile_tables(profiler: cProfile.Profile, messages: int, top: int) -> dict[str, list[list[Any]]]:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries = []
    for (filename, line, function), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = _short(filename)
        entries.append(
            {
                "function": f"{where}:{line}({function})",
                "calls": calls,
                "own_ms_per_msg": own * 1000 / messages,
                "cum_ms_per_msg": cumulative * 1000 / messages,
                "ours": any(marker in filename for marker in OURS) and "benchmarks" not in filename,
            }
        )

    def rows(key: str, only_ours: bool) -> list[list[Any]]:
        chosen = [e for e in entries if e["ours"] or not only_ours]
        chosen.sort(key=lambda e: e[key], reverse=True)
        return [[e["function"], e["calls"], e["own_ms_per_msg"], e["cum_ms_per_msg"]] for e in chosen[:top]]

    return {
        "by cumulative time": rows("cum_ms_per_msg", False),
        "by own time": rows("own_ms_per_msg", False),
        "ses-mail code by cumulative time": rows("cum_ms_per_msg", True),
        "ses-mail code by own time": rows("own_ms_per_msg", True),
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def report(result: dict[str, Any], *, with_profile: bool = True) -> str:
    rows = []
    for name, v in result["variants"].items():
        by_operation = ", ".join(f"{op} {n:.1f}" for op, n in v["s3_requests_by_operation"].items())
        rows.append(
            [
                name,
                " / ".join(f"{r:.0f}" for r in v["rates"]),
                v["best_msgs_per_s"],
                v["median_msgs_per_s"],
                f"{1000 / v['median_msgs_per_s']:.2f}",
                f"{v['s3_requests_per_msg']:.1f} ({by_operation})",
            ]
        )
    lines = [
        f"Throughput: {result['messages']} messages of {result['message_bytes'] // 1024} KiB in batches of {BATCH},"
        f" moto in-process, Google {result['google']}",
        common.table(
            ["variant", "passes msgs/s", "best msgs/s", "median msgs/s", "ms/msg (median)", "S3 requests/msg"],
            rows,
            align_numbers=False,
        ),
    ]
    variants = result["variants"]
    if CURRENT in variants and BEFORE in variants:
        now, before = variants[CURRENT], variants[BEFORE]
        cost_ms = 1000 / now["median_msgs_per_s"] - 1000 / before["median_msgs_per_s"]
        lines.append(
            f"the claim costs {cost_ms:+.2f} ms/message and"
            f" {now['s3_requests_per_msg'] - before['s3_requests_per_msg']:+.1f} S3 requests/message"
            f" ({now['median_msgs_per_s'] / before['median_msgs_per_s']:.2f}x the messages per second, medians)"
        )
    if with_profile:
        for name, v in result["variants"].items():
            for title, table_rows in v["profile"].items():
                lines += ["", f"cProfile [{name}], {title} (ms per message)"]
                lines.append(common.table(["function", "calls", "own ms/msg", "cum ms/msg"], table_rows))
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> common.Summary:
    parts = []
    note = ""
    for r in results:
        current = r["variants"][CURRENT]
        parts.append(f"{current['median_msgs_per_s']:.0f} msgs/s ({r['google']})")
        before = r["variants"].get(BEFORE)
        if before:
            now_ms, before_ms = (1000 / v["median_msgs_per_s"] for v in (current, before))
            note = (
                f"claims vs tag ({r['google']}): {now_ms:.2f} vs {before_ms:.2f} ms/msg,"
                f" S3 requests/msg {current['s3_requests_per_msg']:.0f} vs {before['s3_requests_per_msg']:.0f}"
            )
    return common.Summary("throughput, 8 KiB msgs", ", ".join(parts), "-", "report + profile", None, note)


def run(
    smoke: bool = False, messages: int | None = None, modes: tuple[str, ...] = ("inproc", "loopback")
) -> common.Summary:
    count = messages or (30 if smoke else 500)
    results = []
    for index, mode in enumerate(modes):
        variants = tuple(VARIANTS) if index == 0 else (CURRENT,)
        result = measure(count, mode, passes=1 if smoke else 5, variants=variants)
        print(report(result, with_profile=index == 0), flush=True)
        print(flush=True)
        results.append(result)
    if not smoke:
        common.save_result("throughput", {"results": results})
    return summary(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None, help="messages per pass (default 500; smoke 30)")
    parser.add_argument("--google", choices=("inproc", "loopback", "both"), default="both")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    modes = ("inproc", "loopback") if args.google == "both" else (args.google,)
    run(args.smoke, args.messages, modes)


if __name__ == "__main__":
    main()
