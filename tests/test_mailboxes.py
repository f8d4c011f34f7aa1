"""The mailbox table: names per mailbox, routing by envelope recipient, the JSON the Lambdas get."""

from __future__ import annotations

import pytest

from sesmail import names
from sesmail.runtime.mailboxes import Mailbox, MailboxTable, queue_url_for

FAMILY = MailboxTable(
    (
        Mailbox("alice", ("alice@example.com", "shop@example.com"), ("Family",), "alice@gmail.com"),
        Mailbox("bob", ("bob@example.com", "shop@example.com", "example.com"), (), "bob@gmail.com"),
        Mailbox("shop", ("alice+orders@example.com", "example.org")),
    ),
    configured=True,
)


def test_the_default_mailbox_keeps_every_name_it_had() -> None:
    assert names.refresh_token_parameter("test") == "/ses-mail/test/gmail-forwarder/oauth/refresh-token"
    assert names.refresh_token_expiry_parameter("test") == "/ses-mail/test/gmail-forwarder/oauth/refresh-token-expiry"
    assert names.retry_queue("test") == "ses-mail-gmail-forwarder-retry-test"
    assert names.retry_dlq("test") == "ses-mail-gmail-forwarder-retry-dlq-test"
    assert names.token_expiring_alarm("test") == "ses-mail-gmail-forwarder-token-expiring-test"
    assert names.mailbox_refused_alarm("test") == "ses-mail-gmail-forwarder-mailbox-refused-test"
    assert names.refresh_command("test") == "python -m sesmail.refresh --env test"


def test_another_mailbox_adds_its_name() -> None:
    assert names.refresh_token_parameter("test", "alice") == "/ses-mail/test/gmail-forwarder/oauth/alice/refresh-token"
    assert (
        names.refresh_token_expiry_parameter("test", "alice")
        == "/ses-mail/test/gmail-forwarder/oauth/alice/refresh-token-expiry"
    )
    assert names.retry_queue("test", "alice") == "ses-mail-gmail-forwarder-retry-alice-test"
    assert names.retry_dlq("test", "alice") == "ses-mail-gmail-forwarder-retry-dlq-alice-test"
    assert names.token_expiring_alarm("test", "alice") == "ses-mail-gmail-forwarder-token-expiring-alice-test"
    assert names.token_critical_alarm("test", "alice") == "ses-mail-gmail-forwarder-token-critical-alice-test"
    assert names.token_expired_alarm("test", "alice") == "ses-mail-gmail-forwarder-token-expired-alice-test"
    assert names.refresh_command("test", "alice") == "python -m sesmail.refresh --env test --mailbox alice"
    assert names.claim_key("m1", "alice") == "claims/m1/alice"


@pytest.mark.parametrize("bad", ["", "Alice", "a_b", "x" * 21, "dlq", "dlq-x", "a/b"])
def test_mailbox_names_that_would_break_a_resource_name_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        names.check_mailbox(bad)


def test_dlq_names_cannot_collide_with_a_mailbox_queue() -> None:
    """Mailbox ``dlq-x``'s retry queue would be mailbox ``x``'s retry DLQ: that is why it is refused."""
    assert names.retry_dlq("test", "x") == "ses-mail-gmail-forwarder-retry-" + "dlq-x-test"
    with pytest.raises(ValueError, match="retry DLQ"):
        names.retry_queue("test", "dlq-x")


@pytest.mark.parametrize(
    ("recipients", "expected", "unrouted"),
    [
        (["alice@example.com"], {"alice": ("alice@example.com",)}, ()),
        # +tag forms go where the base address goes, not to the catch-all
        (["Alice+school@Example.com"], {"alice": ("alice+school@example.com",)}, ()),
        # a configured +tag address is more specific than its base address
        (["alice+orders@example.com"], {"shop": ("alice+orders@example.com",)}, ()),
        # an address two mailboxes list goes to both
        (["shop@example.com"], {"alice": ("shop@example.com",), "bob": ("shop@example.com",)}, ()),
        # the catch-all takes what no address of its domain is configured for
        (["zoe@example.com"], {"bob": ("zoe@example.com",)}, ()),
        (["anyone@example.org"], {"shop": ("anyone@example.org",)}, ()),
        # a subdomain is not its parent's catch-all
        (["x@sub.example.com"], {}, ("x@sub.example.com",)),
        (["alice@example.com", "bob@example.com"], {"alice": ("alice@example.com",), "bob": ("bob@example.com",)}, ()),
        # each mailbox once, however many of its recipients a message has; duplicates collapse
        (
            ["alice@example.com", "alice+x@example.com", "ALICE@example.com"],
            {"alice": ("alice@example.com", "alice+x@example.com")},
            (),
        ),
    ],
)
def test_routing_by_envelope_recipient(
    recipients: list[str], expected: dict[str, tuple[str, ...]], unrouted: tuple[str, ...]
) -> None:
    routing = FAMILY.route(recipients)
    assert routing.targets == expected
    assert routing.unrouted == unrouted


def test_a_message_with_routed_and_unrouted_recipients_says_both() -> None:
    routing = FAMILY.route(["alice@example.com", "nobody@elsewhere.net"])
    assert routing.targets == {"alice": ("alice@example.com",)}
    assert routing.unrouted == ("nobody@elsewhere.net",)


def test_without_mailboxes_default_receives_everything() -> None:
    single = MailboxTable.single(("Receipts",))
    assert single.names == (names.DEFAULT_MAILBOX,)
    assert single.route(["anyone@anywhere.example"]).targets == {"default": ("anyone@anywhere.example",)}
    assert single.route([]).targets == {"default": ()}
    assert not single.configured


def test_no_envelope_recipients_and_no_catch_all_routes_nowhere() -> None:
    routing = FAMILY.route([])
    assert routing.targets == {} and routing.unrouted == ()


def test_the_table_survives_the_environment_variable() -> None:
    assert MailboxTable.from_json(FAMILY.to_json()) == FAMILY
    assert FAMILY.primary.name == "alice"  # no default: the first one names the single-valued outputs
    assert MailboxTable((Mailbox("x"), Mailbox("default")), True).primary.name == "default"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[]", "non-empty"),
        ('[{"name": "Alice"}]', "mailbox name"),
        ('[{"name": "a", "recipients": "a@x.com"}]', "list that is not of strings"),
        ('[{"name": "a"}, {"name": "a"}]', "twice"),
        ('["a"]', "JSON object"),
    ],
)
def test_a_broken_table_is_refused_with_its_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        MailboxTable.from_json(text)


def test_queue_urls_are_derived_from_the_stacks_retry_queue() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/ses-mail-gmail-forwarder-retry-prod"
    assert queue_url_for(url, "prod", "bob") == (
        "https://sqs.eu-west-1.amazonaws.com/123456789012/ses-mail-gmail-forwarder-retry-bob-prod"
    )
    assert queue_url_for(url, "prod", "default") == url
    with pytest.raises(ValueError):
        queue_url_for("not-a-url", "prod", "bob")
