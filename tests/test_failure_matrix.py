"""Every documented Gmail error shape, on both paths, once and persistently: where the mail ends up.

Real HTTP against the fake Google (which answers in Google's error shape), moto for AWS. For each
shape the inbound SQS path and the retry-processor path are asserted: imported, parked (with its
``error_type``), dead-lettered or left for SQS, and which metrics the forwarder published —
above all that ``TokenHoursUntilExpiration = 0`` (which pages about a dead token) is published
only when the token endpoint said ``invalid_grant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sesmail import names
from sesmail.local.google import error_body
from sesmail.runtime.errors import (
    RATE_LIMITED,
    MailboxRefusedError,
    PermanentError,
    RateLimitedError,
    SesMailError,
    TokenExpiredError,
    TransientError,
)
from tests.conftest import World, emitted_metrics

IMPORTED, PARKED, DEAD_LETTERED, LEFT_FOR_SQS = "imported", "parked", "dead-lettered", "left for SQS"
PERSISTENT = 10  # more failures than any path retries in one invocation


@dataclass(frozen=True)
class Shape:
    """One Gmail answer, as Google sends it."""

    name: str
    status: int
    body: dict[str, Any] | bytes | None
    headers: dict[str, str] | None = None


def _google(status: int, reason: str, message: str) -> Shape:
    return Shape(reason, status, error_body(status, message, reason))


RATE_LIMITS = [
    Shape("429", 429, error_body(429, "Too many concurrent requests", "rateLimitExceeded"), {"Retry-After": "1"}),
    _google(403, "rateLimitExceeded", "Rate Limit Exceeded"),
    _google(403, "userRateLimitExceeded", "User-rate limit exceeded"),
    _google(403, "quotaExceeded", "Quota exceeded for quota metric 'Queries'"),
    _google(403, "dailyLimitExceeded", "Daily Limit Exceeded"),
]
REFUSALS = [
    _google(403, "accessNotConfigured", "Gmail API has not been used in project 1 before or it is disabled"),
    _google(403, "domainPolicy", "The domain administrators have disabled Gmail apps."),
    _google(403, "forbidden", "Forbidden"),
    _google(403, "insufficientPermissions", "Request had insufficient authentication scopes."),
    Shape("html-403", 403, b"<html><title>403 Forbidden</title>Your client does not have permission</html>"),
    _google(400, "failedPrecondition", "Mail service not enabled"),
    Shape("404", 404, b"<html><title>Error 404 (Not Found)!!1</title></html>"),
]
TRANSIENTS = [_google(409, "aborted", "Aborted"), _google(503, "backendError", "Backend Error")]
ABOUT_THE_MESSAGE = _google(400, "invalidArgument", "Invalid message: missing headers")


@dataclass
class Outcome:
    where: str
    metrics: dict[str, float]
    error_type: str | None = None  # the parked or dead-lettered message's attributes
    reason: str = ""


def _inbound(world: World, capsys: pytest.CaptureFixture[str], *, receive_count: int = 1) -> Outcome:
    capsys.readouterr()
    event = world.sqs_event(world.store_mail("m1"))
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    result = world.handle(event)
    metrics = emitted_metrics(capsys.readouterr().out)
    parked, dead = world.drain(world.retry_queue_url), world.drain(world.inbound_dlq_url)
    for where, queued in ((PARKED, parked), (DEAD_LETTERED, dead)):
        if queued:
            attributes = {k: v["StringValue"] for k, v in queued[0]["MessageAttributes"].items()}
            return Outcome(where, metrics, attributes[names.ATTR_ERROR_TYPE], attributes[names.ATTR_ERROR])
    if result["batchItemFailures"]:
        return Outcome(LEFT_FOR_SQS, metrics)
    assert world.google.messages
    return Outcome(IMPORTED, metrics)


def _retry(world: World) -> str:
    """The retry path: the status it answers, or the errorType (class name) it raises."""
    event = {"source": names.RETRY_PROCESSOR_SOURCE, "notification": world.store_mail("m1")}
    try:
        return str(world.handle(event)["status"])
    except SesMailError as error:
        return type(error).__name__


@pytest.fixture
def ready(world: World) -> World:
    world.install_token()
    return world


# --- persistent failures: each shape's class decides -------------------------------------------------


@pytest.mark.parametrize("shape", REFUSALS, ids=lambda s: s.name)
def test_a_refused_mailbox_is_parked_and_alarmed_never_reported_as_a_dead_token(
    ready: World, capsys: pytest.CaptureFixture[str], shape: Shape
) -> None:
    ready.google.fail_gmail(shape.status, shape.body, shape.headers, times=PERSISTENT)
    outcome = _inbound(ready, capsys)
    assert (outcome.where, outcome.error_type) == (PARKED, "MailboxRefusedError")
    assert outcome.metrics.get(names.METRIC_MAILBOX_REFUSED) == 1
    assert names.METRIC_TOKEN_HOURS not in outcome.metrics
    assert ready.google.import_requests == 1  # refused at once: no in-process retries
    assert _retry(ready) == MailboxRefusedError.__name__


@pytest.mark.parametrize("shape", RATE_LIMITS, ids=lambda s: f"{s.status}-{s.name}")
def test_a_rate_limit_waits_for_sqs_then_is_parked_on_the_last_receive(
    ready: World, capsys: pytest.CaptureFixture[str], shape: Shape
) -> None:
    ready.google.fail_gmail(shape.status, shape.body, shape.headers, times=3 * PERSISTENT)
    first = _inbound(ready, capsys)
    assert (first.where, first.metrics.get(names.METRIC_FAILED)) == (LEFT_FOR_SQS, 1)
    # Gmail's quota outlasts SQS's receive budget: on the last receive it is parked, not dead-lettered.
    last = _inbound(ready, capsys, receive_count=names.INBOUND_QUEUE_MAX_RECEIVE_COUNT)
    assert (last.where, last.error_type) == (PARKED, "TransientError")
    assert last.reason.startswith(RATE_LIMITED)
    assert names.METRIC_TOKEN_HOURS not in first.metrics | last.metrics
    assert _retry(ready) == RateLimitedError.__name__


@pytest.mark.parametrize("shape", TRANSIENTS, ids=lambda s: s.name)
def test_a_transient_answer_is_left_for_sqs_and_retried_by_step_functions(
    ready: World, capsys: pytest.CaptureFixture[str], shape: Shape
) -> None:
    ready.google.fail_gmail(shape.status, shape.body, shape.headers, times=3 * PERSISTENT)
    assert _inbound(ready, capsys).where == LEFT_FOR_SQS
    assert _inbound(ready, capsys, receive_count=names.INBOUND_QUEUE_MAX_RECEIVE_COUNT).where == LEFT_FOR_SQS
    assert _retry(ready) == TransientError.__name__


def test_a_400_about_the_message_is_dead_lettered(ready: World, capsys: pytest.CaptureFixture[str]) -> None:
    shape = ABOUT_THE_MESSAGE
    ready.google.fail_gmail(shape.status, shape.body, times=PERSISTENT)
    outcome = _inbound(ready, capsys)
    assert (outcome.where, outcome.error_type) == (DEAD_LETTERED, "PermanentError")
    assert _retry(ready) == PermanentError.__name__


def test_a_configured_label_the_mailbox_lacks_refuses_the_mailbox(
    ready: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The strict fake answers 400 'Invalid label' as Gmail does; every message would fail alike."""
    ready.cold_start(extra_labels=("Label_99",))
    outcome = _inbound(ready, capsys)
    assert (outcome.where, outcome.error_type) == (PARKED, "MailboxRefusedError")
    assert "Invalid label: Label_99" in outcome.reason
    assert outcome.metrics.get(names.METRIC_MAILBOX_REFUSED) == 1
    assert _retry(ready) == MailboxRefusedError.__name__


def test_label_names_on_a_token_without_the_label_scope_park_with_how_to_renew(
    ready: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token granted before gmail.labels joined the consent: users.labels.list answers 403
    insufficientPermissions. Every message would fail alike, so it is parked, and the reason
    says the one command that fixes it; the token itself works (no token alarm)."""
    ready.cold_start(extra_labels=("Receipts",))
    outcome = _inbound(ready, capsys)
    assert (outcome.where, outcome.error_type) == (PARKED, "MailboxRefusedError")
    assert f"renew once to grant label access: {names.refresh_command('test')}" in outcome.reason
    assert "insufficient authentication scopes" in outcome.reason  # Google's own words kept
    assert outcome.metrics.get(names.METRIC_MAILBOX_REFUSED) == 1
    assert names.METRIC_TOKEN_HOURS not in outcome.metrics
    assert ready.google.import_requests == 0  # refused before any upload
    assert _retry(ready) == MailboxRefusedError.__name__


def test_two_401s_in_a_row_refuse_the_mailbox_not_the_token(ready: World, capsys: pytest.CaptureFixture[str]) -> None:
    ready.google.fail_gmail(401, times=PERSISTENT)
    mints = len(ready.google.issued_access_tokens())
    outcome = _inbound(ready, capsys)
    assert (outcome.where, outcome.error_type) == (PARKED, "MailboxRefusedError")
    assert names.METRIC_TOKEN_HOURS not in outcome.metrics
    assert len(ready.google.issued_access_tokens()) == mints + 2  # minted, 401, minted again, 401
    assert _retry(ready) == MailboxRefusedError.__name__


# --- once: the same shapes heal by themselves ---------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [*RATE_LIMITS[:2], *TRANSIENTS, Shape("401", 401, None)],
    ids=lambda s: f"{s.status}-{s.name}",
)
def test_one_transient_answer_or_one_401_is_retried_in_process_and_delivered(
    ready: World, capsys: pytest.CaptureFixture[str], shape: Shape
) -> None:
    ready.google.fail_gmail(shape.status, shape.body, shape.headers, times=1)
    outcome = _inbound(ready, capsys)
    assert outcome.where == IMPORTED
    assert names.METRIC_TOKEN_HOURS not in outcome.metrics


def test_one_401_does_not_stop_the_warm_container(ready: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The first release marked the token dead on one 401 and parked everything after it."""
    ready.google.fail_gmail(401, times=1)
    assert _inbound(ready, capsys).where == IMPORTED
    result = ready.handle(ready.sqs_event(ready.store_mail("m2")))
    assert result == {"batchItemFailures": []}
    assert len(ready.google.messages) == 2
    assert ready.drain(ready.retry_queue_url) == []


def test_only_invalid_grant_is_a_dead_token_and_publishes_zero_hours(
    ready: World, capsys: pytest.CaptureFixture[str]
) -> None:
    ready.google.revoke(ready.refresh_token)
    outcome = _inbound(ready, capsys)
    assert (outcome.where, outcome.error_type) == (PARKED, "TokenExpiredError")
    assert outcome.metrics.get(names.METRIC_TOKEN_HOURS) == 0
    assert names.METRIC_MAILBOX_REFUSED not in outcome.metrics
    assert _retry(ready) == TokenExpiredError.__name__
