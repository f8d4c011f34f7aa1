"""The mailbox table: which Gmail account each envelope recipient's mail goes to (DESIGN.md, "Mailboxes").

One deployment can serve several Gmail accounts. Each :class:`Mailbox` has a name (which names
its token parameters, retry queue and alarms), the recipients it receives, its extra labels and
the Gmail address its token must belong to. The Pulumi program validates the table at
``pulumi up`` (``sesmail.infra.config``) and hands it to the Lambdas as JSON in their environment
(``names.ENV_VAR_MAILBOXES``); without ``ses-mail:mailboxes`` there is one mailbox, ``default``,
which receives every recipient.

Routing (:meth:`MailboxTable.route`) looks at the envelope recipients SES matched
(``receipt.recipients``), never at To/Cc headers, which a sender writes. For each recipient the most
specific configured entry wins, and every mailbox that lists it shares it:

1. the address exactly (``alice+shop@example.com`` configured as such);
2. the address without its ``+tag`` (``alice@example.com`` receives ``alice+shop@example.com``);
3. its domain, a catch-all (``example.com``).

So two mailboxes that list the same address both receive its mail, while a catch-all never takes
mail an address of its own domain is configured for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sesmail import names


@dataclass(frozen=True)
class Mailbox:
    name: str
    #: Lowercase addresses and domains; empty means "every recipient" (the implicit default).
    recipients: tuple[str, ...] = ()
    #: Extra Gmail labels (names or ids), besides INBOX/UNREAD or SPAM.
    labels: tuple[str, ...] = ()
    #: The Gmail account the mailbox's token must belong to (the CLI and the renewal page check it).
    gmail_address: str | None = None

    @property
    def catches_all(self) -> bool:
        return not self.recipients

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "recipients": list(self.recipients),
            "labels": list(self.labels),
            "gmailAddress": self.gmail_address,
        }


@dataclass(frozen=True)
class Routing:
    """Where one message goes: mailbox name → the recipients that sent it there, and what matched nothing."""

    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unrouted: tuple[str, ...] = ()


@dataclass(frozen=True)
class MailboxTable:
    mailboxes: tuple[Mailbox, ...]
    #: True when the stack configured ``ses-mail:mailboxes`` (False: the implicit ``default``).
    configured: bool = False

    @classmethod
    def single(cls, labels: Sequence[str] = (), gmail_address: str | None = None) -> MailboxTable:
        """The table of a stack without ``ses-mail:mailboxes``: ``default`` receives everything."""
        return cls((Mailbox(names.DEFAULT_MAILBOX, (), tuple(labels), gmail_address),))

    @property
    def primary(self) -> Mailbox:
        """``default`` when the table has it, else the first mailbox: what the single-valued
        outputs (``retryQueueUrl``, ``refreshTokenParameter``) and ``RETRY_QUEUE_URL`` name."""
        return self.get(names.DEFAULT_MAILBOX) or self.mailboxes[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.mailboxes)

    def get(self, name: str) -> Mailbox | None:
        return next((m for m in self.mailboxes if m.name == name), None)

    def route(self, recipients: Iterable[str]) -> Routing:
        """Which mailboxes receive a message for ``recipients`` (envelope), each once, in table order."""
        wanted = list(dict.fromkeys(r.strip().lower() for r in recipients if r.strip()))
        if not wanted:
            # A notification without envelope recipients (SES always sends them): only a mailbox
            # that takes everything can be meant; with none, routing reports the message unrouted.
            return Routing({m.name: () for m in self.mailboxes if m.catches_all}, ())
        found: dict[str, list[str]] = {}
        unrouted: list[str] = []
        for recipient in wanted:
            matched = self._mailboxes_for(recipient)
            if not matched:
                unrouted.append(recipient)
            for mailbox in matched:
                found.setdefault(mailbox, []).append(recipient)
        targets = {m.name: tuple(found[m.name]) for m in self.mailboxes if m.name in found}
        return Routing(targets, tuple(unrouted))

    def _mailboxes_for(self, recipient: str) -> list[str]:
        local, _, domain = recipient.rpartition("@")
        base = f"{local.split('+', 1)[0]}@{domain}" if local else recipient
        for key in (recipient, base, domain):
            matched = [m.name for m in self.mailboxes if key in m.recipients]
            if matched:
                return matched
        return [m.name for m in self.mailboxes if m.catches_all]

    # --- the environment variable's JSON ---------------------------------------------------------

    def to_json(self) -> str:
        """Compact JSON for ``names.ENV_VAR_MAILBOXES`` (Lambda's environment holds 4 KB in all)."""
        return json.dumps([m.as_dict() for m in self.mailboxes], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MailboxTable:
        """The table the program wrote; ``ValueError`` saying what is wrong with anything else."""
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{names.ENV_VAR_MAILBOXES} is not JSON ({exc})") from None
        if not isinstance(items, list) or not items:
            raise ValueError(f"{names.ENV_VAR_MAILBOXES} must be a non-empty JSON list of mailboxes")
        mailboxes = tuple(_mailbox_from(item) for item in items)
        if len(set(m.name for m in mailboxes)) != len(mailboxes):
            raise ValueError(f"{names.ENV_VAR_MAILBOXES} names a mailbox twice")
        return cls(mailboxes, configured=True)


def _mailbox_from(item: Any) -> Mailbox:
    if not isinstance(item, dict):
        raise ValueError(f"{names.ENV_VAR_MAILBOXES}: every mailbox must be a JSON object")
    name = names.check_mailbox(str(item.get("name") or ""))
    address = item.get("gmailAddress")
    return Mailbox(
        name=name,
        recipients=tuple(r.lower() for r in _strings(item.get("recipients"), name)),
        labels=_strings(item.get("labels"), name),
        gmail_address=address if isinstance(address, str) and address else None,
    )


def _strings(value: Any, mailbox: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{names.ENV_VAR_MAILBOXES}: mailbox {mailbox!r} has a list that is not of strings")
    return tuple(value)


def queue_url_for(any_retry_queue_url: str, env: str, mailbox: str) -> str:
    """A mailbox's retry queue URL, from the URL of another retry queue of the stack.

    Queue URLs are ``{endpoint}/{account}/{name}`` and every retry queue's name is derived, so the
    Lambdas need only ``RETRY_QUEUE_URL`` and the table: the environment stays inside its 4 KB.
    """
    base, slash, _ = any_retry_queue_url.rstrip("/").rpartition("/")
    if not slash or not base:
        raise ValueError(f"{names.ENV_VAR_RETRY_QUEUE_URL} {any_retry_queue_url!r} is not an SQS queue URL")
    return f"{base}/{names.retry_queue(env, mailbox)}"
