"""Throughput: forwarder messages per second in one warm process, and where the time goes.

    .venv/bin/python -m benchmarks.throughput [--messages 500] [--google inproc|loopback] [--smoke]

AWS is moto in-process; Google is a zero-latency fake:
- ``inproc`` (default): the forwarder's HTTP client is replaced by an in-process stand-in that
  answers the token endpoint and drains the streamed upload body chunk by chunk, so nothing but
  the forwarder, boto3 and moto is measured;
- ``loopback``: FakeGoogle over real HTTP on 127.0.0.1 (the forwarder's own keep-alive client
  included).

The forwarder handles SQS events of 10 records (8 KiB messages) after one warm-up batch; five
timed passes per variant, alternating, and their median is reported. Then one more pass per
variant runs under cProfile, and the top entries by cumulative and by own time are printed,
overall and for ses-mail's own code only. The first mode also measures the code as it was
before the profile's top cost was removed (see ``VARIANTS``), in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import json
import os
import pstats
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from benchmarks import common
from sesmail import names
from sesmail.http import Body, HttpClient, Response

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


#: Variants measured side by side. "tags read twice" restores, by a patch, how delivery worked
#: before the changes this benchmark led to: the tag set was read before every import (now only
#: when GetObject's TagCount says there are tags) and read again to record the Gmail id (now the
#: first read is reused): two GetObjectTagging calls per message that are gone.
VARIANTS = {"current": False, "tags read twice (before)": True}


@contextlib.contextmanager
def _variant(reread_tags: bool) -> Iterator[None]:
    from sesmail.delivery import MessageStore

    if not reread_tags:
        yield
        return
    original_open, original_record = MessageStore.open, MessageStore.record

    def open_always_reading_tags(self: MessageStore, note: Any) -> Any:
        return dataclasses.replace(original_open(self, note), tag_count=1)

    def record_rereading_tags(self: MessageStore, note: Any, gmail_id: str, tags: Any) -> None:
        original_record(self, note, gmail_id, self.tags(note))

    MessageStore.open = open_always_reading_tags  # type: ignore[method-assign]
    MessageStore.record = record_rereading_tags  # type: ignore[method-assign]
    try:
        yield
    finally:
        MessageStore.open, MessageStore.record = original_open, original_record  # type: ignore[method-assign]


def measure(
    messages: int,
    google_mode: str = "inproc",
    passes: int = 3,
    top: int = 15,
    variants: tuple[str, ...] = ("current",),
) -> dict[str, Any]:
    """Passes of each variant alternate, so drift on a shared machine hits them alike."""
    from moto import mock_aws

    from sesmail.aws import AwsClients
    from sesmail.forwarder import Forwarder, ForwarderSettings

    common.isolate_aws_environ()
    rates: dict[str, list[float]] = {v: [] for v in variants}
    profiles: dict[str, Any] = {}
    calls: dict[str, float] = {}
    with mock_aws(), contextlib.ExitStack() as stack:
        world = common.AwsWorld().create()
        google = stack.enter_context(common.BenchGoogle(store_bodies=False))
        world.install_token(google)
        http: HttpClient = ZeroLatencyGoogle() if google_mode == "inproc" else HttpClient()
        settings = ForwarderSettings.from_environ(world.forwarder_environ(google))
        forwarder = Forwarder(settings, AwsClients(), http=http)
        sink = stack.enter_context(open(os.devnull, "w"))
        stack.enter_context(contextlib.redirect_stdout(sink))
        if _handle_all(forwarder, _events(world, "warm", BATCH)):
            raise RuntimeError("warm-up batch failed")
        for n in range(passes):
            for variant in variants:
                events = _events(world, f"pass{n}-{len(rates[variant])}-{VARIANTS[variant]}", messages)
                with _variant(VARIANTS[variant]):
                    started = time.perf_counter()
                    failures = _handle_all(forwarder, events)
                    elapsed = time.perf_counter() - started
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
        rows.append(
            [
                name,
                " / ".join(f"{r:.0f}" for r in v["rates"]),
                v["best_msgs_per_s"],
                v["median_msgs_per_s"],
                1000 / v["median_msgs_per_s"],
                f"{v['aws_calls_per_msg']:.1f}",
            ]
        )
    lines = [
        f"Throughput: {result['messages']} messages of {result['message_bytes'] // 1024} KiB in batches of {BATCH},"
        f" moto in-process, Google {result['google']}",
        common.table(
            ["variant", "passes msgs/s", "best msgs/s", "median msgs/s", "ms/msg (median)", "AWS calls/msg"], rows
        ),
    ]
    names = list(result["variants"])
    if len(names) == 2:
        now, before = (result["variants"][n]["median_msgs_per_s"] for n in names)
        lines.append(f"current / before: {now / before:.2f}x messages per second (medians)")
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
        current = r["variants"]["current"]
        parts.append(f"{current['median_msgs_per_s']:.0f} msgs/s ({r['google']})")
        before = r["variants"].get("tags read twice (before)")
        if before:
            ratio = current["median_msgs_per_s"] / before["median_msgs_per_s"]
            note = (
                f"before the fix {before['median_msgs_per_s']:.0f} msgs/s ({r['google']}): {ratio:.2f}x;"
                f" AWS calls/msg {before['aws_calls_per_msg']:.0f} -> {current['aws_calls_per_msg']:.0f}"
            )
    return common.Summary("throughput, 8 KiB msgs", ", ".join(parts), "-", "report + profile", None, note)


def run(
    smoke: bool = False, messages: int | None = None, modes: tuple[str, ...] = ("inproc", "loopback")
) -> common.Summary:
    count = messages or (30 if smoke else 500)
    results = []
    for index, mode in enumerate(modes):
        variants = tuple(VARIANTS) if index == 0 else ("current",)
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
