"""Every physical name the program creates fits its service's limits, for the longest stack name.

moto and the Pulumi mocks accept a 77-character IAM role name; IAM refuses it at ``pulumi up``,
after half the stack exists. So the program is rendered with the longest environment name
:func:`sesmail.names.check_env` accepts and the longest supported region, and every name is
checked against the limit its service documents. A resource type that carries a physical name
but has no rule here fails the test, so a new component cannot slip past it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from sesmail import names
from tests.infra.harness import ProgramRun, Registration, run_program, stack_config


@dataclass(frozen=True)
class NameRule:
    """A service's documented limit for one name property of one resource type."""

    key: str
    max_length: int
    pattern: str
    source: str
    min_length: int = 1

    def problems(self, value: str) -> list[str]:
        found = []
        if not self.min_length <= len(value) <= self.max_length:
            found.append(f"{len(value)} characters, allowed {self.min_length}-{self.max_length}")
        if not re.fullmatch(self.pattern, value):
            found.append(f"does not match {self.pattern}")
        return found


_ALNUM_DASH = r"[A-Za-z0-9_-]+"
_IAM_NAME = r"[\w+=,.@-]+"
_SES_NAME = r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?"

#: type -> the name properties it sets, each with its service's rule (source: the service's API reference).
RULES: dict[str, tuple[NameRule, ...]] = {
    "aws:iam/role:Role": (NameRule("name", 64, _IAM_NAME, "IAM CreateRole RoleName"),),
    "aws:iam/rolePolicy:RolePolicy": (NameRule("name", 128, _IAM_NAME, "IAM PutRolePolicy PolicyName"),),
    "aws:lambda/function:Function": (NameRule("name", 64, _ALNUM_DASH, "Lambda CreateFunction FunctionName"),),
    "aws:sqs/queue:Queue": (NameRule("name", 80, _ALNUM_DASH, "SQS CreateQueue QueueName"),),
    "aws:sfn/stateMachine:StateMachine": (NameRule("name", 80, _ALNUM_DASH, "Step Functions CreateStateMachine name"),),
    "aws:s3/bucket:Bucket": (
        NameRule("bucket", 63, r"[a-z0-9][a-z0-9.-]*[a-z0-9]", "S3 bucket naming rules", min_length=3),
    ),
    "aws:ses/receiptRuleSet:ReceiptRuleSet": (NameRule("ruleSetName", 64, _SES_NAME, "SES CreateReceiptRuleSet"),),
    "aws:ses/activeReceiptRuleSet:ActiveReceiptRuleSet": (
        NameRule("ruleSetName", 64, _SES_NAME, "SES SetActiveReceiptRuleSet"),
    ),
    "aws:ses/receiptRule:ReceiptRule": (
        NameRule("name", 64, _SES_NAME, "SES CreateReceiptRule Rule.Name"),
        NameRule("ruleSetName", 64, _SES_NAME, "SES CreateReceiptRule RuleSetName"),
    ),
    "aws:cloudwatch/eventRule:EventRule": (NameRule("name", 64, r"[.\-_A-Za-z0-9]+", "EventBridge PutRule Name"),),
    "aws:cloudwatch/metricAlarm:MetricAlarm": (NameRule("name", 255, r"[^\x00-\x1f]+", "CloudWatch PutMetricAlarm"),),
    "aws:cloudwatch/logGroup:LogGroup": (
        NameRule("name", 512, r"[.\-_/#A-Za-z0-9]+", "CloudWatch Logs CreateLogGroup"),
    ),
    "aws:cloudwatch/dashboard:Dashboard": (
        NameRule("dashboardName", 255, _ALNUM_DASH, "CloudWatch PutDashboard DashboardName"),
    ),
    "aws:cloudwatch/queryDefinition:QueryDefinition": (
        NameRule("name", 255, r"[^\x00-\x1f]+", "CloudWatch Logs PutQueryDefinition"),
    ),
    "aws:sns/topic:Topic": (NameRule("name", 256, _ALNUM_DASH, "SNS CreateTopic Name"),),
    "aws:kms/alias:Alias": (NameRule("name", 256, r"alias/[A-Za-z0-9/_-]+", "KMS CreateAlias AliasName"),),
    # 2048 for the whole name, at most 15 levels below the root.
    "aws:ssm/parameter:Parameter": (NameRule("name", 2048, r"(/[A-Za-z0-9_.-]+){1,15}", "SSM PutParameter Name"),),
}

#: Name-like inputs that are not physical names the program chooses (ARNs, references, tags).
NOT_NAMES = {
    "aws:lambda/eventSourceMapping:EventSourceMapping": {"functionName"},
    "aws:lambda/functionUrl:FunctionUrl": {"functionName"},
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": {"bucket"},
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": {"bucket"},
    "aws:s3/bucketPolicy:BucketPolicy": {"bucket"},
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": {"bucket"},
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": {"bucket"},
    "aws:s3/bucketNotification:BucketNotification": {"bucket"},
}
_NAME_KEYS = ("name", "bucket", "ruleSetName", "dashboardName", "functionName", "alarmName", "roleName")

LONGEST_ENV = "family-mail-production-x"
LONGEST_REGION = max(names.SUPPORTED_REGIONS, key=len)


#: The longest mailbox name ``names.check_mailbox`` accepts: its queues, alarms and parameters carry it.
LONGEST_MAILBOX = "a-twenty-char-mailbx"


@pytest.fixture(scope="module", params=["without-mailboxes", "longest-mailbox"])
def longest_run(request: pytest.FixtureRequest) -> ProgramRun:
    """The example stack, and one whose mailbox has the longest name, both with the longest stack name."""
    assert len(LONGEST_ENV) == names.MAX_ENV_LENGTH
    assert len(LONGEST_MAILBOX) == names.MAX_MAILBOX_LENGTH
    if request.param == "without-mailboxes":
        config = stack_config(gmailAddress="a.long.name@gmail.com")  # its token alarms carry the renewal link
        return run_program(config, stack=LONGEST_ENV, region=LONGEST_REGION)
    mailboxes = [
        # With an address, so its token alarms carry the longest renewal link.
        {"name": LONGEST_MAILBOX, "recipients": ["a@example.com"], "gmailAddress": "a.long.name@gmail.com"},
        {"name": "default", "recipients": ["example.com"]},
    ]
    config = stack_config(mailboxes=mailboxes, recipients=None, extraLabels=None)
    return run_program(config, stack=LONGEST_ENV, region=LONGEST_REGION)


def _named_inputs(resource: Registration) -> dict[str, str]:
    skip = NOT_NAMES.get(resource.type, set())
    return {key: value for key in _NAME_KEYS if key not in skip and isinstance(value := resource.inputs.get(key), str)}


def test_every_physical_name_fits_its_service_limit(longest_run: ProgramRun) -> None:
    problems = []
    for resource in longest_run.custom_resources:
        rules = {rule.key: rule for rule in RULES.get(resource.type, ())}
        for key, value in _named_inputs(resource).items():
            rule = rules.get(key)
            if rule is None:
                problems.append(f"{resource.type} {resource.name}: {key}={value!r} has no rule in RULES; add its limit")
                continue
            problems.extend(f"{resource.type} {key}={value!r}: {p} ({rule.source})" for p in rule.problems(value))
    assert not problems, "\n".join(problems)


def test_every_rule_is_exercised(longest_run: ProgramRun) -> None:
    """A rule for a type the program no longer creates is a sign the table is stale."""
    created = {resource.type for resource in longest_run.custom_resources}
    assert set(RULES) <= created


def test_the_tightest_names_are_the_ones_the_limit_was_chosen_for(longest_run: ProgramRun) -> None:
    """The env limit is as long as the tightest names allow, no shorter without a reason."""
    bucket = longest_run.one("aws:s3/bucket:Bucket").inputs["bucket"]
    assert len(bucket) <= 63
    role_names = [r.inputs["name"] for r in longest_run.of_type("aws:iam/role:Role")]
    assert max(len(n) for n in role_names) <= 64
    queues = [q.inputs["name"] for q in longest_run.of_type("aws:sqs/queue:Queue")]
    assert max(len(n) for n in queues) <= 80


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        (RULES["aws:iam/role:Role"][0], "ses-mail-gmail-forwarder-retry-processor-role-family-mail-production"),
        (RULES["aws:s3/bucket:Bucket"][0], "Ses-Mail-Test"),
        (RULES["aws:s3/bucket:Bucket"][0], "ab"),
        (RULES["aws:sqs/queue:Queue"][0], "queue.with.dots"),
    ],
)
def test_the_rules_catch_what_aws_refuses(rule: NameRule, value: str) -> None:
    assert rule.problems(value)


#: CloudWatch PutMetricAlarm: AlarmDescription is 0-1024 characters.
MAX_ALARM_DESCRIPTION = 1024


def test_every_alarm_description_fits_cloudwatch_s_limit(longest_run: ProgramRun) -> None:
    """Token alarms carry the renewal link (the function URL and the mailbox), so they are the longest."""
    descriptions = {
        alarm.inputs["name"]: alarm.inputs["alarmDescription"]
        for alarm in longest_run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    too_long = {name: len(text) for name, text in descriptions.items() if len(text) > MAX_ALARM_DESCRIPTION}
    assert not too_long
    linked = [text for text in descriptions.values() if "?mailbox=" in text]
    assert linked, "no token alarm carries a renewal link"
