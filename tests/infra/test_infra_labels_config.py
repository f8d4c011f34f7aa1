"""``ses-mail:extraLabels`` at ``pulumi up``: label names as Gmail shows them, or ids; each mistake one sentence.

A name Gmail would refuse to create parks every message at its first delivery, so Gmail's rules for
label names are checked before anything is deployed (sesmail/infra/config.py cites their sources).
"""

from __future__ import annotations

import json

import pytest

from sesmail import names
from sesmail.infra.config import ConfigError, StackConfig
from tests.infra.harness import run_program, stack_config

KEY = "'ses-mail:extraLabels'"


def _labels(*labels: str) -> tuple[str, ...]:
    return StackConfig.parse("test", {"domains": "example.com", "extraLabels": json.dumps(labels)}).extra_labels


def _refusal(*labels: str) -> str:
    with pytest.raises(ConfigError) as refused:
        _labels(*labels)
    return str(refused.value)


def test_names_as_gmail_shows_them_and_ids_are_accepted() -> None:
    accepted = (
        "Receipts",
        "Family/School",
        "Family/School/2026",
        "Paid Bills",
        "Überweisungen 💶",
        "Label_12",
        "IMPORTANT",
        "CATEGORY_UPDATES",
        "Inbox Zero",  # only the whole top level is reserved
        "Spammy/Newsletters",
        "x" * names.GMAIL_MAX_LABEL_NAME_CHARS,
    )
    assert _labels(*accepted) == accepted


def test_the_comma_separated_form_still_works() -> None:
    config = StackConfig.parse("test", {"domains": "example.com", "extraLabels": "Receipts, Family/School,IMPORTANT"})
    assert config.extra_labels == ("Receipts", "Family/School", "IMPORTANT")


@pytest.mark.parametrize(
    ("labels", "sentence"),
    [
        pytest.param(
            ("Inbox",),
            "'Inbox' is Gmail's system label INBOX (names ignore case): write INBOX to apply it, or pick another name",
            id="system-label-in-another-case",
        ),
        pytest.param(("spam",), "'spam' is Gmail's system label SPAM", id="spam"),
        pytest.param(("Sent",), "'Sent' is Gmail's system label SENT", id="sent"),
        pytest.param(("category_social",), "is Gmail's system label CATEGORY_SOCIAL", id="category"),
        pytest.param(
            ("Inbox/Receipts",),
            "'Inbox/Receipts' nests under Gmail's system label INBOX; a nested label needs a parent label of your own",
            id="nested-under-a-system-label",
        ),
        pytest.param(
            ("Muted",),
            "'Muted' is a name Gmail keeps for itself and refuses to create; choose another name",
            id="reserved",
        ),
        pytest.param(("CHAT",), "'CHAT' is a name Gmail keeps for itself", id="chat-is-no-importable-id"),
        pytest.param(
            ("Chats/Old",),
            "'Chats/Old' nests under 'Chats', a name Gmail keeps for itself; a nested label needs a parent label",
            id="reserved-parent",
        ),
        pytest.param(
            ("Receipts, 2026",),
            "'Receipts, 2026' contains a comma, which the forwarder's comma-separated GMAIL_LABELS cannot carry",
            id="comma",
        ),
        pytest.param(("Family//School",), "has an empty level: write a nested label as Parent/Child", id="double"),
        pytest.param(("/Family",), "'/Family' has an empty level", id="leading-slash"),
        pytest.param(("Family/",), "'Family/' has an empty level", id="trailing-slash"),
        pytest.param(
            ("Family / School",),
            "'Family / School' has a level that starts or ends with a space: write a nested label as Parent/Child",
            id="spaced-levels",
        ),
        pytest.param((" Receipts",), "' Receipts' starts or ends with a space", id="leading-space"),
        pytest.param(("Receipts ",), "'Receipts ' starts or ends with a space", id="trailing-space"),
        pytest.param(("",), "lists an empty label name; remove it", id="empty"),
        pytest.param(("Unread\r",), "contains a control character", id="control-character"),
        pytest.param(
            ("x" * (names.GMAIL_MAX_LABEL_NAME_CHARS + 1),),
            f"is {names.GMAIL_MAX_LABEL_NAME_CHARS + 1} characters long; a Gmail label name has at most 225",
            id="too-long",
        ),
        pytest.param(
            ("Receipts", "receipts"),
            "lists 'receipts' and 'Receipts', one Gmail label (names ignore case)",
            id="same-name-in-two-cases",
        ),
        pytest.param(("Label_3", "Label_3"), "lists 'Label_3' twice", id="same-id-twice"),
    ],
)
def test_each_mistake_is_refused_in_one_sentence(labels: tuple[str, ...], sentence: str) -> None:
    message = _refusal(*labels)
    assert message.startswith(f"config {KEY}"), message
    assert sentence in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence


def test_the_program_refuses_a_reserved_name_before_creating_anything() -> None:
    with pytest.raises(ConfigError, match=r"'Spam' is Gmail's system label SPAM"):
        run_program(stack_config(extraLabels=["Receipts", "Spam"]))


def test_names_reach_the_forwarder_as_gmail_labels() -> None:
    run = run_program(stack_config(extraLabels=["Receipts", "Family/School", "IMPORTANT"]))
    function = run.one("aws:lambda/function:Function", name=names.forwarder_function("test"))
    variables = function.inputs["environment"]["variables"]
    assert variables[names.ENV_VAR_GMAIL_LABELS] == "Receipts,Family/School,IMPORTANT"
