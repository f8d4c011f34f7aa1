"""Strange and huge mail, end to end: handler -> moto S3 -> upload endpoint of the fake Gmail.

The forwarder never parses a message: whatever SES stored is what Gmail receives, byte for byte
(compared raw for small mail, by sha256 and size for big mail with ``store_bodies=False``).
It refuses only what Gmail itself would refuse, before uploading and with a permanent reason:
an empty object, or more than ``GMAIL_MAX_MESSAGE_BYTES`` (50 MiB).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesmail import names
from sesmail.runtime import gmail
from sesmail.runtime.delivery import CHUNK_BYTES
from tests.conftest import BUCKET, World

#: SES's S3 action stores messages up to 40 MB (10^6 bytes a MB); a little under it.
SES_S3_ACTION_MAX_BYTES = 40 * 1000 * 1000


def _attrs(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


def _deliver(world: World, message_id: str, raw: bytes) -> dict[str, Any]:
    if not world.refresh_token:
        world.install_token()
    result: dict[str, Any] = world.handle(world.sqs_event(world.store_mail(message_id, raw)))
    return result


def _assert_imported_exactly(world: World, raw: bytes) -> None:
    assert world.drain(world.inbound_dlq_url) == []
    assert world.drain(world.retry_queue_url) == []
    imported = world.google.messages[-1]
    assert (imported.size, imported.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    if imported.raw is not None:
        assert imported.raw == raw
    assert imported.params["internalDateSource"] == "dateHeader"  # Gmail orders by the Date: header


def _message(*headers: str, body: bytes = b"Hello.\r\n", eol: bytes = b"\r\n") -> bytes:
    return eol.join(h.encode("utf-8", "surrogateescape") for h in headers) + eol + eol + body


BASIC = ("From: a@example.org", "To: b@example.com", "Subject: edge")

EDGE_CASES: dict[str, bytes] = {
    "crlf": _message(*BASIC, "Date: Mon, 23 Nov 2026 10:00:00 +0000", "Message-ID: <a@x>", body=b"one\r\ntwo\r\n"),
    "bare-lf": _message(*BASIC, "Date: Mon, 23 Nov 2026 10:00:00 +0000", body=b"one\ntwo\n", eol=b"\n"),
    "bare-cr-and-mixed": b"From: a@example.org\rTo: b@example.com\n\r\nbody\rline\nline\r\nend",
    "no-final-newline": _message(*BASIC, body=b"no newline at the end"),
    "8bit-latin1": _message(*BASIC, "Content-Type: text/plain; charset=iso-8859-1", body=b"caf\xe9 na\xefve \xa3\r\n"),
    "8bit-header": b"From: J\xf6rg <j@example.org>\r\nSubject: \xe4\xf6\xfc \xff\xfe\r\n\r\nbody\r\n",
    "shift-jis": _message(
        *BASIC, "Content-Type: text/plain; charset=shift_jis", body="日本語のメール".encode("shift_jis")
    ),
    "invalid-utf8": _message(
        *BASIC, "Content-Type: text/plain; charset=utf-8", body=b"\xc3\x28 \xa0\xa1 \xf0\x28\x8c\xbc"
    ),
    "nul-and-controls": _message(*BASIC, body=b"nul:\x00 bell:\x07 esc:\x1b del:\x7f\r\n"),
    "no-date": _message("From: a@example.org", "To: b@example.com", "Message-ID: <no-date@x>"),
    "date-far-past": _message(*BASIC, "Date: Thu, 01 Jan 1970 00:00:00 +0000"),
    "date-before-epoch": _message(*BASIC, "Date: Sat, 01 Jan 1910 00:00:00 -0500"),
    "date-far-future": _message(*BASIC, "Date: Fri, 31 Dec 9999 23:59:59 +1400"),
    "date-garbage": _message(*BASIC, "Date: yesterday-ish, around teatime"),
    "no-message-id": _message(*BASIC, "Date: Mon, 23 Nov 2026 10:00:00 +0000"),
    "headers-only": b"From: a@example.org\r\nSubject: no body\r\n",
    "no-headers": b"\r\njust a body\r\n",
    "looks-like-our-multipart": _message(
        *BASIC,
        "Content-Type: multipart/related; boundary=sesmail-0000",
        body=b"--sesmail-0000\r\nContent-Type: message/rfc822\r\n\r\nx\r\n--sesmail-0000--\r\n",
    ),
    "one-byte": b"x",
}


def test_strange_mail_is_imported_byte_for_byte(world: World, subtests: pytest.Subtests) -> None:
    """One world (a warm container) for all the cases; each is reported on its own."""
    for case, raw in sorted(EDGE_CASES.items()):
        with subtests.test(case=case):
            assert _deliver(world, f"edge-{case}", raw) == {"batchItemFailures": []}
            _assert_imported_exactly(world, raw)
    assert len(world.google.messages) == len(EDGE_CASES)


def test_two_thousand_header_lines(world: World) -> None:
    received = [
        f"Received: from relay{i}.example.net (relay{i}.example.net [192.0.2.{i % 250}]) by mx.example.com; "
        f"Mon, 23 Nov 2026 10:{i % 60:02d}:00 +0000"
        for i in range(2000)
    ]
    raw = _message(*received, *BASIC, "Date: Mon, 23 Nov 2026 10:00:00 +0000")
    assert raw.count(b"\r\n") > 2000
    assert _deliver(world, "many-headers", raw) == {"batchItemFailures": []}
    _assert_imported_exactly(world, raw)


def test_five_thousand_recipients_on_one_to_line(world: World) -> None:
    to = "To: " + ", ".join(f"Recipient {i} <r{i}@example.com>" for i in range(5000))
    raw = _message("From: a@example.org", to, "Subject: everyone")
    assert len(to) > 100_000  # far past RFC 5322's 998-character line limit: passed through anyway
    assert _deliver(world, "many-recipients", raw) == {"batchItemFailures": []}
    _assert_imported_exactly(world, raw)


def _big(size: int, seed: bytes) -> bytes:
    """A MIME-shaped message of exactly ``size`` bytes (headers + base64-looking lines)."""
    head = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: big " + seed + b"\r\n\r\n"
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size]


def test_a_39_mb_message_is_streamed_and_imported_intact(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Just under SES's 40 MB: streamed from S3 in 256 KiB chunks through the upload endpoint."""
    world.google.store_bodies = False  # the fake hashes the body instead of keeping it
    raw = _big(39 * 1000 * 1000, b"39MB")
    assert len(raw) < SES_S3_ACTION_MAX_BYTES
    sent: list[int] = []
    framed = gmail._framed

    def measured(head: bytes, chunks: Iterable[bytes], size: int, tail: bytes) -> Iterator[bytes]:
        for piece in framed(head, chunks, size, tail):
            sent.append(len(piece))
            yield piece

    monkeypatch.setattr(gmail, "_framed", measured)
    started = time.monotonic()

    assert _deliver(world, "big-39mb", raw) == {"batchItemFailures": []}

    _assert_imported_exactly(world, raw)
    assert time.monotonic() - started < 30
    # Never more than one S3 chunk in hand: memory does not grow with the message.
    assert max(sent) <= CHUNK_BYTES == 256 * 1024
    assert len(sent) >= len(raw) // CHUNK_BYTES


def test_exactly_50_mib_is_imported_and_one_byte_more_is_refused_before_uploading(world: World) -> None:
    world.google.store_bodies = False
    limit = names.GMAIL_MAX_MESSAGE_BYTES
    assert limit == 50 * 1024 * 1024
    at_limit = _big(limit, b"at-limit")
    assert _deliver(world, "at-limit", at_limit) == {"batchItemFailures": []}
    _assert_imported_exactly(world, at_limit)
    requests = world.google.import_requests

    over = at_limit + b"!"
    assert _deliver(world, "over-limit", over) == {"batchItemFailures": []}

    assert world.google.import_requests == requests  # refused before a byte was uploaded
    [dead] = world.drain(world.inbound_dlq_url)
    attributes = _attrs(dead)
    assert attributes[names.ATTR_ERROR_TYPE] == "PermanentError"
    assert attributes[names.ATTR_ERROR] == f"message is {limit + 1} bytes; Gmail imports at most {limit}"
    assert attributes["sesMessageId"] == "over-limit"
    assert world.drain(world.retry_queue_url) == []


def test_an_empty_object_is_refused_with_a_permanent_reason(world: World) -> None:
    world.install_token()
    world.s3.put_object(Bucket=BUCKET, Key="inbound/empty", Body=b"")
    note = world.store_mail("placeholder")  # any stored mail; its notification is edited below
    note["mail"]["messageId"] = "empty"
    note["receipt"]["action"]["objectKey"] = "inbound/empty"

    assert world.handle(world.sqs_event(note)) == {"batchItemFailures": []}

    assert world.google.import_requests == 0
    [dead] = world.drain(world.inbound_dlq_url)
    assert _attrs(dead)[names.ATTR_ERROR] == "message is empty"
    assert _attrs(dead)[names.ATTR_ERROR_TYPE] == "PermanentError"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=1, max_size=4096), data=st.data())
def test_any_bytes_are_imported_unchanged(world: World, raw: bytes, data: st.DataObject) -> None:
    """One world for all examples: each stores its own message id and checks the latest import."""
    if not world.refresh_token:
        world.install_token()
    message_id = f"bytes-{world.google.import_requests}-{data.draw(st.uuids()).hex}"
    assert world.handle(world.sqs_event(world.store_mail(message_id, raw))) == {"batchItemFailures": []}
    assert world.google.messages[-1].raw == raw
