"""The demo's week, played on the local world through its edges, told as events, ended by a count.

Two mailboxes, alice and bob, each with its own Gmail account. Day 0: both tokens through the
real refresh CLI (a scripted consent), and the phone renewal page's web client. Mail flows every
day. On day 6 the monitor's countdown reaches the last 24 hours and both expiring alarms fire;
bob renews at his laptop with the CLI, alice is away. On day 7 Google ends alice's token (the
7-day limit of apps in "Testing"); her mail waits in her retry queue while bob's keeps arriving,
and her token-expired alarm fires. On day 8 she opens the link in that alarm's e-mail on her
phone: the page renews her token and starts her drain, and the backlog lands at its original dates.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from sesmail import names
from sesmail.local.edges import AlarmView, Arrival, header, mailbox
from sesmail.local.function_url import Browser, FunctionUrl
from sesmail.local.program import stack_config
from sesmail.local.world import ENV, System, events, log_records

ALICE, BOB = "alice@gmail.com", "bob@gmail.com"
MAILBOXES = {"alice": ALICE, "bob": BOB}
DRAIN_TIMEOUT_SECONDS = 180.0


def demo_config() -> dict[str, Any]:
    """The example stack (Pulumi.test.yaml) with two mailboxes, each with its Gmail account."""
    mailboxes = [
        {"name": name, "recipients": [f"{name}@example.com"], "gmailAddress": account}
        for name, account in MAILBOXES.items()
    ]
    return stack_config(mailboxes=mailboxes, recipients=None, extraLabels=None)


@dataclass(frozen=True)
class Plan:
    """How much mail: ``--quick`` is one message per mailbox a day, the full week three."""

    messages_per_day: int


QUICK = Plan(messages_per_day=1)
FULL = Plan(messages_per_day=3)


@dataclass(frozen=True)
class Event:
    """One line of the story: when (simulated), who, what; ``tone`` colours it."""

    at: datetime
    actor: str
    text: str
    tone: str = "info"  # info | good | warn | bad


@dataclass(frozen=True)
class Summary:
    received: dict[str, int]
    imported: dict[str, int]
    duplicates: int
    missing: int
    out_of_order: int
    parked: int
    dead_lettered: int
    alarms_fired: tuple[str, ...]
    secrets_seen: int

    @property
    def ok(self) -> bool:
        """Every message in its mailbox exactly once, in Date order, nothing dead-lettered, no secret seen."""
        return (
            self.received == self.imported
            and self.duplicates == self.missing == self.out_of_order == self.dead_lettered == self.secrets_seen == 0
        )

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("messages received", _per_mailbox(self.received)),
            ("imported into Gmail", _per_mailbox(self.imported)),
            (
                "imported twice / missing / out of Date order",
                f"{self.duplicates} / {self.missing} / {self.out_of_order}",
            ),
            ("parked while a token was dead", str(self.parked)),
            ("dead-lettered", str(self.dead_lettered)),
            ("alarms fired", "\n".join(self.alarms_fired) or "none"),
            ("secrets seen in any output", str(self.secrets_seen)),
        ]


def _per_mailbox(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} ({', '.join(f'{m} {n}' for m, n in counts.items())})"


@dataclass
class Story:
    """Plays the week on ``world``, telling each step to ``tell`` as it happens."""

    world: System
    tell: Callable[[Event], None]
    plan: Plan = QUICK
    #: The handlers' output so far (the demo captures their stdout): parked counts, secrets.
    handler_output: Callable[[], str] = lambda: ""
    sent: dict[str, list[Arrival]] = field(default_factory=lambda: {m: [] for m in MAILBOXES})
    alarms: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    def run(self) -> Summary:
        self._deployed()
        self._tokens()
        for day in range(0, 6):
            self._day_of_mail(day)
        self._countdown_reaches_a_day()
        self._bob_renews_at_his_laptop()
        self._day_of_mail(6)
        self._alice_s_token_dies()
        link = self._the_alarm_e_mail()
        self._day_of_mail(8)
        self._alice_renews_from_her_phone(link)
        self._the_backlog_lands()
        return self._summary()

    # --- the week --------------------------------------------------------------------------------

    def _deployed(self) -> None:
        resources = len(self.world.deployment.run.custom_resources)
        self._say("pulumi up", f"the real program, deployed into local AWS (moto): {resources} resources", "good")
        self._say("pulumi up", f"the renewal page: {self.world.output('renewalUrl')}")

    def _tokens(self) -> None:
        google, world = self.world.google, self.world
        google.consent_account = ALICE
        first = world.refresh("--mailbox", "alice", "--client-secret", str(world.client_secret_file), "--no-retry")
        _check(first.returncode == 0, f"the refresh CLI failed: {first.stderr}")
        created = json.loads(self._parameter(names.refresh_token_parameter(ENV, "alice")))["created_at"]
        world.clock.restart(datetime.fromisoformat(created))  # the week counts from the first token
        self._say("operator", "python -m sesmail.refresh --env test --mailbox alice: consent as alice, token stored")
        google.consent_account = BOB
        second = world.refresh("--mailbox", "bob", "--no-retry")
        _check(second.returncode == 0, f"the refresh CLI failed: {second.stderr}")
        self._say("operator", "python -m sesmail.refresh --env test --mailbox bob: consent as bob, token stored")
        web_client = world.client_secret_file.with_name("web_client.json")
        web_client.write_text(json.dumps(google.client_json("web")), encoding="utf-8")
        uploaded = world.refresh("--web-client-secret", str(web_client))
        _check(uploaded.returncode == 0, f"the refresh CLI failed: {uploaded.stderr}")
        redirect_uri = names.renewal_redirect_uri(self._renewal_url())
        google.web_redirect_uris.add(redirect_uri)
        self._say("operator", f"stored the phone page's web client and registered {redirect_uri} with Google")
        monitor, _ = world.run_token_monitor("alice")
        self._say("token monitor", f"alice's token: {monitor['mailboxes']['alice']['hoursLeft']:.0f} h left", "good")

    def _day_of_mail(self, day: int) -> None:
        for n in range(self.plan.messages_per_day):
            self.world.clock.set(days=day, hours=8 + 3 * n)
            for name in MAILBOXES:
                self.sent[name].append(self.world.ses.receive(f"d{day}-{n}", recipient=f"{name}@example.com"))
        poll = self.world.inbound.poll()
        _check(not poll.item_failures and not poll.function_errors, f"the forwarder failed: {poll}")
        counts = {name: len(self.world.google.messages_for(account)) for name, account in MAILBOXES.items()}
        parked = self.world.depth(self._retry_queue("alice"))
        waiting = f"; {parked} of alice's wait in her retry queue" if parked else ""
        each = f"day {day}: {self.plan.messages_per_day} message(s) each"
        self._say("SES → Gmail", f"{each}; Gmail holds {counts}{waiting}")
        self.world.clock.set(days=day, hours=20)
        monitor, _ = self.world.run_token_monitor("alice")
        hours = monitor["mailboxes"]["alice"]["hoursLeft"]
        self._say("token monitor", f"alice's token: {hours:.0f} h left", "good" if hours >= 24 else "warn")

    def _countdown_reaches_a_day(self) -> None:
        self.world.clock.set(days=6, hours=1)
        _, reading = self.world.run_token_monitor("alice")
        for name in MAILBOXES:
            view = AlarmView(self.world.client("cloudwatch"), names.token_expiring_alarm(ENV, name))
            if view.reading(self.world.last_monitor_window).breaching:
                self._alarm(names.token_expiring_alarm(ENV, name))
        _check(reading.breaching, "the expiring alarm did not fire a day before the token dies")

    def _bob_renews_at_his_laptop(self) -> None:
        self.world.clock.set(days=6, hours=2)
        self.world.google.consent_account = BOB
        renewed = self.world.refresh("--mailbox", "bob")
        _check(renewed.returncode == 0, f"bob's renewal failed: {renewed.stderr}")
        self._say("bob", "at his laptop: python -m sesmail.refresh --env test --mailbox bob", "good")
        self._say("alice", "away from her laptop: she does nothing")

    def _alice_s_token_dies(self) -> None:
        self.world.clock.set(days=7)
        token = json.loads(self._parameter(names.refresh_token_parameter(ENV, "alice")))["token"]
        self.world.google.revoke(token)
        self._say("Google", "alice's token reached the 7-day limit of an app in Testing: it is dead", "bad")
        self._day_of_mail(7)
        alarm = names.token_expired_alarm(ENV, "alice")
        if AlarmView(self.world.client("cloudwatch"), alarm).reading(self.world.last_monitor_window).breaching:
            self._alarm(alarm)

    def _the_alarm_e_mail(self) -> str:
        alarm = names.token_expired_alarm(ENV, "alice")
        (found,) = self.world.client("cloudwatch").describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
        links = re.findall(r"https://\S+\?mailbox=alice", str(found["AlarmDescription"]))
        _check(len(links) == 1, f"the alarm's description carries no renewal link: {found['AlarmDescription']}")
        self._say("e-mail", f"to alice: {alarm} … Or renew from a phone: {links[0]}", "warn")
        return str(links[0])

    def _alice_renews_from_her_phone(self, link: str) -> None:
        self.world.clock.set(days=8, hours=21)
        self.world.google.consent_account = ALICE
        origin = f"https://{urlsplit(link).netloc}"
        with self._function_url(origin) as page:
            phone = Browser(origin, hosts={origin: page.origin})
            done, url = phone.follow(link)
        self.pages += [e.body + "\n" + "\n".join(f"{k}: {v}" for k, v in e.headers) for e in phone.page_responses]
        _check(done.status == 200 and url.endswith("/done"), f"the page ended at {url} ({done.status})")
        on_its_way = re.search(r"Mail on its way</dt><dd>([^<]*)<", done.body)
        waiting = on_its_way.group(1) if on_its_way else "some messages"
        hops = " → ".join(urlsplit(e.url).path or "/" for e in phone.history)
        text = f"opened the link, chose Allow at Google ({hops}): renewed, {waiting} on the way"
        self._say("alice's phone", text, "good")

    def _the_backlog_lands(self) -> None:
        execution = self._drain("alice")
        output = json.loads(execution.get("output") or "{}")
        tone = "good" if execution["status"] == "SUCCEEDED" else "bad"
        delivered, batches = output.get("delivered"), output.get("batches")
        self._say("retry processor", f"{execution['status']}: {delivered} delivered in {batches} batch(es)", tone)
        imported = mailbox(self.world.google.messages_for(ALICE))
        first, last = (parsedate_to_datetime(header(m, "Date")) for m in (imported[0], imported[-1]))
        dates = f"{first:%a %d %b} … {last:%a %d %b}"
        self._say("Gmail", f"alice's mailbox: {len(imported)} messages, by their own dates {dates}")

    # --- the count -------------------------------------------------------------------------------

    def _summary(self) -> Summary:
        received = {m: len(arrivals) for m, arrivals in self.sent.items()}
        imported: dict[str, int] = {}
        duplicates = missing = out_of_order = 0
        for name, account in MAILBOXES.items():
            held = mailbox(self.world.google.messages_for(account))
            ids = [header(m, "Message-ID") for m in held]
            expected = {f"<{a.message_id}@mail.example.org>" for a in self.sent[name]}
            imported[name] = len(ids)
            duplicates += len(ids) - len(set(ids))
            missing += len(expected - set(ids))
            dates = [parsedate_to_datetime(header(m, "Date")) for m in held]
            out_of_order += sum(1 for a, b in itertools.pairwise(dates) if b < a)
        output = self.handler_output()
        dead_lettered = sum(
            self.world.depth(url)
            for url in (self.world.output("inboundDlqUrl"), *(self._retry_dlq(m) for m in MAILBOXES))
        )
        return Summary(
            received=received,
            imported=imported,
            duplicates=duplicates,
            missing=missing,
            out_of_order=out_of_order,
            parked=len(events(log_records(output), "delivery.parked")),
            dead_lettered=dead_lettered,
            alarms_fired=tuple(self.alarms),
            secrets_seen=self._secrets_seen(output),
        )

    def _secrets_seen(self, output: str) -> int:
        """Every token, code, verifier and client secret Google handed out or was sent, in everything written."""
        google = self.world.google
        secrets = [*google.secrets()]
        secrets += [r[k] for r in google.token_requests for k in ("code", "code_verifier") if r.get(k)]
        sinks = [output, *self.pages, *(r.stdout + r.stderr for r in self.world.cli.results)]
        sinks += [json.dumps(self.world.audit_records()), self.world.execution_histories()]
        return sum(sink.count(secret) for sink in sinks for secret in set(secrets) if secret)

    # --- helpers ---------------------------------------------------------------------------------

    def _say(self, actor: str, text: str, tone: str = "info") -> None:
        self.tell(Event(self.world.clock.now(), actor, text, tone))

    def _alarm(self, alarm: str) -> None:
        self.alarms.append(alarm)
        self._say("CloudWatch", f"ALARM {alarm} → the alerts topic e-mails the operator", "warn")

    def _parameter(self, name: str) -> str:
        found = self.world.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]
        return str(found["Value"])

    def _renewal_url(self) -> str:
        return str(self.world.output("renewalUrl")).rstrip("/") + "/"

    def _retry_queue(self, mailbox_name: str) -> str:
        return str(self.world.output("mailboxes")[mailbox_name]["retryQueueUrl"])

    def _retry_dlq(self, mailbox_name: str) -> str:
        return str(self.world.client("sqs").get_queue_url(QueueName=names.retry_dlq(ENV, mailbox_name))["QueueUrl"])

    @contextmanager
    def _function_url(self, origin: str) -> Iterator[FunctionUrl]:
        """The deployed renewal function behind its URL: each request one Invoke, as Lambda does it."""
        client = self.world.client("lambda")

        def invoke(event: dict[str, Any]) -> dict[str, Any]:
            answer = client.invoke(FunctionName=names.renewal_function(ENV), Payload=json.dumps(event).encode())
            result: dict[str, Any] = json.loads(answer["Payload"].read())
            return result

        page = FunctionUrl(invoke, domain=urlsplit(origin).hostname or "")
        try:
            yield page
        finally:
            page.stop()

    def _drain(self, mailbox_name: str) -> dict[str, Any]:
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while True:
            mine = [
                e
                for e in self.world.executions()
                if json.loads(e["input"]).get(names.RETRY_MAILBOX_KEY) == mailbox_name
                and json.loads(e["input"]).get("trigger") == names.RENEWAL_SOURCE
            ]
            if mine and all(e["status"] != "RUNNING" for e in mine):
                return mine[-1]
            _check(time.monotonic() < deadline, "the drain did not end in time")
            time.sleep(0.2)


class DemoFailed(RuntimeError):
    """The week did not go as a working system's would: the message says where."""


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise DemoFailed(problem)
