"""Reading IAM policy documents in tests: which resources an action is granted on.

Action patterns follow IAM's wildcards (``fnmatch`` on the action name); the ARN helpers name
the resources the example stack creates.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from tests.infra.harness import ACCOUNT_ID, PARTITION, REGION


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["Statement"])


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def grants(document: dict[str, Any], action: str) -> list[str]:
    """Resources an Allow statement grants ``action`` on (IAM wildcard rules for actions)."""
    resources: list[str] = []
    for statement in statements(document):
        if statement["Effect"] != "Allow":
            continue
        if any(fnmatchcase(action, pattern) for pattern in as_list(statement["Action"])):
            resources.extend(as_list(statement["Resource"]))
    return resources


def allows(document: dict[str, Any], action: str, resource: str) -> bool:
    return any(fnmatchcase(resource, pattern) for pattern in grants(document, action))


def statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    (found,) = [s for s in statements(document) if s.get("Sid") == sid]
    return found


def parameter_arn(name: str) -> str:
    return f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT_ID}:parameter{name}"


def queue_arn(name: str) -> str:
    return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{name}"
