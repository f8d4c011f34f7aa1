"""The canary: signing, recognising (hostile input too), the message it sends, and its Lambda on moto's SES."""

from __future__ import annotations

import email
import email.utils
import json
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from handlers import canary as canary_handler
from sesmail import names
from sesmail.runtime import canary
from sesmail.runtime.log import REDACTED, redact
from sesmail.runtime.verdicts import HEADER_PEEK_BYTES
from tests.conftest import ENV, REGION, FakeContext

DOMAIN = "example.com"
ADDRESS = names.canary_address(DOMAIN)
KEY = b"k3y-for-the-canary-tests-0123456789abcdef"
OTHER_KEY = b"another-key-entirely-0123456789abcdef"
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
RECEIVED = NOW + timedelta(seconds=90)
SKEW = names.CANARY_MAX_SKEW_SECONDS

#: What SES writes above the sender's headers in the stored message.
SES_PREFIX = (
    b"Return-Path: <ses-mail-canary@example.com>\r\n"
    b"Received: from a8-1.smtp-out.amazonses.com (a8-1.smtp-out.amazonses.com [54.240.8.1])\r\n"
    b" by inbound-smtp.us-east-1.amazonaws.com with SMTP id abc123\r\n"
    b" for ses-mail-canary@example.com; Mon, 23 Nov 2026 10:01:30 +0000 (UTC)\r\n"
    b"X-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\n"
)


def human_message(*headers: str, to: str = "bob@example.com", body: str = "Hi Bob.") -> bytes:
    lines = [
        "From: Alice <alice@example.org>",
        f"To: {to}",
        "Subject: Hello",
        "Date: Mon, 23 Nov 2026 10:00:00 +0000",
        "Message-ID: <hello-1@example.org>",
        *headers,
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode()


def check(
    head: bytes,
    recipients: Sequence[str] = (ADDRESS,),
    *,
    key: bytes = KEY,
    received_at: datetime = RECEIVED,
    address: str = ADDRESS,
) -> canary.CanaryCheck:
    return canary.recognise(head, recipients, address, key, received_at)


def valid_header(canary_id: str = "canary-20261123T100000Z-0badcafe", sent_at: datetime = NOW) -> str:
    return canary.sign(KEY, canary_id, int(sent_at.timestamp()))


# --- sign / recognise ----------------------------------------------------------------------------


def test_sign_writes_the_documented_header() -> None:
    value = canary.sign(KEY, "canary-20261123T100000Z-0badcafe", 1795428000)

    match = re.fullmatch(r"v1; id=(\S+); t=(\d+); mac=([0-9a-f]{64})", value)
    assert match is not None
    assert match.group(1) == "canary-20261123T100000Z-0badcafe"
    assert match.group(2) == "1795428000"
    assert canary.sign(KEY, "canary-20261123T100000Z-0badcafe", 1795428000) == value
    assert canary.sign(OTHER_KEY, "canary-20261123T100000Z-0badcafe", 1795428000) != value


@pytest.mark.parametrize("canary_id", ["", "has space", "semi;colon", "equals=sign", "new\r\nline", "x" * 200])
def test_sign_refuses_ids_that_would_break_the_header(canary_id: str) -> None:
    with pytest.raises(ValueError, match="canary id"):
        canary.sign(KEY, canary_id, 1795428000)


def test_round_trip_through_build_and_recognise() -> None:
    canary_id, raw = canary.build_message(ADDRESS, KEY, NOW)

    result = check(SES_PREFIX + raw)

    assert result == canary.CanaryCheck(True, canary_id, result.reason)
    assert result.is_canary


def test_a_forged_mac_is_refused() -> None:
    _, raw = canary.build_message(ADDRESS, KEY, NOW)
    mac = re.search(rb"mac=([0-9a-f]{64})", raw)
    assert mac is not None
    flipped = mac.group(1)[:-1] + (b"0" if mac.group(1)[-1:] != b"0" else b"1")

    result = check(raw.replace(mac.group(1), flipped))

    assert not result.is_canary
    assert result.reason == "bad signature"


def test_a_mac_made_with_another_key_is_refused() -> None:
    canary_id, raw = canary.build_message(ADDRESS, OTHER_KEY, NOW)

    result = check(raw)

    assert (result.is_canary, result.canary_id, result.reason) == (False, canary_id, "bad signature")


@pytest.mark.parametrize("offset", [SKEW + 1, -(SKEW + 1), 30 * 24 * 3600, -30 * 24 * 3600])
def test_a_canary_signed_too_far_from_its_receipt_is_stale(offset: int) -> None:
    _, raw = canary.build_message(ADDRESS, KEY, NOW)

    result = check(raw, received_at=NOW + timedelta(seconds=offset))

    assert not result.is_canary
    assert result.reason.startswith("stale: signed 2026-11-23T10:00:00Z")
    assert "received" in result.reason


@pytest.mark.parametrize("offset", [SKEW, -SKEW, 0])
def test_a_canary_within_the_skew_is_fresh(offset: int) -> None:
    _, raw = canary.build_message(ADDRESS, KEY, NOW)

    assert check(raw, received_at=NOW + timedelta(seconds=offset)).is_canary


def test_a_valid_header_copied_onto_a_humans_message_to_another_address_is_not_a_canary() -> None:
    head = human_message(f"{names.CANARY_HEADER}: {valid_header()}", to=ADDRESS)

    result = check(head, recipients=["bob@example.com"])

    assert (result.is_canary, result.reason) == (False, "not addressed to the canary address")
    # With the envelope naming the address it would be one: the envelope is what decides.
    assert check(head).is_canary


def test_the_address_used_by_a_human_without_the_header_is_not_a_canary() -> None:
    result = check(human_message(to=ADDRESS), recipients=["bob@example.com", ADDRESS])

    assert (result.is_canary, result.reason) == (False, f"no {names.CANARY_HEADER} header")


def test_the_header_in_the_body_does_not_count() -> None:
    head = human_message(to=ADDRESS, body=f"{names.CANARY_HEADER}: {valid_header()}")

    assert check(head).reason == f"no {names.CANARY_HEADER} header"


def test_the_address_matches_without_case() -> None:
    _, raw = canary.build_message(ADDRESS, KEY, NOW)

    assert check(raw, recipients=["someone@example.com", "SES-Mail-Canary@Example.COM"]).is_canary
    assert check(raw, recipients=[ADDRESS], address="SES-MAIL-CANARY@EXAMPLE.COM").is_canary


def test_the_header_name_matches_without_case() -> None:
    assert check(human_message(f"x-ses-mail-canary: {valid_header()}", to=ADDRESS)).is_canary
    assert check(human_message(f"X-SES-MAIL-CANARY : {valid_header()}", to=ADDRESS)).is_canary


def test_a_folded_header_is_unfolded() -> None:
    value = valid_header()
    folded = value.replace("; t=", ";\r\n\tt=").replace("; mac=", ";\r\n mac=")
    assert "\r\n" in folded

    result = check(human_message(f"{names.CANARY_HEADER}: {folded}", to=ADDRESS))

    assert result.is_canary, result.reason


def test_bare_lf_line_endings_are_read_too() -> None:
    _, raw = canary.build_message(ADDRESS, KEY, NOW)

    assert check(raw.replace(b"\r\n", b"\n")).is_canary


def test_several_canary_headers_are_refused_as_malformed() -> None:
    header = f"{names.CANARY_HEADER}: {valid_header()}"

    result = check(human_message(header, header, to=ADDRESS))

    assert not result.is_canary
    assert result.reason.startswith("malformed header")
    assert "2 " in result.reason


_ID = "canary-20261123T100000Z-0badcafe"
_T = str(int(NOW.timestamp()))
_MAC = canary.sign(KEY, _ID, int(_T)).rpartition("mac=")[2]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1",
        "v2; id={id}; t={t}; mac={mac}",
        "id={id}; t={t}; mac={mac}",
        "v1; id={id}; t={t}",
        "v1; id={id}; mac={mac}",
        "v1; t={t}; mac={mac}",
        "v1; id={id}; t={t}; mac={mac}; extra=1",
        "v1; id={id}; id={id}; t={t}; mac={mac}",
        "v1; id={id}; t={t}; mac={mac}; mac={mac}",
        "v1; id={id}; t=-5; mac={mac}",
        "v1; id={id}; t=1e9; mac={mac}",
        "v1; id={id}; t=999999999999999999999999; mac={mac}",
        "v1; id={id}; t={t}; mac={mac}00",
        "v1; id={id}; t={t}; mac=zz{mac_tail}",
        "v1; id={id}; t={t}; mac=",
        "v1; id=; t={t}; mac={mac}",
        "v1; id=has space; t={t}; mac={mac}",
        "v1; id={id}; t={t}; mac",
        "v1 id={id} t={t} mac={mac}",
        "v1; id=\u00e9t\u00e9; t={t}; mac={mac}",
    ],
)
def test_malformed_headers_are_refused_without_raising(value: str) -> None:
    header = value.format(id=_ID, t=_T, mac=_MAC, mac_tail=_MAC[2:])
    head = human_message(to=ADDRESS).replace(b"\r\n\r\n", f"\r\n{names.CANARY_HEADER}: {header}\r\n\r\n".encode(), 1)
    head = head.replace(header.encode(), header.encode("latin-1"))

    result = check(head)

    assert not result.is_canary
    assert result.reason.startswith("malformed header"), result.reason


def test_the_fields_may_come_in_any_order_with_any_spacing() -> None:
    header = f"v1;mac={_MAC} ;t={_T};   id={_ID};"

    result = check(human_message(f"{names.CANARY_HEADER}:{header}", to=ADDRESS))

    assert (result.is_canary, result.canary_id) == (True, _ID)


def test_a_64_kib_head_cut_mid_header_does_not_crash() -> None:
    filler = "".join(f"X-Filler-{i}: {'a' * 60}\r\n" for i in range(800)).encode()
    _, raw = canary.build_message(ADDRESS, KEY, NOW)
    top, marker, rest = raw.partition(f"{names.CANARY_HEADER}:".encode())
    # Whole header lines up to 40 bytes before the cut, then the canary header: its MAC is cut short.
    pad = HEADER_PEEK_BYTES - 40 - len(top) - len(filler) - len(b"X-Pad: \r\n")
    assert pad > 0
    head = (top + filler + b"X-Pad: " + b"p" * pad + b"\r\n" + marker + rest)[:HEADER_PEEK_BYTES]
    assert len(head) == HEADER_PEEK_BYTES
    assert head[-40:].startswith(marker) and b"\r\n\r\n" not in head

    result = check(head)

    assert not result.is_canary
    assert result.reason.startswith("malformed header")
    # A canary header wholly inside, with the cut falling in a later header: still a canary.
    filler = filler * 2
    inside = raw.replace(b"\r\n\r\n", b"\r\n" + filler + b"\r\n", 1)[:HEADER_PEEK_BYTES]
    assert len(inside) == HEADER_PEEK_BYTES and not inside.endswith(b"\r\n")
    assert check(inside).is_canary


def test_hostile_input_never_raises() -> None:
    rng = random.Random(20261123)
    _, raw = canary.build_message(ADDRESS, KEY, NOW)
    samples: list[bytes] = [b"", b"\r\n", b"\x00" * 100, b":" * 1000, b" \t\r\n" * 100, b"\x85\x0c\x1c" * 50]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))) for _ in range(200)]
    for _ in range(200):  # the real canary with random bytes flipped or cut
        mutated = bytearray(raw[: rng.randrange(1, len(raw) + 1)])
        for _ in range(rng.randrange(1, 5)):
            if mutated:
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    hostile_recipients: list[Any] = [[ADDRESS], [], None, [None, 5, ADDRESS.upper()], ADDRESS, [b"bytes"]]
    for head in samples:
        for recipients in hostile_recipients:
            for received_at in (RECEIVED, RECEIVED.replace(tzinfo=None), datetime.max.replace(tzinfo=UTC)):
                result = canary.recognise(head, recipients, ADDRESS, KEY, received_at)
                assert isinstance(result, canary.CanaryCheck)


def test_a_naive_receipt_time_is_taken_as_utc() -> None:
    _, raw = canary.build_message(ADDRESS, KEY, NOW)

    assert check(raw, received_at=RECEIVED.replace(tzinfo=None)).is_canary


# --- build_message -------------------------------------------------------------------------------


def test_build_message_produces_parseable_mail_with_the_headers() -> None:
    canary_id, raw = canary.build_message(ADDRESS, KEY, NOW)

    assert re.fullmatch(r"canary-20261123T100000Z-[0-9a-f]{8}", canary_id)
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    message = email.message_from_bytes(raw)
    assert message["From"] == ADDRESS
    assert message["To"] == ADDRESS
    assert message["Subject"] == "ses-mail canary 2026-11-23"
    assert email.utils.parsedate_to_datetime(message["Date"]) == NOW
    assert message["Message-ID"] == f"<{canary_id}@{DOMAIN}>"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message[names.CANARY_HEADER] == canary.sign(KEY, canary_id, int(NOW.timestamp()))
    assert len(message.get_all(names.CANARY_HEADER) or []) == 1
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert names.CANARY_LABEL.encode() in body and b"canary" in body
    assert not message.defects


def test_build_message_makes_a_new_id_each_time_unless_given_one() -> None:
    first, _ = canary.build_message(ADDRESS, KEY, NOW)
    second, _ = canary.build_message(ADDRESS, KEY, NOW)
    given, raw = canary.build_message(ADDRESS, KEY, NOW, canary_id="canary-fixed-1")

    assert first != second
    assert given == "canary-fixed-1"
    assert b"Message-ID: <canary-fixed-1@example.com>\r\n" in raw


def test_build_message_converts_the_time_to_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=-8)))

    canary_id, raw = canary.build_message(ADDRESS, KEY, local)

    assert canary_id.startswith("canary-20261123T100000Z-")
    assert email.utils.parsedate_to_datetime(email.message_from_bytes(raw)["Date"]) == NOW


@pytest.mark.parametrize(
    "address", ["", "no-at-sign", "a@b.com\r\nBcc: victim@example.org", "Canary <a@b.com>", "a b@c.com"]
)
def test_build_message_refuses_an_address_that_could_inject_headers(address: str) -> None:
    with pytest.raises(ValueError, match="canary address"):
        canary.build_message(address, KEY, NOW)


# --- the key -------------------------------------------------------------------------------------


def reader(values: Mapping[str, str]) -> Any:
    calls: list[list[str]] = []

    def read(parameter_names: Sequence[str]) -> dict[str, tuple[str, int]]:
        calls.append(list(parameter_names))
        return {name: (values[name], 1) for name in parameter_names if name in values}

    read.calls = calls  # type: ignore[attr-defined]
    return read


def test_load_key_reads_the_parameter_and_masks_it_in_logs() -> None:
    parameter = names.canary_key_parameter(ENV)
    text = "a-fresh-canary-key-for-redaction-1234567890"

    key = canary.load_key(reader({parameter: f"  {text}\n"}), ENV)

    assert key == text.encode()
    assert redact(f"key is {text}") == f"key is {REDACTED}"


@pytest.mark.parametrize("value", [None, names.placeholder_value(ENV), "PLACEHOLDER", "   "])
def test_load_key_refuses_a_missing_or_placeholder_key_naming_the_parameter(value: str | None) -> None:
    parameter = names.canary_key_parameter(ENV)
    values = {} if value is None else {parameter: value}

    with pytest.raises(canary.CanaryKeyError) as raised:
        canary.load_key(reader(values), ENV)

    assert parameter in str(raised.value)
    assert "pulumi up" in str(raised.value)


def test_load_key_refuses_a_short_key() -> None:
    parameter = names.canary_key_parameter(ENV)

    with pytest.raises(canary.CanaryKeyError, match=re.escape(parameter)):
        canary.load_key(reader({parameter: "short-key"}), ENV)


def test_key_cache_reads_once_then_again_after_its_ttl() -> None:
    parameter = names.canary_key_parameter(ENV)
    read = reader({parameter: "cached-canary-key-0123456789"})
    clock = [0.0]
    cache = canary.KeyCache(read, ENV, ttl_seconds=60, clock=lambda: clock[0])

    assert cache.get() == cache.get() == b"cached-canary-key-0123456789"
    assert len(read.calls) == 1
    clock[0] = 61
    cache.get()
    assert len(read.calls) == 2
    cache.forget()
    cache.get()
    assert len(read.calls) == 3


# --- the Lambda against moto's SES ---------------------------------------------------------------

KEY_TEXT = "moto-canary-key-0123456789abcdef0123"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    canary_handler.reset()
    monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
    monkeypatch.setenv(names.ENV_VAR_CANARY_ADDRESS, ADDRESS)
    with mock_aws():
        ses = boto3.client("ses", region_name=REGION)
        ssm = boto3.client("ssm", region_name=REGION)
        ses.verify_domain_identity(Domain=DOMAIN)
        ssm.put_parameter(Name=names.canary_key_parameter(ENV), Value=KEY_TEXT, Type="SecureString")
        yield ses, ssm
    canary_handler.reset()


def sent_messages() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


def test_the_handler_sends_one_canary_the_forwarder_recognises(
    aws: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = canary_handler.handler({"source": "aws.events"}, FakeContext(request_id="req-canary"))

    [sent] = sent_messages()
    assert sent.source == ADDRESS
    assert ADDRESS in sent.destinations
    assert result == {"canaryId": result["canaryId"], "sesMessageId": sent.id, "address": ADDRESS}
    raw = sent.raw_data.encode()
    check_result = canary.recognise(
        SES_PREFIX + raw, [ADDRESS], ADDRESS, canary.load_key(lambda n: {n[0]: (KEY_TEXT, 1)}, ENV), datetime.now(UTC)
    )
    assert (check_result.is_canary, check_result.canary_id) == (True, result["canaryId"])

    out = capsys.readouterr().out
    [line] = [json.loads(x) for x in out.splitlines() if names.EVENT_CANARY_SENT in x]
    assert line["event"] == names.EVENT_CANARY_SENT == "canary.sent"
    assert line["level"] == "INFO"
    assert (line["canaryId"], line["sesMessageId"], line["address"]) == (result["canaryId"], sent.id, ADDRESS)
    assert (line["env"], line["requestId"]) == (ENV, "req-canary")
    mac = re.search(r"mac=([0-9a-f]{64})", sent.raw_data)
    assert mac is not None
    assert KEY_TEXT not in out and mac.group(1) not in out and "mac=" not in out


def test_a_warm_handler_reuses_its_clients_and_sends_a_new_canary_each_run(aws: tuple[Any, Any]) -> None:
    first = canary_handler.handler({}, FakeContext())
    clients = canary_handler._clients
    second = canary_handler.handler({}, FakeContext())

    assert canary_handler._clients is clients
    assert first["canaryId"] != second["canaryId"]
    assert len(sent_messages()) == 2


def test_a_placeholder_key_fails_clearly_and_sends_nothing(aws: tuple[Any, Any]) -> None:
    _, ssm = aws
    parameter = names.canary_key_parameter(ENV)
    ssm.put_parameter(Name=parameter, Value=names.placeholder_value(ENV), Type="SecureString", Overwrite=True)

    with pytest.raises(canary.CanaryKeyError) as raised:
        canary_handler.handler({}, FakeContext())

    assert parameter in str(raised.value) and "pulumi up" in str(raised.value)
    assert sent_messages() == []


def test_a_missing_key_parameter_fails_clearly(aws: tuple[Any, Any]) -> None:
    _, ssm = aws
    ssm.delete_parameter(Name=names.canary_key_parameter(ENV))

    with pytest.raises(canary.CanaryKeyError, match="does not exist"):
        canary_handler.handler({}, FakeContext())


def test_an_unverified_identity_is_an_error_not_silence(aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.ENV_VAR_CANARY_ADDRESS, names.canary_address("unverified.example.net"))

    with pytest.raises(ClientError, match="MessageRejected"):
        canary_handler.handler({}, FakeContext())


@pytest.mark.parametrize("variable", [names.ENV_VAR_ENV, names.ENV_VAR_CANARY_ADDRESS])
def test_the_handler_without_its_environment_fails_clearly(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    canary_handler.reset()
    monkeypatch.setenv(names.ENV_VAR_ENV, ENV)
    monkeypatch.setenv(names.ENV_VAR_CANARY_ADDRESS, ADDRESS)
    monkeypatch.delenv(variable)

    with pytest.raises(RuntimeError, match=variable):
        canary_handler.handler({}, FakeContext())
