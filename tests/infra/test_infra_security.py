"""Least privilege and the resource policies real AWS enforces (mocks and moto do not)."""

from __future__ import annotations

from typing import Any

import pytest

from sesmail import names
from sesmail.infra import policies
from tests.infra.harness import ACCOUNT_ID, PARTITION, REGION, STACK, ProgramRun, Registration
from tests.infra.policy_doc import allows, as_list, grants, parameter_arn, queue_arn, statement, statements

ENV = STACK
SCOPED_SERVICES = ("ssm:", "sqs:", "s3:", "kms:")
#: Actions of those services that have no resource type at all (AWS's Service Authorization
#: Reference): "*" is the only resource IAM accepts for them. tests/rules checks this list's claim.
NO_RESOURCE_TYPE = {"ssm:DescribeParameters"}


def expected_rule_arn(rule_set: str | None = None) -> str:
    return (
        f"arn:{PARTITION}:ses:{REGION}:{ACCOUNT_ID}:receipt-rule-set/"
        f"{rule_set or names.receipt_rule_set(ENV)}:receipt-rule/{names.receipt_rule(ENV)}"
    )


@pytest.fixture(scope="module")
def forwarder_policy(example_run: ProgramRun) -> dict[str, Any]:
    policy: dict[str, Any] = example_run.one(
        "aws:iam/rolePolicy:RolePolicy", role=names.forwarder_role(ENV)
    ).json_input("policy")
    return policy


@pytest.fixture(scope="module")
def bucket_arn() -> str:
    return f"arn:{PARTITION}:s3:::{names.email_bucket(ENV, ACCOUNT_ID, REGION)}"


def identity_policies(run: ProgramRun) -> list[Registration]:
    types = {"aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy"}
    return [r for r in run if r.type in types]


def test_no_identity_policy_grants_star_resources_for_scoped_services(example_run: ProgramRun) -> None:
    found = identity_policies(example_run)
    assert found, "the forwarder's role policy should be in the graph"
    for registration in found:
        for stmt in statements(registration.json_input("policy")):
            actions = as_list(stmt["Action"])
            if any(a.startswith(SCOPED_SERVICES) and a not in NO_RESOURCE_TYPE for a in actions):
                for resource in as_list(stmt["Resource"]):
                    assert resource != "*" and not resource.endswith(":*:*"), (registration.name, stmt)
            for action in actions:
                assert action != "*" and not action.endswith(":*"), (registration.name, action)


def test_forwarder_reads_only_its_oauth_parameters(forwarder_policy: dict[str, Any]) -> None:
    """The two OAuth clients (installed; web, whose tokens came from the renewal page) and the token."""
    readable = {
        parameter_arn(names.client_credentials_parameter(ENV)),
        parameter_arn(names.web_client_credentials_parameter(ENV)),
        parameter_arn(names.refresh_token_parameter(ENV)),
    }
    assert set(grants(forwarder_policy, "ssm:GetParameter")) == readable
    # GetParameters (what the runtime calls) also reaches the canary's key, to check a canary's signature.
    assert set(grants(forwarder_policy, "ssm:GetParameters")) == readable | {
        parameter_arn(names.canary_key_parameter(ENV))
    }
    forbidden = [
        names.refresh_token_expiry_parameter(ENV),
        f"{names.parameter_prefix(ENV)}/something-else",
        names.refresh_token_parameter("prod"),
        "/other-app/secret",
    ]
    for name in forbidden:
        for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"):
            assert not allows(forwarder_policy, action, parameter_arn(name)), (action, name)
    assert not grants(forwarder_policy, "ssm:GetParametersByPath")
    assert not grants(forwarder_policy, "ssm:PutParameter")


def test_forwarder_reads_inbound_mail_and_writes_only_claims(forwarder_policy: dict[str, Any], bucket_arn: str) -> None:
    inbound, claims = f"{bucket_arn}/{names.INBOUND_PREFIX}*", f"{bucket_arn}/{names.CLAIMS_PREFIX}*"
    assert set(grants(forwarder_policy, "s3:GetObject")) == {inbound, claims}
    assert grants(forwarder_policy, "s3:GetObjectTagging") == [inbound]  # older deliveries' tag
    assert grants(forwarder_policy, "s3:PutObject") == [claims]
    assert allows(forwarder_policy, "s3:GetObject", f"{bucket_arn}/inbound/abc123")
    assert allows(forwarder_policy, "s3:PutObject", f"{bucket_arn}/claims/abc123/default")
    for key in ("inbound/abc123", "other/abc123", "abc123", "claimsX/abc123"):
        assert not allows(forwarder_policy, "s3:PutObject", f"{bucket_arn}/{key}"), key
    for action in ("s3:GetObject", "s3:GetObjectTagging"):
        assert not allows(forwarder_policy, action, f"{bucket_arn}/other/abc123"), action
    # No tag writes any more (claims replaced the tag), no deletes, no bucket settings.
    for action in ("s3:PutObjectTagging", "s3:DeleteObject", "s3:DeleteObjectTagging", "s3:PutObjectAcl"):
        assert not grants(forwarder_policy, action), action
    for action in ("s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration"):
        assert not grants(forwarder_policy, action), action
    # Key names only, so a missing object is a 404 (permanent), not a 403 (retried).
    assert grants(forwarder_policy, "s3:ListBucket") == [bucket_arn]


def test_forwarder_claim_statement_names_exactly_its_actions(forwarder_policy: dict[str, Any], bucket_arn: str) -> None:
    claim = statement(forwarder_policy, "ClaimDeliveries")
    assert claim["Action"] == list(policies.FORWARDER_CLAIM_ACTIONS) == ["s3:GetObject", "s3:PutObject"]
    assert claim["Resource"] == f"{bucket_arn}/{names.CLAIMS_PREFIX}*"
    inbound = statement(forwarder_policy, "ReadInboundMail")
    assert inbound["Action"] == list(policies.FORWARDER_S3_OBJECT_ACTIONS) == ["s3:GetObject", "s3:GetObjectTagging"]


def test_forwarder_sends_only_to_retry_queue_and_inbound_dlq(forwarder_policy: dict[str, Any]) -> None:
    assert set(grants(forwarder_policy, "sqs:SendMessage")) == {
        queue_arn(names.retry_queue(ENV)),
        queue_arn(names.inbound_dlq(ENV)),
    }
    for action in policies.FORWARDER_CONSUME_ACTIONS:
        assert grants(forwarder_policy, action) == [queue_arn(names.inbound_queue(ENV))]
    assert not allows(forwarder_policy, "sqs:DeleteMessage", queue_arn(names.retry_queue(ENV)))
    assert not grants(forwarder_policy, "sqs:PurgeQueue")


def test_forwarder_has_no_kms_and_writes_only_its_log_group(forwarder_policy: dict[str, Any]) -> None:
    assert not any(a.startswith("kms:") for s in statements(forwarder_policy) for a in as_list(s["Action"]))
    log_group = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/lambda/{names.forwarder_function(ENV)}"
    for action in policies.FORWARDER_LOG_ACTIONS:  # both act on log streams only (tests/rules)
        assert grants(forwarder_policy, action) == [f"{log_group}:*"]
    assert not grants(forwarder_policy, "logs:CreateLogGroup")


def test_forwarder_role_is_assumable_by_lambda_only(example_run: ProgramRun) -> None:
    role = example_run.one("aws:iam/role:Role", name=names.forwarder_role(ENV))
    (trust,) = statements(role.json_input("assumeRolePolicy"))
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    example_run.one("aws:iam/rolePolicy:RolePolicy", role=names.forwarder_role(ENV))  # attached to this role


def test_bucket_is_private_encrypted_and_tls_only(example_run: ProgramRun, bucket_arn: str) -> None:
    block = example_run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block[flag] is True, flag
    (rule,) = example_run.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    ownership = example_run.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"

    policy = example_run.one("aws:s3/bucketPolicy:BucketPolicy").json_input("policy")
    deny = statement(policy, "DenyInsecureTransport")
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert set(deny["Resource"]) == {bucket_arn, f"{bucket_arn}/*"}
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_ses_may_write_only_inbound_with_both_conditions(example_run: ProgramRun, bucket_arn: str) -> None:
    policy = example_run.one("aws:s3/bucketPolicy:BucketPolicy").json_input("policy")
    allows_ = [s for s in statements(policy) if s["Effect"] == "Allow"]
    assert len(allows_) == 1
    (ses,) = allows_
    assert ses["Principal"] == {"Service": "ses.amazonaws.com"}
    assert ses["Action"] == "s3:PutObject"
    assert ses["Resource"] == f"{bucket_arn}/{names.INBOUND_PREFIX}*"
    assert ses["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT_ID}
    assert ses["Condition"]["ArnLike"] == {"aws:SourceArn": expected_rule_arn()}


def test_receipt_rule_waits_for_the_policies_ses_checks(example_run: ProgramRun) -> None:
    rule = example_run.one("aws:ses/receiptRule:ReceiptRule")
    assert rule.depends_on(example_run.one("aws:s3/bucketPolicy:BucketPolicy"))
    topic_policy = example_run.one(
        "aws:sns/topicPolicy:TopicPolicy",
        arn=f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{names.inbound_notification_topic(ENV)}",
    )
    assert rule.depends_on(topic_policy)
    assert rule.depends_on(example_run.one("aws:kms/key:Key"))


def test_receipt_rule_settings(example_run: ProgramRun) -> None:
    rule = example_run.one("aws:ses/receiptRule:ReceiptRule").inputs
    assert rule["enabled"] is True
    assert rule["scanEnabled"] is True
    assert rule["tlsPolicy"] in {"Optional", "Require"}
    assert rule["recipients"] == ["example.com"]  # recipients empty → the domains themselves
    (action,) = rule["s3Actions"]
    assert action["bucketName"] == names.email_bucket(ENV, ACCOUNT_ID, REGION)
    assert action["objectKeyPrefix"] == names.INBOUND_PREFIX
    assert action["topicArn"] == f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{names.inbound_notification_topic(ENV)}"
    assert action["position"] == 1


def test_topics_use_the_customer_managed_key(example_run: ProgramRun) -> None:
    key = example_run.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    for topic in example_run.of_type("aws:sns/topic:Topic"):
        assert topic.inputs["kmsMasterKeyId"] == key.state["arn"], topic.name
        assert "alias/aws/sns" not in topic.inputs["kmsMasterKeyId"]


def test_key_policy_lets_ses_and_cloudwatch_encrypt_for_this_account(example_run: ProgramRun) -> None:
    policy = example_run.one("aws:kms/key:Key").json_input("policy")
    root = statement(policy, "AccountAdministersKey")
    assert root["Principal"] == {"AWS": f"arn:{PARTITION}:iam::{ACCOUNT_ID}:root"}
    services: dict[str, dict[str, Any]] = {}
    for stmt in statements(policy):
        principal = stmt["Principal"]
        if isinstance(principal, dict) and "Service" in principal:
            for service in as_list(principal["Service"]):
                services[service] = stmt
    assert set(services) == {"ses.amazonaws.com", "cloudwatch.amazonaws.com", "sns.amazonaws.com"}
    for service, stmt in services.items():
        assert set(stmt["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}, service
        assert stmt["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}, service


def test_notification_topic_accepts_only_our_receipt_rule(example_run: ProgramRun) -> None:
    topic_arn = f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{names.inbound_notification_topic(ENV)}"
    policy = example_run.one("aws:sns/topicPolicy:TopicPolicy", arn=topic_arn).json_input("policy")
    (stmt,) = statements(policy)
    assert stmt["Principal"] == {"Service": "ses.amazonaws.com"}
    assert stmt["Action"] == "sns:Publish"
    assert stmt["Resource"] == topic_arn
    assert stmt["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT_ID},
        "ArnLike": {"aws:SourceArn": expected_rule_arn()},
    }


def test_alerts_topic_accepts_this_accounts_alarms(example_run: ProgramRun) -> None:
    topic_arn = f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{names.alerts_topic(ENV)}"
    policy = example_run.one("aws:sns/topicPolicy:TopicPolicy", arn=topic_arn).json_input("policy")
    (stmt,) = statements(policy)
    assert stmt["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert stmt["Action"] == "sns:Publish"
    assert stmt["Resource"] == topic_arn
    assert stmt["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT_ID}


def test_only_our_topic_may_send_to_the_inbound_queues(example_run: ProgramRun) -> None:
    topic_arn = f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT_ID}:{names.inbound_notification_topic(ENV)}"
    by_url = {p.inputs["queueUrl"]: p for p in example_run.of_type("aws:sqs/queuePolicy:QueuePolicy")}
    for queue_name in (names.inbound_queue(ENV), names.inbound_dlq(ENV)):
        url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{queue_name}"
        (stmt,) = statements(by_url[url].json_input("policy"))
        assert stmt["Effect"] == "Allow"
        assert stmt["Principal"] == {"Service": "sns.amazonaws.com"}
        assert stmt["Action"] == "sqs:SendMessage"
        assert stmt["Resource"] == queue_arn(queue_name)
        assert stmt["Condition"] == {"ArnEquals": {"aws:SourceArn": topic_arn}}
    assert len(by_url) == 2  # the retry queues accept nobody but IAM principals of the account


# --- the token monitor (DESIGN.md "Nothing waits forever": it now starts the retry processor) -----


@pytest.fixture(scope="module")
def monitor_policy(example_run: ProgramRun) -> dict[str, Any]:
    policy: dict[str, Any] = example_run.one(
        "aws:iam/rolePolicy:RolePolicy", role=names.token_monitor_role(ENV)
    ).json_input("policy")
    return policy


def test_monitor_reads_the_oauth_parameters_to_mint_and_writes_no_parameter(monitor_policy: dict[str, Any]) -> None:
    """It reads the secrets the forwarder reads (minting is the proof the token works), nothing more:
    both OAuth clients (a token renewed from a phone mints with the web one) and the token."""
    oauth = {
        parameter_arn(names.client_credentials_parameter(ENV)),
        parameter_arn(names.web_client_credentials_parameter(ENV)),
        parameter_arn(names.refresh_token_parameter(ENV)),
    }
    assert set(grants(monitor_policy, "ssm:GetParameters")) == oauth  # AwsClients.read_parameters' one call
    assert grants(monitor_policy, "ssm:GetParameter") == [parameter_arn(names.refresh_token_expiry_parameter(ENV))]
    for name in (
        f"{names.parameter_prefix(ENV)}/something-else",
        names.refresh_token_parameter("prod"),
        names.client_credentials_parameter("prod"),
        "/other-app/secret",
    ):
        for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"):
            assert not allows(monitor_policy, action, parameter_arn(name)), (action, name)
    for action in ("ssm:PutParameter", "ssm:DeleteParameter", "ssm:GetParametersByPath", "kms:Decrypt"):
        assert not grants(monitor_policy, action), action


def test_monitor_only_looks_at_the_retry_queue_and_starts_the_retry_processor(monitor_policy: dict[str, Any]) -> None:
    machine = f"arn:{PARTITION}:states:{REGION}:{ACCOUNT_ID}:stateMachine:{names.retry_state_machine(ENV)}"
    assert grants(monitor_policy, "sqs:GetQueueAttributes") == [queue_arn(names.retry_queue(ENV))]
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "sqs:PurgeQueue"):
        assert not grants(monitor_policy, action), action  # it never touches a message
    assert statement(monitor_policy, "StartRetryProcessorWhenIdle") == {
        "Sid": "StartRetryProcessorWhenIdle",
        "Effect": "Allow",
        "Action": ["states:ListExecutions", "states:StartExecution"],
        "Resource": machine,
    }
    assert not allows(monitor_policy, "states:StartExecution", machine.replace(f"-{ENV}", "-prod"))
    for action in ("states:StopExecution", "states:DescribeExecution", "states:UpdateStateMachine"):
        assert not grants(monitor_policy, action), action
