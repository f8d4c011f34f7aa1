"""The retry processor's definition, as the program deploys it, against AWS's own ASL rules.

moto's interpreter ran a definition that ``CreateStateMachine`` refuses (a filter expression in a
Choice rule's ``Variable``), so the drain tests alone prove nothing about deployability. These
tests take the definition from the rendered Pulumi graph, exactly as it would be sent to AWS:
the example stack's (one mailbox) and stacks with three mailboxes (with and without ``default``),
since one state machine serves every mailbox of a deployment.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from sesmail import names
from sesmail.runtime.retry_processor import MailboxQueues, build_definition
from tests.infra.harness import PARTITION, ProgramRun, run_program
from tests.infra.mailbox_stacks import THREE_MAILBOXES, THREE_WITHOUT_DEFAULT, run_with_mailboxes
from tests.rules import asl

_GRAPHS: dict[str, Callable[[], ProgramRun]] = {
    "example-stack": run_program,
    "three-mailboxes": lambda: run_with_mailboxes(THREE_MAILBOXES),
    "three-without-default": lambda: run_with_mailboxes(THREE_WITHOUT_DEFAULT),
}


@pytest.fixture(scope="module", params=list(_GRAPHS))
def deployed(request: pytest.FixtureRequest) -> dict[str, Any]:
    run = _GRAPHS[request.param]()
    machine = run.one("aws:sfn/stateMachine:StateMachine")
    definition: dict[str, Any] = json.loads(machine.inputs["definition"])
    return definition


def test_the_graphs_hold_one_and_three_mailboxes(deployed: dict[str, Any]) -> None:
    targets = [name for name, _ in asl.states(deployed) if name.startswith("Target-")]
    assert len(targets) in (1, 3)
    rules = deployed["States"]["SelectMailbox"]["Choices"]
    assert [r["StringEquals"] for r in rules if "StringEquals" in r] == [t.removeprefix("Target-") for t in targets]
    assert all(r.get("Variable", r.get("Not", {}).get("Variable")) == "$.mailbox" for r in rules)
    absent = rules[0]["Next"]
    assert absent == ("Target-default" if "Target-default" in targets else "UnknownMailbox")


def test_the_deployed_definition_passes_asl_validator(deployed: dict[str, Any]) -> None:
    valid, output = asl.asl_validator(deployed)
    assert valid, output


def test_asl_validator_refuses_a_filter_expression_in_a_choice_rule(deployed: dict[str, Any]) -> None:
    """The shape AWS refused (SCHEMA_VALIDATION_FAILED) is caught: the validator is the real one."""
    broken = copy.deepcopy(deployed)
    broken["States"]["AnyMessages"]["Choices"][0]["Variable"] = "$.batch[?(@.outcome == 'delivered')]"
    valid, output = asl.asl_validator(broken)
    assert not valid
    assert "asl_ref_path" in output


def test_the_deployed_definition_follows_the_documented_rules_the_validator_leaves_out(
    deployed: dict[str, Any],
) -> None:
    assert asl.problems(deployed, partition=PARTITION) == []


def test_every_integration_is_checked_against_botocore(deployed: dict[str, Any]) -> None:
    resources = {state["Resource"] for _, state in asl.states(deployed) if state["Type"] == "Task"}
    assert resources == {
        f"arn:{PARTITION}:states:::aws-sdk:sqs:receiveMessage",
        f"arn:{PARTITION}:states:::aws-sdk:sqs:sendMessage",
        f"arn:{PARTITION}:states:::aws-sdk:sqs:deleteMessage",
        f"arn:{PARTITION}:states:::aws-sdk:cloudwatch:putMetricData",
        f"arn:{PARTITION}:states:::lambda:invoke",
        f"arn:{PARTITION}:states:::states:startExecution",
    }


def test_asl_validator_refuses_a_wildcard_in_the_mailbox_choice(deployed: dict[str, Any]) -> None:
    broken = copy.deepcopy(deployed)
    broken["States"]["SelectMailbox"]["Choices"][-1]["Variable"] = "$.mailboxes[*]"
    valid, output = asl.asl_validator(broken)
    assert not valid
    assert "asl_ref_path" in output


def test_the_longest_names_keep_state_names_short_and_the_rules_green() -> None:
    definition = build_definition(
        env="e" * names.MAX_ENV_LENGTH,
        partition=PARTITION,
        mailboxes=[MailboxQueues("m" * names.MAX_MAILBOX_LENGTH, "q", "d"), MailboxQueues("0-0", "q0", "d0")],
        forwarder_function="f",
    )
    assert asl.problems(definition, partition=PARTITION) == []
    assert max(len(name) for name, _ in asl.states(definition)) <= asl.MAX_STATE_NAME_LENGTH


def _mutated(deployed: dict[str, Any], state: str, change: dict[str, Any]) -> dict[str, Any]:
    broken = copy.deepcopy(deployed)
    broken["States"][state].update(change)
    return broken


@pytest.mark.parametrize(
    ("state", "change", "expected"),
    [
        (
            "Tally",
            {"Parameters": {"n.$": "States.MathAdd($.a)"}},
            "States.MathAdd takes 2-2 arguments",
        ),
        ("Tally", {"Parameters": {"n.$": "States.Count($.a)"}}, "unknown intrinsic function States.Count"),
        (
            "Tally",
            {"Parameters": {"n.$": "States.Format('{} and {}', $.a)"}},
            "2 placeholders and 1 values",
        ),
        ("Tally", {"Parameters": {"n.$": "States.Format('{x}', $.a)"}}, "reserved character not escaped"),
        (
            "Tally",
            {"Parameters": {"n.$": "States.ArrayLength(" * 11 + "$.a" + ")" * 11}},
            "11 nested intrinsic functions",
        ),
        ("Init", {"ResultSelector": None, "Comment": None, "Result": {"n.$": "$.a"}}, "only work in"),
        (
            "Receive",
            {"Parameters": {"QueueUrl": "q", "MaxNumberOfMesages": 10}},
            "'MaxNumberOfMesages' is not a parameter of sqs.ReceiveMessage",
        ),
        ("Receive", {"Resource": "arn:aws-cn:states:::aws-sdk:sqs:receiveMessage"}, "partition 'aws-cn'"),
        (
            "Receive",
            {"Retry": [{"ErrorEquals": ["States.ALL", "X"], "MaxDelaySeconds": 0}]},
            "States.ALL must be alone",
        ),
        ("Receive", {"Retry": [{"ErrorEquals": ["X"], "BackoffRate": 0.5}]}, "BackoffRate must be at least 1.0"),
        ("TokenDead", {"CausePath": "States.MathAdd($.a, 1)"}, "States.MathAdd is not allowed there"),
        ("TokenDead", {"CausePath": "States.Format('{} and {}', $.a)"}, "2 placeholders and 1 values"),
        ("TokenDead", {"CausePath": "totals"}, "neither a path nor an intrinsic function"),
        ("TokenDead", {"Cause": "static"}, "has Cause or CausePath, not both"),
        ("Init", {"CausePath": "$.a"}, "only a Fail state has one"),
    ],
)
def test_the_rules_catch_what_aws_refuses(
    deployed: dict[str, Any], state: str, change: dict[str, Any], expected: str
) -> None:
    broken = _mutated(deployed, state, {k: v for k, v in change.items() if v is not None})
    found = asl.problems(broken, partition=PARTITION)
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize(
    "text",
    [
        "States.MathAdd($.totals.delivered, States.ArrayLength($.batch[*].delivered))",
        "States.Format('{}: {}', $.error.Error, $.error.Cause)",
        "States.UUID()",
        "States.Format('a \\\\{literal\\\\} brace {}', $.x)",
    ],
)
def test_the_intrinsic_parser_reads_valid_expressions(text: str) -> None:
    assert asl.call_problems(asl.parse_intrinsic(text)) == []
