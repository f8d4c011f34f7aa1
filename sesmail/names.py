"""Every name, path, metric and threshold of ses-mail, as pure functions of the environment.

The Pulumi program, the Lambda handlers and the refresh CLI all import this module, so a
queue name or an alarm threshold is typed exactly once. ``env`` is the Pulumi stack name
(``test``, ``prod``, ...). Nothing here talks to AWS.
"""

from __future__ import annotations

import re

PROJECT = "ses-mail"

#: The one mailbox of a deployment without ``ses-mail:mailboxes``. Its resources keep the names
#: they had before mailboxes existed; every other mailbox ``{m}`` adds ``-{m}`` (``/{m}`` in paths).
DEFAULT_MAILBOX = "default"

#: The longest environment (stack) name accepted. Every physical name below must fit its
#: service's limit with it; the tightest are the mail bucket (S3: 63 characters, and it carries
#: the 12-digit account and a region of up to 14 characters: 37 + env) and a mailbox's retry DLQ
#: (SQS: 80; ``ses-mail-gmail-forwarder-retry-dlq-{mailbox of 20}-{env}``: 56 + env).
#: ``tests/rules/test_name_limits.py`` renders the program with a name this long and checks them all.
MAX_ENV_LENGTH = 24

_ENV_RE = re.compile(rf"^[a-z0-9][a-z0-9-]{{0,{MAX_ENV_LENGTH - 1}}}$")


def check_env(env: str) -> str:
    """Refuse environment names that would make invalid AWS names (queues, functions, paths)."""
    if not _ENV_RE.match(env):
        raise ValueError(
            f"invalid environment name {env!r}: use 1-{MAX_ENV_LENGTH} lowercase letters, digits or '-', "
            "starting with a letter or digit (it is the Pulumi stack name, e.g. 'test'; every AWS name "
            "the stack creates carries it and must fit AWS's length limits)"
        )
    return env


# --- SSM parameters -------------------------------------------------------------------------


def parameter_prefix(env: str) -> str:
    return f"/{PROJECT}/{check_env(env)}/gmail-forwarder/oauth"


def client_credentials_parameter(env: str) -> str:
    """OAuth client JSON as downloaded from Google's console (SecureString)."""
    return f"{parameter_prefix(env)}/client-credentials"


def _mailbox_path(env: str, mailbox: str) -> str:
    """``.../oauth`` for the default mailbox, ``.../oauth/{mailbox}`` for the others."""
    prefix = parameter_prefix(env)
    return prefix if mailbox == DEFAULT_MAILBOX else f"{prefix}/{check_mailbox(mailbox)}"


def refresh_token_parameter(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    """Refresh token JSON (SecureString) of one mailbox."""
    return f"{_mailbox_path(env, mailbox)}/refresh-token"


def refresh_token_expiry_parameter(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    """Token expiry metadata of one mailbox (String, no secret): what the token monitor publishes."""
    return f"{_mailbox_path(env, mailbox)}/refresh-token-expiry"


def mailboxes_parameter(env: str) -> str:
    """The mailbox table (String JSON, no secret), for the operator's tools; the Lambdas get it in
    their environment (``ENV_VAR_MAILBOXES``). Created only when ``ses-mail:mailboxes`` is set."""
    return f"/{PROJECT}/{check_env(env)}/gmail-forwarder/mailboxes"


#: Value Pulumi writes into every parameter it creates; readers treat it as "not configured yet".
PLACEHOLDER = "PLACEHOLDER"


def placeholder_value(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return f"{PLACEHOLDER}: not configured yet; run: {refresh_command(env, mailbox)}"


def is_placeholder(value: str | None) -> bool:
    return value is None or not value.strip() or value.strip().startswith(PLACEHOLDER)


# --- Queues, topics, functions, state machine ----------------------------------------------------


def per_mailbox(base: str, env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    """``{base}-{env}`` for the default mailbox (today's names, unchanged), ``{base}-{mailbox}-{env}`` else."""
    check_env(env)
    return f"{base}-{env}" if mailbox == DEFAULT_MAILBOX else f"{base}-{check_mailbox(mailbox)}-{env}"


def retry_queue(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-retry", env, mailbox)


def retry_dlq(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-retry-dlq", env, mailbox)


def inbound_queue(env: str) -> str:
    return f"ses-mail-inbound-{check_env(env)}"


def inbound_dlq(env: str) -> str:
    return f"ses-mail-inbound-dlq-{check_env(env)}"


def retry_state_machine(env: str) -> str:
    return f"ses-mail-gmail-forwarder-retry-processor-{check_env(env)}"


def alerts_topic(env: str) -> str:
    return f"ses-mail-gmail-forwarder-token-alerts-{check_env(env)}"


def token_expiring_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-token-expiring", env, mailbox)


def forwarder_function(env: str) -> str:
    return f"ses-mail-gmail-forwarder-{check_env(env)}"


def token_monitor_function(env: str) -> str:
    return f"ses-mail-token-monitor-{check_env(env)}"


def metric_namespace(env: str) -> str:
    return f"SESMail/{check_env(env)}"


def audit_log_group(env: str) -> str:
    return f"/{PROJECT}/{check_env(env)}/audit"


def state_machine_arn(env: str, region: str, account_id: str, partition: str) -> str:
    """ARN of the retry processor, derived rather than looked up (the refresh CLI uses it).

    ``partition`` is ``aws`` in the commercial regions; the CLI takes it from its caller identity.
    """
    return f"arn:{partition}:states:{region}:{account_id}:stateMachine:{retry_state_machine(env)}"


# --- Mail storage ------------------------------------------------------------------------------

#: Key prefix under which SES's S3 action writes raw messages: ``inbound/{messageId}``.
INBOUND_PREFIX = "inbound/"

#: S3 object tag that recorded the Gmail id of an imported message before delivery claims
#: replaced it. Still *read* (a tagged object counts as delivered) until every tagged object has
#: expired, ``retainDays`` after the upgrade; never written any more.
GMAIL_ID_TAG = "gmail-message-id"

DEFAULT_RETAIN_DAYS = 30

# --- Delivery claims (exactly once per (message, mailbox), DESIGN.md) -----------------------------

#: Key prefix of the claim objects in the mail bucket: ``claims/{messageId}/{mailbox}``. They
#: expire with the same lifecycle ``retainDays`` as the mail under ``inbound/``.
CLAIMS_PREFIX = "claims/"
#: Margin for clocks: a lease's expiry is written by one Lambda host and read by another.
CLAIM_CLOCK_SKEW_SECONDS = 30
#: How long a claim protects an import in flight. The holder's critical section is one Gmail
#: upload (``sesmail.runtime.gmail.UPLOAD_TIMEOUT_SECONDS``, 60 s) — but that is a per-socket-operation
#: timeout, so a slow 40 MB upload may run past it; the only hard bound is the forwarder's own
#: timeout, after which Lambda has killed the holder. So: the function timeout plus the clock
#: margin (150 s). A shorter lease could expire under a live, slow upload and let a second import
#: start; a longer one only delays taking over from a dead holder. It stays below what the
#: retries wait in total — the retry processor's 30 + 60 + 120 s and the inbound queue's 720 s
#: visibility timeout — so a redelivery always outlives a dead holder's lease instead of being
#: dead-lettered for it. (A literal because FORWARDER_TIMEOUT_SECONDS is defined further down;
#: ``tests/test_claims.py`` checks the sum and these bounds.)
CLAIM_LEASE_SECONDS = 150

_CLAIM_MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._!*'()_-]{0,254}")
#: A mailbox name (``ses-mail:mailboxes[].name``): it becomes part of queue, alarm and parameter
#: names, and the longest (20) still fits SQS's 80 characters with the longest stack name.
MAX_MAILBOX_LENGTH = 20
_MAILBOX_RE = re.compile(rf"[a-z0-9-]{{1,{MAX_MAILBOX_LENGTH}}}")


def check_mailbox(mailbox: str) -> str:
    """Refuse a mailbox name that is not ``[a-z0-9-]{1,20}`` (it names queues, alarms and parameters).

    ``dlq`` and ``dlq-*`` are refused too: mailbox ``dlq-x``'s retry queue would be named exactly
    like mailbox ``x``'s retry DLQ (``ses-mail-gmail-forwarder-retry-dlq-x-{env}``).
    """
    if not isinstance(mailbox, str) or not _MAILBOX_RE.fullmatch(mailbox):
        raise ValueError(
            f"mailbox name {str(mailbox)[:30]!r} is not 1-{MAX_MAILBOX_LENGTH} lowercase letters, digits or '-'"
        )
    if mailbox == "dlq" or mailbox.startswith("dlq-"):
        raise ValueError(f"mailbox name {mailbox!r} would name its retry queue like a retry DLQ; pick another name")
    return mailbox


def claim_key(message_id: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    """``claims/{messageId}/{mailbox}``; refuses ids that would not make one plain S3 key segment.

    SES's message ids are letters, digits and dashes. A hand-edited id with ``/``, ``..``,
    control characters or a lone surrogate would name another key, or fail inside botocore as
    an error the classifier could only call transient; callers turn this ValueError into a
    permanent failure with its reason instead.
    """
    if not _CLAIM_MESSAGE_ID_RE.fullmatch(message_id):
        raise ValueError(f"message id {message_id[:60]!r} cannot name a claim (letters, digits and -_.!*'() only)")
    return f"{CLAIMS_PREFIX}{message_id}/{check_mailbox(mailbox)}"


#: Empty marker objects beside a claim, ``claims/{messageId}/{mailbox}.{marker}``, so a reconcile
#: learns every (message, mailbox)'s outcome from LIST alone instead of a GET per claim. A claim
#: says *who may import*; a marker says *how it ended*. Mailbox names have no ``.``, so a marker
#: key is never a claim key. Markers are written after the fact and best effort: a missing one
#: only makes the reconcile look again, and the claim then answers ``already-delivered``.
CLAIM_MARKER_DELIVERED = "delivered"  # Gmail has it (import recorded on the claim)
CLAIM_MARKER_REJECTED = "rejected"  # refused by the sender-authentication policy (authFailures: drop)
CLAIM_MARKER_QUEUED = "queued"  # handed to a queue (parked, or dead-lettered); LastModified = when
CLAIM_MARKERS = (CLAIM_MARKER_DELIVERED, CLAIM_MARKER_REJECTED, CLAIM_MARKER_QUEUED)


def claim_marker_key(message_id: str, mailbox: str, marker: str) -> str:
    """``claims/{messageId}/{mailbox}.{marker}``."""
    if marker not in CLAIM_MARKERS:
        raise ValueError(f"unknown claim marker {marker!r}")
    return f"{claim_key(message_id, mailbox)}.{marker}"


# --- Canary (DESIGN.md, "Canary: silence is an alarm") ------------------------------------------

#: Local part of the address the canary sends from and to: ``ses-mail-canary@{first domain}``.
CANARY_LOCAL_PART = "ses-mail-canary"
#: The header that carries the canary's proof: ``v1; id=<canary id>; t=<unix seconds>; mac=<hex>``.
CANARY_HEADER = "X-SES-Mail-Canary"
#: The one label a canary is imported with: archived (no INBOX), read (no UNREAD), findable.
CANARY_LABEL = "ses-mail/canary"
#: A canary whose signed time is further than this from SES's receipt time is stale, hence
#: ordinary mail: a replayed canary gets a new receipt time. SES receives within minutes; six
#: hours leave room for a sending queue's backlog.
CANARY_MAX_SKEW_SECONDS = 6 * 3600
#: Once a day; the alarm waits 26 hours (a late run, an hour of SES delay) before it fires.
CANARY_SCHEDULE = "rate(1 day)"
CANARY_ALARM_HOURS = 26
#: The canary alarm looks at CANARY_ALARM_HOURS periods of an hour: CloudWatch allows a total
#: evaluation of up to 7 days for periods of an hour or more (one day below an hour).
CANARY_ALARM_PERIOD_SECONDS = 3600
CANARY_HANDLER = "handlers.canary.handler"
CANARY_TIMEOUT_SECONDS = 30
CANARY_MEMORY_MB = 128
CANARY_LOG_RETENTION_DAYS = 30
#: The forwarder's and the canary's environment: the canary address (absent: no canary).
ENV_VAR_CANARY_ADDRESS = "CANARY_ADDRESS"
METRIC_CANARY_DELIVERED = "CanaryDelivered"
EVENT_CANARY_SENT = "canary.sent"
EVENT_CANARY_RECOGNISED = "canary.recognised"
EVENT_CANARY_DELIVERED = "canary.delivered"
EVENT_CANARY_REFUSED = "canary.not_recognised"


def canary_address(domain: str) -> str:
    return f"{CANARY_LOCAL_PART}@{domain}"


def canary_key_parameter(env: str) -> str:
    """The HMAC key (SecureString) the canary signs with and the forwarder checks with."""
    return f"/{PROJECT}/{check_env(env)}/gmail-forwarder/canary-key"


def canary_function(env: str) -> str:
    return f"{PROJECT}-canary-{check_env(env)}"


def canary_role(env: str) -> str:
    return f"{PROJECT}-canary-role-{check_env(env)}"


def canary_schedule_rule(env: str) -> str:
    return f"{PROJECT}-canary-schedule-{check_env(env)}"


# --- The renewal page (DESIGN.md "Renewing from a phone") --------------------------------------------

RENEWAL_HANDLER = "handlers.renewal.handler"
RENEWAL_TIMEOUT_SECONDS = 30
RENEWAL_MEMORY_MB = 256
RENEWAL_LOG_RETENTION_DAYS = 90
#: A person renews a token once a week: two at once is plenty, and it caps what anyone hammering
#: the public URL can cost (Lambda answers 429 beyond it) without touching the account's pool.
RENEWAL_RESERVED_CONCURRENCY = 2
#: The default mailbox's Gmail address (stack config ``gmailAddress``), for a stack without
#: ``ses-mail:mailboxes`` (``MAILBOXES`` then is not set and the table is the one ``default``).
ENV_VAR_GMAIL_ADDRESS = "GMAIL_ADDRESS"
#: Optional: the page's own base URL, ending in ``/`` (default ``https://{requestContext.domainName}/``).
#: For a custom domain in front of the function URL, and for tests on plain-http loopback.
ENV_VAR_RENEWAL_BASE_URL = "RENEWAL_BASE_URL"
#: The stack's ``tokenLifetimeDays`` (the refresh token's lifetime when Google does not send one;
#: 0 = no expiry), as the CLI's ``--lifetime-days``.
ENV_VAR_TOKEN_LIFETIME_DAYS = "TOKEN_LIFETIME_DAYS"
#: Paths of the page. Google redirects to ``{renewalUrl}callback``: the redirect URI to register.
RENEWAL_START_PATH = "/"
RENEWAL_CALLBACK_PATH = "/callback"
RENEWAL_RESULT_PATH = "/done"
#: ``source`` of the page's audit records and ``trigger`` of the drains it starts.
RENEWAL_SOURCE = "renewal-page"
#: The audit record of a consent the page refused (another account, a foreign or expired id token).
AUDIT_ACTION_RENEWAL_REFUSED = "refresh-token.renewal-refused"
#: The audit record of ``--web-client-secret FILE``: the renewal page's web client JSON was stored (never the secret).
AUDIT_ACTION_WEB_CLIENT_STORED = "web-client.stored"


def renewal_function(env: str) -> str:
    return f"{PROJECT}-renewal-{check_env(env)}"


def renewal_role(env: str) -> str:
    return f"{PROJECT}-renewal-role-{check_env(env)}"


def web_client_credentials_parameter(env: str) -> str:
    """The renewal page's "Web application" OAuth client JSON (SecureString, ``{"web": {...}}``)."""
    return f"{parameter_prefix(env)}/web-client-credentials"


def web_client_placeholder_value(env: str) -> str:
    command = f"python -m sesmail.refresh --env {check_env(env)} --web-client-secret FILE"
    return f"{PLACEHOLDER}: not configured yet; run: {command}"


def renewal_secret_parameter(env: str) -> str:
    """The renewal page's signing secret (SecureString; random, generated once by ``pulumi up``)."""
    return f"/{PROJECT}/{check_env(env)}/gmail-forwarder/renewal-secret"


def renewal_redirect_uri(renewal_url: str) -> str:
    """The redirect URI to register for the web client: the callback under ``renewalUrl``."""
    return renewal_url.rstrip("/") + RENEWAL_CALLBACK_PATH


def renewal_link(renewal_url: str, mailbox: str) -> str:
    """The link in a token alarm's description: opens the page's consent for ``mailbox``."""
    base = renewal_url if renewal_url.endswith("/") else renewal_url + "/"
    return f"{base}?mailbox={check_mailbox(mailbox)}"


def canary_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    """CanaryDelivered < 1 for CANARY_ALARM_HOURS, missing data breaching: the path is broken somewhere."""
    return per_mailbox(f"{PROJECT}-canary-missing", env, mailbox)


# --- Metrics -----------------------------------------------------------------------------------

METRIC_TOKEN_HOURS = "TokenHoursUntilExpiration"
METRIC_TOKEN_MONITORING_ERRORS = "TokenMonitoringErrors"
METRIC_RETRY_DELIVERED = "RetryMessagesDelivered"
METRIC_RETRY_FAILED = "RetryMessagesFailed"
METRIC_RETRY_COMPLETED = "RetryProcessingCompleted"
METRIC_FORWARDED = "MessagesForwarded"
METRIC_ALREADY_DELIVERED = "MessagesAlreadyDelivered"
METRIC_PARKED = "MessagesParkedForRetry"
METRIC_FAILED = "MessagesFailed"
#: Gmail refused the account or our setup (not a message, not the token): its own alarm.
METRIC_MAILBOX_REFUSED = "MailboxRefused"
#: Not imported by the sender-authentication policy (``authFailures: drop``); the raw stays in S3.
METRIC_REJECTED = "MessagesRejected"
#: (message, mailbox) pairs a reconcile found undelivered, older than RECONCILE_ALARM_AGE_SECONDS,
#: that no queue ever held: mail the inbound path never delivered nor parked. Dimensionless.
METRIC_UNDELIVERED_FOUND = "UndeliveredMailFound"

# --- Token lifecycle thresholds ------------------------------------------------------------------

#: Google's refresh-token lifetime for apps in "Testing" publishing status, when it does not say.
TESTING_TOKEN_LIFETIME_DAYS = 7
#: Alarm when fewer hours than this remain.
TOKEN_EXPIRING_HOURS = 24
TOKEN_CRITICAL_HOURS = 6
TOKEN_EXPIRED_HOURS = 0
#: Access tokens are reused until this many seconds before Google says they expire.
ACCESS_TOKEN_SAFETY_MARGIN_SECONDS = 300

# --- Retry processor and queues ------------------------------------------------------------------

RETRY_INITIAL_BACKOFF_SECONDS = 30
RETRY_BACKOFF_RATE = 2.0
RETRY_MAX_ATTEMPTS = 3
RETRY_MAX_BACKOFF_SECONDS = 15 * 60
RETRY_QUEUE_VISIBILITY_SECONDS = 15 * 60
RETRY_QUEUE_RETENTION_SECONDS = 14 * 24 * 3600
RETRY_QUEUE_DEPTH_ALARM_THRESHOLD = 1
DLQ_DEPTH_ALARM_THRESHOLD = 1
#: SQS receive size (the API maximum).
SQS_BATCH_SIZE = 10
#: Retry processor: deliveries in flight at once. Gmail allows 6,000 quota units a minute per
#: user and an import costs 25, i.e. 4 imports a second; two concurrent imports stay under it
#: while the inbound path (also at most 2 concurrent) runs beside the drain.
RETRY_MAP_MAX_CONCURRENCY = 2
#: Long polling (any wait >= 1 s) asks every SQS server, so an empty answer means empty.
RETRY_RECEIVE_WAIT_SECONDS = 1
#: A Standard execution's history holds at most 25,000 events (~25 per message at worst); past
#: this many batches the processor hands over to a fresh execution of itself.
RETRY_BATCHES_PER_EXECUTION = 50
#: An execution still running after this long is stuck (a normal drain of 50 batches takes
#: minutes; the worst case with every retry exhausted is about 10 hours): it times out, which
#: alarms, and leaves every undelivered message in the queue.
RETRY_EXECUTION_TIMEOUT_SECONDS = 12 * 3600

# --- Gmail ---------------------------------------------------------------------------------------

GMAIL_API_BASE_URL = "https://gmail.googleapis.com"
GMAIL_IMPORT_UPLOAD_PATH = "/upload/gmail/v1/users/me/messages/import"
GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.insert"
#: users.labels.list and users.labels.create: label *names* are resolved to ids, and a missing
#: label is created (sesmail.runtime.labels). Google calls it non-sensitive ("Manage labels" guide).
GMAIL_LABELS_SCOPE = "https://www.googleapis.com/auth/gmail.labels"
#: OpenID Connect: the code exchange then returns an id token naming the Google account that
#: consented (``sesmail.renewal.identity``), so a renewal can tell whose mailbox the token opens. The
#: e-mail scope in its full form: Google answers ``email`` with this URL, and oauthlib refuses a
#: token whose scopes differ from the ones asked for.
OPENID_SCOPE = "openid"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
#: What the consent asks for (the CLI and the renewal page). A token granted before gmail.labels
#: was added still imports with label *ids*; label names then park mail until it is renewed once.
CONSENT_SCOPES = (GMAIL_SCOPE, GMAIL_LABELS_SCOPE, OPENID_SCOPE, EMAIL_SCOPE)
#: users.labels.list (GET) and users.labels.create (POST).
GMAIL_LABELS_PATH = "/gmail/v1/users/me/labels"
#: Label ids every mailbox has and an import may set ("Manage labels" guide, system labels).
#: Configured exactly like this, they are ids and need no labels call; CHAT is a system label too,
#: but an import carrying it is refused ("Invalid label: CHAT").
GMAIL_SYSTEM_LABEL_IDS = frozenset(
    {
        "INBOX",
        "SPAM",
        "TRASH",
        "UNREAD",
        "STARRED",
        "IMPORTANT",
        "SENT",
        "DRAFT",
        "CATEGORY_PERSONAL",
        "CATEGORY_SOCIAL",
        "CATEGORY_PROMOTIONS",
        "CATEGORY_UPDATES",
        "CATEGORY_FORUMS",
    }
)
#: Top-level label names Gmail keeps for itself besides the system ids, compared without case:
#: users.labels.create answers 400 "Invalid label name". From GAM-team/got-your-back's
#: ``reserved_labels`` (gyb.py) and its issues #264/#316/#350 (Muted), and lieer (voicemail).
GMAIL_RESERVED_LABEL_NAMES = frozenset(
    {
        "CHAT",
        "CHATS",
        "DRAFTS",
        "BIN",
        "ALLMAIL",
        "ARCHIVED",
        "MIGRATED",
        "TODO",
        "TODOS",
        "BUZZ",
        "MUTED",
        "VOICEMAIL",
    }
)
#: Longest label name accepted. Google documents none; 225 characters is the limit Gmail is
#: reported to enforce by several public Gmail clients. A longer one Gmail refuses is parked as
#: a refused mailbox (400 "Invalid label name"), never lost.
GMAIL_MAX_LABEL_NAME_CHARS = 225
#: Gmail's per-user quota for new projects, and the cost of one messages.import call.
GMAIL_QUOTA_UNITS_PER_MINUTE = 6000
GMAIL_IMPORT_QUOTA_UNITS = 25
#: Gmail refuses messages larger than this through the upload endpoint.
GMAIL_MAX_MESSAGE_BYTES = 50 * 1024 * 1024
DEFAULT_LABELS = ("INBOX", "UNREAD")
SPAM_LABELS = ("SPAM",)

# --- Forwarder environment variables (the contract between Pulumi and the handler) --------------

ENV_VAR_ENV = "SESMAIL_ENV"
ENV_VAR_RETRY_QUEUE_URL = "RETRY_QUEUE_URL"
ENV_VAR_INBOUND_DLQ_URL = "INBOUND_DLQ_URL"
ENV_VAR_GMAIL_LABELS = "GMAIL_LABELS"
ENV_VAR_GMAIL_API_BASE_URL = "GMAIL_API_BASE_URL"
#: ``spam`` (default), ``drop`` or ``inbox``: what DMARC failures and viruses do (sesmail.runtime.verdicts).
ENV_VAR_AUTH_FAILURES = "AUTH_FAILURES"
#: The mailbox table as JSON (``sesmail.runtime.mailboxes.MailboxTable``), set only when the stack
#: configures ``ses-mail:mailboxes``; without it the forwarder has the one mailbox ``default``,
#: which receives every recipient, with ``GMAIL_LABELS`` and ``RETRY_QUEUE_URL``.
ENV_VAR_MAILBOXES = "MAILBOXES"
#: Lambda's limit for all of a function's environment variables together (keys and values).
LAMBDA_ENVIRONMENT_MAX_BYTES = 4096
#: The dimension of every per-mailbox metric (token hours, refused, canary); ``default`` included.
MAILBOX_DIMENSION = "Mailbox"
#: A parked message's attribute, a retry-processor input's and a forwarder invocation's key.
ATTR_MAILBOX = "mailbox"
RETRY_MAILBOX_KEY = "mailbox"
#: Optional: the bucket SES writes to; records naming another bucket are refused, and SES
#: Lambda-action events (which carry no object location) are read from it.
ENV_VAR_EMAIL_BUCKET = "EMAIL_BUCKET"

# --- Retry queue message attributes --------------------------------------------------------------

ATTR_ORIGINAL_TIMESTAMP = "original_timestamp"
ATTR_ERROR_TYPE = "error_type"
ATTR_ATTEMPT_COUNT = "attempt_count"
ATTR_ORIGINAL_REQUEST_ID = "original_lambda_request_id"
#: On DLQ messages: the human-readable reason.
ATTR_ERROR = "error"

#: The event field that marks a retry-processor invocation of the forwarder.
RETRY_PROCESSOR_SOURCE = "retry-processor"
#: The forwarder's answer to the retry processor for a queued notification that is not mail
#: (SES's setup notification): delete it, count it neither delivered nor failed.
RETRY_STATUS_IGNORED = "ignored"
#: ... and for a message the sender-authentication policy refused to import (deleted, uncounted).
RETRY_STATUS_REJECTED = "rejected"

# --- Forwarder in-process retries (bounded by the invocation's remaining time) ------------------

INPROCESS_MAX_ATTEMPTS = 3
INPROCESS_BACKOFF_SECONDS = 1.0
#: A Retry-After longer than this is not waited out in-process: SQS or Step Functions redeliver.
INPROCESS_MAX_WAIT_SECONDS = 20.0
#: Time kept back from the invocation's deadline to park or dead-letter what is left.
INVOCATION_RESERVE_SECONDS = 10.0

# --- Infrastructure settings (sesmail/infra builds the AWS resources from these) ----------------

#: Regions where SES *email receiving* exists (receipt rules, ``inbound-smtp.<region>``). SES can
#: send from more regions than it can receive in; the Pulumi program refuses any other region
#: before it creates anything. Source: the "Email receiving endpoints" table of
#: https://docs.aws.amazon.com/general/latest/gr/ses.html — extend this tuple when AWS adds one.
SES_RECEIVING_REGIONS: tuple[str, ...] = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "eu-south-1",
    "il-central-1",
    "af-south-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
)

#: Receiving regions that an account must opt in to. SES's "Deliver to S3 bucket" action cannot
#: write to a bucket in an opt-in region (only through an IAM role of the action, which ses-mail
#: does not use), so the program refuses them; SES itself still receives mail there.
SES_OPT_IN_REGIONS: tuple[str, ...] = ("af-south-1", "ap-southeast-3", "eu-south-1", "il-central-1")

#: Where ses-mail deploys: the receiving regions whose S3 action can write to a local bucket.
SUPPORTED_REGIONS: tuple[str, ...] = tuple(r for r in SES_RECEIVING_REGIONS if r not in SES_OPT_IN_REGIONS)

MX_PRIORITY = 10


def ses_inbound_endpoint(region: str) -> str:
    """Host the domains' MX record points at."""
    return f"inbound-smtp.{region}.amazonaws.com"


def mx_record(region: str) -> str:
    """The MX value to publish for every domain: ``10 inbound-smtp.<region>.amazonaws.com``."""
    return f"{MX_PRIORITY} {ses_inbound_endpoint(region)}"


def receipt_rule_set(env: str) -> str:
    """Our own SES rule set (only when the stack does not join an existing one via ruleSetName)."""
    return f"{PROJECT}-{check_env(env)}"


def receipt_rule(env: str) -> str:
    return f"{PROJECT}-inbound-rule-{check_env(env)}"


def inbound_notification_topic(env: str) -> str:
    """SNS topic SES's S3 action notifies; the inbound queue subscribes to it."""
    return f"{PROJECT}-inbound-notifications-{check_env(env)}"


def topic_key_alias(env: str) -> str:
    """Alias of the customer-managed KMS key that encrypts both SNS topics."""
    return f"alias/{PROJECT}-{check_env(env)}-sns"


def forwarder_role(env: str) -> str:
    return f"{PROJECT}-gmail-forwarder-role-{check_env(env)}"


def lambda_log_group(function_name: str) -> str:
    """The log group Lambda writes to by default; created by Pulumi so it has a retention."""
    return f"/aws/lambda/{function_name}"


_BUCKET_NAME_MAX = 63


def email_bucket(env: str, account_id: str, region: str) -> str:
    """Raw-mail bucket: globally unique because it carries the account and the region."""
    name = f"{PROJECT}-{check_env(env)}-{account_id}-{region}"
    if len(name) > _BUCKET_NAME_MAX:
        raise ValueError(f"bucket name {name!r} is longer than {_BUCKET_NAME_MAX} characters: use a shorter stack name")
    return name


FORWARDER_HANDLER = "handlers.forwarder.handler"
FORWARDER_RUNTIME = "python3.13"
FORWARDER_ARCHITECTURE = "arm64"
FORWARDER_TIMEOUT_SECONDS = 120
FORWARDER_MEMORY_MB = 256
FORWARDER_LOG_RETENTION_DAYS = 30
#: Event source mapping concurrency: Gmail allows GMAIL_QUOTA_UNITS_PER_MINUTE /
#: GMAIL_IMPORT_QUOTA_UNITS = 240 imports a minute per user; one invocation imports its batch
#: one message after another, so two pollers stay well inside it. 2 is also AWS's minimum.
FORWARDER_MAX_CONCURRENCY = 2

#: AWS: an SQS event source's queue visibility timeout should be at least 6x the function timeout.
INBOUND_QUEUE_VISIBILITY_SECONDS = 6 * FORWARDER_TIMEOUT_SECONDS
INBOUND_QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
#: Receives (transient failures) before SQS moves an inbound message to the inbound DLQ.
INBOUND_QUEUE_MAX_RECEIVE_COUNT = 5
#: Each retry-processor run receives a message at most once; this many runs that could not
#: deliver it means it is stuck, so SQS moves it to the retry DLQ (which alarms). Runs are
#: started every 15 minutes by the token monitor while mail is queued and the token works, and a
#: run stopped by Gmail's quota leaves its batch received once more: 100 runs outlast a day of
#: quota (Gmail's daily limits reset within 24 hours) before anything moves to the DLQ.
RETRY_QUEUE_MAX_RECEIVE_COUNT = 100
#: Dead-letter queues keep messages as long as SQS allows (14 days, counted from the
#: message's *original* enqueue time).
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
#: The shortest ``retainDays`` accepted. A parked message lives at most 14 days in the retry queue
#: and its DLQ together (a standard queue's DLQ keeps the original enqueue time), and a redrive
#: from the DLQ starts its retention again (SQS's move task resets it): its raw message must
#: still be in S3 for the whole of both.
MIN_RETAIN_DAYS = (RETRY_QUEUE_RETENTION_SECONDS + DLQ_RETENTION_SECONDS) // 86400

# --- Reconcile (DESIGN.md, "Reconcile: S3 is the source of truth") ---------------------------------

#: The forwarder's event ``{"source": "reconcile", "mailbox": NAME}``: deliver what the mailbox
#: is owed from the bucket. The retry processor sends it before every drain.
RECONCILE_SOURCE = "reconcile"
#: A stored message younger than this may still be on the inbound path (SQS redelivers it up to
#: INBOUND_QUEUE_MAX_RECEIVE_COUNT times, a visibility timeout apart): the reconcile leaves it alone.
RECONCILE_MIN_AGE_SECONDS = INBOUND_QUEUE_VISIBILITY_SECONDS * INBOUND_QUEUE_MAX_RECEIVE_COUNT
#: A (message, mailbox) handed to a queue (marker ``queued``) is the queue's for this long: SQS keeps
#: it in the retry queue, and then in its DLQ (which keeps the original enqueue time), for at most
#: RETRY_QUEUE_RETENTION_SECONDS in all. After that only the bucket holds it, and the reconcile
#: delivers it.
RECONCILE_QUEUED_WAIT_SECONDS = RETRY_QUEUE_RETENTION_SECONDS
#: Undelivered mail older than this that no queue ever held means something upstream is broken
#: (SNS -> SQS, the forwarder, the inbound DLQ left unattended): metric METRIC_UNDELIVERED_FOUND.
RECONCILE_ALARM_AGE_SECONDS = 24 * 3600
#: Once a day EventBridge invokes the token monitor with ``{"action": "daily-reconcile", "time": ...}``:
#: it then starts a retry-processor execution (which reconciles first) for every mailbox whose
#: token works, even with an empty retry queue. 04:00 UTC: after most of a day's mail, before
#: Europe's morning.
RECONCILE_DAILY_SCHEDULE = "cron(0 4 * * ? *)"
#: The monitor event's ``action`` for the daily run, the executions' ``trigger`` and name prefix.
RETRY_TRIGGER_DAILY_RECONCILE = "daily-reconcile"


def daily_reconcile_rule(env: str) -> str:
    """The EventBridge rule that starts the daily reconcile through the token monitor."""
    return f"{PROJECT}-daily-reconcile-{check_env(env)}"


#: The forwarder's log event after each reconcile run, with the plan's counts.
EVENT_RECONCILE_DONE = "reconcile.done"
#: A page of ListObjectsV2 (S3's maximum): 10,000 stored messages cost ten LIST requests.
RECONCILE_LIST_PAGE_SIZE = 1000
#: Stored messages the forwarder never saw, looked at in parallel (one ranged GET of the head each).
RECONCILE_HEAD_READERS = 8

# --- Refresh CLI (python -m sesmail.refresh) and the token monitor ------------------------------


def refresh_command(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    """The command an operator runs to renew a token; every "what to do" message quotes it."""
    command = f"python -m sesmail.refresh --env {check_env(env)}"
    return command if mailbox == DEFAULT_MAILBOX else f"{command} --mailbox {check_mailbox(mailbox)}"


def deploy_command(env: str) -> str:
    """The command that creates the stack's resources (parameters, queues, state machine, log group)."""
    return f"pulumi up --stack {check_env(env)}"


#: ``TokenHoursUntilExpiration`` for a token without an expiry (an app "In production"): one
#: year, far above every alarm threshold yet still a readable value on the dashboard.
TOKEN_NO_EXPIRY_HOURS = 365 * 24
#: CloudWatch unit of ``TokenHoursUntilExpiration`` (CloudWatch has no "Hours" unit).
METRIC_TOKEN_HOURS_UNIT = "None"

#: The OAuth loopback server binds this address only (never a public interface), and the
#: redirect URI names it literally so no ``localhost`` resolution can send the code elsewhere.
OAUTH_LOOPBACK_HOST = "127.0.0.1"
OAUTH_DEFAULT_PORT = 8080
#: How long the loopback server waits for Google's redirect before giving up.
OAUTH_CONSENT_TIMEOUT_SECONDS = 300

#: Audit records of token renewals go to one stream a day in ``audit_log_group(env)``.
AUDIT_ACTION_TOKEN_RENEWED = "refresh-token.renewed"


def audit_log_stream(day: str) -> str:
    """Log stream for the audit records of one UTC day (``YYYY-MM-DD``)."""
    return f"refresh-cli/{day}"


#: Seconds between progress polls of ``--wait`` (tests set the variable to make it fast).
ENV_VAR_POLL_SECONDS = "SESMAIL_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 5.0
#: Set to 1 to get a (secret-redacted) traceback with an unexpected error of the refresh CLI.
ENV_VAR_DEBUG = "SESMAIL_DEBUG"
#: Input key with which a retry-processor execution hands a long backlog over to its successor
#: (its value is the predecessor's execution ARN); ``--wait`` follows the chain through it.
RETRY_CONTINUED_FROM_KEY = "continuedFrom"
#: Output key of a retry-processor run that stopped early without failing, and its one value:
#: Gmail's rate limit outlasted the retries; the rest waits in the queue for the next run.
RETRY_STOPPED_BY_KEY = "stoppedBy"
RETRY_STOPPED_RATE_LIMITED = "rate-limited"

# --- Retry processor (Step Functions) infrastructure ----------------------------------------------


def retry_processor_role(env: str) -> str:
    """Short enough for IAM's 64 characters with the longest environment name."""
    return f"{PROJECT}-retry-processor-role-{check_env(env)}"


def state_machine_log_group(env: str) -> str:
    """``/aws/vendedlogs/`` keeps Step Functions' log delivery inside CloudWatch's resource-policy size limit."""
    return f"/aws/vendedlogs/states/{retry_state_machine(env)}"


#: Execution history in the state machine's log group: errors only, and never execution data
#: (which holds mail headers from the SES notifications).
STATE_MACHINE_LOG_LEVEL = "ERROR"
AUDIT_LOG_RETENTION_DAYS = 365

# --- Token monitor Lambda, alarms, dashboard, saved Logs Insights queries (observability) -------

TOKEN_MONITOR_HANDLER = "handlers.token_monitor.handler"
#: One SSM read per mailbox and one PutMetricData call, then, for each mailbox whose queue holds
#: mail, a few AWS calls, one SSM read and one mint at Google's token endpoint
#: (``tokens.TOKEN_TIMEOUT_SECONDS``, 10 s per connect or read, twice when the token changed under
#: it): seconds normally; when Google hangs, up to ~40 s a mailbox, one mailbox after another. Two
#: minutes cover a hang with a few mailboxes parked at once; a run cut short after publishing
#: still reports a Lambda error (its alarm), and the next run, 15 minutes later, tries again.
TOKEN_MONITOR_TIMEOUT_SECONDS = 120
TOKEN_MONITOR_MEMORY_MB = 128
TOKEN_MONITOR_LOG_RETENTION_DAYS = 30
#: Every 15 minutes: the token alarms' period is an hour, so one late or missed run never
#: leaves a period without data (which the expiring alarm would count as breaching).
TOKEN_MONITOR_SCHEDULE = "rate(15 minutes)"
#: The schedule's period: an execution the monitor starts is named after the period it ran in.
TOKEN_MONITOR_PERIOD_SECONDS = 15 * 60
#: The monitor's environment besides ``ENV_VAR_ENV`` and ``ENV_VAR_RETRY_QUEUE_URL``: the retry
#: processor it starts when mail is parked and the token works (DESIGN.md, "Nothing waits forever").
ENV_VAR_STATE_MACHINE_ARN = "STATE_MACHINE_ARN"
#: ``trigger`` in the input of the executions the monitor starts, and their name prefix.
RETRY_TRIGGER_TOKEN_MONITOR = "token-monitor"
#: After a retry-processor execution failed (a refused mailbox, say), the monitor waits this long
#: before starting another. Each start receives up to a batch once more and fires the failed
#: alarm again; at one start an hour, RETRY_QUEUE_MAX_RECEIVE_COUNT receives last about four days
#: instead of one, well inside the retry queue's 14-day retention. A renewal starts one at once.
RETRY_AUTOSTART_BACKOFF_SECONDS = 3600


def token_monitor_role(env: str) -> str:
    return f"{PROJECT}-token-monitor-role-{check_env(env)}"


def token_monitor_schedule_rule(env: str) -> str:
    return f"{PROJECT}-token-monitor-schedule-{check_env(env)}"


#: Period of the token alarms (statistic Minimum: one low reading in the hour alarms).
TOKEN_ALARM_PERIOD_SECONDS = 3600
#: Period of the queue, DLQ, Lambda-error and execution alarms. SQS, Lambda and Step Functions
#: publish one-minute data; five minutes keeps a single late datapoint from flapping an alarm.
ALARM_PERIOD_SECONDS = 300
#: Any error counted in a period alarms (forwarder/monitor Lambda errors, TokenMonitoringErrors,
#: failed or timed-out retry-processor executions).
ERROR_COUNT_ALARM_THRESHOLD = 1
#: The oldest retry-queue message has waited a day: the token has been dead for a day without a
#: renewal, or the retry processor cannot drain. SQS keeps it RETRY_QUEUE_RETENTION_SECONDS
#: (14 days), so this leaves 13 days to act before mail is lost; a smaller value would fire on
#: every normal overnight outage already covered by the token and queue-depth alarms.
RETRY_QUEUE_AGE_ALARM_SECONDS = 24 * 3600


def token_critical_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-token-critical", env, mailbox)


def token_expired_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-token-expired", env, mailbox)


def token_monitor_errors_alarm(env: str) -> str:
    """TokenMonitoringErrors >= 1: the monitor ran but could not tell the token's expiry."""
    return f"ses-mail-token-monitor-errors-{check_env(env)}"


def token_monitor_function_errors_alarm(env: str) -> str:
    """AWS/Lambda Errors of the monitor: it crashed, timed out or lacked a permission."""
    return f"ses-mail-token-monitor-function-errors-{check_env(env)}"


def retry_queue_depth_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-retry-queue-depth", env, mailbox)


def retry_queue_age_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-retry-queue-age", env, mailbox)


def inbound_dlq_alarm(env: str) -> str:
    return f"ses-mail-inbound-dlq-depth-{check_env(env)}"


def retry_dlq_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    return per_mailbox("ses-mail-gmail-forwarder-retry-dlq-depth", env, mailbox)


def forwarder_errors_alarm(env: str) -> str:
    return f"ses-mail-gmail-forwarder-errors-{check_env(env)}"


def mailbox_refused_alarm(env: str, mailbox: str = DEFAULT_MAILBOX) -> str:
    """MailboxRefused >= 1: Gmail refuses the account or our setup; mail waits in the retry queue."""
    return per_mailbox("ses-mail-gmail-forwarder-mailbox-refused", env, mailbox)


def retry_processor_failed_alarm(env: str) -> str:
    return f"ses-mail-gmail-forwarder-retry-processor-failed-{check_env(env)}"


def retry_processor_timed_out_alarm(env: str) -> str:
    return f"ses-mail-gmail-forwarder-retry-processor-timed-out-{check_env(env)}"


def undelivered_found_alarm(env: str) -> str:
    """UndeliveredMailFound >= 1: a reconcile found (and delivered) mail the inbound path lost."""
    return f"ses-mail-undelivered-mail-found-{check_env(env)}"


def dashboard(env: str) -> str:
    """CloudWatch dashboard (names allow letters, digits, '-' and '_')."""
    return f"{PROJECT}-{check_env(env)}"


#: Metrics AWS services publish that the alarms and the dashboard read, spelled as AWS does.
AWS_SQS_NAMESPACE = "AWS/SQS"
AWS_LAMBDA_NAMESPACE = "AWS/Lambda"
AWS_STATES_NAMESPACE = "AWS/States"
SQS_QUEUE_DIMENSION = "QueueName"
LAMBDA_FUNCTION_DIMENSION = "FunctionName"
STATES_STATE_MACHINE_DIMENSION = "StateMachineArn"
SQS_MESSAGES_VISIBLE = "ApproximateNumberOfMessagesVisible"
SQS_OLDEST_MESSAGE_AGE = "ApproximateAgeOfOldestMessage"
LAMBDA_ERRORS = "Errors"
LAMBDA_DURATION = "Duration"
STATES_EXECUTIONS_FAILED = "ExecutionsFailed"
STATES_EXECUTIONS_TIMED_OUT = "ExecutionsTimedOut"

#: ``event`` values of the structured log lines the saved queries filter on. The forwarder and
#: the token library log them; tests check these constants match what they really write.
EVENT_DELIVERY_PARKED = "delivery.parked"
EVENT_PREFIX_TOKEN = "token."
EVENT_PREFIX_DELIVERY = "delivery."
EVENT_PREFIX_RETRY = "retry."
EVENT_TOKEN_MONITORED = "token.monitored"
EVENT_TOKEN_MONITOR_ERROR = "token.monitor_error"
#: The token monitor's decision about the retry queue, one line a run: started, skipped (``reason``
#: says why), or failed (ERROR, with ``failureClass``: the failures-by-class query counts it).
EVENT_RETRY_AUTOSTART = "retry.autostart"
EVENT_RETRY_AUTOSTART_SKIPPED = "retry.autostart_skipped"
EVENT_RETRY_AUTOSTART_FAILED = "retry.autostart_failed"


def log_query(env: str, title: str) -> str:
    """Saved Logs Insights query, in the console folder ``ses-mail-{env}``."""
    return f"{PROJECT}-{check_env(env)}/{title}"


LOG_QUERY_TOKEN_EVENTS = "token-events"
LOG_QUERY_PARKED_FOR_RETRY = "messages-parked-for-retry"
LOG_QUERY_FAILURES_BY_CLASS = "failures-by-class"
LOG_QUERY_MESSAGE_STORY = "message-story"
#: The last canaries' steps, from the canary's send to each mailbox's import (or where it stopped).
LOG_QUERY_CANARY_STORY = "canary-story"
#: What the operator replaces with an SES message id in the saved "message-story" query.
LOG_QUERY_MESSAGE_ID_PLACEHOLDER = "REPLACE-ME"
