"""Stack configuration (``ses-mail:*`` keys), parsed once into a typed, validated value.

Parsing is a pure function of the raw strings (``StackConfig.parse``), so every bad value has a
unit test and an error message that says which key is wrong and how to fix it; ``load`` only
reads the strings from Pulumi. Errors are ``pulumi.RunError`` so ``pulumi up`` prints the
sentence without a Python traceback.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from sesmail import names
from sesmail.labels import NESTING, is_label_id
from sesmail.verdicts import AuthFailures

NAMESPACE = names.PROJECT  # config keys are "ses-mail:<key>"

KEY_DOMAINS = "domains"
KEY_RECIPIENTS = "recipients"
KEY_ALERT_EMAILS = "alertEmails"
KEY_EXTRA_LABELS = "extraLabels"
KEY_RETAIN_DAYS = "retainDays"
KEY_TOKEN_LIFETIME_DAYS = "tokenLifetimeDays"
KEY_RULE_SET_NAME = "ruleSetName"
KEY_AUTH_FAILURES = "authFailures"
KEYS = (
    KEY_DOMAINS,
    KEY_RECIPIENTS,
    KEY_ALERT_EMAILS,
    KEY_EXTRA_LABELS,
    KEY_RETAIN_DAYS,
    KEY_TOKEN_LIFETIME_DAYS,
    KEY_RULE_SET_NAME,
    KEY_AUTH_FAILURES,
)

# Lowercase labels; the top-level label is letters, or an IDN in punycode (xn--...).
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
_LOCAL_PART_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")
# SES: letters, digits, '.', '_' and '-'; starts and ends with a letter or digit; < 64 chars.
_RULE_SET_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
# extraLabels are Gmail label names as Gmail shows them ("Receipts", "Family/School"), which the
# forwarder resolves (and creates) through Gmail's labels API, or ids ("Label_12", "IMPORTANT"),
# which it passes through. Both travel comma-joined in GMAIL_LABELS.
_MAX_RETAIN_DAYS = 3650
_MAX_TOKEN_LIFETIME_DAYS = 365


class ConfigError(pulumi.RunError, ValueError):
    """A ``ses-mail:*`` config value is missing or invalid; the message says how to fix it."""


@dataclass(frozen=True)
class StackConfig:
    """Everything the resource graph depends on besides the account and region."""

    env: str
    domains: tuple[str, ...]
    recipients: tuple[str, ...]
    alert_emails: tuple[str, ...]
    extra_labels: tuple[str, ...]
    retain_days: int
    token_lifetime_days: int
    rule_set_name: str | None
    auth_failures: AuthFailures = AuthFailures.SPAM

    @property
    def receipt_recipients(self) -> tuple[str, ...]:
        """What the receipt rule matches: the configured recipients, else the whole domains."""
        return self.recipients or self.domains

    @property
    def uses_existing_rule_set(self) -> bool:
        return self.rule_set_name is not None

    @classmethod
    def parse(cls, env: str, raw: Mapping[str, str | None]) -> StackConfig:
        """Validate raw config strings (as Pulumi hands them over: lists arrive as JSON)."""
        try:
            names.check_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        unknown_hint = ", ".join(KEYS)

        domains = tuple(d.lower().rstrip(".") for d in _string_list(raw, KEY_DOMAINS))
        if not domains:
            raise ConfigError(
                f"config '{NAMESPACE}:{KEY_DOMAINS}' is required: the domains whose mail goes to "
                f"Gmail, e.g. `pulumi config set --path '{NAMESPACE}:{KEY_DOMAINS}[0]' "
                f"example.com` (keys: {unknown_hint})"
            )
        for domain in domains:
            if not _DOMAIN_RE.match(domain):
                raise ConfigError(
                    f"config '{NAMESPACE}:{KEY_DOMAINS}': {domain!r} is not a domain name (expected e.g. example.com)"
                )
        _no_duplicates(KEY_DOMAINS, domains)

        recipients = tuple(r.lower() for r in _string_list(raw, KEY_RECIPIENTS))
        for recipient in recipients:
            _check_recipient(recipient, domains)
        _no_duplicates(KEY_RECIPIENTS, recipients)

        alert_emails = _string_list(raw, KEY_ALERT_EMAILS)
        for address in alert_emails:
            if not _is_address(address):
                raise ConfigError(
                    f"config '{NAMESPACE}:{KEY_ALERT_EMAILS}': {address!r} is not an e-mail "
                    "address (alerts are sent there by SNS)"
                )
        _no_duplicates(KEY_ALERT_EMAILS, alert_emails)

        extra_labels = _extra_labels(raw)

        retain_days = _int(raw, KEY_RETAIN_DAYS, names.DEFAULT_RETAIN_DAYS, 1, _MAX_RETAIN_DAYS)
        token_lifetime_days = _int(
            raw,
            KEY_TOKEN_LIFETIME_DAYS,
            names.TESTING_TOKEN_LIFETIME_DAYS,
            1,
            _MAX_TOKEN_LIFETIME_DAYS,
        )

        rule_set_name = (raw.get(KEY_RULE_SET_NAME) or "").strip() or None
        if rule_set_name is not None and not _RULE_SET_RE.match(rule_set_name):
            raise ConfigError(
                f"config '{NAMESPACE}:{KEY_RULE_SET_NAME}': {rule_set_name!r} is not an SES rule "
                "set name (letters, digits, '.', '_', '-'; at most 64 characters). Leave it unset "
                "to create and activate our own rule set."
            )

        try:
            auth_failures = AuthFailures.parse(raw.get(KEY_AUTH_FAILURES))
        except ValueError:
            raise ConfigError(
                f"config '{NAMESPACE}:{KEY_AUTH_FAILURES}' is {raw.get(KEY_AUTH_FAILURES)!r}: use spam (DMARC "
                "quarantine/reject failures and viruses to Spam, the default), drop (DMARC reject failures and "
                "viruses not imported) or inbox (no sender-authentication filtering)"
            ) from None

        return cls(
            env=env,
            domains=domains,
            recipients=recipients,
            alert_emails=alert_emails,
            extra_labels=extra_labels,
            retain_days=retain_days,
            token_lifetime_days=token_lifetime_days,
            rule_set_name=rule_set_name,
            auth_failures=auth_failures,
        )


def load(env: str | None = None) -> StackConfig:
    """Read the ``ses-mail:*`` keys of the current stack (env = the stack name)."""
    config = pulumi.Config(NAMESPACE)
    raw = {key: config.get(key) for key in KEYS}
    return StackConfig.parse(env if env is not None else pulumi.get_stack(), raw)


def _string_list(raw: Mapping[str, str | None], key: str) -> tuple[str, ...]:
    """A list key: a YAML list in the stack file (JSON here), or a comma-separated string."""
    value = raw.get(key)
    if value is None or not value.strip():
        return ()
    text = value.strip()
    items: object
    if text.startswith(("[", "{")):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"config '{NAMESPACE}:{key}' is not a valid list ({exc.msg}); write it as a YAML list in the stack file"
            ) from exc
    else:
        items = text.split(",")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"config '{NAMESPACE}:{key}' must be a list of strings, got {text!r}")
    return tuple(i.strip() for i in items if i.strip())


def _int(raw: Mapping[str, str | None], key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key)
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError as exc:
        raise ConfigError(f"config '{NAMESPACE}:{key}' must be a whole number of days, got {value!r}") from exc
    if not low <= number <= high:
        raise ConfigError(f"config '{NAMESPACE}:{key}' must be between {low} and {high} days, got {number}")
    return number


def _is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at) and bool(_LOCAL_PART_RE.match(local)) and bool(_DOMAIN_RE.match(domain.lower()))


def _check_recipient(recipient: str, domains: tuple[str, ...]) -> None:
    """SES matches an address, a domain or a subdomain; it must belong to one of our domains."""
    domain = recipient.rpartition("@")[2] if "@" in recipient else recipient
    if "@" in recipient and not _is_address(recipient):
        raise ConfigError(f"config '{NAMESPACE}:{KEY_RECIPIENTS}': {recipient!r} is not an e-mail address")
    if not _DOMAIN_RE.match(domain):
        raise ConfigError(f"config '{NAMESPACE}:{KEY_RECIPIENTS}': {recipient!r} is neither an address nor a domain")
    if not any(domain == d or domain.endswith("." + d) for d in domains):
        raise ConfigError(
            f"config '{NAMESPACE}:{KEY_RECIPIENTS}': {recipient!r} is not under any of the "
            f"configured domains ({', '.join(domains)}); SES would never receive its mail"
        )


def _extra_labels(raw: Mapping[str, str | None]) -> tuple[str, ...]:
    """``extraLabels``: label names as Gmail shows them, or ids; each mistake refused in one sentence.

    A name Gmail would refuse to create would park every message at its first delivery (mailbox
    refused), so Gmail's rules for names are checked here, before anything is deployed.
    """
    where = f"config '{NAMESPACE}:{KEY_EXTRA_LABELS}'"
    for item in _verbatim_items(raw, KEY_EXTRA_LABELS):
        if not item.strip():
            raise ConfigError(f"{where} lists an empty label name; remove it")
        if item != item.strip():
            spaced = "starts or ends with a space, which a Gmail label name cannot"
            raise ConfigError(f"{where}: {item!r} {_CONTROL_CHARACTER if _has_control_character(item) else spaced}")
    labels = _string_list(raw, KEY_EXTRA_LABELS)
    seen: dict[str, str] = {}
    for label in labels:
        problem = None if is_label_id(label) else _label_name_problem(label)
        if problem:
            raise ConfigError(f"{where}: {label!r} {problem}")
        earlier = seen.setdefault(label.casefold(), label)
        if earlier != label:
            raise ConfigError(f"{where} lists {label!r} and {earlier!r}, one Gmail label (names ignore case)")
    _no_duplicates(KEY_EXTRA_LABELS, labels)
    return labels


def _verbatim_items(raw: Mapping[str, str | None], key: str) -> list[str]:
    """The items of a YAML (JSON) list as written; ``_string_list`` has checked it is one."""
    text = (raw.get(key) or "").strip()
    if not text.startswith("["):
        return []  # "a, b": the spaces after the commas are the separator's
    items = json.loads(text)
    return [item for item in items if isinstance(item, str)] if isinstance(items, list) else []


def _label_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a Gmail label name (the rest of a sentence), or None."""
    return _label_shape_problem(name) or _reserved_label_problem(name.split(NESTING))


def _label_shape_problem(name: str) -> str | None:
    """Characters, length and nesting: what Gmail (or GMAIL_LABELS) could not carry."""
    levels = name.split(NESTING)
    if "," in name:
        return "contains a comma, which the forwarder's comma-separated GMAIL_LABELS cannot carry; rename the label"
    if _has_control_character(name):
        return _CONTROL_CHARACTER
    if len(name) > names.GMAIL_MAX_LABEL_NAME_CHARS:
        return f"is {len(name)} characters long; a Gmail label name has at most {names.GMAIL_MAX_LABEL_NAME_CHARS}"
    if any(not level for level in levels):
        return "has an empty level: write a nested label as Parent/Child, without a leading, trailing or double '/'"
    if any(level != level.strip() for level in levels):
        return "has a level that starts or ends with a space: write a nested label as Parent/Child"
    return None


_CONTROL_CHARACTER = "contains a control character, which Gmail refuses in a label name"


def _has_control_character(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def _reserved_label_problem(levels: list[str]) -> str | None:
    """A top level Gmail keeps for itself: a system label's name (any case), or another reserved one."""
    top = levels[0]
    system = next((i for i in sorted(names.GMAIL_SYSTEM_LABEL_IDS) if i.casefold() == top.casefold()), None)
    if system is None and top.upper() not in names.GMAIL_RESERVED_LABEL_NAMES:
        return None
    if len(levels) > 1:
        parent = f"Gmail's system label {system}" if system else f"{top!r}, a name Gmail keeps for itself"
        return f"nests under {parent}; a nested label needs a parent label of your own"
    if system is not None:
        return f"is Gmail's system label {system} (names ignore case): write {system} to apply it, or pick another name"
    return "is a name Gmail keeps for itself and refuses to create; choose another name"


def _no_duplicates(key: str, values: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"config '{NAMESPACE}:{key}' lists {value!r} twice")
        seen.add(value)
