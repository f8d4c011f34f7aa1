"""Amazon States Language rules that moto's interpreter does not enforce, checked statically.

Two layers:

- :func:`asl_validator`: the npm package ``asl-validator`` (pinned in ``tests/rules/package.json``,
  installed by ``scripts/test.sh``), which checks the ASL JSON schema and path formats (e.g. that
  a Choice rule's ``Variable`` is a Reference Path);
- :func:`problems`: AWS's documented rules the validator leaves out, as they apply to the
  definitions this project builds: intrinsic functions (known names, arity, at most 10 nested,
  only in payload-template fields, reserved characters escaped, ``States.Format`` placeholders;
  a Fail state's ``ErrorPath``/``CausePath`` only with the string functions AWS allows there),
  state names of at most 80 characters, Retry/Catch (``States.ALL`` alone and last; interval,
  backoff and delay bounds), and the parameters of every AWS SDK / optimised integration,
  checked against botocore's own model of that API (so a misspelt ``MaxNumberOfMesages`` fails
  here, not in the first real execution).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
from jsonpath_ng.ext import parse as parse_jsonpath

RULES_DIR = Path(__file__).resolve().parent
ASL_VALIDATOR = RULES_DIR / "node_modules" / ".bin" / "asl-validator"

#: Intrinsic functions and how many arguments each takes (AWS: "Intrinsic functions for JSONPath states").
INTRINSICS: dict[str, tuple[int, int]] = {
    "States.Format": (1, 10_000),
    "States.StringToJson": (1, 1),
    "States.JsonToString": (1, 1),
    "States.Array": (0, 10_000),
    "States.ArrayPartition": (2, 2),
    "States.ArrayContains": (2, 2),
    "States.ArrayRange": (3, 3),
    "States.ArrayGetItem": (2, 2),
    "States.ArrayLength": (1, 1),
    "States.ArrayUnique": (1, 1),
    "States.Base64Encode": (1, 1),
    "States.Base64Decode": (1, 1),
    "States.Hash": (2, 2),
    "States.JsonMerge": (3, 3),
    "States.MathRandom": (2, 3),
    "States.MathAdd": (2, 2),
    "States.StringSplit": (2, 2),
    "States.UUID": (0, 0),
}
#: "You can nest up to 10 intrinsic functions within a field."
MAX_NESTING = 10
#: Fields whose payload templates may hold ``"key.$"`` paths and intrinsic functions.
TEMPLATE_FIELDS = ("Parameters", "ResultSelector", "ItemSelector")
_NESTED_MACHINES = ("ItemProcessor", "Iterator", "Branches")
#: A Fail state's ``ErrorPath``/``CausePath``: a Reference Path or one of these (they return a string).
FAIL_PATH_FIELDS = ("ErrorPath", "CausePath")
FAIL_PATH_INTRINSICS = frozenset(
    {
        "States.Format",
        "States.JsonToString",
        "States.ArrayGetItem",
        "States.Base64Encode",
        "States.Base64Decode",
        "States.Hash",
        "States.UUID",
    }
)
#: "Names of states ... must be 80 Unicode characters or fewer" (the ASL specification).
MAX_STATE_NAME_LENGTH = 80
#: Retrier bounds (ASL spec and the Step Functions developer guide).
MAX_DELAY_SECONDS = 31_622_400
MAX_TIMEOUT_SECONDS = 31_622_400

#: Optimised integrations this project uses -> the botocore service and operation they call.
_OPTIMISED_INTEGRATIONS = {
    "lambda:invoke": ("lambda", "Invoke"),
    "states:startExecution": ("stepfunctions", "StartExecution"),
}


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Call | str, ...]  # a nested call, or the source text of a literal or path

    def depth(self) -> int:
        return 1 + max((a.depth() for a in self.args if isinstance(a, Call)), default=0)

    def calls(self) -> Iterator[Call]:
        yield self
        for arg in self.args:
            if isinstance(arg, Call):
                yield from arg.calls()


class IntrinsicSyntaxError(ValueError):
    pass


def parse_intrinsic(text: str) -> Call:
    """Parse ``States.Name(arg, ...)``; arguments are calls, paths, quoted strings, numbers or literals."""
    call, end = _call(text, 0)
    if text[end:].strip():
        raise IntrinsicSyntaxError(f"trailing text after the call: {text[end:]!r}")
    return call


def _call(text: str, pos: int) -> tuple[Call, int]:
    match = re.compile(r"\s*(States\.[A-Za-z0-9]+)\(").match(text, pos)
    if not match:
        raise IntrinsicSyntaxError(f"expected an intrinsic function at {text[pos:]!r}")
    pos = match.end()
    args: list[Call | str] = []
    while True:
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ")" and not args:
            return Call(match.group(1), ()), pos + 1
        arg, pos = _argument(text, pos)
        args.append(arg)
        pos = _skip_space(text, pos)
        if pos >= len(text):
            raise IntrinsicSyntaxError(f"unclosed call {match.group(1)}")
        if text[pos] == ")":
            return Call(match.group(1), tuple(args)), pos + 1
        if text[pos] != ",":
            raise IntrinsicSyntaxError(f"expected ',' or ')' at {text[pos:]!r}")
        pos += 1


def _argument(text: str, pos: int) -> tuple[Call | str, int]:
    if text.startswith("States.", pos):
        return _call(text, pos)
    if text[pos] == "'":
        end = pos + 1
        while end < len(text) and text[end] != "'":
            end += 2 if text[end] == "\\" else 1
        if end >= len(text):
            raise IntrinsicSyntaxError("unterminated string literal")
        return text[pos : end + 1], end + 1
    end, depth = pos, 0
    while end < len(text):
        char = text[end]
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char in ",)" and depth == 0:
            break
        end += 1
    return text[pos:end].strip(), end


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def call_problems(call: Call) -> list[str]:
    """Documented rules for one field's intrinsic expression."""
    found = []
    if call.depth() > MAX_NESTING:
        found.append(f"{call.depth()} nested intrinsic functions (at most {MAX_NESTING})")
    for each in call.calls():
        if each.name not in INTRINSICS:
            found.append(f"unknown intrinsic function {each.name}")
            continue
        low, high = INTRINSICS[each.name]
        if not low <= len(each.args) <= high:
            found.append(f"{each.name} takes {low}-{high} arguments, got {len(each.args)}")
        for arg in each.args:
            if isinstance(arg, str):
                found.extend(_literal_problems(each.name, arg))
        if each.name == "States.Format" and each.args and isinstance(each.args[0], str):
            placeholders = each.args[0].count("{}")
            if placeholders != len(each.args) - 1:
                found.append(f"States.Format has {placeholders} placeholders and {len(each.args) - 1} values")
    return found


def _literal_problems(function: str, arg: str) -> list[str]:
    if arg.startswith("$"):
        try:
            parse_jsonpath(arg[1:] if arg.startswith("$$") else arg)
        except Exception as exc:  # jsonpath_ng raises JsonPathParserError and plain Exceptions
            return [f"{function}: {arg!r} is not a JSONPath ({exc})"]
        return []
    if arg.startswith("'"):
        body = arg[1:-1]
        unescaped = re.search(r"(?<!\\)[{}]", body.replace("{}", ""))
        return [f"{function}: reserved character not escaped in {arg!r}"] if unescaped else []
    if arg in ("null", "true", "false") or re.fullmatch(r"-?\d+(\.\d+)?", arg):
        return []
    return [f"{function}: {arg!r} is neither a path, a quoted string nor a number"]


def states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, nested Map and Parallel branches included."""
    for name, state in definition["States"].items():
        yield name, state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from states(nested)


def problems(definition: dict[str, Any], *, partition: str) -> list[str]:
    """Every documented rule this module knows, for every state of the definition."""
    found = []
    if definition.get("TimeoutSeconds", 1) > MAX_TIMEOUT_SECONDS:
        found.append("TimeoutSeconds exceeds a year")
    for name, state in states(definition):
        if len(name) > MAX_STATE_NAME_LENGTH:
            found.append(f"{name}: a state name has at most {MAX_STATE_NAME_LENGTH} characters, this one {len(name)}")
        found.extend(f"{name}: {p}" for p in _template_problems(state))
        found.extend(f"{name}: {p}" for p in _fail_path_problems(state))
        found.extend(f"{name}: {p}" for p in _retrier_problems(state))
        if state.get("Type") == "Task":
            found.extend(f"{name}: {p}" for p in _integration_problems(state, partition))
    return found


def _template_problems(state: dict[str, Any]) -> list[str]:
    found = []
    for field_name, value in state.items():
        if field_name in _NESTED_MACHINES:
            continue  # their states are checked one by one
        in_template = field_name in TEMPLATE_FIELDS
        for key, text in _dollar_keys(value):
            if not in_template:
                found.append(f"{field_name}.{key}: paths and intrinsic functions only work in {TEMPLATE_FIELDS}")
            elif not isinstance(text, str):
                found.append(f"{field_name}.{key}: a '.$' field needs a string")
            elif text.startswith("States."):
                try:
                    found.extend(f"{field_name}.{key}: {p}" for p in call_problems(parse_intrinsic(text)))
                except IntrinsicSyntaxError as exc:
                    found.append(f"{field_name}.{key}: {exc}")
            elif not text.startswith("$"):
                found.append(f"{field_name}.{key}: {text!r} is neither a path nor an intrinsic function")
    return found


def _fail_path_problems(state: dict[str, Any]) -> list[str]:
    found = []
    for field_name in FAIL_PATH_FIELDS:
        if field_name not in state:
            continue
        text = state[field_name]
        if state.get("Type") != "Fail":
            found.append(f"{field_name}: only a Fail state has one")
        elif field_name.removesuffix("Path") in state:
            found.append(f"{field_name}: a Fail state has {field_name.removesuffix('Path')} or {field_name}, not both")
        elif not isinstance(text, str):
            found.append(f"{field_name}: needs a string")
        elif text.startswith("States."):
            try:
                call = parse_intrinsic(text)
            except IntrinsicSyntaxError as exc:
                found.append(f"{field_name}: {exc}")
                continue
            if call.name not in FAIL_PATH_INTRINSICS:
                found.append(f"{field_name}: {call.name} is not allowed there (only {sorted(FAIL_PATH_INTRINSICS)})")
            found.extend(f"{field_name}: {p}" for p in call_problems(call))
        elif not text.startswith("$"):
            found.append(f"{field_name}: {text!r} is neither a path nor an intrinsic function")
    return found


def _dollar_keys(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.endswith(".$"):
                yield key, inner
            else:
                yield from _dollar_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _dollar_keys(inner)


def _retrier_problems(state: dict[str, Any]) -> list[str]:
    found = []
    for kind in ("Retry", "Catch"):
        rules = state.get(kind, [])
        for index, rule in enumerate(rules):
            errors = rule["ErrorEquals"]
            if "States.ALL" in errors and (len(errors) > 1 or index != len(rules) - 1):
                found.append(f"{kind}[{index}]: States.ALL must be alone and in the last rule")
            if kind == "Retry":
                found.extend(f"Retry[{index}]: {p}" for p in _retry_bounds(rule))
    return found


def _retry_bounds(rule: dict[str, Any]) -> list[str]:
    found = []
    if not (isinstance(rule.get("IntervalSeconds", 1), int) and rule.get("IntervalSeconds", 1) >= 1):
        found.append("IntervalSeconds must be a positive integer")
    if not (isinstance(rule.get("MaxAttempts", 3), int) and rule.get("MaxAttempts", 3) >= 0):
        found.append("MaxAttempts must be a non-negative integer")
    if rule.get("BackoffRate", 2.0) < 1.0:
        found.append("BackoffRate must be at least 1.0")
    if not 0 < rule.get("MaxDelaySeconds", 1) < MAX_DELAY_SECONDS:
        found.append(f"MaxDelaySeconds must be between 1 and {MAX_DELAY_SECONDS - 1}")
    return found


def _integration_problems(state: dict[str, Any], partition: str) -> list[str]:
    resource = state["Resource"]
    match = re.fullmatch(r"arn:([a-z-]+):states:::(.+)", resource)
    if not match:
        return []  # an activity or a Lambda ARN: nothing to check against botocore
    found = []
    if match.group(1) != partition:
        found.append(f"{resource}: partition {match.group(1)!r}, deploying to {partition!r}")
    integration = match.group(2)
    if integration.startswith("aws-sdk:"):
        _, service, action = integration.split(":", 2)
        if not re.fullmatch(r"[a-z][A-Za-z0-9]*", action):
            return [*found, f"{resource}: SDK integration actions are camelCase"]
        operation = action[0].upper() + action[1:]
    elif integration in _OPTIMISED_INTEGRATIONS:
        service, operation = _OPTIMISED_INTEGRATIONS[integration]
    else:
        return [*found, f"{resource}: unknown integration"]
    members = _input_members(service, operation)
    if members is None:
        return [*found, f"{resource}: botocore knows no {service}.{operation}"]
    parameters = state.get("Parameters", {})
    for key in parameters:
        if key.removesuffix(".$") not in members:
            found.append(f"{resource}: {key.removesuffix('.$')!r} is not a parameter of {service}.{operation}")
    return found


def _input_members(service: str, operation: str) -> set[str] | None:
    session = botocore.session.get_session()
    try:
        model = session.get_service_model(service)
        shape = model.operation_model(operation).input_shape
    except Exception:
        return None
    # Step Functions spells every integration parameter in PascalCase, also for APIs whose own
    # model is camelCase (Step Functions' ``stateMachineArn`` is ``StateMachineArn`` there).
    return {m[0].upper() + m[1:] for m in shape.members} if shape is not None else set()


def asl_validator(definition: dict[str, Any]) -> tuple[bool, str]:
    """Run the pinned ``asl-validator`` over the definition: (valid, what it printed)."""
    if not ASL_VALIDATOR.exists():
        raise FileNotFoundError(
            f"{ASL_VALIDATOR} is missing: run ./scripts/test.sh (it installs tests/rules/package-lock.json "
            "with `npm ci`), or `npm ci --prefix tests/rules`"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(definition, file)
        file.flush()
        result = subprocess.run(
            [str(ASL_VALIDATOR), "--json-path", file.name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return result.returncode == 0, (result.stdout + result.stderr).strip()
