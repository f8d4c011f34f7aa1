"""The forwarder: one delivery core behind the three event shapes of DESIGN.md.

- SQS batch (SNS envelope or raw SES notification per record) -> partial batch failures;
- SES Lambda action (``Records[].eventSource == "aws:ses"``) -> ``{"disposition": "CONTINUE"}``;
- retry processor (``{"source": "retry-processor", "notification": ...}``) -> a status, or the
  failure class raised by name for Step Functions to match.

On the inbound paths nothing is acknowledged unless it was delivered, parked in the retry
queue, or dead-lettered with its reason.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sesmail import names
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.canary import CanaryKeyError, KeyCache, recognise
from sesmail.runtime.claims import ClaimHeldError, ClaimStore
from sesmail.runtime.delivery import Deliverer, Delivery, MessageStore
from sesmail.runtime.errors import (
    FailureClass,
    MailboxRefusedError,
    MalformedEventError,
    PermanentError,
    RateLimitedError,
    SesMailError,
    TokenExpiredError,
    TokenNotConfiguredError,
    TransientError,
    classify,
)
from sesmail.runtime.events import (
    MailNotification,
    SqsRecord,
    not_mail,
    notification_document,
    notification_from_ses_record,
    notification_from_sqs_body,
    parse_notification,
)
from sesmail.runtime.gmail import GmailImporter
from sesmail.runtime.http import HttpClient
from sesmail.runtime.labels import LabelResolver
from sesmail.runtime.log import bound, get_logger
from sesmail.runtime.mailboxes import Mailbox, MailboxTable, Routing, queue_url_for
from sesmail.runtime.metrics import emit_counts
from sesmail.runtime.reconcile import Owed, Planner, notification_for
from sesmail.runtime.retry_queue import MAX_REASON_CHARS, park_for_retry, send_to_dlq
from sesmail.runtime.tokens import AccessTokenProvider
from sesmail.runtime.verdicts import AuthFailures

log = get_logger("sesmail.runtime.forwarder")

#: When a context gives no remaining time (local runs), assume this much.
DEFAULT_INVOCATION_SECONDS = 60.0
_CONTRACT_ERRORS: dict[FailureClass, type[SesMailError]] = {
    FailureClass.TOKEN_DEAD: TokenExpiredError,
    FailureClass.MAILBOX_REFUSED: MailboxRefusedError,
    FailureClass.TRANSIENT: TransientError,
    FailureClass.PERMANENT: PermanentError,
}


#: What each settled delivery counts as.
_DELIVERY_METRICS = {
    "delivered": names.METRIC_FORWARDED,
    "already-delivered": names.METRIC_ALREADY_DELIVERED,
    "rejected": names.METRIC_REJECTED,
}


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete: a deployment problem, not a mail problem."""


@dataclass(frozen=True)
class ForwarderSettings:
    env: str
    retry_queue_url: str
    inbound_dlq_url: str
    extra_labels: tuple[str, ...] = ()
    gmail_api_base_url: str = names.GMAIL_API_BASE_URL
    email_bucket: str | None = None
    auth_failures: AuthFailures = AuthFailures.SPAM
    #: Who receives what (``MAILBOXES``); without it, ``default`` receives everything with ``extra_labels``.
    mailboxes: MailboxTable | None = None
    #: ``CANARY_ADDRESS``: mail to it with a valid signature is the daily canary (None: no canary).
    canary_address: str | None = None

    @property
    def table(self) -> MailboxTable:
        return self.mailboxes or MailboxTable.single(self.extra_labels)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> ForwarderSettings:
        required = (names.ENV_VAR_ENV, names.ENV_VAR_RETRY_QUEUE_URL, names.ENV_VAR_INBOUND_DLQ_URL)
        missing = [key for key in required if not environ.get(key)]
        if missing:
            raise ConfigurationError(
                f"the forwarder's environment lacks {', '.join(missing)}; redeploy with `pulumi up`"
            )
        labels = environ.get(names.ENV_VAR_GMAIL_LABELS, "")
        try:
            auth_failures = AuthFailures.parse(environ.get(names.ENV_VAR_AUTH_FAILURES))
        except ValueError as exc:
            raise ConfigurationError(f"{names.ENV_VAR_AUTH_FAILURES}: {exc}; redeploy with `pulumi up`") from None
        table_json = environ.get(names.ENV_VAR_MAILBOXES)
        try:
            mailboxes = MailboxTable.from_json(table_json) if table_json else None
        except ValueError as exc:
            raise ConfigurationError(f"{exc}; redeploy with `pulumi up`") from None
        return cls(
            env=names.check_env(environ[names.ENV_VAR_ENV]),
            retry_queue_url=environ[names.ENV_VAR_RETRY_QUEUE_URL],
            inbound_dlq_url=environ[names.ENV_VAR_INBOUND_DLQ_URL],
            extra_labels=tuple(label.strip() for label in labels.split(",") if label.strip()),
            gmail_api_base_url=environ.get(names.ENV_VAR_GMAIL_API_BASE_URL) or names.GMAIL_API_BASE_URL,
            email_bucket=environ.get(names.ENV_VAR_EMAIL_BUCKET) or None,
            auth_failures=auth_failures,
            mailboxes=mailboxes,
            canary_address=(environ.get(names.ENV_VAR_CANARY_ADDRESS) or "").strip().lower() or None,
        )


@dataclass
class _Invocation:
    request_id: str
    deadline: float
    counts: Counter[str]
    out_of_time: bool = False
    #: Mailboxes whose token the token endpoint declared dead, and refusals counted per mailbox.
    dead_tokens: set[str] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    #: Mailboxes the canary reached in this invocation (``CanaryDelivered``, dimension Mailbox).
    canaries: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Route:
    """Everything one mailbox delivers with: its own token, labels (ids differ per account) and retry queue."""

    mailbox: Mailbox
    tokens: AccessTokenProvider
    deliverer: Deliverer
    retry_queue_url: str


@dataclass(frozen=True)
class _Settled:
    """How one (message, mailbox) ended on the inbound path."""

    mailbox: str
    done: bool  # delivered, parked, or rejected by policy: nothing left for SQS to redeliver
    permanent: SesMailError | None = None


class Forwarder:
    def __init__(
        self,
        settings: ForwarderSettings,
        clients: AwsClients,
        *,
        http: HttpClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clients = clients
        self._clock = clock
        http = http or HttpClient()
        store = MessageStore(lambda: clients.s3)
        self._store = store
        self._canary_key = KeyCache(clients.read_parameters, settings.env)
        claims = ClaimStore(store.s3)  # one store: claims are per (message, mailbox) already
        table = settings.table
        self._table = table
        self._routes: dict[str, _Route] = {}
        for mailbox in table.mailboxes:
            tokens = AccessTokenProvider(settings.env, clients.read_parameters, http, mailbox=mailbox.name, clock=clock)
            labels = LabelResolver(settings.gmail_api_base_url, tokens, http, env=settings.env)
            importer = GmailImporter(settings.gmail_api_base_url, tokens, http, labels=labels)
            deliverer = Deliverer(
                store,
                importer,
                mailbox.labels,
                sleep=sleep,
                clock=clock,
                claims=claims,
                mailbox=mailbox.name,
                auth_failures=settings.auth_failures,
            )
            queue_url = (
                queue_url_for(settings.retry_queue_url, settings.env, mailbox.name)
                if settings.mailboxes is not None
                else settings.retry_queue_url
            )
            self._routes[mailbox.name] = _Route(mailbox, tokens, deliverer, queue_url)
        primary = self._routes[table.primary.name]
        self.tokens = primary.tokens
        self._deliverer = primary.deliverer

    @classmethod
    def from_environ(cls) -> Forwarder:
        return cls(ForwarderSettings.from_environ(), AwsClients())

    # --- entry --------------------------------------------------------------------------------

    def handle(self, event: Any, context: Any) -> dict[str, Any]:
        invocation = self._invocation(context)
        with bound(env=self.settings.env, requestId=invocation.request_id):
            try:
                return self._dispatch(event, invocation)
            finally:
                self._emit(invocation)

    def _emit(self, invocation: _Invocation) -> None:
        emit_counts(self.settings.env, dict(invocation.counts))
        for mailbox in sorted(invocation.canaries):
            emit_counts(
                self.settings.env, {names.METRIC_CANARY_DELIVERED: 1}, dimensions={names.MAILBOX_DIMENSION: mailbox}
            )
        for mailbox, refused in invocation.refused.items():
            emit_counts(
                self.settings.env,
                {names.METRIC_MAILBOX_REFUSED: refused},
                dimensions={names.MAILBOX_DIMENSION: mailbox},
            )
        for mailbox in sorted(invocation.dead_tokens):
            # The monitor knows only the *stored* expiry; a token Google revoked early is found
            # here. 0 hours left is what that mailbox's token alarms must see then.
            emit_counts(
                self.settings.env,
                {names.METRIC_TOKEN_HOURS: 0},
                unit=names.METRIC_TOKEN_HOURS_UNIT,
                dimensions={names.MAILBOX_DIMENSION: mailbox},
            )

    def _dispatch(self, event: Any, invocation: _Invocation) -> dict[str, Any]:
        if isinstance(event, dict) and event.get("source") == names.RETRY_PROCESSOR_SOURCE:
            return self._handle_retry(event, invocation)
        if isinstance(event, dict) and event.get("source") == names.RECONCILE_SOURCE:
            return self._handle_reconcile(event, invocation)
        records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(records, list):
            raise MalformedEventError("event is neither an SQS/SES batch nor a retry-processor invocation")
        if records and all(isinstance(r, dict) and r.get("eventSource") == "aws:ses" for r in records):
            return self._handle_ses(records, invocation)
        return self._handle_sqs(records, invocation)

    # --- SQS: the inbound queue ---------------------------------------------------------------------

    def _handle_sqs(self, records: list[Any], invocation: _Invocation) -> dict[str, Any]:
        """Settle each record; once the invocation's time is up, hand the rest back to SQS.

        Starting a record past the deadline risks a Lambda timeout, which fails the *whole*
        batch: records already parked would be parked a second time.
        """
        failures = []
        for index, raw_record in enumerate(records):
            item_id = raw_record.get("messageId") if isinstance(raw_record, dict) else None
            if self._clock() >= invocation.deadline:
                if not invocation.out_of_time:
                    invocation.out_of_time = True
                    log.warning(
                        "out of time; leaving the rest of the batch for SQS to redeliver",
                        extra={"event": "delivery.deferred", "records": len(records) - index},
                    )
                handled = False
            else:
                handled = self._handle_sqs_record(raw_record, invocation)
            if not handled:
                failures.append({"itemIdentifier": item_id if isinstance(item_id, str) else str(index)})
        return {"batchItemFailures": failures}

    def _handle_sqs_record(self, raw_record: Any, invocation: _Invocation) -> bool:
        """True when the record may be deleted from the queue."""
        try:
            record = SqsRecord.from_event(raw_record)
        except MalformedEventError as error:
            # Without a messageId or body there is nothing to dead-letter; let SQS redrive it.
            log.error("unusable SQS record", extra={"event": "delivery.failed", "reason": error.reason})
            invocation.counts[names.METRIC_FAILED] += 1
            return False
        with bound(sqsMessageId=record.message_id):
            try:
                document = notification_from_sqs_body(record.body)
                if _ignored(document):
                    return True
                note = parse_notification(document, expected_bucket=self.settings.email_bucket)
            except MalformedEventError as error:
                return self._dead_letter(record.body, error, invocation, {"sqsMessageId": record.message_id})
            with bound(messageId=note.message_id):
                return self._deliver_inbound(note, invocation, attempt=record.receive_count, dlq_body=record.body)

    # --- SES Lambda action ------------------------------------------------------------------------

    def _handle_ses(self, records: list[dict[str, Any]], invocation: _Invocation) -> dict[str, Any]:
        """No queue stands behind this path, so anything undelivered is parked or dead-lettered."""
        for record in records:
            try:
                document = notification_from_ses_record(record, self.settings.email_bucket)
                if _ignored(document):
                    continue
                note = parse_notification(document)
            except MalformedEventError as error:
                if not self._dead_letter(json.dumps(record), error, invocation, {}):
                    raise error from None
                continue
            with bound(messageId=note.message_id):
                if not self._deliver_inbound(note, invocation, attempt=1, dlq_body=note.to_json(), park_transient=True):
                    raise TransientError("could not deliver, park or dead-letter the message; Lambda will retry")
        return {"disposition": "CONTINUE"}

    # --- the shared inbound outcome ----------------------------------------------------------------

    def _deliver_inbound(
        self,
        note: MailNotification,
        invocation: _Invocation,
        *,
        attempt: int,
        dlq_body: str,
        park_transient: bool = False,
    ) -> bool:
        """Deliver to every mailbox the envelope recipients route to; True when nothing is left to redo.

        Each mailbox settles on its own: one dead token parks only that mailbox's copy. What no
        mailbox receives, and a permanent failure, send the message to the inbound DLQ with the
        reason (a redrive replays it; mailboxes already delivered answer ``already-delivered``).
        A transient failure of any mailbox leaves the record to SQS: the next receive delivers the
        rest, and the claims keep the mailboxes that already have it from importing it twice.
        """
        try:
            canary_id = self._canary_id(note)
        except Exception as exc:
            error = classify(exc)
            if isinstance(error, PermanentError):
                return self._dead_letter(dlq_body, error, invocation, {"sesMessageId": note.message_id})
            invocation.counts[names.METRIC_FAILED] += 1
            log.warning(
                "could not tell whether this is the canary; leaving the message for SQS to redeliver",
                extra={"event": "delivery.failed", "failureClass": error.failure_class.value, "reason": error.reason},
            )
            return False
        # The canary goes to every mailbox, whoever it is addressed to: it proves each one's path.
        routing = Routing({m: () for m in self._routes}) if canary_id else self._table.route(note.recipients)
        with bound(**({"canaryId": canary_id} if canary_id else {})):
            settled = [
                self._deliver_to(
                    self._routes[mailbox],
                    note,
                    invocation,
                    attempt=attempt,
                    park_transient=park_transient,
                    canary=bool(canary_id),
                )
                for mailbox in routing.targets
            ]
        if not all(s.done or s.permanent for s in settled):
            return False
        problems = [s.permanent for s in settled if s.permanent is not None]
        if routing.unrouted or not routing.targets:
            problems.append(_unrouted(routing.unrouted))
        if not problems:
            return True
        error = problems[0] if len(problems) == 1 else PermanentError("; ".join(p.reason for p in problems))
        failed = [s.mailbox for s in settled if s.permanent is not None]
        context = {"sesMessageId": note.message_id, names.ATTR_MAILBOX: ",".join(failed)}
        if not self._dead_letter(dlq_body, error, invocation, context):
            return False
        for mailbox in failed:
            self._routes[mailbox].deliverer.mark(note, names.CLAIM_MARKER_QUEUED)
        return True

    def _deliver_to(
        self,
        route: _Route,
        note: MailNotification,
        invocation: _Invocation,
        *,
        attempt: int,
        park_transient: bool,
        canary: bool = False,
    ) -> _Settled:
        mailbox = route.mailbox.name
        with bound(mailbox=mailbox):
            try:
                self._deliver(route, note, invocation, canary=canary)
                return _Settled(mailbox, done=True)
            except Exception as exc:
                error = classify(exc)
            if isinstance(error, PermanentError):
                return _Settled(mailbox, done=False, permanent=error)
            _count_failure(error, mailbox, invocation)
            if _parks(error, attempt=attempt) or park_transient:
                return _Settled(mailbox, done=self._park(route, note, error, invocation, attempt))
            log.warning(
                "transient failure; leaving the message for SQS to redeliver",
                extra={"event": "delivery.failed", "failureClass": error.failure_class.value, "reason": error.reason},
            )
            invocation.counts[names.METRIC_FAILED] += 1
            return _Settled(mailbox, done=False)

    def _delivered(self, delivery: Delivery, invocation: _Invocation) -> None:
        invocation.counts[_DELIVERY_METRICS[delivery.status]] += 1

    def _park(
        self, route: _Route, note: MailNotification, error: SesMailError, invocation: _Invocation, attempt: int
    ) -> bool:
        try:
            queued_id = park_for_retry(
                self._clients.sqs,
                route.retry_queue_url,
                note.to_json(),
                error=error,
                original_timestamp=note.timestamp,
                attempt_count=attempt,
                request_id=invocation.request_id,
                mailbox=route.mailbox.name,
            )
        except Exception as exc:
            log.error(
                "could not park the message in the retry queue; leaving it for SQS to redeliver",
                extra={"event": "delivery.park_failed", "reason": error.reason, "parkError": classify(exc).reason},
            )
            invocation.counts[names.METRIC_FAILED] += 1
            return False
        route.deliverer.mark(note, names.CLAIM_MARKER_QUEUED)
        log.warning(
            "parked for retry",
            extra={
                "event": "delivery.parked",
                "failureClass": error.failure_class.value,
                "reason": error.reason,
                "retryMessageId": queued_id,
            },
        )
        invocation.counts[names.METRIC_PARKED] += 1
        return True

    def _dead_letter(self, body: str, error: SesMailError, invocation: _Invocation, context: Mapping[str, str]) -> bool:
        invocation.counts[names.METRIC_FAILED] += 1
        try:
            dlq_id = send_to_dlq(self._clients.sqs, self.settings.inbound_dlq_url, body, error=error, context=context)
        except Exception as exc:
            log.error(
                "permanent failure, and the inbound DLQ refused the message; leaving it for SQS",
                extra={"event": "delivery.dlq_failed", "reason": error.reason, "dlqError": classify(exc).reason},
            )
            return False
        log.error(
            "permanent failure; sent to the inbound DLQ",
            extra={
                "event": "delivery.dead_lettered",
                "failureClass": error.failure_class.value,
                "reason": error.reason,
                "dlqMessageId": dlq_id,
            },
        )
        return True

    # --- retry processor ---------------------------------------------------------------------------

    def _handle_retry(self, event: dict[str, Any], invocation: _Invocation) -> dict[str, Any]:
        try:
            document = notification_document(event.get("notification"))
            if _ignored(document):
                # Parked before this release knew it: the processor deletes it without counting it.
                return {"status": names.RETRY_STATUS_IGNORED}
            note = parse_notification(document, expected_bucket=self.settings.email_bucket)
        except MalformedEventError as error:
            raise self._retry_failure(error, invocation, names.DEFAULT_MAILBOX) from None
        with bound(messageId=note.message_id):
            route = self._route_for(event, invocation)
        with bound(messageId=note.message_id, mailbox=route.mailbox.name):
            try:
                canary_id = self._canary_id(note)
                with bound(**({"canaryId": canary_id} if canary_id else {})):
                    delivery = self._deliver(route, note, invocation, canary=bool(canary_id))
            except Exception as exc:
                failure = classify(exc)
                if isinstance(failure, PermanentError):
                    # The state machine copies it to the retry DLQ now, where it lives 14 days from
                    # the copy: the reconcile leaves it to the operator's redrive that long.
                    route.deliverer.mark(note, names.CLAIM_MARKER_QUEUED)
                raise self._retry_failure(failure, invocation, route.mailbox.name) from None
        return {"status": delivery.status, "gmailMessageId": delivery.gmail_message_id}

    def _route_for(self, event: dict[str, Any], invocation: _Invocation) -> _Route:
        """The mailbox a retry-processor or reconcile event names (absent: ``default``)."""
        mailbox = event.get(names.RETRY_MAILBOX_KEY, names.DEFAULT_MAILBOX)
        route = self._routes.get(mailbox) if isinstance(mailbox, str) else None
        if route is None:
            unknown = PermanentError(
                f"mailbox {str(mailbox)[:40]!r} is not configured in this deployment "
                f"(configured: {', '.join(self._routes)}); the message cannot be delivered to it"
            )
            with bound(mailbox=str(mailbox)[:40]):
                raise self._retry_failure(unknown, invocation, names.DEFAULT_MAILBOX) from None
        return route

    def _deliver(
        self, route: _Route, note: MailNotification, invocation: _Invocation, *, canary: bool, live: bool = True
    ) -> Delivery:
        """One (message, mailbox) import, counted; a canary archived under its own label, and counted per mailbox.

        ``live`` is False for a reconcile: a canary found in the bucket proves the mailbox's
        import, not the path that lost it, so it must not count as the day's canary.
        """
        labels = (names.CANARY_LABEL,) if canary else None
        delivery = route.deliverer.deliver(note, invocation.deadline, holder=invocation.request_id, labels=labels)
        self._delivered(delivery, invocation)
        if canary and live and delivery.status == "delivered":
            invocation.canaries.add(route.mailbox.name)
            log.info("the canary reached the mailbox", extra={"event": names.EVENT_CANARY_DELIVERED})
        return delivery

    # --- reconcile ----------------------------------------------------------------------------------

    def _handle_reconcile(self, event: dict[str, Any], invocation: _Invocation) -> dict[str, Any]:
        """Deliver what the bucket says ``event["mailbox"]`` is owed, oldest first, until time runs out.

        Answers ``{"status": "complete" | "partial", ...}``; on ``partial`` the retry processor
        invokes it again (each run plans afresh: what was delivered is settled by then). A dead
        token, a refused mailbox or Gmail's quota stop it as they stop a drain (raised by their
        contract names); any other failure hands that message to the retry queue with its reason,
        where the drain that follows retries or dead-letters it.
        """
        route = self._route_for(event, invocation)
        bucket = self.settings.email_bucket
        if not bucket:
            error = PermanentError(f"the forwarder's environment lacks {names.ENV_VAR_EMAIL_BUCKET}; redeploy")
            raise self._retry_failure(error, invocation, route.mailbox.name)
        mailbox = route.mailbox.name
        with bound(mailbox=mailbox):
            planner = Planner(lambda: self._clients.s3, bucket, self._table)
            plan = planner.plan([mailbox], with_unroutable=mailbox == self._table.primary.name)
            handled: list[Owed] = []
            settled_here: list[Owed] = []
            for owed in plan.owed:
                if handled and self._clock() >= invocation.deadline:
                    break  # at least one per run: every run makes progress, however slow the listing
                with bound(messageId=owed.message.message_id):
                    if self._reconcile_one(route, owed, bucket, invocation):
                        settled_here.append(owed)
                handled.append(owed)
            complete = len(handled) == len(plan.owed)
            # Counted once: what this run itself settled (not what a racing delivery had), and the
            # unroutable messages when the whole plan is done.
            lost = plan.lost(settled_here) + (plan.lost_unroutable() if complete else 0)
            invocation.counts[names.METRIC_UNDELIVERED_FOUND] += lost
            summary = {
                "status": "complete" if complete else "partial",
                "owed": len(plan.owed),
                "handled": len(handled),
                "delivered": invocation.counts[names.METRIC_FORWARDED],
                "lost": lost,
                "waiting": plan.waiting,
                "young": plan.young,
                "unroutable": len(plan.unroutable),
                "scanned": plan.scanned,
            }
            # INFO even when mail was lost upstream: UndeliveredMailFound and its alarm say that, and
            # the failures-by-class query stays about deliveries.
            log.info("reconciled the bucket with the claims", extra={"event": names.EVENT_RECONCILE_DONE, **summary})
        return summary

    def _reconcile_one(self, route: _Route, owed: Owed, bucket: str, invocation: _Invocation) -> bool:
        """Deliver one owed pair; True when this run settled it (not when another delivery already had)."""
        note = parse_notification(notification_for(owed, bucket), expected_bucket=bucket)
        try:
            note = self._kept_notification(owed, bucket) or note
            canary_id = self._canary_id(note)
            delivery = self._deliver(route, note, invocation, canary=bool(canary_id), live=False)
            return delivery.status != "already-delivered"
        except Exception as exc:
            error = classify(exc)
        if isinstance(error, (TokenExpiredError, MailboxRefusedError, RateLimitedError)):
            raise self._retry_failure(error, invocation, route.mailbox.name) from None
        # Logged either way; a message that could not be parked is still owed to the next reconcile.
        # A held claim means another delivery is importing it: that one settles it, not this run.
        parked = self._park(route, note, error, invocation, attempt=1)
        return parked and not isinstance(error, ClaimHeldError)

    def _kept_notification(self, owed: Owed, bucket: str) -> MailNotification | None:
        """The notification the claim kept (exact recipients, verdicts, receipt time), if it has a usable one."""
        if not owed.claimed:
            return None
        kept = self._deliverer.claims.notification(bucket, owed.message.message_id, owed.mailbox)
        try:
            return parse_notification(kept, expected_bucket=bucket) if kept is not None else None
        except MalformedEventError:
            return None

    # --- the canary -----------------------------------------------------------------------------------

    def _canary_id(self, note: MailNotification) -> str | None:
        """The canary's id when ``note`` is the genuine daily canary, else None (ordinary mail).

        Only mail addressed to the canary address costs anything: one ranged GET of its head and,
        once per container, the key. A forged, stale or unsigned message to that address is
        logged and routed like any other mail; a key that cannot be read makes every canary
        ordinary mail, which its alarm then reports.
        """
        address = self.settings.canary_address
        if address is None or address not in (r.strip().lower() for r in note.recipients):
            return None
        try:
            key = self._canary_key.get()
        except CanaryKeyError as exc:
            log.error(f"cannot check the canary: {exc}", extra={"event": names.EVENT_CANARY_REFUSED})
            return None
        check = recognise(self._store.head(note), note.recipients, address, key, _received_at(note))
        if not check.is_canary:
            log.warning(
                f"addressed to the canary, but not the canary: {check.reason}; delivered as ordinary mail",
                extra={"event": names.EVENT_CANARY_REFUSED, "reason": check.reason},
            )
            return None
        log.info("the daily canary", extra={"event": names.EVENT_CANARY_RECOGNISED, "canaryId": check.canary_id})
        return check.canary_id

    def _retry_failure(self, error: SesMailError, invocation: _Invocation, mailbox: str) -> SesMailError:
        """Log it (inside the message's context) and return the contract class to raise.

        Step Functions matches the errorType, i.e. the class name, so subclasses such as
        ``TokenNotConfiguredError`` are raised as their contract base class. The message is
        bounded: it becomes the execution's error ``Cause`` and then the retry DLQ's ``error``
        attribute, and Step Functions payloads and SQS messages are size-limited.
        """
        invocation.counts[names.METRIC_FAILED] += 1
        _count_failure(error, mailbox, invocation)
        log.error(
            "retry delivery failed",
            extra={"event": "retry.failed", "failureClass": error.failure_class.value, "reason": error.reason},
        )
        # A rate limit keeps its own name: the retry processor stops on it instead of dead-lettering.
        contract = RateLimitedError if isinstance(error, RateLimitedError) else _CONTRACT_ERRORS[error.failure_class]
        return contract(error.reason[:MAX_REASON_CHARS])

    # --- helpers -------------------------------------------------------------------------------------

    def _invocation(self, context: Any) -> _Invocation:
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        seconds = remaining_ms() / 1000 if callable(remaining_ms) else DEFAULT_INVOCATION_SECONDS
        request_id = str(getattr(context, "aws_request_id", "") or "local")
        deadline = self._clock() + seconds - names.INVOCATION_RESERVE_SECONDS
        return _Invocation(request_id, deadline, Counter())


def _ignored(document: dict[str, Any]) -> bool:
    """True for a notification that announces no mail: logged once at info, then dropped."""
    reason = not_mail(document)
    if reason is not None:
        log.info(f"{reason}; not mail, nothing to deliver", extra={"event": "delivery.ignored", "reason": reason})
    return reason is not None


def _received_at(note: MailNotification) -> datetime:
    """When SES received the message (the notification's timestamp); now, if it has none readable."""
    try:
        received = datetime.fromisoformat(note.timestamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return received if received.tzinfo else received.replace(tzinfo=UTC)


def _unrouted(recipients: tuple[str, ...]) -> PermanentError:
    """A configuration error: the receipt rule accepted mail that no mailbox lists."""
    if not recipients:
        return PermanentError("no mailbox for this message: its notification lists no envelope recipients")
    return PermanentError(f"no mailbox for recipient {', '.join(recipients)}")


def _count_failure(error: SesMailError, mailbox: str, invocation: _Invocation) -> None:
    """What a failure tells the operator: a dead token (0 hours left) or a refused mailbox.

    Only a grant the token endpoint declared dead (``invalid_grant`` after the SSM re-read) is
    a dead token; a missing or placeholder token is the monitor's to report, and a refused
    mailbox has its own metric so the token alarms do not page about a token that works.
    """
    if isinstance(error, TokenExpiredError) and not isinstance(error, TokenNotConfiguredError):
        invocation.dead_tokens.add(mailbox)
    if isinstance(error, MailboxRefusedError):
        invocation.refused[mailbox] += 1


def _parks(error: SesMailError, *, attempt: int) -> bool:
    """Inbound: what waits in the retry queue rather than for SQS's redelivery (or its DLQ).

    A dead token and a refused mailbox fail every message until an operator acts. A rate limit
    can outlast SQS's receive budget (Gmail's daily quota lasts hours), so on the last receive
    before the inbound DLQ it is parked instead: it is not the message's fault.
    """
    if isinstance(error, (TokenExpiredError, MailboxRefusedError)):
        return True
    return isinstance(error, RateLimitedError) and attempt >= names.INBOUND_QUEUE_MAX_RECEIVE_COUNT
