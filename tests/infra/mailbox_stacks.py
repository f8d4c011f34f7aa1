"""Example stacks with several mailboxes (``ses-mail:mailboxes``), for the tests of what one
state machine and one role serve: every mailbox of the deployment.

The example stack (Pulumi.test.yaml) has the one mailbox ``default``; these add three, with and
without ``default`` among them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.infra.harness import ProgramRun, run_program, stack_config

THREE_MAILBOXES = ("default", "alice", "family-shared")
THREE_WITHOUT_DEFAULT = ("alice", "bob", "carol")


def mailboxes_config(mailboxes: Sequence[str]) -> list[dict[str, Any]]:
    """One address each, and the last one catches the rest of the domain."""
    config: list[dict[str, Any]] = [{"name": m, "recipients": [f"{m}@example.com"]} for m in mailboxes]
    config[-1]["recipients"].append("example.com")
    return config


def run_with_mailboxes(mailboxes: Sequence[str]) -> ProgramRun:
    """The whole program (``__main__.py``) for a stack configuring exactly these mailboxes."""
    return run_program(stack_config(mailboxes=mailboxes_config(mailboxes), recipients=None, extraLabels=None))
