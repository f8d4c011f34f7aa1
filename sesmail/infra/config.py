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
from sesmail.runtime.labels import NESTING, is_label_id
from sesmail.runtime.mailboxes import Mailbox, MailboxTable
from sesmail.runtime.verdicts import AuthFailures

NAMESPACE = names.PROJECT  # config keys are "ses-mail:<key>"

KEY_DOMAINS = "domains"
KEY_RECIPIENTS = "recipients"
KEY_ALERT_EMAILS = "alertEmails"
KEY_EXTRA_LABELS = "extraLabels"
KEY_RETAIN_DAYS = "retainDays"
KEY_TOKEN_LIFETIME_DAYS = "tokenLifetimeDays"
KEY_RULE_SET_NAME = "ruleSetName"
KEY_AUTH_FAILURES = "authFailures"
KEY_MAILBOXES = "mailboxes"
KEY_GMAIL_ADDRESS = "gmailAddress"
KEY_CANARY = "canary"
KEY_RENEWAL_CONCURRENCY = "renewalConcurrency"
KEYS = (
    KEY_DOMAINS,
    KEY_RECIPIENTS,
    KEY_ALERT_EMAILS,
    KEY_EXTRA_LABELS,
    KEY_RETAIN_DAYS,
    KEY_TOKEN_LIFETIME_DAYS,
    KEY_RULE_SET_NAME,
    KEY_AUTH_FAILURES,
    KEY_MAILBOXES,
    KEY_GMAIL_ADDRESS,
    KEY_CANARY,
    KEY_RENEWAL_CONCURRENCY,
)
#: The fields of one ``ses-mail:mailboxes`` entry.
MAILBOX_FIELDS = ("name", "recipients", "labels", "gmailAddress")
#: SES: "Recipients per receipt rule: 100" (Amazon SES service quotas, email receiving).
MAX_RULE_RECIPIENTS = 100
#: What the forwarder's other environment variables may take of Lambda's 4 KB besides MAILBOXES:
#: two queue URLs (~140 bytes each with an 80-character name), the bucket (63), env, labels.
_ENVIRONMENT_RESERVE_BYTES = 1024

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
#: More than a few people renewing at once is an attack, not a use.
_MAX_RENEWAL_CONCURRENCY = 10


_SINGLE = MailboxTable.single()


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
    #: ``ses-mail:mailboxes``, or the single ``default`` mailbox (every recipient, ``extraLabels``).
    mailboxes: MailboxTable = _SINGLE
    #: ``ses-mail:canary``: a daily message through the whole path, alarmed per mailbox when missing.
    canary: bool = True
    #: ``ses-mail:renewalConcurrency``: the renewal page's reserved concurrency; 0 reserves none
    #: (for accounts whose Lambda quota is too small to reserve any: Lambda keeps 100 unreserved).
    renewal_concurrency: int = names.RENEWAL_RESERVED_CONCURRENCY

    @property
    def canary_address(self) -> str | None:
        """``ses-mail-canary@{first domain}`` when the canary is on."""
        return names.canary_address(self.domains[0]) if self.canary else None

    @property
    def receipt_recipients(self) -> tuple[str, ...]:
        """What the receipt rule matches: every mailbox's recipients, else ``recipients``, else the domains;
        plus the canary's address when those do not cover it already."""
        if self.mailboxes.configured:
            listed = tuple(dict.fromkeys(r for m in self.mailboxes.mailboxes for r in m.recipients))
        else:
            listed = self.recipients or self.domains
        address = self.canary_address
        if address is None or address in listed or address.rpartition("@")[2] in listed:
            return listed
        return (*listed, address)

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
        if retain_days < names.MIN_RETAIN_DAYS:
            queued_days = names.RETRY_QUEUE_RETENTION_SECONDS // 86400
            raise ConfigError(
                f"config '{NAMESPACE}:{KEY_RETAIN_DAYS}' is {retain_days}: parked mail can wait {queued_days} days "
                f"in the retry queue and its DLQ, and {queued_days} more after a redrive, and its raw message must "
                f"still be in S3 when it is delivered: keep it at least {names.MIN_RETAIN_DAYS} days (default "
                f"{names.DEFAULT_RETAIN_DAYS})"
            )
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

        gmail_address = _gmail_address(raw.get(KEY_GMAIL_ADDRESS), f"config '{NAMESPACE}:{KEY_GMAIL_ADDRESS}'")
        mailboxes = _mailboxes(raw, domains, gmail_address)
        if mailboxes is None:
            mailboxes = MailboxTable.single(extra_labels, gmail_address)
        elif recipients or extra_labels:
            key = KEY_RECIPIENTS if recipients else KEY_EXTRA_LABELS
            raise ConfigError(
                f"config '{NAMESPACE}:{key}' is set together with '{NAMESPACE}:{KEY_MAILBOXES}': give each mailbox "
                "its own recipients and labels, and remove the top-level key"
            )
        config = cls(
            canary=_bool(raw, KEY_CANARY, default=True),
            renewal_concurrency=_int(
                raw,
                KEY_RENEWAL_CONCURRENCY,
                names.RENEWAL_RESERVED_CONCURRENCY,
                0,
                _MAX_RENEWAL_CONCURRENCY,
                unit="concurrent executions",
            ),
            env=env,
            domains=domains,
            recipients=recipients,
            alert_emails=alert_emails,
            extra_labels=extra_labels,
            retain_days=retain_days,
            token_lifetime_days=token_lifetime_days,
            rule_set_name=rule_set_name,
            auth_failures=auth_failures,
            mailboxes=mailboxes,
        )
        if len(config.receipt_recipients) > MAX_RULE_RECIPIENTS:
            raise ConfigError(
                f"the receipt rule would match {len(config.receipt_recipients)} recipients; SES allows "
                f"{MAX_RULE_RECIPIENTS} per rule: list whole domains (catch-alls) instead of single addresses"
            )
        return config


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
    items = _json(_where(key), text, "a YAML list") if text.startswith(("[", "{")) else text.split(",")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"config '{NAMESPACE}:{key}' must be a list of strings, got {text!r}")
    return tuple(i.strip() for i in items if i.strip())


def _bool(raw: Mapping[str, str | None], key: str, *, default: bool) -> bool:
    value = (raw.get(key) or "").strip().lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ConfigError(f"{_where(key)} must be true or false, got {raw.get(key)!r}")
    return value == "true"


def _json(where: str, text: str, shape: str) -> object:
    """A structured key's value: Pulumi hands lists and maps over as JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid ({exc.msg}); write it as {shape} in the stack file") from None


def _int(raw: Mapping[str, str | None], key: str, default: int, low: int, high: int, *, unit: str = "days") -> int:
    value = raw.get(key)
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError as exc:
        raise ConfigError(f"config '{NAMESPACE}:{key}' must be a whole number of {unit}, got {value!r}") from exc
    if not low <= number <= high:
        raise ConfigError(f"config '{NAMESPACE}:{key}' must be between {low} and {high} {unit}, got {number}")
    return number


def _is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at) and bool(_LOCAL_PART_RE.match(local)) and bool(_DOMAIN_RE.match(domain.lower()))


def _check_recipient(recipient: str, domains: tuple[str, ...], *, where: str | None = None) -> None:
    """SES matches an address, a domain or a subdomain; it must belong to one of our domains."""
    where = where or _where(KEY_RECIPIENTS)
    domain = recipient.rpartition("@")[2] if "@" in recipient else recipient
    if "@" in recipient and not _is_address(recipient):
        raise ConfigError(f"{where}: {recipient!r} is not an e-mail address")
    if not _DOMAIN_RE.match(domain):
        raise ConfigError(f"{where}: {recipient!r} is neither an address nor a domain")
    if not any(domain == d or domain.endswith("." + d) for d in domains):
        raise ConfigError(
            f"{where}: {recipient!r} is not under any of the "
            f"configured domains ({', '.join(domains)}); SES would never receive its mail"
        )


def _extra_labels(raw: Mapping[str, str | None]) -> tuple[str, ...]:
    """``extraLabels``: label names as Gmail shows them, or ids; each mistake refused in one sentence."""
    return _labels(
        f"config '{NAMESPACE}:{KEY_EXTRA_LABELS}'",
        _verbatim_items(raw, KEY_EXTRA_LABELS),
        KEY_EXTRA_LABELS,
        _string_list(raw, KEY_EXTRA_LABELS),
    )


def _labels(where: str, verbatim: list[str], key: str, labels: tuple[str, ...]) -> tuple[str, ...]:
    """Label names (or ids) as written in the config, checked against Gmail's rules for names.

    A name Gmail would refuse to create would park every message at its first delivery (mailbox
    refused), so Gmail's rules for names are checked here, before anything is deployed.
    """
    for item in verbatim:
        if not item.strip():
            raise ConfigError(f"{where} lists an empty label name; remove it")
        if item != item.strip():
            spaced = "starts or ends with a space, which a Gmail label name cannot"
            raise ConfigError(f"{where}: {item!r} {_CONTROL_CHARACTER if _has_control_character(item) else spaced}")
    seen: dict[str, str] = {}
    for label in labels:
        problem = None if is_label_id(label) else _label_name_problem(label)
        if problem:
            raise ConfigError(f"{where}: {label!r} {problem}")
        earlier = seen.setdefault(label.casefold(), label)
        if earlier != label:
            raise ConfigError(f"{where} lists {label!r} and {earlier!r}, one Gmail label (names ignore case)")
    _no_duplicates(key, labels, where)
    return labels


def _gmail_address(value: object, where: str) -> str | None:
    """A Gmail (or Google Workspace) address the mailbox's token must belong to, lowercased."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not _is_address(value.strip()):
        raise ConfigError(f"{where}: {value!r} is not an e-mail address (the Google account of the mailbox)")
    return value.strip().lower()


def _mailboxes(
    raw: Mapping[str, str | None], domains: tuple[str, ...], gmail_address: str | None
) -> MailboxTable | None:
    """``ses-mail:mailboxes``, every mistake named in its own sentence; None when the key is not set."""
    text = (raw.get(KEY_MAILBOXES) or "").strip()
    if not text:
        return None
    where = _where(KEY_MAILBOXES)
    items = _json(where, text, "a YAML list of mailboxes")
    if not isinstance(items, list) or not items:
        raise ConfigError(
            f"{where} must be a non-empty list of mailboxes, each with name, recipients, labels and gmailAddress"
        )
    problems: list[str] = []
    mailboxes: list[Mailbox] = []
    for index, item in enumerate(items):
        try:
            mailboxes.append(_mailbox(f"{where}[{index}]", item, domains, gmail_address))
        except ConfigError as exc:
            problems.append(str(exc))
    seen: set[str] = set()
    for mailbox in mailboxes:
        if mailbox.name in seen:
            problems.append(f"{where} names the mailbox {mailbox.name!r} twice; mailbox names must be unique")
        seen.add(mailbox.name)
    table = MailboxTable(tuple(mailboxes), configured=True)
    size = len(names.ENV_VAR_MAILBOXES) + len(table.to_json().encode())
    if size > names.LAMBDA_ENVIRONMENT_MAX_BYTES - _ENVIRONMENT_RESERVE_BYTES:
        problems.append(
            f"{where} takes {size} bytes as the Lambdas' {names.ENV_VAR_MAILBOXES} variable; Lambda's environment "
            f"holds {names.LAMBDA_ENVIRONMENT_MAX_BYTES} bytes in all: use catch-all domains or fewer labels"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    return table


def _mailbox(where: str, item: object, domains: tuple[str, ...], default_address: str | None) -> Mailbox:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a mapping with {', '.join(MAILBOX_FIELDS)}")
    unknown = sorted(set(item) - set(MAILBOX_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s) {', '.join(unknown)}; a mailbox has {', '.join(MAILBOX_FIELDS)}"
        )
    try:
        given = item.get("name")
        name = names.check_mailbox(given if isinstance(given, str) else "")
    except ValueError as exc:
        raise ConfigError(f"{where}.name: {exc}") from None
    where = f"{where} ({name})"
    recipients = _item_strings(where, item, "recipients")
    if not recipients:
        raise ConfigError(f"{where} has no recipients, so no mail would ever reach it; list addresses or domains")
    recipients = tuple(r.lower() for r in recipients)
    for recipient in recipients:
        _check_recipient(recipient, domains, where=f"{where}.recipients")
    _no_duplicates("recipients", recipients, f"{where}.recipients")
    verbatim = _item_strings(where, item, "labels", strip=False)
    labels = _labels(f"{where}.labels", list(verbatim), "labels", tuple(v.strip() for v in verbatim if v.strip()))
    address = _gmail_address(item.get("gmailAddress"), f"{where}.gmailAddress")
    if name == names.DEFAULT_MAILBOX:
        if address and default_address and address != default_address:
            raise ConfigError(
                f"{where}.gmailAddress {address!r} differs from '{NAMESPACE}:{KEY_GMAIL_ADDRESS}' {default_address!r}; "
                "keep one of them"
            )
        address = address or default_address
    return Mailbox(name, recipients, labels, address)


def _item_strings(where: str, item: dict[str, object], field: str, *, strip: bool = True) -> tuple[str, ...]:
    value = item.get(field)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{field} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip()) if strip else tuple(value)


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


def _where(key: str) -> str:
    return f"config '{NAMESPACE}:{key}'"


def _no_duplicates(key: str, values: tuple[str, ...], where: str | None = None) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where or _where(key)} lists {value!r} twice")
        seen.add(value)
