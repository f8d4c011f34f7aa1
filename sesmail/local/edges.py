"""The system's edges, played the way the real outside world plays them.

* :class:`SimulatedSes` — a message for one of our domains arrives: SES's receipt rule, read back
  from moto's *active* rule set, runs its S3 action (raw message at ``{prefix}{messageId}``) and
  publishes the notification to the action's topic, as SES does. moto delivers SNS to SQS.
  :meth:`SimulatedSes.receive_sent` carries what was sent with SES (``SendRawEmail``, which moto
  only stores) to SES receiving, byte for byte: the canary's way in.
* :class:`EventSourceMapping` — Lambda's SQS poller, configured from the mapping the program
  declared: batches of ``batchSize``, the SQS event shape, ``ReportBatchItemFailures``.
* :class:`Scheduler` — EventBridge firing the token monitor's schedule rule (read from moto),
  allowed only if the function's resource policy lets that rule invoke it.
* :class:`SimulatedClock` — the week passes in seconds: mail's Date headers and the token
  monitor's "now" come from it.
* :class:`AlarmView` — moto stores alarms but never evaluates them; this reads the alarm the
  program created and applies its statistic, period, threshold and operator to the datapoints
  (:meth:`AlarmView.reading`: one period; :meth:`AlarmView.evaluate`: its M-of-N rule over its
  whole range, missing data treated as the alarm says).
* :func:`put_emf_metrics` — CloudWatch Logs extracting the Embedded Metric Format documents a
  function printed into metrics (``PutMetricData``), so alarms on them can be read from moto.
* :class:`E2EFakeGoogle` — the refresh tests' fake Google (:class:`sesmail.local.operator.RefreshFakeGoogle`),
  plus Gmail failure bursts that start after a given number of imports (so they hit the middle of
  a drain).
"""

from __future__ import annotations

import email
import email.utils
import json
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sesmail.local.google import ImportedMessage
from sesmail.local.operator import RefreshFakeGoogle

#: The subject SES gives the notifications it publishes to SNS.
SES_NOTIFICATION_SUBJECT = "Amazon SES Email Receipt Notification"


# --- time ----------------------------------------------------------------------------------------


class SimulatedClock:
    """Real time when the test (or demo) starts, plus the simulated time that has passed since."""

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime.now(UTC)
        self.offset = timedelta()

    def now(self) -> datetime:
        return self.start + self.offset

    def advance(self, **delta: float) -> datetime:
        self.offset += timedelta(**delta)
        return self.now()

    def set(self, **since_start: float) -> datetime:
        self.offset = timedelta(**since_start)
        return self.now()

    def restart(self, at: datetime) -> None:
        """Count from ``at`` (e.g. the moment a token was issued): ``set(days=1)`` is then a day after it."""
        self.start, self.offset = at, timedelta()

    def datetime_class(self) -> type[datetime]:
        """A ``datetime`` whose ``now()`` is this clock: monkeypatched into a module's namespace."""
        clock = self

        class SimulatedDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> SimulatedDatetime:
                current = clock.now()
                value = current.astimezone(tz) if tz is not None else current.replace(tzinfo=None)
                return cls.fromtimestamp(value.timestamp(), tz)

        return SimulatedDatetime


# --- SES -----------------------------------------------------------------------------------------


def raw_message(message_id: str, *, sent: datetime, subject: str, recipient: str, sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.format_datetime(sent)}\r\n"
        f"Message-ID: <{message_id}@mail.example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{subject}: sent {sent.isoformat()}.\r\n"
    ).encode()


@dataclass(frozen=True)
class Arrival:
    message_id: str
    raw: bytes
    bucket: str
    key: str
    notification: dict[str, Any]


@dataclass(frozen=True)
class SentMessage:
    """One message sent with SES's ``SendRawEmail``, as moto stored it."""

    ses_message_id: str
    source: str
    #: The envelope recipients (RCPT TO), each address once.
    destinations: tuple[str, ...]
    raw: bytes


@dataclass
class Carried:
    """What :meth:`SimulatedSes.receive_sent` did with the messages sent since last time."""

    sent: list[SentMessage] = field(default_factory=list)
    #: One per (message, S3 action) SES ran: stored in the bucket, announced on the topic.
    arrivals: list[Arrival] = field(default_factory=list)
    #: Sent, but no enabled rule of the active set accepts any of its recipients: SES receives nothing.
    not_received: list[SentMessage] = field(default_factory=list)


class SimulatedSes:
    """What SES does with a message for one of our domains, per the active receipt rule set in moto."""

    def __init__(self, s3: Any, sns: Any, ses: Any, clock: SimulatedClock, *, account_id: str | None = None) -> None:
        self._s3, self._sns, self._ses, self._clock = s3, sns, ses, clock
        self._account_id = account_id
        #: moto's ids of the sent messages already carried (or sent before this SES existed).
        self._carried: set[str] = {m.id for m in self._sent_by_moto()} if account_id else set()

    def active_rules(self) -> list[dict[str, Any]]:
        """The active rule set's rules, in order; none when no set is active (SES then receives nothing)."""
        return list(self._ses.describe_active_receipt_rule_set().get("Rules") or [])

    def s3_actions(self, recipient: str) -> list[dict[str, Any]]:
        """The S3 actions of every enabled rule matching ``recipient``, in the set's order."""
        actions: list[dict[str, Any]] = []
        for rule in self.active_rules():
            if rule.get("Enabled") and _matches(rule.get("Recipients") or [], recipient):
                actions.extend(a["S3Action"] for a in rule["Actions"] if "S3Action" in a)
        return actions

    def announce_topics(self) -> None:
        """SES tells each topic of a new rule that it is subscribed (the forwarder acknowledges it)."""
        for rule in self.active_rules():
            for action in rule["Actions"]:
                topic = action.get("S3Action", {}).get("TopicArn")
                if topic:
                    notice = {
                        "notificationType": "AmazonSnsSubscriptionSucceeded",
                        "message": f"You have successfully subscribed your Amazon SNS topic '{topic}' to receive "
                        "'Received' notifications from Amazon SES.",
                    }
                    self._sns.publish(TopicArn=topic, Message=json.dumps(notice))

    def receive(
        self,
        label: str,
        *,
        recipient: str = "bob@example.com",
        sender: str = "Alice <alice@example.org>",
        subject: str | None = None,
        verdicts: Mapping[str, Any] | None = None,
        also: Sequence[str] = (),
    ) -> Arrival:
        """One message arrives now (by the simulated clock); returns what SES stored and published.

        ``verdicts`` replaces receipt fields (``dmarcVerdict``, ``dmarcPolicy``, ...): what SES
        decided about the sender's authentication, all PASS by default. ``also`` adds envelope
        recipients (RCPT TO) beside ``recipient``: SES lists every one the rule matched.
        """
        actions = self.s3_actions(recipient)
        if not actions:
            raise AssertionError(f"no active receipt rule accepts {recipient}: SES would bounce it")
        now = self._clock.now()
        message_id = f"{label}-{uuid.uuid4().hex[:12]}"
        raw = raw_message(
            message_id, sent=now, subject=subject or f"Message {label}", recipient=recipient, sender=sender
        )
        arrival: Arrival | None = None
        for action in actions:
            key = f"{action.get('ObjectKeyPrefix', '')}{message_id}"
            self._s3.put_object(Bucket=action["BucketName"], Key=key, Body=raw)
            notification = _notification(message_id, now, action, key, recipient, sender, subject or f"Message {label}")
            notification["receipt"].update(verdicts or {})
            matched = [r for r in also if self.s3_actions(r)]
            notification["receipt"]["recipients"] += matched
            notification["mail"]["destination"] += matched
            if action.get("TopicArn"):
                self._sns.publish(
                    TopicArn=action["TopicArn"], Subject=SES_NOTIFICATION_SUBJECT, Message=json.dumps(notification)
                )
            arrival = Arrival(message_id, raw, action["BucketName"], key, notification)
        assert arrival is not None
        return arrival

    def publish(self, recipient: str, message: str) -> None:
        """Something else on the notification topic (a malformed notification, a duplicate)."""
        for action in self.s3_actions(recipient):
            self._sns.publish(TopicArn=action["TopicArn"], Subject=SES_NOTIFICATION_SUBJECT, Message=message)

    # --- SES sending -> SES receiving -------------------------------------------------------------

    def receive_sent(self) -> Carried:
        """The messages sent with ``SendRawEmail`` since the last call reach SES receiving, now (simulated clock).

        moto's ``SendRawEmail`` only stores the message (``ses_backends[account][region].sent_messages``,
        moto runs in this process); in AWS it goes out to the recipients' MX, which for our own
        domains is SES receiving. Each message is received per the active rule set exactly as it
        was sent: the stored object holds the very bytes (``RawMessage.Data``; moto keeps them as
        the UTF-8 text it decoded), and the envelope recipients are the send's destinations.
        moto adds the To/Cc/Bcc header addresses to the ``Destinations`` given; each address is
        named once (the canary names the same address in both). SES assigns the received message
        its own id. Every enabled rule (in the set's order) that matches a recipient runs its S3
        actions, listing in ``receipt.recipients`` the recipients it matched. A message no enabled
        rule accepts (a disabled rule, no active set) is not received: nothing is stored or
        published, and it is listed in :attr:`Carried.not_received`.
        """
        if self._account_id is None:
            raise AssertionError("this SimulatedSes was made without the account id of moto's SES backend")
        carried = Carried()
        for stored in self._sent_by_moto():
            if stored.id in self._carried:
                continue
            self._carried.add(stored.id)
            raw_data = getattr(stored, "raw_data", None)
            if not isinstance(raw_data, str):
                raise AssertionError(f"only SendRawEmail is carried to SES receiving; {stored.id} is a {type(stored)}")
            message = SentMessage(
                ses_message_id=stored.id,
                source=email.utils.parseaddr(stored.source or "")[1],
                destinations=_envelope(stored.destinations),
                raw=raw_data.encode("utf-8"),
            )
            carried.sent.append(message)
            arrivals = self._receive_raw(message)
            carried.arrivals.extend(arrivals)
            if not arrivals:
                carried.not_received.append(message)
        return carried

    def _sent_by_moto(self) -> list[Any]:
        from moto.ses.models import ses_backends  # the server runs in this process

        assert self._account_id is not None
        return list(ses_backends[self._account_id][self._ses.meta.region_name].sent_messages)

    def _receive_raw(self, sent: SentMessage) -> list[Arrival]:
        now = self._clock.now()
        message_id = f"sent-{uuid.uuid4().hex[:12]}"
        parsed = email.message_from_bytes(sent.raw)
        headers = [{"name": name, "value": str(value)} for name, value in parsed.items()]
        subject = str(parsed.get("Subject", ""))
        common = {
            "from": [str(v) for v in parsed.get_all("From") or []],
            "to": [str(v) for v in parsed.get_all("To") or []],
            "subject": subject,
            "messageId": str(parsed.get("Message-ID", "")),
            "date": str(parsed.get("Date", "")),
        }
        arrivals = []
        for rule in self.active_rules():
            matched = [r for r in sent.destinations if _matches(rule.get("Recipients") or [], r)]
            if not rule.get("Enabled") or not matched:
                continue
            for action in (a["S3Action"] for a in rule["Actions"] if "S3Action" in a):
                key = f"{action.get('ObjectKeyPrefix', '')}{message_id}"
                self._s3.put_object(Bucket=action["BucketName"], Key=key, Body=sent.raw)
                notification = _notification(message_id, now, action, key, matched[0], sent.source, subject)
                notification["mail"].update(
                    destination=list(sent.destinations), headers=headers, commonHeaders=common, source=sent.source
                )
                notification["receipt"]["recipients"] = matched
                if action.get("TopicArn"):
                    self._sns.publish(
                        TopicArn=action["TopicArn"], Subject=SES_NOTIFICATION_SUBJECT, Message=json.dumps(notification)
                    )
                arrivals.append(Arrival(message_id, sent.raw, action["BucketName"], key, notification))
        return arrivals


def _envelope(destinations: Iterable[str]) -> tuple[str, ...]:
    """Each address of ``destinations`` once (``Name <a@b>`` is ``a@b``), in the order given."""
    seen: dict[str, str] = {}
    for destination in destinations:
        address = email.utils.parseaddr(destination)[1]
        if address:
            seen.setdefault(address.lower(), address)
    return tuple(seen.values())


def _matches(recipients: list[str], address: str) -> bool:
    """SES's recipient condition: an address (which also matches its ``+label`` forms), a domain, a subdomain.

    The SES Developer Guide ("Creating receipt rules", recipient conditions): a condition naming
    ``user@example.com`` "will match any form of the address with a label", i.e. ``user+label@``.
    """
    if not recipients:
        return True
    address = address.lower()
    local, _, domain = address.rpartition("@")
    base = f"{local.split('+', 1)[0]}@{domain}"
    for recipient in (r.lower() for r in recipients):
        if recipient in (address, base) or domain == recipient or domain.endswith("." + recipient):
            return True
    return False


def _notification(
    message_id: str, now: datetime, action: dict[str, Any], key: str, recipient: str, sender: str, subject: str
) -> dict[str, Any]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    source = email.utils.parseaddr(sender)[1]
    return {
        "notificationType": "Received",
        "mail": {
            "timestamp": stamp,
            "source": source,
            "messageId": message_id,
            "destination": [recipient],
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": sender},
                {"name": "To", "value": recipient},
                {"name": "Subject", "value": subject},
            ],
            "commonHeaders": {"from": [sender], "to": [recipient], "subject": subject},
        },
        "receipt": {
            "timestamp": stamp,
            "processingTimeMillis": 412,
            "recipients": [recipient],
            "spamVerdict": {"status": "PASS"},
            "virusVerdict": {"status": "PASS"},
            "spfVerdict": {"status": "PASS"},
            "dkimVerdict": {"status": "PASS"},
            "dmarcVerdict": {"status": "PASS"},
            "action": {
                "type": "S3",
                "topicArn": action.get("TopicArn", ""),
                "bucketName": action["BucketName"],
                "objectKeyPrefix": action.get("ObjectKeyPrefix", ""),
                "objectKey": key,
            },
        },
    }


# --- Lambda's SQS poller ------------------------------------------------------------------------


@dataclass
class PollReport:
    invocations: int = 0
    records: int = 0
    deleted: int = 0
    item_failures: list[str] = field(default_factory=list)
    function_errors: list[str] = field(default_factory=list)


class EventSourceMapping:
    """Lambda's poller for one SQS event source mapping, as the program declared it.

    Receives up to ``batchSize`` messages, invokes the function with Lambda's SQS event, then
    deletes the batch, except, with ``ReportBatchItemFailures``, the records the function listed
    (and everything after a function error). Those stay in the queue; real SQS shows them again
    when their visibility timeout ends, which the poller lets happen at once
    (``ChangeMessageVisibility`` 0) instead of waiting 12 minutes. The queue's redrive policy
    (moto implements it) still moves a message to the DLQ after ``maxReceiveCount`` receives.
    One batch at a time: the mapping's ``maximumConcurrency`` (2) is an upper bound, and the
    concurrent path is the retry processor's Map, which runs concurrently here.
    """

    def __init__(self, inputs: dict[str, Any], sqs: Any, lambda_client: Any) -> None:
        if not inputs.get("enabled", True):
            raise AssertionError("the event source mapping is disabled: nothing would consume the queue")
        self.source_arn: str = inputs["eventSourceArn"]
        self.function: str = inputs["functionName"]
        self.batch_size = int(inputs.get("batchSize", 10))
        self.report_item_failures = "ReportBatchItemFailures" in (inputs.get("functionResponseTypes") or [])
        self._sqs, self._lambda = sqs, lambda_client
        self.queue_url: str = sqs.get_queue_url(QueueName=self.source_arn.rsplit(":", 1)[1])["QueueUrl"]
        self.region = self.source_arn.split(":")[3]

    def poll(self, *, max_batches: int = 100) -> PollReport:
        """Until a receive comes back empty."""
        report = PollReport()
        for _ in range(max_batches):
            messages = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.batch_size,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                return report
            self._deliver(messages, report)
        raise AssertionError(f"the queue did not empty in {max_batches} batches")

    def _deliver(self, messages: list[dict[str, Any]], report: PollReport) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        response = self._lambda.invoke(FunctionName=self.function, Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read() or b"null")
        report.invocations += 1
        report.records += len(messages)
        if response.get("FunctionError"):
            report.function_errors.append(str(payload))
            failed = {m["MessageId"] for m in messages}
        elif self.report_item_failures and isinstance(payload, dict):
            failed = {str(f.get("itemIdentifier")) for f in payload.get("batchItemFailures") or []}
            if not failed <= {m["MessageId"] for m in messages}:
                failed = {m["MessageId"] for m in messages}  # Lambda treats an unknown id as a failed batch
        else:
            failed = set()
        report.item_failures.extend(sorted(failed))
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
            report.deleted += len(done)
        for message in messages:
            if message["MessageId"] in failed:
                self._sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value["DataType"],
                }
                for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.source_arn,
            "awsRegion": self.region,
        }


# --- EventBridge -------------------------------------------------------------------------------


class Scheduler:
    """EventBridge running a scheduled rule's Lambda targets once ("the rule fired")."""

    def __init__(self, events: Any, lambda_client: Any, clock: SimulatedClock) -> None:
        self._events, self._lambda, self._clock = events, lambda_client, clock

    def fire(self, rule_name: str) -> list[Any]:
        rule = self._events.describe_rule(Name=rule_name)
        if rule.get("State") != "ENABLED" or not rule.get("ScheduleExpression"):
            raise AssertionError(f"{rule_name} is not an enabled schedule: {rule}")
        results = []
        for target in self._events.list_targets_by_rule(Rule=rule_name)["Targets"]:
            self._check_permission(target["Arn"], rule["Arn"])
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": rule["Arn"].split(":")[4],
                "time": self._clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": rule["Arn"].split(":")[3],
                "resources": [rule["Arn"]],
                "detail": {},
            }
            response = self._lambda.invoke(FunctionName=target["Arn"], Payload=json.dumps(event).encode())
            payload = json.loads(response["Payload"].read())
            if response.get("FunctionError"):
                raise AssertionError(f"{target['Arn']} failed: {payload}")
            results.append(payload)
        return results

    def _check_permission(self, function_arn: str, rule_arn: str) -> None:
        policy = json.loads(self._lambda.get_policy(FunctionName=function_arn)["Policy"])
        for statement in policy["Statement"]:
            principal = statement.get("Principal", {})
            service = principal.get("Service") if isinstance(principal, dict) else principal
            source = statement.get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn")
            if statement.get("Effect") == "Allow" and service == "events.amazonaws.com" and source == rule_arn:
                return
        raise AssertionError(f"{function_arn}'s resource policy does not let {rule_arn} invoke it: {policy}")


# --- CloudWatch alarms ------------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
}


@dataclass(frozen=True)
class AlarmReading:
    value: float | None
    breaching: bool


class AlarmView:
    """An alarm as moto holds it, applied to datapoints (moto stores alarms, it does not evaluate them)."""

    def __init__(self, cloudwatch: Any, alarm_name: str) -> None:
        [self.alarm] = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
        self._cloudwatch = cloudwatch

    def reading(self, since: datetime) -> AlarmReading:
        """The alarm's statistic over its period, of the datapoints published since ``since``.

        The simulated days pass in real seconds, so one real alarm period would lump the whole
        week's datapoints together; ``since`` (just before a run) isolates that run's datapoints.
        """
        alarm = self.alarm
        datapoints = self._cloudwatch.get_metric_statistics(
            Namespace=alarm["Namespace"],
            MetricName=alarm["MetricName"],
            Dimensions=alarm.get("Dimensions") or [],
            StartTime=since,
            EndTime=since + timedelta(seconds=alarm["Period"]),
            Period=alarm["Period"],
            Statistics=[alarm["Statistic"]],
        )["Datapoints"]
        if not datapoints:
            return AlarmReading(None, alarm["TreatMissingData"] == "breaching")
        [datapoint] = datapoints
        value = float(datapoint[alarm["Statistic"]])
        return AlarmReading(value, _OPERATORS[alarm["ComparisonOperator"]](value, float(alarm["Threshold"])))

    def evaluate(self, *, since: datetime | None = None, end: datetime | None = None) -> AlarmEvaluation:
        """The alarm's own rule over its whole range: ``EvaluationPeriods`` periods ending at ``end``.

        ``end`` defaults to now by the real clock (datapoints carry real timestamps: EMF's, the
        token monitor's). Each period's statistic is compared with the threshold; a period without
        datapoints counts as ``TreatMissingData`` says (``breaching``/``notBreaching``; with
        ``missing``/``ignore`` it is not counted, and a range without any datapoint is
        ``INSUFFICIENT_DATA``, where ``ignore`` would keep the previous state). ALARM when at
        least ``DatapointsToAlarm`` periods breach.

        ``since`` (rounded up to a whole second, as CloudWatch windows start on one) leaves out the
        datapoints before it: the simulated days pass in real seconds, so a range of real hours
        would also hold the datapoints of the simulated days before. Periods that end by then
        count as missing, as they would after a real day of silence.
        """
        alarm = self.alarm
        period = timedelta(seconds=int(alarm["Period"]))
        count = int(alarm["EvaluationPeriods"])
        needed = int(alarm.get("DatapointsToAlarm") or count)
        missing = alarm.get("TreatMissingData") or "missing"
        compare, threshold = _OPERATORS[alarm["ComparisonOperator"]], float(alarm["Threshold"])
        stop_at, start_at = _ceil_second(end or datetime.now(UTC)), _ceil_second(since) if since else None
        values: list[float | None] = []
        for index in range(count):
            start = stop_at - (count - index) * period
            stop = start + period
            if start_at is not None and stop <= start_at:
                values.append(None)
                continue
            start = max(start, start_at) if start_at is not None else start
            datapoints = self._cloudwatch.get_metric_statistics(
                Namespace=alarm["Namespace"],
                MetricName=alarm["MetricName"],
                Dimensions=alarm.get("Dimensions") or [],
                StartTime=start,
                EndTime=stop,
                Period=alarm["Period"],
                Statistics=[alarm["Statistic"]],
            )["Datapoints"]
            if len(datapoints) > 1:
                raise AssertionError(f"one period gave {len(datapoints)} datapoints: {datapoints}")
            values.append(float(datapoints[0][alarm["Statistic"]]) if datapoints else None)
        present = [v for v in values if v is not None]
        breaching = sum(1 for v in present if compare(v, threshold))
        if missing == "breaching":
            breaching += len(values) - len(present)
        if breaching >= needed:
            state = "ALARM"
        elif present or missing in ("breaching", "notBreaching"):
            state = "OK"
        else:
            state = "INSUFFICIENT_DATA"
        return AlarmEvaluation(tuple(values), breaching, needed, state)


@dataclass(frozen=True)
class AlarmEvaluation:
    """:meth:`AlarmView.evaluate`: each period's value (oldest first, None: no datapoint) and the verdict."""

    values: tuple[float | None, ...]
    breaching_periods: int
    datapoints_to_alarm: int
    state: str

    @property
    def breaching(self) -> bool:
        return self.state == "ALARM"


def _ceil_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


# --- CloudWatch Logs: Embedded Metric Format --------------------------------------------------------


@dataclass
class EmfExtraction:
    """What :func:`put_emf_metrics` found: the datapoints it put, per namespace, and what it could not read."""

    datapoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def latest(self) -> datetime | None:
        return max((d["Timestamp"] for _, d in self.datapoints), default=None)


def put_emf_metrics(cloudwatch: Any, output: str) -> EmfExtraction:
    """CloudWatch Logs' metric extraction from a function's log output: ``PutMetricData`` per EMF document.

    In Lambda, stdout goes to CloudWatch Logs, which turns each Embedded Metric Format document
    (a JSON line with ``_aws.CloudWatchMetrics``) into metrics: for every directive, every
    dimension set and every metric, a datapoint in the directive's namespace named by the
    metric, valued by the document's member of that name (a number, or a list of them), with
    the dimension set's members as dimensions, at ``_aws.Timestamp`` (ms since the epoch).
    A document that does not follow the specification yields no metrics (CloudWatch keeps it
    as a log line only); it is listed in :attr:`EmfExtraction.rejected`.
    """
    extraction = EmfExtraction()
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        try:
            extraction.datapoints.extend(_emf_datapoints(document))
        except (ValueError, KeyError, TypeError) as exc:
            extraction.rejected.append(f"{type(exc).__name__}: {exc}: {line[:200]}")
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for namespace, datum in extraction.datapoints:
        by_namespace.setdefault(namespace, []).append(datum)
    for namespace, data in by_namespace.items():
        for start in range(0, len(data), 20):
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 20])
    return extraction


def _emf_datapoints(document: Any) -> list[tuple[str, dict[str, Any]]]:
    metadata = document["_aws"]
    timestamp = metadata["Timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"_aws.Timestamp {timestamp!r} is not milliseconds since the epoch")
    moment = datetime.fromtimestamp(timestamp / 1000, UTC)
    found: list[tuple[str, dict[str, Any]]] = []
    for directive in metadata["CloudWatchMetrics"]:
        namespace = directive["Namespace"]
        for dimension_set in directive.get("Dimensions") or [[]]:
            dimensions = [{"Name": name, "Value": _dimension_value(document, name)} for name in dimension_set]
            for metric in directive["Metrics"]:
                name = metric["Name"]
                value = document[name]
                for number in value if isinstance(value, list) else [value]:
                    if isinstance(number, bool) or not isinstance(number, (int, float)):
                        raise TypeError(f"metric {name} has the value {number!r}, not a number")
                    datum: dict[str, Any] = {
                        "MetricName": name,
                        "Dimensions": dimensions,
                        "Timestamp": moment,
                        "Value": float(number),
                        "Unit": metric.get("Unit", "None"),
                    }
                    if "StorageResolution" in metric:
                        datum["StorageResolution"] = int(metric["StorageResolution"])
                    found.append((namespace, datum))
    return found


def _dimension_value(document: dict[str, Any], name: str) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise TypeError(f"dimension {name} has the value {value!r}, not a string")
    return value


# --- Google --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Burst:
    after_imports: int
    status: int
    times: int
    headers: dict[str, str] | None


class E2EFakeGoogle(RefreshFakeGoogle):
    """Adds Gmail failure bursts that begin once a number of messages has been imported."""

    def __init__(self) -> None:
        super().__init__()
        self._bursts: list[_Burst] = []
        self.bursts_started: list[int] = []

    def burst_after(self, imports: int, status: int, *, times: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._bursts.append(_Burst(imports, status, times, headers))

    def _handle_import(self, request: Any) -> Any:
        reply = super()._handle_import(request)
        with self._lock:
            due = [b for b in self._bursts if b.after_imports <= len(self._messages)]
            self._bursts = [b for b in self._bursts if b not in due]
        for burst in due:
            self.bursts_started.append(burst.after_imports)
            self.fail_gmail(burst.status, headers=burst.headers, times=burst.times)
        return reply


def header(message: ImportedMessage, name: str) -> str:
    assert message.raw is not None
    value = email.message_from_bytes(message.raw)[name]
    return str(value) if value is not None else ""


def mailbox(messages: Iterable[ImportedMessage]) -> list[ImportedMessage]:
    """Gmail's view: newest last by internal date, which ``internalDateSource=dateHeader`` takes from Date."""
    return sorted(messages, key=lambda m: email.utils.parsedate_to_datetime(header(m, "Date")))
