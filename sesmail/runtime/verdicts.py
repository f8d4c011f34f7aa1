"""What lands where: SES's sender-authentication verdicts, and the policy that places each message.

Gmail's ``users.messages.import`` does not check SPF, DKIM or DMARC (Google's reference says
so), so a forged mail "from" a bank whose DMARC policy is ``p=reject`` would land in the inbox
as if genuine. SES has checked the message already: its receipt carries ``spfVerdict``,
``dkimVerdict``, ``dmarcVerdict``, ``dmarcPolicy``, ``spamVerdict`` and ``virusVerdict``. When a
notification lacks them (a hand-made event, a Lambda-action record without a receipt), the same
verdicts are read from the headers SES wrote into the stored message.

The policy (stack config ``ses-mail:authFailures``, the forwarder's ``AUTH_FAILURES``):

* ``spam`` (default): DMARC FAIL with policy ``quarantine`` or ``reject`` → ``SPAM``, never ``INBOX``;
  spam or virus FAIL → ``SPAM``; everything else → ``INBOX`` + ``UNREAD``.
* ``drop``: DMARC FAIL with policy ``reject``, and viruses, are not imported at all (logged with
  the verdicts, counted as ``MessagesRejected``; the raw message stays in S3 until ``retainDays``);
  the rest as ``spam``.
* ``inbox``: as before this policy existed (only spam or virus FAIL → ``SPAM``), for people who
  filter themselves.

``neverMarkSpam`` stays false on every import, so Gmail's own classifier still applies.
Values are compared case-insensitively; an SPF or DKIM failure without a DMARC verdict (the
sender's domain publishes no DMARC policy) decides nothing by itself: DMARC is the sender's own
statement of what should happen to mail that fails.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

FAIL = "FAIL"
#: DMARC policies that ask receivers to treat failing mail as suspicious or to refuse it.
ENFORCED_DMARC_POLICIES = frozenset({"QUARANTINE", "REJECT"})
#: How much of the stored message is read to find SES's headers when the notification has no
#: verdicts: SES prepends its own headers (Received, Received-SPF, Authentication-Results,
#: X-SES-*) at the top, so they are always inside the first kilobytes.
HEADER_PEEK_BYTES = 64 * 1024
#: The authserv-id of the Authentication-Results header SES adds (RFC 8601).
_SES_AUTHSERV = "amazonses.com"


class AuthFailures(enum.Enum):
    """The ``ses-mail:authFailures`` modes."""

    SPAM = "spam"
    DROP = "drop"
    INBOX = "inbox"

    @classmethod
    def parse(cls, value: str | None) -> AuthFailures:
        text = (value or "").strip().lower() or cls.SPAM.value
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(mode.value for mode in cls)
            raise ValueError(f"authFailures must be one of {choices}, got {value!r}") from None


class Placement(enum.Enum):
    INBOX = "inbox"
    SPAM = "spam"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Verdicts:
    """SES's verdicts, upper-cased; None where SES said nothing."""

    spam: str | None = None
    virus: str | None = None
    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    dmarc_policy: str | None = None

    @property
    def known(self) -> bool:
        return any(value is not None for value in asdict(self).values())

    @property
    def dmarc_enforced_failure(self) -> bool:
        """DMARC FAIL and the sender's domain asks for quarantine or rejection."""
        return self.dmarc == FAIL and self.dmarc_policy in ENFORCED_DMARC_POLICIES

    def as_log(self) -> dict[str, str | None]:
        """The verdicts for a log line (no secret in them; they are what Gmail would show)."""
        fields = asdict(self)
        policy = fields.pop("dmarc_policy")
        return {**{f"{key}Verdict": value for key, value in fields.items()}, "dmarcPolicy": policy}

    @classmethod
    def from_receipt(cls, receipt: Mapping[str, Any]) -> Verdicts:
        """From an SES notification's ``receipt`` (each verdict ``{"status": ...}``; the policy a string)."""
        return cls(
            spam=_status(receipt.get("spamVerdict")),
            virus=_status(receipt.get("virusVerdict")),
            spf=_status(receipt.get("spfVerdict")),
            dkim=_status(receipt.get("dkimVerdict")),
            dmarc=_status(receipt.get("dmarcVerdict")),
            dmarc_policy=_status(receipt.get("dmarcPolicy")),
        )

    @classmethod
    def from_headers(cls, head: bytes) -> Verdicts:
        """From the headers SES wrote at the top of the stored message (the first bytes suffice).

        ``X-SES-Spam-Verdict``/``X-SES-Virus-Verdict`` (``PASS``/``FAIL``), ``Received-SPF``
        (``pass``, ``fail``, ...) and SES's own ``Authentication-Results`` (``spf=``, ``dkim=``,
        ``dmarc=`` and, for a DMARC failure, the policy as ``p=``). Only SES's own
        Authentication-Results (``amazonses.com``) count: a sender can write any header.
        """
        header_block = head.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        headers = BytesHeaderParser(policy=compat32).parsebytes(header_block)
        all_results = [str(value).strip() for value in headers.get_all("Authentication-Results", [])]
        results = next((value for value in all_results if value.startswith(_SES_AUTHSERV)), "")
        return cls(
            spam=_upper(headers.get("X-SES-Spam-Verdict")),
            virus=_upper(headers.get("X-SES-Virus-Verdict")),
            spf=_result(results, "spf") or _first_word(headers.get("Received-SPF")),
            dkim=_result(results, "dkim"),
            dmarc=_result(results, "dmarc"),
            dmarc_policy=_match(r"\bp=([a-z]+)", results),
        )


def place(verdicts: Verdicts, mode: AuthFailures) -> tuple[Placement, str]:
    """Where a message goes under ``mode``, and why (for the log line)."""
    malware = verdicts.virus == FAIL
    if mode is AuthFailures.DROP and malware:
        return Placement.REJECTED, "virus verdict FAIL"
    if mode is AuthFailures.DROP and verdicts.dmarc == FAIL and verdicts.dmarc_policy == "REJECT":
        return Placement.REJECTED, "DMARC FAIL and the sender's domain asks to reject (p=reject)"
    if mode is not AuthFailures.INBOX and verdicts.dmarc_enforced_failure:
        return Placement.SPAM, f"DMARC FAIL with p={(verdicts.dmarc_policy or '').lower()}"
    if verdicts.spam == FAIL or malware:
        return Placement.SPAM, "spam or virus verdict FAIL"
    return Placement.INBOX, "no failing verdict that decides"


def _status(value: Any) -> str | None:
    """A verdict's status: SES sends ``{"status": "PASS"}``; a bare string is accepted too."""
    status = value.get("status") if isinstance(value, Mapping) else value
    return _upper(status) if isinstance(status, str) else None


def _upper(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text.upper() or None


def _first_word(value: Any) -> str | None:
    words = str(value or "").split()
    return _upper(words[0]) if words else None


def _result(results: str, method: str) -> str | None:
    return _upper(_match(rf"\b{method}=([a-z]+)", results))


def _match(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text, re.IGNORECASE)
    return _upper(found.group(1)) if found else None
