"""Recipients of a stored message the forwarder never saw: SES's Received ``for``, else To/Cc."""

from __future__ import annotations

import pytest

from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from sesmail.runtime.stored_recipients import StoredRecipients, route_stored, stored_recipients

TABLE = MailboxTable(
    (
        Mailbox("alice", ("alice@example.com",)),
        Mailbox("family", ("example.com",)),
        Mailbox("default", ()),
    ),
    configured=True,
)
NO_CATCH_ALL = MailboxTable(TABLE.mailboxes[:2], configured=True)

SES_RECEIVED = (
    b"Received: from mail-ot1-f53.google.com (mail-ot1-f53.google.com [209.85.210.53])\r\n"
    b" by inbound-smtp.eu-west-1.amazonaws.com with SMTP id o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1\r\n"
    b" for {for};\r\n"
    b" Mon, 05 Aug 2019 21:30:02 +0000 (UTC)\r\n"
)


def message(for_clause: str = "alice@example.com", headers: bytes = b"", body: bytes = b"Hi\r\n") -> bytes:
    received = SES_RECEIVED.replace(b"{for}", for_clause.encode())
    return (
        b"Return-Path: <sender@example.org>\r\n" + received + b"X-SES-Spam-Verdict: PASS\r\n" + headers + b"\r\n" + body
    )


def found(envelope: tuple[str, ...] = (), written: tuple[str, ...] = ()) -> StoredRecipients:
    return StoredRecipients(envelope, written)


# --- SES's Received header ---------------------------------------------------------------------


@pytest.mark.parametrize("clause", ["<alice@example.com>", "alice@example.com", "<Alice@Example.COM>"])
def test_ses_received_for_clause_is_the_envelope(clause: str) -> None:
    assert stored_recipients(message(clause)).envelope == ("alice@example.com",)


def test_for_clause_folded_onto_its_own_line() -> None:
    head = (
        b"Received: from a.example.net (a.example.net [192.0.2.1])\n by\n inbound-smtp.us-east-1.amazonaws.com\n"
        b" with SMTP id x\n for\n <bob@example.com>\n ; Mon, 05 Aug 2019 21:30:02 +0000\n\nbody"
    )
    assert stored_recipients(head).envelope == ("bob@example.com",)


def test_a_forged_second_received_header_is_ignored() -> None:
    forged = b"Received: from evil by inbound-smtp.eu-west-1.amazonaws.com for <mallory@example.com>; now\r\n"
    assert stored_recipients(message(headers=forged)).envelope == ("alice@example.com",)


def test_a_first_received_from_another_host_gives_no_envelope() -> None:
    head = b"Received: from x by mx.evil.example with SMTP for <alice@example.com>; now\r\nTo: bob@other.org\r\n\r\n"
    assert stored_recipients(head) == StoredRecipients((), ("bob@other.org",))


def test_a_for_clause_in_the_from_part_does_not_count() -> None:
    head = b"Received: from x (for <mallory@example.com>) by inbound-smtp.eu-west-1.amazonaws.com; now\r\n\r\n"
    assert stored_recipients(head).envelope == ()


# --- To and Cc ---------------------------------------------------------------------------------


def test_to_and_cc_with_names_encoded_words_groups_duplicates_and_case() -> None:
    headers = (
        b'To: "Alice, A." <Alice@Example.com>, bob@other.org,\r\n =?utf-8?q?Car=C3=B6l?= <carol+news@example.com>\r\n'
        b"Cc: Friends: dave@example.org, ALICE@example.com;, undisclosed-recipients:;\r\n"
        b"Cc: <erin@example.net> (Erin), not-an-address\r\n"
    )
    assert stored_recipients(message(headers=headers)).written == (
        "alice@example.com",
        "bob@other.org",
        "carol+news@example.com",
        "dave@example.org",
        "erin@example.net",
    )


def test_raw_utf8_display_names_are_read() -> None:
    head = "To: Zoë Ünal <zoe@example.com>\r\n\r\n".encode()
    assert stored_recipients(head).written == ("zoe@example.com",)


def test_a_header_cut_mid_line_is_dropped() -> None:
    head = message(headers=b"To: bob@other.org\r\nCc: carol@example.com\r\n")
    cut = head[: head.index(b"carol@example.com") + len(b"carol@exa")]
    assert stored_recipients(cut) == StoredRecipients(("alice@example.com",), ("bob@other.org",))


def test_text_after_the_header_block_is_ignored() -> None:
    head = message(headers=b"Subject: hi\r\n", body=b"To: x@y.example\r\nReceived: by inbound-smtp.x.amazonaws.com\r\n")
    assert stored_recipients(head).written == ()
    assert stored_recipients(b"\r\nTo: x@y.example\r\n\r\n") == StoredRecipients((), ())


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x00\xff\xfe\x80" * 200,
        b"To: \xff\xfe <\xc3(@\xa0\xa1>\r\nReceived: \x80\x81 for <\xff@\xfe>\r\n\r\n",
        b"Received: for\r\n\r\n",
        bytes(range(256)) * 8,
        b"To: " + b"<" * 5000 + b"\r\n\r\n",
        b'To: "unterminated <a@b.example\r\nCc: ((((\r\n\r\n',
    ],
)
def test_garbage_gives_empty_results_without_raising(head: bytes) -> None:
    assert stored_recipients(head) == StoredRecipients((), ())


# --- routing -----------------------------------------------------------------------------------


def test_envelope_routes_exactly_like_the_notification() -> None:
    assert route_stored(TABLE, found(("alice@example.com",), ("nobody@other.org",))) == ("alice",)
    assert route_stored(TABLE, found(("alice+shop@example.com",))) == ("alice",)
    assert route_stored(TABLE, found(("bob@example.com",))) == ("family",)
    assert route_stored(TABLE, found(("bob@example.com", "alice@example.com"))) == ("alice", "family")


def test_an_unknown_envelope_recipient_is_not_returned() -> None:
    assert route_stored(NO_CATCH_ALL, found(("bob@other.org",))) == ()
    assert route_stored(NO_CATCH_ALL, found(("bob@other.org", "alice@example.com"))) == ("alice",)


def test_envelope_wins_over_to_and_cc_from_the_stored_bytes() -> None:
    head = message("bob@example.com", headers=b"To: alice@example.com\r\n")
    assert route_stored(TABLE, stored_recipients(head)) == ("family",)


def test_without_envelope_explicit_to_cc_entries_win_over_catch_all() -> None:
    assert route_stored(TABLE, found(written=("stranger@other.org", "alice+x@example.com"))) == ("alice",)
    assert route_stored(TABLE, found(written=("bob@example.com", "alice@example.com"))) == ("alice", "family")


def test_without_envelope_foreign_to_cc_go_to_the_catch_all() -> None:
    assert route_stored(TABLE, found(written=("stranger@other.org",))) == ("default",)
    assert route_stored(TABLE, found()) == ("default",)


def test_without_envelope_or_explicit_match_and_no_catch_all_nothing() -> None:
    assert route_stored(NO_CATCH_ALL, found(written=("stranger@other.org",))) == ()


@pytest.mark.parametrize(
    "head",
    [
        message(),
        message("<someone@elsewhere.example>"),
        b"To: alice@example.com\r\n\r\n",
        b"Received: from x by mx.example.net for <a@b.example>; now\r\n\r\n",
        b"\xff\xfe garbage",
        b"",
    ],
)
def test_single_mailbox_table_always_routes_to_default(head: bytes) -> None:
    assert route_stored(MailboxTable.single(), stored_recipients(head)) == ("default",)
