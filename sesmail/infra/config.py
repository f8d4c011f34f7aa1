"""Stack configuration (``ses-mail:*`` keys), parsed once into a typed, validated value.

Parsing is a pure function of the raw strings (``StackConfig.parse``), so every bad value has a
unit test and an error message that says which key is wrong and how to fix it; ``load`` only
reads the strings from Pulumi. Errors are ``pulumi.RunError`` so ``pulumi up`` prints the
sentence without a Python traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

from sesmail import names

NAMESPACE = names.PROJECT  # config keys are "ses-mail:<key>"

KEY_DOMAINS = "domains"
KEY_RECIPIENTS = "recipients"
KEY_ALERT_EMAILS = "alertEmails"
KEY_EXTRA_LABELS = "extraLabels"
KEY_RETAIN_DAYS = "retainDays"
KEY_TOKEN_LIFETIME_DAYS = "tokenLifetimeDays"
KEY_RULE_SET_NAME = "ruleSetName"
KEYS = (
    KEY_DOMAINS,
    KEY_RECIPIENTS,
    KEY_ALERT_EMAILS,
    KEY_EXTRA_LABELS,
    KEY_RETAIN_DAYS,
    KEY_TOKEN_LIFETIME_DAYS,
    KEY_RULE_SET_NAME,
)

# Lowercase labels; the top-level label is letters, or an IDN in punycode (xn--...).
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
_LOCAL_PART_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")
# SES: letters, digits, '.', '_' and '-'; starts and ends with a letter or digit; < 64 chars.
_RULE_SET_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
# Gmail label ids are opaque ("Label_123", "IMPORTANT"); they travel comma-joined in GMAIL_LABELS.
#: Gmail label *ids*: a user label's is ``Label_<n>``, a system label's is upper case (INBOX,
#: STARRED, IMPORTANT, CATEGORY_UPDATES, ...). A label *name* ("Work") would make Gmail refuse
#: every import with 400, which sends all mail to the DLQ, so it is refused here instead.
_LABEL_RE = re.compile(r"^(Label_[0-9]+|[A-Z][A-Z0-9_]*)$")
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

        extra_labels = _string_list(raw, KEY_EXTRA_LABELS)
        for label in extra_labels:
            if not _LABEL_RE.match(label):
                raise ConfigError(
                    f"config '{NAMESPACE}:{KEY_EXTRA_LABELS}': {label!r} is not a Gmail label id "
                    "(e.g. Label_12 or IMPORTANT; a label's id, not its name, is listed by the Gmail "
                    "API's users.labels.list)"
                )
        _no_duplicates(KEY_EXTRA_LABELS, extra_labels)

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

        return cls(
            env=env,
            domains=domains,
            recipients=recipients,
            alert_emails=alert_emails,
            extra_labels=extra_labels,
            retain_days=retain_days,
            token_lifetime_days=token_lifetime_days,
            rule_set_name=rule_set_name,
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


def _no_duplicates(key: str, values: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"config '{NAMESPACE}:{key}' lists {value!r} twice")
        seen.add(value)
