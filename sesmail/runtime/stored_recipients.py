"""Which mailboxes a stored message belongs to when the forwarder never saw it (the reconcile).

SES's S3 action stores every message it accepts as ``inbound/{messageId}``; the forwarder learns of
it from SES's notification, which carries the envelope recipients (``receipt.recipients``) that
:meth:`MailboxTable.route <sesmail.runtime.mailboxes.MailboxTable.route>` routes by. A message whose
notification never arrived (a broken SNS→SQS subscription, say) has only its stored bytes, so the
reconcile reads the header block at their start:

* SES's own ``Received`` header is authoritative: SES prepends its headers above anything the sender
  wrote, so the FIRST ``Received`` header, when its ``by`` host is ``inbound-smtp.<region>.amazonaws.com``,
  is SES's, and its ``for`` clause names the envelope recipient. Those route exactly as the
  notification's recipients would. Every ``Received`` header below it was written by others and is
  ignored, as is a first one from any other host.
* Without that ``for`` clause only To and Cc remain, and the sender writes them: they may name anyone,
  including addresses outside our domains. So they only choose among addresses a mailbox configures
  explicitly (the address, the address without its ``+tag``, its domain), never a catch-all.
* What cannot be recovered is which Bcc recipient such a message was for: SES accepted it for some
  address of our domains that To/Cc do not show. It goes to the catch-all mailboxes (those with no
  configured recipients) or, without one, nowhere: :func:`route_stored` returns ``()`` and the caller
  reports the message as unroutable.

Standard library only (plus :mod:`sesmail.runtime.mailboxes`): this module ships in the Lambda archive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses

from sesmail.runtime.mailboxes import MailboxTable

#: The end of the header block: the first empty line.
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")

#: SES's receiving host in a ``Received`` header's ``by`` clause.
_SES_BY = re.compile(r"(?:^|\s)by\s+inbound-smtp\.[a-z0-9.-]+\.amazonaws\.com(?=[\s;(]|$)", re.IGNORECASE)

#: A ``for`` clause: ``for <alice@example.com>`` or ``for alice@example.com`` (then ``;`` or space).
_FOR = re.compile(r"(?:^|\s)for\s+<?([^\s<>;]+)>?(?=[\s;]|$)", re.IGNORECASE)

#: Characters no address we could route may contain (besides whitespace and control characters).
_NOT_IN_ADDRESS = frozenset('<>()[]\\,;:"')


@dataclass(frozen=True)
class StoredRecipients:
    #: Envelope recipients SES itself recorded: the ``for`` clause(s) of SES's own Received header
    #: (the FIRST Received header of the message, and only if its ``by`` host is
    #: ``inbound-smtp.<region>.amazonaws.com``; anything below it was written by others and is ignored).
    envelope: tuple[str, ...]
    #: Addresses in the To and Cc headers (sender-written), lowercased, in order, deduplicated.
    written: tuple[str, ...]


def stored_recipients(head: bytes) -> StoredRecipients:
    """The recipients the first bytes of a stored raw message name; never raises.

    ``head`` may be the whole message or only its start, cut anywhere: only the header block is
    read, and a line cut at the end of ``head`` is dropped. Anything unreadable yields empty tuples.
    """
    try:
        return _parse(head)
    except Exception:
        # The bytes are whatever a sender sent; a parser surprise must not stop the reconcile.
        return StoredRecipients((), ())


def route_stored(table: MailboxTable, found: StoredRecipients) -> tuple[str, ...]:
    """Mailbox names (table order) a stored message the forwarder never saw belongs to."""
    if found.envelope:
        return tuple(table.route(found.envelope).targets)
    claimed: set[str] = set()
    for address in found.written:
        claimed.update(_explicit_mailboxes(table, address))
    if claimed:
        return tuple(m.name for m in table.mailboxes if m.name in claimed)
    return tuple(m.name for m in table.mailboxes if m.catches_all)


def _explicit_mailboxes(table: MailboxTable, address: str) -> list[str]:
    """The mailboxes that configure ``address`` itself, else it without its ``+tag``, else its domain:
    the precedence of ``MailboxTable.route`` without its fallback to the catch-all mailboxes."""
    local, _, domain = address.rpartition("@")
    base = f"{local.split('+', 1)[0]}@{domain}"
    for key in (address, base, domain):
        matched = [m.name for m in table.mailboxes if key in m.recipients]
        if matched:
            return matched
    return []


def _parse(head: bytes) -> StoredRecipients:
    message = HeaderParser(policy=compat32).parsestr(_header_block(head).decode("utf-8", "replace"))
    received = [str(v) for v in message.get_all("Received") or []]
    envelope = _ses_envelope(received[0]) if received else ()
    written = [str(v) for v in (message.get_all("To") or []) + (message.get_all("Cc") or [])]
    return StoredRecipients(envelope, _addresses(addr for _, addr in getaddresses(written)))


def _header_block(head: bytes) -> bytes:
    """The header lines of ``head``, up to its first empty line; if it has none, every complete line."""
    if head.startswith((b"\n", b"\r\n")):
        return b""  # an empty header block: everything after it is body
    end = _BLANK_LINE.search(head)
    if end:
        return head[: end.end()]
    return head[: head.rfind(b"\n") + 1]  # the text after the last line break may be cut mid-line


def _ses_envelope(received: str) -> tuple[str, ...]:
    """The ``for`` addresses of ``received`` if SES wrote it, read after its ``by`` clause only (the
    ``from`` clause before it holds the sending host's HELO name)."""
    text = " ".join(received.split())
    by = _SES_BY.search(text)
    if not by:
        return ()
    return _addresses(m.group(1) for m in _FOR.finditer(text, by.end()))


def _addresses(candidates: Iterable[str]) -> tuple[str, ...]:
    """The candidates that look like ``local@domain``, stripped and lowercased, each once, in order."""
    kept = (c.strip().lower() for c in candidates)
    return tuple(dict.fromkeys(a for a in kept if _looks_like_address(a)))


def _looks_like_address(text: str) -> bool:
    local, at, domain = text.partition("@")
    return (
        bool(at and local and domain)
        and "@" not in domain
        and all(c.isprintable() and not c.isspace() and c not in _NOT_IN_ADDRESS for c in text)
    )
