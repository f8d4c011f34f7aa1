"""The whole program under mocks: every named resource, its settings, and the stack outputs."""

from __future__ import annotations

from typing import Any

import pytest

from sesmail import names
from sesmail.infra.config import StackConfig
from tests.infra.harness import (
    ACCOUNT_ID,
    COMPONENT_TYPE_PREFIX,
    PARTITION,
    REGION,
    STACK,
    ProgramRun,
    is_secret,
    run_program,
    stack_config,
    unsecret,
)

ENV = STACK
QUEUE = "aws:sqs/queue:Queue"
PARAMETER = "aws:ssm/parameter:Parameter"
FUNCTION = "aws:lambda/function:Function"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
TOPIC = "aws:sns/topic:Topic"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"

DESIGN_OUTPUTS = {
    "renewalUrl",
    "emailBucket",
    "inboundQueueUrl",
    "retryQueueUrl",
    "retryDlqUrl",
    "inboundDlqUrl",
    "stateMachineArn",
    "alertsTopicArn",
    "forwarderFunctionName",
    "clientCredentialsParameter",
    "refreshTokenParameter",
    "mxRecord",
    "dnsRecords",
    "mailboxes",  # name → recipients, Gmail address, token parameter, retry queue URL
}


def queue_url(name: str) -> str:
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{name}"


@pytest.mark.parametrize(
    ("type_", "physical_name"),
    [
        (QUEUE, names.inbound_queue(ENV)),
        (QUEUE, names.inbound_dlq(ENV)),
        (QUEUE, names.retry_queue(ENV)),
        (QUEUE, names.retry_dlq(ENV)),
        (TOPIC, names.alerts_topic(ENV)),
        (TOPIC, names.inbound_notification_topic(ENV)),
        (FUNCTION, names.forwarder_function(ENV)),
        (PARAMETER, names.client_credentials_parameter(ENV)),
        (PARAMETER, names.refresh_token_parameter(ENV)),
        (PARAMETER, names.refresh_token_expiry_parameter(ENV)),
        (LOG_GROUP, names.lambda_log_group(names.forwarder_function(ENV))),
        ("aws:iam/role:Role", names.forwarder_role(ENV)),
        ("aws:kms/alias:Alias", names.topic_key_alias(ENV)),
        ("aws:ses/receiptRule:ReceiptRule", names.receipt_rule(ENV)),
        ("aws:sfn/stateMachine:StateMachine", names.retry_state_machine(ENV)),
        ("aws:iam/role:Role", names.retry_processor_role(ENV)),
        (LOG_GROUP, names.state_machine_log_group(ENV)),
        (LOG_GROUP, names.audit_log_group(ENV)),
    ],
)
def test_every_named_resource_exists_with_its_name_from_names(
    example_run: ProgramRun, type_: str, physical_name: str
) -> None:
    example_run.one(type_, name=physical_name)


def test_bucket_and_rule_set_names_come_from_names(example_run: ProgramRun) -> None:
    example_run.one("aws:s3/bucket:Bucket", bucket=names.email_bucket(ENV, ACCOUNT_ID, REGION))
    example_run.one("aws:ses/receiptRuleSet:ReceiptRuleSet", ruleSetName=names.receipt_rule_set(ENV))


def test_exactly_the_design_outputs_are_exported(example_run: ProgramRun) -> None:
    assert set(example_run.outputs) == DESIGN_OUTPUTS


def test_output_values(example_run: ProgramRun) -> None:
    out = example_run.outputs
    assert out["emailBucket"] == names.email_bucket(ENV, ACCOUNT_ID, REGION)
    assert out["inboundQueueUrl"] == queue_url(names.inbound_queue(ENV))
    assert out["inboundDlqUrl"] == queue_url(names.inbound_dlq(ENV))
    assert out["retryQueueUrl"] == queue_url(names.retry_queue(ENV))
    assert out["retryDlqUrl"] == queue_url(names.retry_dlq(ENV))
    assert out["stateMachineArn"] == names.state_machine_arn(ENV, REGION, ACCOUNT_ID, PARTITION)
    assert out["alertsTopicArn"].endswith(":" + names.alerts_topic(ENV))
    assert out["forwarderFunctionName"] == names.forwarder_function(ENV)
    assert out["clientCredentialsParameter"] == names.client_credentials_parameter(ENV)
    assert out["refreshTokenParameter"] == names.refresh_token_parameter(ENV)
    assert out["mxRecord"] == names.mx_record(REGION) == f"10 inbound-smtp.{REGION}.amazonaws.com"


def test_dns_records_cover_every_domain() -> None:
    run = run_program(stack_config(domains=["example.com", "example.org"]))
    records = run.outputs["dnsRecords"]
    for domain in ("example.com", "example.org"):
        mine = [r for r in records if r["name"].endswith(domain)]
        assert {"type": "MX", "name": domain, "value": names.mx_record(REGION)} in mine
        assert {"type": "TXT", "name": f"_amazonses.{domain}", "value": f"verify-{domain}"} in mine
        cnames = [r for r in mine if r["type"] == "CNAME"]
        assert len(cnames) == 3
        for record in cnames:
            token = record["name"].split("._domainkey.")[0]
            assert record == {
                "type": "CNAME",
                "name": f"{token}._domainkey.{domain}",
                "value": f"{token}.dkim.amazonses.com",
            }
    assert {r["type"] for r in records} == {"MX", "TXT", "CNAME"}


def test_every_resource_belongs_to_a_component(example_run: ProgramRun) -> None:
    components = {r.urn for r in example_run if r.type.startswith(COMPONENT_TYPE_PREFIX)}
    assert {r.type.removeprefix(COMPONENT_TYPE_PREFIX) for r in example_run if r.urn in components} == {
        "TopicKey",
        "Alerts",
        "Tokens",
        "Retry",
        "MailIntake",
        "Forwarder",
        "RetryProcessor",
        "TokenMonitor",
        "Monitoring",
        "Canary",
        "RenewalPage",
    }
    orphans = [r.name for r in example_run.custom_resources if r.parent not in components]
    assert orphans == []


def test_queue_settings(example_run: ProgramRun) -> None:
    inbound = example_run.one(QUEUE, name=names.inbound_queue(ENV))
    inbound_dlq = example_run.one(QUEUE, name=names.inbound_dlq(ENV))
    retry = example_run.one(QUEUE, name=names.retry_queue(ENV))
    retry_dlq = example_run.one(QUEUE, name=names.retry_dlq(ENV))

    for queue in (inbound, inbound_dlq, retry, retry_dlq):
        assert queue.inputs["sqsManagedSseEnabled"] is True, queue.name

    assert retry.inputs["messageRetentionSeconds"] == names.RETRY_QUEUE_RETENTION_SECONDS == 14 * 86400
    assert retry.inputs["visibilityTimeoutSeconds"] == names.RETRY_QUEUE_VISIBILITY_SECONDS == 15 * 60
    assert retry.json_input("redrivePolicy") == {
        "deadLetterTargetArn": retry_dlq.state["arn"],
        "maxReceiveCount": names.RETRY_QUEUE_MAX_RECEIVE_COUNT,
    }

    # AWS: an SQS event source's visibility timeout should be >= 6x the function timeout.
    assert inbound.inputs["visibilityTimeoutSeconds"] >= 6 * names.FORWARDER_TIMEOUT_SECONDS
    assert inbound.json_input("redrivePolicy") == {
        "deadLetterTargetArn": inbound_dlq.state["arn"],
        "maxReceiveCount": names.INBOUND_QUEUE_MAX_RECEIVE_COUNT,
    }
    assert names.INBOUND_QUEUE_MAX_RECEIVE_COUNT == 5

    # A message's age counts from its first enqueue, so DLQs must keep it longer than sources.
    for source, dlq in ((inbound, inbound_dlq), (retry, retry_dlq)):
        assert dlq.inputs["messageRetentionSeconds"] >= source.inputs["messageRetentionSeconds"]
        assert "redrivePolicy" not in dlq.inputs


def test_parameters_start_as_placeholders_and_ignore_value_changes(example_run: ProgramRun) -> None:
    expected_types = {
        names.client_credentials_parameter(ENV): "SecureString",
        names.web_client_credentials_parameter(ENV): "SecureString",
        names.refresh_token_parameter(ENV): "SecureString",
        names.refresh_token_expiry_parameter(ENV): "String",
    }
    # The canary's key and the renewal page's secret are not token parameters: generated once,
    # never a placeholder (tests/infra/test_infra_canary.py, test_infra_renewal.py).
    generated = {names.canary_key_parameter(ENV), names.renewal_secret_parameter(ENV)}
    parameters = [p for p in example_run.of_type(PARAMETER) if p.inputs["name"] not in generated]
    assert {p.inputs["name"]: p.inputs["type"] for p in parameters} == expected_types
    for parameter in parameters:
        assert "value" in parameter.ignore_changes, parameter.name
        # Pulumi keeps the value a secret in the state, the placeholder included.
        assert is_secret(parameter.inputs["value"]), parameter.name
        placeholder = (
            names.web_client_placeholder_value(ENV)
            if parameter.inputs["name"] == names.web_client_credentials_parameter(ENV)
            else names.placeholder_value(ENV)
        )
        assert unsecret(parameter.inputs["value"]) == placeholder
        assert names.is_placeholder(unsecret(parameter.inputs["value"]))
        if parameter.inputs["type"] == "SecureString":
            assert parameter.inputs["keyId"] == "alias/aws/ssm"


def test_forwarder_function(example_run: ProgramRun) -> None:
    function = example_run.one(FUNCTION, name=names.forwarder_function(ENV))
    inputs = function.inputs
    assert inputs["runtime"] == names.FORWARDER_RUNTIME
    major, minor = (int(part) for part in inputs["runtime"].removeprefix("python").split("."))
    assert (major, minor) >= (3, 12)
    assert inputs["architectures"] == ["arm64"]
    assert inputs["handler"] == "handlers.forwarder.handler" == names.FORWARDER_HANDLER
    assert inputs["timeout"] == names.FORWARDER_TIMEOUT_SECONDS
    assert inputs["memorySize"] == names.FORWARDER_MEMORY_MB
    assert inputs["environment"]["variables"] == {
        names.ENV_VAR_ENV: ENV,
        names.ENV_VAR_RETRY_QUEUE_URL: queue_url(names.retry_queue(ENV)),
        names.ENV_VAR_INBOUND_DLQ_URL: queue_url(names.inbound_dlq(ENV)),
        names.ENV_VAR_EMAIL_BUCKET: names.email_bucket(ENV, ACCOUNT_ID, REGION),
        names.ENV_VAR_AUTH_FAILURES: "spam",
        names.ENV_VAR_CANARY_ADDRESS: names.canary_address("example.com"),
    }
    log_group = example_run.one(LOG_GROUP, name=names.lambda_log_group(names.forwarder_function(ENV)))
    assert inputs["loggingConfig"]["logGroup"] == log_group.inputs["name"]
    assert function.depends_on(log_group)
    assert function.depends_on(example_run.one(ROLE_POLICY, role=names.forwarder_role(ENV)))
    role = example_run.one("aws:iam/role:Role", name=names.forwarder_role(ENV))
    assert inputs["role"] == role.state["arn"]


def test_extra_labels_become_gmail_labels() -> None:
    run = run_program(stack_config(extraLabels=["Label_1", "IMPORTANT"]))
    variables = run.one(FUNCTION, name=names.forwarder_function(ENV)).inputs["environment"]["variables"]
    assert variables[names.ENV_VAR_GMAIL_LABELS] == "Label_1,IMPORTANT"


def test_log_group_has_retention(example_run: ProgramRun) -> None:
    log_group = example_run.one(LOG_GROUP, name=names.lambda_log_group(names.forwarder_function(ENV)))
    assert log_group.inputs["name"] == f"/aws/lambda/{names.forwarder_function(ENV)}"
    assert log_group.inputs["retentionInDays"] == names.FORWARDER_LOG_RETENTION_DAYS


def test_event_source_mapping(example_run: ProgramRun) -> None:
    mapping = example_run.one(MAPPING)
    inbound = example_run.one(QUEUE, name=names.inbound_queue(ENV))
    function = example_run.one(FUNCTION, name=names.forwarder_function(ENV))
    assert mapping.inputs["eventSourceArn"] == inbound.state["arn"]
    assert mapping.inputs["functionName"] == function.state["arn"]
    assert mapping.inputs["batchSize"] == 10
    assert mapping.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]
    concurrency = mapping.inputs["scalingConfig"]["maximumConcurrency"]
    assert concurrency == names.FORWARDER_MAX_CONCURRENCY
    # The smallest value AWS allows: Gmail's per-user quota (240 imports a minute) is the
    # bottleneck, and two sequential pollers at ~0.5 s an import already reach it.
    assert concurrency == 2
    assert names.GMAIL_QUOTA_UNITS_PER_MINUTE // names.GMAIL_IMPORT_QUOTA_UNITS == 240
    # Lambda validates the role's SQS permissions when the mapping is created.
    assert mapping.depends_on(example_run.one(ROLE_POLICY, role=names.forwarder_role(ENV)))


def test_alert_subscriptions_follow_alert_emails() -> None:
    run = run_program(stack_config(alertEmails=["a@example.com", "b@example.net"]))
    topic = run.one(TOPIC, name=names.alerts_topic(ENV))
    subscriptions = run.of_type("aws:sns/topicSubscription:TopicSubscription")
    email = {s.inputs["endpoint"] for s in subscriptions if s.inputs["protocol"] == "email"}
    assert email == {"a@example.com", "b@example.net"}
    assert all(s.inputs["topic"] == topic.state["arn"] for s in subscriptions if s.inputs["protocol"] == "email")


def test_no_alert_emails_means_no_email_subscription() -> None:
    run = run_program(stack_config(alertEmails=None))
    subscriptions = run.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert [s for s in subscriptions if s.inputs["protocol"] == "email"] == []


def test_notification_topic_feeds_the_inbound_queue(example_run: ProgramRun) -> None:
    topic = example_run.one(TOPIC, name=names.inbound_notification_topic(ENV))
    inbound = example_run.one(QUEUE, name=names.inbound_queue(ENV))
    inbound_dlq = example_run.one(QUEUE, name=names.inbound_dlq(ENV))
    subscription = example_run.one("aws:sns/topicSubscription:TopicSubscription", protocol="sqs")
    assert subscription.inputs["topic"] == topic.state["arn"]
    assert subscription.inputs["endpoint"] == inbound.state["arn"]
    assert subscription.json_input("redrivePolicy") == {"deadLetterTargetArn": inbound_dlq.state["arn"]}
    for policy in example_run.of_type("aws:sqs/queuePolicy:QueuePolicy"):
        assert subscription.depends_on(policy)


def _lifecycle_rules(run: ProgramRun) -> dict[str, dict[str, Any]]:
    """The bucket's lifecycle rules by the prefix they filter on."""
    rules = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    return {rule["filter"]["prefix"]: rule for rule in rules}


def test_lifecycle_expires_inbound_and_claims_after_retain_days() -> None:
    run = run_program(stack_config(retainDays=45))
    rules = _lifecycle_rules(run)
    assert set(rules) == {names.INBOUND_PREFIX, names.CLAIMS_PREFIX}
    for rule in rules.values():
        assert rule["status"] == "Enabled"
        assert rule["expiration"]["days"] == 45


def test_default_retain_days(example_run: ProgramRun) -> None:
    for rule in _lifecycle_rules(example_run).values():
        assert rule["expiration"]["days"] == StackConfig.parse(ENV, {"domains": "example.com"}).retain_days
        assert rule["expiration"]["days"] == names.DEFAULT_RETAIN_DAYS


def test_stack_name_is_the_environment() -> None:
    run = run_program(stack="prod")
    run.one(QUEUE, name=names.inbound_queue("prod"))
    run.one(FUNCTION, name=names.forwarder_function("prod"))
    assert run.outputs["refreshTokenParameter"] == names.refresh_token_parameter("prod")


def test_resource_list_helper_lists_every_resource(example_run: ProgramRun) -> None:
    from tests.infra.resource_list import resource_lines

    lines = resource_lines(example_run)
    assert not [line for line in lines if "NOT IN A COMPONENT" in line]
    for resource in example_run.custom_resources:
        assert any(resource.type in line and resource.name in line for line in lines), resource.name
