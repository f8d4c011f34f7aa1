"""``ruleSetName`` switches between our own active rule set and an existing one."""

from __future__ import annotations

from sesmail import names
from tests.infra.harness import ACCOUNT_ID, PARTITION, REGION, STACK, ProgramRun, run_program, stack_config

RULE_SET = "aws:ses/receiptRuleSet:ReceiptRuleSet"
ACTIVE = "aws:ses/activeReceiptRuleSet:ActiveReceiptRuleSet"
RULE = "aws:ses/receiptRule:ReceiptRule"


def ses_source_arn(run: ProgramRun) -> str:
    policy = run.one("aws:s3/bucketPolicy:BucketPolicy").json_input("policy")
    (ses,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    source_arn: str = ses["Condition"]["ArnLike"]["aws:SourceArn"]
    return source_arn


def test_without_rule_set_name_we_create_and_activate_our_own(example_run: ProgramRun) -> None:
    own = names.receipt_rule_set(STACK)
    rule_set = example_run.one(RULE_SET, ruleSetName=own)
    active = example_run.one(ACTIVE, ruleSetName=own)
    rule = example_run.one(RULE)
    assert rule.inputs["ruleSetName"] == own
    assert rule.depends_on(rule_set)
    assert active.depends_on(rule)  # activated only once our rule is in it
    assert ses_source_arn(example_run).endswith(f":receipt-rule-set/{own}:receipt-rule/{names.receipt_rule(STACK)}")


def test_with_rule_set_name_we_join_the_existing_set_and_activate_nothing() -> None:
    run = run_program(stack_config(ruleSetName="company-inbound"))
    assert run.of_type(RULE_SET) == []
    assert run.of_type(ACTIVE) == []
    rule = run.one(RULE)
    assert rule.inputs["ruleSetName"] == "company-inbound"
    assert ses_source_arn(run) == (
        f"arn:{PARTITION}:ses:{REGION}:{ACCOUNT_ID}:receipt-rule-set/company-inbound"
        f":receipt-rule/{names.receipt_rule(STACK)}"
    )


def test_configured_recipients_replace_the_domains() -> None:
    run = run_program(
        stack_config(domains=["example.com", "example.org"], recipients=["me@example.com", "example.org"])
    )
    # and the canary's address, which the listed ones do not cover
    assert run.one(RULE).inputs["recipients"] == ["me@example.com", "example.org", names.canary_address("example.com")]
