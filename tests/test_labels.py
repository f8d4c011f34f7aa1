"""Labels by name: resolved through Gmail's labels API, created once, cached per warm container.

Real HTTP against the strict fake Google (its users.labels.list and users.labels.create), moto for
AWS, the forwarder exactly as the Lambda runs it. What each test proves is in its name; the
failure-matrix half (a token without the label scope) is in tests/test_failure_matrix.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from sesmail import names
from sesmail.local.google import GMAIL_INSERT_SCOPE, GMAIL_LABELS_SCOPE, LabelCall
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.forwarder import Forwarder, ForwarderSettings
from sesmail.runtime.http import HttpClient
from sesmail.runtime.labels import LabelResolver, is_label_id, lineage
from tests.conftest import FakeContext, World

BOTH_SCOPES = f"{GMAIL_INSERT_SCOPE} {GMAIL_LABELS_SCOPE}"
DELIVERED: dict[str, list[Any]] = {"batchItemFailures": []}
LIST = LabelCall("list", None, 200)


def _created(name: str, status: int = 200) -> LabelCall:
    return LabelCall("create", name, status)


@pytest.fixture
def renewed(world: World) -> Iterator[World]:
    """A token granted by today's consent: gmail.insert and gmail.labels. The fake never crashed."""
    world.install_token(world.google.issue_refresh_token(BOTH_SCOPES))
    yield world
    assert world.google.internal_errors == []


def _deliver(world: World, *message_ids: str, forwarder: Forwarder | None = None) -> list[list[str]]:
    """One SQS invocation importing ``message_ids``; the label ids each imported message carries."""
    before = len(world.google.messages)
    event = world.sqs_event(*(world.store_mail(message_id) for message_id in message_ids))
    result = (forwarder or world.forwarder or world.cold_start()).handle(event, FakeContext())
    assert result == DELIVERED, world.drain(world.retry_queue_url)
    return [message.label_ids for message in world.google.messages[before:]]


def _user_labels(world: World) -> list[dict[str, str]]:
    return [label for label in world.google.labels if label["type"] == "user"]


# --- names and ids --------------------------------------------------------------------------------


def test_ids_and_names_are_told_apart_and_nesting_is_parents_first() -> None:
    assert all(is_label_id(label) for label in ("Label_12", "INBOX", "IMPORTANT", "CATEGORY_UPDATES"))
    assert not any(is_label_id(label) for label in ("Receipts", "inbox", "Label_x", "CHAT", "Family/School"))
    assert lineage("Family/School/2026") == ["Family", "Family/School", "Family/School/2026"]


def test_names_are_listed_once_per_container_across_many_deliveries(renewed: World) -> None:
    receipts = renewed.google.add_label("Receipts")
    renewed.cold_start(extra_labels=("Receipts", "IMPORTANT"))

    carried = [*_deliver(renewed, "m1", "m2", "m3"), *_deliver(renewed, "m4"), *_deliver(renewed, "m5", "m6")]

    assert carried == [["INBOX", "UNREAD", receipts, "IMPORTANT"]] * 6
    assert renewed.google.label_calls == [LIST]  # one users.labels.list for the container's life


def test_a_cold_container_lists_again(renewed: World) -> None:
    renewed.google.add_label("Receipts")
    renewed.cold_start(extra_labels=("Receipts",))
    _deliver(renewed, "m1")
    renewed.cold_start(extra_labels=("Receipts",))
    _deliver(renewed, "m2")
    assert renewed.google.label_calls == [LIST, LIST]


def test_a_missing_label_is_created_once_and_then_reused(renewed: World) -> None:
    renewed.cold_start(extra_labels=("Receipts",))

    carried = [*_deliver(renewed, "m1"), *_deliver(renewed, "m2", "m3")]

    [receipts] = _user_labels(renewed)
    assert receipts == {
        "id": receipts["id"],
        "name": "Receipts",
        "labelListVisibility": "labelShow",  # shown like a label made in Gmail
        "messageListVisibility": "show",
        "type": "user",
    }
    assert carried == [["INBOX", "UNREAD", receipts["id"]]] * 3
    assert renewed.google.label_calls == [LIST, _created("Receipts")]


def test_a_nested_name_creates_its_parent_first(renewed: World) -> None:
    renewed.cold_start(extra_labels=("Family/School",))

    [carried] = _deliver(renewed, "m1")

    assert [label["name"] for label in _user_labels(renewed)] == ["Family", "Family/School"]
    child = _user_labels(renewed)[1]["id"]
    assert carried == ["INBOX", "UNREAD", child]  # the parent exists for nesting; only the child is set
    assert renewed.google.label_calls == [LIST, _created("Family"), _created("Family/School")]


def test_an_existing_parent_in_another_case_is_used_not_created_again(renewed: World) -> None:
    renewed.google.add_label("family")
    renewed.cold_start(extra_labels=("Family/School",))

    _deliver(renewed, "m1")

    assert [label["name"] for label in _user_labels(renewed)] == ["family", "Family/School"]
    assert renewed.google.label_calls == [LIST, _created("Family/School")]


def test_a_name_in_another_case_is_the_existing_label(renewed: World) -> None:
    """Gmail's names ignore case: creating 'receipts' next to 'Receipts' would be its 409."""
    receipts = renewed.google.add_label("Receipts")
    renewed.cold_start(extra_labels=("receipts",))

    assert _deliver(renewed, "m1") == [["INBOX", "UNREAD", receipts]]
    assert renewed.google.label_calls == [LIST]


def test_ids_alone_make_no_labels_call_even_with_a_token_from_before_the_label_scope(world: World) -> None:
    world.install_token()  # gmail.insert only: what a renewal before this release granted
    receipts = world.google.add_label("Receipts")
    world.cold_start(extra_labels=(receipts, "IMPORTANT", "CATEGORY_UPDATES"))

    assert _deliver(world, "m1", "m2") == [["INBOX", "UNREAD", receipts, "IMPORTANT", "CATEGORY_UPDATES"]] * 2
    assert world.google.label_calls == []


def test_spam_keeps_the_configured_labels_by_name(renewed: World) -> None:
    renewed.cold_start(extra_labels=("Receipts",))
    note = renewed.store_mail("m1", spam="FAIL")

    assert renewed.handle(renewed.sqs_event(note)) == DELIVERED

    [receipts] = _user_labels(renewed)
    assert renewed.google.messages[0].label_ids == ["SPAM", receipts["id"]]


def test_the_environment_carries_names_with_spaces_and_nesting() -> None:
    environ = {
        names.ENV_VAR_ENV: "test",
        names.ENV_VAR_RETRY_QUEUE_URL: "https://sqs/retry",
        names.ENV_VAR_INBOUND_DLQ_URL: "https://sqs/dlq",
        names.ENV_VAR_GMAIL_LABELS: "Paid Bills,Family/School,IMPORTANT,Label_3",
    }
    settings = ForwarderSettings.from_environ(environ)
    assert settings.extra_labels == ("Paid Bills", "Family/School", "IMPORTANT", "Label_3")


# --- concurrency ------------------------------------------------------------------------------------


def test_two_containers_creating_the_same_label_at_once_create_it_once(renewed: World) -> None:
    """Both list (no 'Receipts'), both create; Gmail answers the later create 409, whose container
    lists again and takes the winner's id. The fake holds each create until both are in flight."""
    renewed.google.hold_label_creates(2)
    settings = renewed.settings(extra_labels=("Receipts",))
    containers = [Forwarder(settings, AwsClients(), sleep=renewed.sleeps.append) for _ in range(2)]
    notes = [renewed.store_mail(message_id) for message_id in ("m1", "m2")]
    start = threading.Barrier(len(containers))
    results: list[Any] = [None, None]

    def deliver(index: int) -> None:
        start.wait()
        event = renewed.sqs_event(notes[index])
        results[index] = containers[index].handle(event, FakeContext(request_id=f"req-{index}"))

    threads = [threading.Thread(target=deliver, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results == [DELIVERED, DELIVERED]
    [receipts] = _user_labels(renewed)
    assert [message.label_ids for message in renewed.google.messages] == [["INBOX", "UNREAD", receipts["id"]]] * 2
    calls = renewed.google.label_calls
    assert sorted(call.status for call in calls if call.method == "create") == [200, 409]
    assert [call for call in calls if call.method == "list"] == [LIST] * 3  # both containers, then the loser
    assert renewed.google.internal_errors == []

    # Warm now: each container has the id and makes no further labels call.
    for index, container in enumerate(containers):
        _deliver(renewed, f"m{3 + index}", forwarder=container)
    assert renewed.google.label_calls == calls


# --- what Gmail changes under a warm container, and what it refuses ------------------------------


def test_a_label_deleted_in_gmail_after_it_was_cached_is_created_again(renewed: World) -> None:
    renewed.cold_start(extra_labels=("Receipts",))
    _deliver(renewed, "m1")
    [first] = _user_labels(renewed)
    renewed.google.delete_label("Receipts")

    [carried] = _deliver(renewed, "m2")

    [second] = _user_labels(renewed)
    assert second["id"] != first["id"]
    assert carried == ["INBOX", "UNREAD", second["id"]]
    assert renewed.google.import_requests == 3  # the refused upload, then the one with the new id
    assert renewed.google.label_calls == [LIST, _created("Receipts"), LIST, _created("Receipts")]


def test_a_deleted_label_given_by_id_is_not_retried(world: World) -> None:
    """Only names can resolve to something new; an id Gmail refuses parks at once."""
    world.install_token()
    label_id = world.google.add_label("Receipts")
    world.google.delete_label("Receipts")
    world.cold_start(extra_labels=(label_id,))

    result = world.handle(world.sqs_event(world.store_mail("m1")))

    assert result == DELIVERED  # acknowledged: parked, not lost
    [parked] = world.drain(world.retry_queue_url)
    assert parked["MessageAttributes"][names.ATTR_ERROR_TYPE]["StringValue"] == "MailboxRefusedError"
    assert world.google.import_requests == 1
    assert world.google.label_calls == []


def test_a_transient_labels_answer_is_retried_in_process(renewed: World) -> None:
    renewed.google.fail_labels(503, times=1)
    renewed.cold_start(extra_labels=("Receipts",))

    _deliver(renewed, "m1")

    assert [call.status for call in renewed.google.label_calls] == [503, 200, 200]
    assert renewed.sleeps == [names.INPROCESS_BACKOFF_SECONDS]
    assert renewed.claim("m1") is not None


def test_a_name_gmail_refuses_to_create_parks_the_mail_instead_of_dead_lettering_it(renewed: World) -> None:
    """GMAIL_LABELS set by hand past the config check: Gmail's 400 'Invalid label name' is our setup."""
    renewed.cold_start(extra_labels=("Muted",))

    result = renewed.handle(renewed.sqs_event(renewed.store_mail("m1")))

    assert result == DELIVERED
    assert renewed.drain(renewed.inbound_dlq_url) == []
    [parked] = renewed.drain(renewed.retry_queue_url)
    attributes = {key: value["StringValue"] for key, value in parked["MessageAttributes"].items()}
    assert attributes[names.ATTR_ERROR_TYPE] == "MailboxRefusedError"
    assert "Invalid label name" in attributes[names.ATTR_ERROR]
    assert renewed.google.import_requests == 0


def test_a_renewal_that_grants_the_label_scope_is_picked_up_by_a_warm_container(world: World) -> None:
    """Refused for the scope, the resolver re-reads the stored token once: the operator may just
    have renewed, and this container would otherwise mint from its old grant for days."""
    world.install_token()  # gmail.insert only
    forwarder = world.cold_start(extra_labels=("Receipts",))
    assert forwarder.handle(world.sqs_event(world.store_mail("m1")), FakeContext()) == DELIVERED
    assert len(world.drain(world.retry_queue_url)) == 1  # parked: no label access yet

    world.install_token(world.google.issue_refresh_token(BOTH_SCOPES))  # python -m sesmail.refresh

    [carried] = _deliver(world, "m2", forwarder=forwarder)
    [receipts] = _user_labels(world)
    assert carried == ["INBOX", "UNREAD", receipts["id"]]
    assert [call.status for call in world.google.label_calls] == [403, 403, 200, 200]


# --- the resolver on its own --------------------------------------------------------------------------


def test_the_resolver_alone_makes_no_call_for_ids(world: World) -> None:
    world.install_token()
    forwarder = world.cold_start()
    resolver = LabelResolver(world.google.base_url, forwarder.tokens, cast(HttpClient, _ExplodingHttp()), env="test")

    assert resolver.resolve(["INBOX", "UNREAD", "Label_7"]) == ["INBOX", "UNREAD", "Label_7"]
    assert resolver.resolve([]) == []


class _ExplodingHttp:
    """An HTTP client that must not be used."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"unexpected HTTP call: {args} {json.dumps(kwargs, default=str)[:200]}")
