"""The canary: one signed message a day that proves the whole mail path (DESIGN.md, "Canary: silence is an alarm").

The canary function sends, through SES, a message from and to ``ses-mail-canary@{first domain}``
carrying the header ``X-SES-Mail-Canary: v1; id=<canary id>; t=<unix seconds>; mac=<hex>``, where
``mac`` is HMAC-SHA256 over ``v1.<canary id>.<unix seconds>`` keyed by the SecureString
``names.canary_key_parameter(env)``. The forwarder calls :func:`recognise` on a message's envelope
recipients and the first bytes of the stored message: only a message addressed (in the envelope)
to the canary address, with exactly one well-formed header, a valid MAC and a signed time close to
SES's receipt time is a canary. Anything else is ordinary mail: a copied header on a human's
message to another address, the address used by a human, a forged or replayed canary.

Standard library and botocore only; nothing here logs the key or a MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from sesmail import names
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.log import get_logger, register_secret

log = get_logger("sesmail.runtime.canary")

#: The header format's version; the first field of the header and of the signed text.
VERSION = "v1"
#: A key shorter than this is refused: it would be guessable, and too short for the log redaction.
MIN_KEY_CHARS = 16
#: How long :class:`KeyCache` keeps the key before reading it again (a rotated key takes effect).
KEY_CACHE_SECONDS = 3600.0

#: A canary id: one plain token (it is inside the header and the Message-ID).
_CANARY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Unix seconds, at most 11 digits (year 5138): ``datetime`` can represent every one.
_SENT_AT_RE = re.compile(r"[0-9]{1,11}")
_MAC_RE = re.compile(r"[0-9a-f]{64}")
#: Only CR and LF end a line (``str.splitlines`` would also split on NEL, FF, ... inside a value).
_LINE_BREAK_RE = re.compile(r"\r\n|\n|\r")
_HEADER_FIELDS = frozenset({"id", "t", "mac"})
#: An address we will write into From/To: no whitespace, no CR/LF, no angle brackets, one '@'.
_ADDRESS_RE = re.compile(r"[^\s@<>\"(),;:]+@[A-Za-z0-9.-]+")

ReadParameters = Callable[[Sequence[str]], Mapping[str, tuple[str, int]]]


class CanaryKeyError(RuntimeError):
    """The canary key parameter is missing, still Pulumi's placeholder, or too short."""


# --- The key -------------------------------------------------------------------------------------


def load_key(read_parameters: ReadParameters, env: str) -> bytes:
    """The HMAC key from ``names.canary_key_parameter(env)`` (one SSM read); registered as a secret.

    Raises :class:`CanaryKeyError`, naming the parameter, when it does not exist, holds the
    placeholder or is shorter than ``MIN_KEY_CHARS``.
    """
    parameter = names.canary_key_parameter(env)
    deploy = names.deploy_command(env)
    found = read_parameters([parameter]).get(parameter)
    if found is None:
        raise CanaryKeyError(f"the canary key parameter {parameter} does not exist; run `{deploy}`")
    value = found[0]
    if names.is_placeholder(value):
        raise CanaryKeyError(
            f"the canary key parameter {parameter} is not configured yet (it holds the placeholder); run `{deploy}`"
        )
    text = value.strip()
    register_secret(value)
    register_secret(text)
    if len(text) < MIN_KEY_CHARS:
        raise CanaryKeyError(
            f"the canary key parameter {parameter} holds fewer than {MIN_KEY_CHARS} characters; "
            f"store a longer random key (or let `{deploy}` generate one)"
        )
    return text.encode("utf-8")


class KeyCache:
    """The key of one environment, read once per container and again after ``ttl_seconds``.

    The forwarder needs it only for a message addressed to the canary address (once a day), so
    the cache mostly spares the canary's own retries; the expiry lets a rotated key take effect.
    A failed read is not cached.
    """

    def __init__(
        self,
        read_parameters: ReadParameters,
        env: str,
        *,
        ttl_seconds: float = KEY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_parameters = read_parameters
        self._env = names.check_env(env)
        self._ttl = ttl_seconds
        self._clock = clock
        self._key: bytes | None = None
        self._read_at = 0.0

    def get(self) -> bytes:
        now = self._clock()
        if self._key is None or now - self._read_at >= self._ttl:
            self._key = load_key(self._read_parameters, self._env)
            self._read_at = now
        return self._key

    def forget(self) -> None:
        """Read the key again on the next :meth:`get`."""
        self._key = None


# --- Signing -------------------------------------------------------------------------------------


def _mac(key: bytes, canary_id: str, sent_at: int) -> str:
    return hmac.new(key, f"{VERSION}.{canary_id}.{sent_at}".encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, canary_id: str, sent_at: int) -> str:
    """The ``X-SES-Mail-Canary`` value: ``v1; id=<canary_id>; t=<sent_at>; mac=<hex HMAC-SHA256>``."""
    if not _CANARY_ID_RE.fullmatch(canary_id):
        raise ValueError(f"canary id {canary_id[:60]!r} is not one token of letters, digits and ._-")
    if isinstance(sent_at, bool) or not isinstance(sent_at, int) or not _SENT_AT_RE.fullmatch(str(sent_at)):
        raise ValueError(f"canary time {sent_at!r} is not a non-negative number of unix seconds")
    return f"{VERSION}; id={canary_id}; t={sent_at}; mac={_mac(key, canary_id, sent_at)}"


def new_canary_id(now: datetime) -> str:
    """``canary-YYYYMMDDTHHMMSSZ-<8 hex>``."""
    return f"canary-{_utc(now):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


# --- The message ---------------------------------------------------------------------------------


def build_message(address: str, key: bytes, now: datetime, canary_id: str | None = None) -> tuple[str, bytes]:
    """(canary id, raw RFC 5322 message with CRLF line endings) from and to ``address``, signed with ``key``."""
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        raise ValueError(f"canary address {str(address)[:80]!r} is not a plain address like name@example.com")
    now = _utc(now)
    canary_id = canary_id or new_canary_id(now)
    header = sign(key, canary_id, int(now.timestamp()))
    domain = address.rpartition("@")[2]
    lines = [
        f"From: {address}",
        f"To: {address}",
        f"Subject: ses-mail canary {now:%Y-%m-%d}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{canary_id}@{domain}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "Auto-Submitted: auto-generated",
        f"{names.CANARY_HEADER}: {header}",
        "",
        "This is the daily ses-mail canary. It went out through SES and came back through the",
        "whole mail path: DNS MX, the SES receipt rule, the bucket, the topic, the queues, the",
        "forwarder, its Gmail token and Gmail itself.",
        "",
        f"It is imported archived and read, under the label {names.CANARY_LABEL}. Nothing to do:",
        "an alarm fires when a mailbox has gone without a canary for a day.",
        "",
        f"Canary id: {canary_id}",
        "",
    ]
    return canary_id, "\r\n".join(lines).encode("ascii")


def send(ses: Any, address: str, raw: bytes) -> str:
    """Send ``raw`` through SES from and to ``address``; SES's message id."""
    response = ses.send_raw_email(Source=address, Destinations=[address], RawMessage={"Data": raw})
    return str(response["MessageId"])


# --- Recognition (the forwarder) -----------------------------------------------------------------


@dataclass(frozen=True)
class CanaryCheck:
    """Whether a received message is a canary; ``reason`` says why (not) and is safe to log."""

    is_canary: bool
    canary_id: str | None
    reason: str


def recognise(head: bytes, recipients: Sequence[str], address: str, key: bytes, received_at: datetime) -> CanaryCheck:
    """Is this message a canary? ``head``: the first bytes of the stored message; ``recipients``:
    the envelope recipients; ``received_at``: SES's receipt time. Never raises on hostile input.
    """
    try:
        return _recognise(head, recipients, address, key, received_at)
    except Exception as exc:  # a last line of defence: hostile input makes ordinary mail, not a crash
        return CanaryCheck(False, None, f"malformed header ({type(exc).__name__})")


def _recognise(head: bytes, recipients: Sequence[str], address: str, key: bytes, received_at: datetime) -> CanaryCheck:
    wanted = _normalise_address(address)
    if not wanted or wanted not in {_normalise_address(r) for r in recipients or ()}:
        return CanaryCheck(False, None, "not addressed to the canary address")
    values = header_values(head, names.CANARY_HEADER)
    if not values:
        return CanaryCheck(False, None, f"no {names.CANARY_HEADER} header")
    if len(values) > 1:
        return CanaryCheck(False, None, f"malformed header: {len(values)} {names.CANARY_HEADER} headers")
    parsed = _parse(values[0])
    if parsed is None:
        return CanaryCheck(False, None, "malformed header")
    canary_id, sent_at, mac = parsed
    if not hmac.compare_digest(_mac(key, canary_id, sent_at), mac):
        return CanaryCheck(False, canary_id, "bad signature")
    received = _utc(received_at)
    skew = abs(received.timestamp() - sent_at)
    if skew > names.CANARY_MAX_SKEW_SECONDS:
        signed = datetime.fromtimestamp(sent_at, UTC)
        return CanaryCheck(
            False,
            canary_id,
            f"stale: signed {signed:%Y-%m-%dT%H:%M:%SZ}, received {received:%Y-%m-%dT%H:%M:%SZ} "
            f"({int(skew)} s apart, more than {names.CANARY_MAX_SKEW_SECONDS} s)",
        )
    return CanaryCheck(True, canary_id, "addressed to the canary address with a valid, fresh signature")


def header_values(head: bytes, name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive) in the header section of ``head``, unfolded.

    Reads up to the first empty line (or the end of ``head``, which may be cut anywhere); bytes
    are read as Latin-1, so nothing fails to decode. Lines that are neither a header nor a
    continuation (an mbox ``From `` line) are skipped.
    """
    text = head.decode("latin-1")
    wanted = name.lower()
    values: list[str] = []
    current: list[str] | None = None  # the folded lines of the wanted header being read
    for line in _LINE_BREAK_RE.split(text):
        if not line.strip():
            break
        if line[0] in " \t":
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(" ".join(part.strip() for part in current).strip())
            current = None
        field, colon, value = line.partition(":")
        if colon and field.rstrip().lower() == wanted:
            current = [value]
    if current is not None:
        values.append(" ".join(part.strip() for part in current).strip())
    return values


def _parse(value: str) -> tuple[str, int, str] | None:
    """(id, t, mac) of ``v1; id=...; t=...; mac=...`` (fields in any order, each exactly once), or None."""
    parts = [part.strip() for part in value.split(";")]
    if not parts or parts[0] != VERSION:
        return None
    fields: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, equals, content = part.partition("=")
        name = name.strip().lower()
        if not equals or name not in _HEADER_FIELDS or name in fields:
            return None
        fields[name] = content.strip()
    if fields.keys() != _HEADER_FIELDS:
        return None
    canary_id, sent_at, mac = fields["id"], fields["t"], fields["mac"]
    if not (_CANARY_ID_RE.fullmatch(canary_id) and _SENT_AT_RE.fullmatch(sent_at) and _MAC_RE.fullmatch(mac)):
        return None
    return canary_id, int(sent_at), mac


def _normalise_address(value: Any) -> str:
    return value.strip().strip("<>").strip().lower() if isinstance(value, str) else ""


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- The canary function -------------------------------------------------------------------------


def run(clients: AwsClients, env: str, address: str, now: datetime | None = None) -> dict[str, str]:
    """Load the key, build the canary, send it through SES, log ``canary.sent``; what was sent."""
    key = load_key(clients.read_parameters, env)
    canary_id, raw = build_message(address, key, now or datetime.now(UTC))
    ses_message_id = send(clients.get("ses"), address, raw)
    fields = {"canaryId": canary_id, "sesMessageId": ses_message_id, "address": address}
    log.info(f"canary {canary_id} sent to {address}", extra={"event": names.EVENT_CANARY_SENT, **fields})
    return fields
