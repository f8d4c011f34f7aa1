"""The renewal page's routes: start a consent, take Google's answer, show the outcome.

Independent of Lambda's event shapes (``handlers/renewal.py`` translates function URL events to
:class:`Request` and :class:`Response` back), so it can be served by anything.

Every answer carries :data:`sesmail.renewal.pages.SECURITY_HEADERS`. What is refused, and how:

- any method but GET: 405 with ``Allow: GET``; any other path: 404;
- an unknown mailbox (or one without ``gmailAddress``): 404, naming no mailbox that exists;
- at the callback: no flow cookie, a repeated or missing ``state``, a ``state`` other than the
  cookie's, a state already used: 400; a cookie whose signature does not match: 400 (and it is
  cleared); an expired flow: 400 with a link to start again;
- a consent by anyone but the mailbox's account, or an id token not issued by Google to our
  client or expired: refused, nothing written, the refusal audited.

The authorization code leaves the address bar at once: the callback always answers with a 303
(to ``/done``, whose outcome comes from a signed result cookie, never from the URL) or with a
400 page that used nothing. No code, token, state, verifier or cookie value is ever logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from sesmail import names
from sesmail.renewal import google, pages
from sesmail.renewal.audit import write_audit_record
from sesmail.renewal.cookies import (
    CookieExpired,
    CookieSigner,
    CookieTampered,
    Flow,
    Result,
    clear_cookie,
    new_state,
    pkce_challenge,
    pkce_verifier,
    set_cookie,
)
from sesmail.renewal.finish import ClientSource, Completion, Renewal, complete_renewal
from sesmail.renewal.identity import IdentityClaims
from sesmail.renewal.settings import (
    FLOW_COOKIE,
    FLOW_LIFETIME_SECONDS,
    RESULT_COOKIE,
    RESULT_LIFETIME_SECONDS,
    NotConfigured,
    Secrets,
    Settings,
)
from sesmail.renewal.token_store import StoreFailed, prove_token
from sesmail.runtime.http import HttpClient
from sesmail.runtime.log import get_logger, register_secret
from sesmail.runtime.mailboxes import Mailbox, queue_url_for
from sesmail.runtime.retry_run import queue_depth
from sesmail.runtime.tokens import RefreshToken, iso_utc

log = get_logger("sesmail.renewal")

# Outcomes shown by /done.
OUTCOME_RENEWED = "renewed"
OUTCOME_DENIED = "denied"
OUTCOME_REFUSED = "refused"
OUTCOME_FAILED = "failed"

#: A host name as Lambda puts it in ``requestContext.domainName`` (no scheme, path or spaces).
_DOMAIN_RE = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")
_USER_AGENT_LIMIT = 200
#: States remembered as used per warm container (each is remembered until its flow would expire).
_CONSUMED_LIMIT = 10_000

_TITLE = "ses-mail"


@dataclass(frozen=True)
class Request:
    """One HTTP request, as the routes need it."""

    method: str
    path: str
    #: Every value of every query parameter (a parameter given twice is refused where it matters).
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    #: ``requestContext.domainName``: the function URL's host.
    domain: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str = ""
    cookies: list[str] = field(default_factory=list)


class SecretsSource(Protocol):
    def get(self) -> Secrets: ...


class _Refusal(Exception):
    """A request answered with an error page before anything was used."""

    def __init__(self, status: int, reason: str, page: pages.Page, *, clear_flow: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.page = page
        self.clear_flow = clear_flow


def page_response(status: int, page: pages.Page, **headers: str) -> Response:
    return Response(status, pages.headers(**headers), pages.render(page))


def redirect(location: str, *, cookies: Sequence[str] = ()) -> Response:
    """A 303 (the browser follows it with a GET), with a tiny body for clients that do not follow."""
    body = pages.render(pages.Page(_TITLE, "Redirecting", ("Your browser should continue on its own.",)))
    return Response(303, pages.headers(Location=location), body, list(cookies))


class RenewalApp:
    """One per warm container: the settings, AWS clients, the secrets cache and a keep-alive HTTP client."""

    def __init__(
        self,
        settings: Settings,
        aws: ClientSource,
        secrets: SecretsSource,
        *,
        http: HttpClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._aws = aws
        self._secrets = secrets
        self._http = http or HttpClient()
        self._clock = clock
        self._consumed: dict[str, float] = {}

    # --- routing ---------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            if request.method != "GET":
                return self._reject(request, 405, "method", _page_method(), Allow="GET")
            if request.path == names.RENEWAL_START_PATH:
                return self._start(request)
            if request.path == names.RENEWAL_CALLBACK_PATH:
                return self._callback(request)
            if request.path == names.RENEWAL_RESULT_PATH:
                return self._done(request)
            return self._reject(request, 404, "path", _page_not_found())
        except _Refusal as refusal:
            response = self._reject(request, refusal.status, refusal.reason, refusal.page)
            if refusal.clear_flow:
                response.cookies.append(clear_cookie(FLOW_COOKIE))
            return response
        except NotConfigured as exc:
            log.error(
                "the renewal page is not configured", extra={"event": "renewal.not_configured", "reason": str(exc)}
            )
            return page_response(503, _page_not_configured(str(exc)))
        except Exception:
            log.exception("the renewal page failed", extra={"event": "renewal.error", "path": request.path})
            return page_response(500, _page_internal_error())

    def _reject(self, request: Request, status: int, reason: str, page: pages.Page, **headers: str) -> Response:
        log.info(
            "refused a request",
            extra={
                "event": "renewal.rejected",
                "status": status,
                "reason": reason,
                "method": request.method[:10],
                "path": request.path[:100],
                "sourceIp": request.source_ip,
            },
        )
        return page_response(status, page, **headers)

    # --- GET / -----------------------------------------------------------------------------------

    def _start(self, request: Request) -> Response:
        if _has(request, "code") or _has(request, "error") or _has(request, "state"):
            # Google came back to the root: the web client's redirect URI is registered without "callback".
            raise _Refusal(400, "callback-at-root", _page_callback_at_root(self._base_url(request)))
        name = _single(request, "mailbox") or names.DEFAULT_MAILBOX
        mailbox = self._mailbox(name)
        secrets = self._secrets.get()
        state = new_state()
        verifier = pkce_verifier(secrets.secret, state)
        url = google.authorization_url(
            secrets.client,
            redirect_uri=self._redirect_uri(request, secrets),
            state=state,
            code_challenge=pkce_challenge(verifier),
            login_hint=mailbox.gmail_address,
        )
        flow = Flow(state, mailbox.name, int(self._clock()) + FLOW_LIFETIME_SECONDS)
        cookie = CookieSigner(secrets.secret).seal(FLOW_COOKIE, flow.to_payload())
        log.info(
            "sent a browser to Google's consent",
            extra={"event": "renewal.started", "mailbox": mailbox.name, "sourceIp": request.source_ip},
        )
        return redirect(url, cookies=[set_cookie(FLOW_COOKIE, cookie, FLOW_LIFETIME_SECONDS)])

    def _mailbox(self, name: str) -> Mailbox:
        """The mailbox to renew; one that is unknown or has no Gmail address gets the same 404."""
        mailbox = None
        with contextlib.suppress(ValueError):
            mailbox = self.settings.mailboxes.get(names.check_mailbox(name))
        if mailbox is None or not mailbox.gmail_address:
            why = "unknown" if mailbox is None else "no gmailAddress configured (required for renewal from a phone)"
            log.warning(
                "no renewable mailbox by that name",
                extra={"event": "renewal.unknown_mailbox", "mailbox": name[:30], "reason": why},
            )
            raise _Refusal(404, "unknown-mailbox", _page_unknown_mailbox(name))
        return mailbox

    def _base_url(self, request: Request) -> str:
        if self.settings.base_url:
            return self.settings.base_url
        if not request.domain or not _DOMAIN_RE.fullmatch(request.domain):
            raise NotConfigured(
                "the request names no usable domain (requestContext.domainName); serve the page through its "
                "function URL, or set RENEWAL_BASE_URL"
            )
        return f"https://{request.domain}/"

    def _redirect_uri(self, request: Request, secrets: Secrets) -> str:
        uri = self._base_url(request) + names.RENEWAL_CALLBACK_PATH.lstrip("/")
        if secrets.client.redirect_uris and uri not in secrets.client.redirect_uris:
            log.warning(
                "the web client JSON does not list this redirect URI; Google will answer redirect_uri_mismatch "
                "unless it is registered",
                extra={"event": "renewal.redirect_uri_unregistered", "redirectUri": uri},
            )
        return uri

    # --- GET /callback ---------------------------------------------------------------------------

    def _callback(self, request: Request) -> Response:
        secrets = self._secrets.get()
        flow = self._flow(request, secrets)
        state = _single(request, "state")
        if not state:
            raise _Refusal(400, "state-missing", _page_bad_state())
        if not hmac.compare_digest(state.encode(), flow.state.encode()):
            # Not this browser's flow (an old tab, or someone else's link): keep the flow in progress.
            raise _Refusal(400, "state-mismatch", _page_bad_state())
        register_secret(state)
        if not self._consume(state, flow.expires):
            raise _Refusal(400, "state-replayed", _page_bad_state(), clear_flow=True)

        error = _single(request, "error")
        if error:
            return self._denied(request, flow, error)
        code = _single(request, "code")
        if not code:
            raise _Refusal(400, "code-missing", _page_bad_state(), clear_flow=True)
        register_secret(code)
        verifier = pkce_verifier(secrets.secret, state)
        register_secret(verifier)
        return self._renew(request, flow, secrets, code=code, verifier=verifier)

    def _flow(self, request: Request, secrets: Secrets) -> Flow:
        raw = request.cookies.get(FLOW_COOKIE)
        if not raw:
            raise _Refusal(400, "no-flow", _page_no_flow())
        try:
            return Flow.from_payload(CookieSigner(secrets.secret).open(FLOW_COOKIE, raw, now=self._clock()))
        except CookieExpired as expired:
            mailbox = expired.payload.get("m")
            start = _start_link(mailbox if isinstance(mailbox, str) else None)
            raise _Refusal(400, "flow-expired", _page_expired(start), clear_flow=True) from None
        except CookieTampered as tampered:
            raise _Refusal(
                400, f"cookie-{tampered.reason.replace(' ', '-')}", _page_tampered(), clear_flow=True
            ) from None

    def _consume(self, state: str, expires: int) -> bool:
        """Remember ``state`` as used until its flow expires; False if it already was."""
        now = self._clock()
        self._consumed = {k: v for k, v in self._consumed.items() if v > now}
        key = hashlib.sha256(state.encode()).hexdigest()
        if key in self._consumed:
            return False
        if len(self._consumed) >= _CONSUMED_LIMIT:
            self._consumed.pop(next(iter(self._consumed)))
        self._consumed[key] = float(expires)
        return True

    def _denied(self, request: Request, flow: Flow, error: str) -> Response:
        code = google.safe_code(error)
        outcome = OUTCOME_DENIED if code == "access_denied" else OUTCOME_FAILED
        log.info(
            "Google answered without a grant", extra={"event": "renewal.denied", "mailbox": flow.mailbox, "error": code}
        )
        notes = () if outcome == OUTCOME_DENIED else (f"google:{code}",)
        return self._to_result(Result(flow.mailbox, outcome, self._result_expiry(), notes=notes))

    def _renew(self, request: Request, flow: Flow, secrets: Secrets, *, code: str, verifier: str) -> Response:
        mailbox = self.settings.mailboxes.get(flow.mailbox)
        if mailbox is None or not mailbox.gmail_address:  # the table changed while the person consented
            return self._failed(flow, "mailbox", "the mailbox is no longer renewable here")
        client = secrets.client
        try:
            grant = google.exchange_code(
                self._http, client, code=code, redirect_uri=self._redirect_uri(request, secrets), verifier=verifier
            )
        except google.ExchangeFailed as exc:
            return self._failed(flow, f"exchange:{exc.code}", exc.reason)

        claims = grant.identity()
        problem = google.identity_problem(
            claims, client_id=client.client_id, expected=mailbox.gmail_address, now=self._clock()
        )
        if problem is not None:
            return self._refused(request, flow, claims, problem, client.client_id)
        account = claims.email if claims is not None else None
        missing = grant.missing_scopes()
        if missing:
            return self._failed(flow, "scopes", f"the consent left out {', '.join(missing)}", account=account)

        token, lifetime_source = self._token(grant)
        try:
            proven = prove_token(self._http, client, token)
        except Exception as exc:
            return self._failed(
                flow, "proof", f"the new token could not mint an access token ({_describe(exc)})", account=account
            )
        renewal = Renewal(
            env=self.settings.env,
            mailbox=mailbox.name,
            source=names.RENEWAL_SOURCE,
            who=account or "unknown",
            google_account=account,
            lifetime_source=lifetime_source,
            audit_fields=_request_fields(request),
        )
        try:
            completion = complete_renewal(
                self._aws,
                proven,
                renewal,
                state_machine_arn=self.settings.state_machine_arn,
                trigger=names.RENEWAL_SOURCE,
            )
        except StoreFailed as exc:
            reason = f"storing failed ({_describe(exc.cause)}); unrestored: {', '.join(exc.unrestored) or 'none'}"
            return self._failed(flow, "store", reason, account=account)
        self._log_completion(mailbox.name, account, completion)
        result = Result(
            mailbox=mailbox.name,
            outcome=OUTCOME_RENEWED,
            expires=self._result_expiry(),
            account=account,
            execution_arn=completion.execution_arn,
            token_expires_at=iso_utc(completion.token.expires_at),
            notes=completion.notes + (("no-drain",) if completion.drain_skipped else ()),
        )
        return self._to_result(result)

    def _token(self, grant: google.CodeGrant) -> tuple[RefreshToken, str]:
        if grant.refresh_token_expires_in is not None:
            lifetime: timedelta | None = timedelta(seconds=grant.refresh_token_expires_in)
            source = "from Google's refresh_token_expires_in"
        elif self.settings.lifetime_days == 0:
            lifetime, source = None, "tokenLifetimeDays 0 (no expiry)"
        else:
            lifetime = timedelta(days=self.settings.lifetime_days)
            source = f"Google sent no lifetime, so tokenLifetimeDays {self.settings.lifetime_days} applies"
        now = datetime.fromtimestamp(self._clock(), UTC)
        return RefreshToken.issued_now(grant.refresh_token, lifetime=lifetime, scopes=grant.scopes, now=now), source

    def _log_completion(self, mailbox: str, account: str | None, completion: Completion) -> None:
        for step, error in (
            ("metric", completion.metric_error),
            ("audit", completion.audit_error),
            ("drain", completion.drain_error),
        ):
            if error is not None:
                log.error(
                    f"the token is stored, but the {step} step failed; the token monitor covers for it within 15 "
                    "minutes",
                    extra={
                        "event": "renewal.step_failed",
                        "mailbox": mailbox,
                        "step": step,
                        "reason": _describe(error),
                    },
                )
        log.info(
            "renewed a mailbox's Gmail token",
            extra={
                "event": "renewal.renewed",
                "mailbox": mailbox,
                "googleAccount": account,
                "parameters": [{"name": p.name, "version": p.version} for p in completion.stored.parameters],
                "executionArn": completion.execution_arn,
                "auditStream": completion.audit_stream,
            },
        )

    def _refused(
        self, request: Request, flow: Flow, claims: IdentityClaims | None, problem: str, client_id: str
    ) -> Response:
        """Another account (or an id token we cannot trust): nothing is written but the audit record."""
        account = claims.email if claims is not None else None
        log.warning(
            "refused a consent: it does not prove the mailbox's account",
            extra={"event": "renewal.refused", "mailbox": flow.mailbox, "reason": problem, "googleAccount": account},
        )
        record = {
            "action": names.AUDIT_ACTION_RENEWAL_REFUSED,
            "who": account or "unknown",
            "google_account": account,
            "email_verified": claims.email_verified if claims is not None else None,
            "issuer": claims.issuer if claims is not None else None,
            "env": self.settings.env,
            "mailbox": flow.mailbox,
            "source": names.RENEWAL_SOURCE,
            "reason": problem,
            "client_id": client_id,
            "when": iso_utc(datetime.fromtimestamp(self._clock(), UTC)),
            **_request_fields(request),
        }
        try:
            write_audit_record(self._aws.get("logs"), self.settings.env, record)
        except Exception as exc:
            log.error(
                "the refusal could not be audited", extra={"event": "renewal.audit_failed", "reason": _describe(exc)}
            )
        return self._to_result(
            Result(flow.mailbox, OUTCOME_REFUSED, self._result_expiry(), account=account, notes=(problem,))
        )

    def _failed(self, flow: Flow, step: str, reason: str, *, account: str | None = None) -> Response:
        log.error(
            "the renewal failed; nothing was stored",
            extra={"event": "renewal.failed", "mailbox": flow.mailbox, "step": step, "reason": reason},
        )
        return self._to_result(
            Result(flow.mailbox, OUTCOME_FAILED, self._result_expiry(), account=account, notes=(step,))
        )

    def _result_expiry(self) -> int:
        return int(self._clock()) + RESULT_LIFETIME_SECONDS

    def _to_result(self, result: Result) -> Response:
        """303 to /done, the flow cookie cleared and the outcome in a signed cookie (never in the URL)."""
        sealed = CookieSigner(self._secrets.get().secret).seal(RESULT_COOKIE, result.to_payload())
        return redirect(
            names.RENEWAL_RESULT_PATH,
            cookies=[clear_cookie(FLOW_COOKIE), set_cookie(RESULT_COOKIE, sealed, RESULT_LIFETIME_SECONDS)],
        )

    # --- GET /done -------------------------------------------------------------------------------

    def _done(self, request: Request) -> Response:
        raw = request.cookies.get(RESULT_COOKIE)
        if not raw:
            return page_response(200, _page_no_result())
        secrets = self._secrets.get()
        try:
            result = Result.from_payload(CookieSigner(secrets.secret).open(RESULT_COOKIE, raw, now=self._clock()))
        except CookieExpired:
            response = page_response(200, _page_no_result())
            response.cookies.append(clear_cookie(RESULT_COOKIE))
            return response
        except CookieTampered:
            response = self._reject(request, 400, "result-cookie-tampered", _page_tampered())
            response.cookies.append(clear_cookie(RESULT_COOKIE))
            return response
        depth = self._depth(result.mailbox) if result.outcome == OUTCOME_RENEWED else None
        return page_response(200, result_page(result, depth))

    def _depth(self, mailbox: str) -> int | None:
        """Messages in the mailbox's retry queue, or None when that cannot be told."""
        if not self.settings.retry_queue_url:
            return None
        try:
            url = queue_url_for(self.settings.retry_queue_url, self.settings.env, mailbox)
            return queue_depth(self._aws.get("sqs"), url)
        except Exception as exc:
            log.warning(
                "could not read the retry queue's depth",
                extra={"event": "renewal.depth_unknown", "mailbox": mailbox, "reason": _describe(exc)},
            )
            return None


# --- helpers -----------------------------------------------------------------------------------------


def _has(request: Request, name: str) -> bool:
    return name in request.query


def _single(request: Request, name: str) -> str | None:
    """The one value of a query parameter; a parameter given twice is refused as malformed."""
    values = request.query.get(name) or ()
    if len(values) > 1:
        raise _Refusal(400, f"repeated-{name}", _page_malformed())
    return values[0] if values else None


def _request_fields(request: Request) -> dict[str, Any]:
    return {
        "source_ip": request.source_ip,
        "user_agent": (request.user_agent or "")[:_USER_AGENT_LIMIT] or None,
        "request_id": request.request_id,
    }


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason if isinstance(reason, str) else exc}"[:300]


def _start_link(mailbox: str | None) -> str:
    try:
        name = names.check_mailbox(mailbox or names.DEFAULT_MAILBOX)
    except ValueError:
        name = names.DEFAULT_MAILBOX
    return (
        names.RENEWAL_START_PATH
        if name == names.DEFAULT_MAILBOX
        else f"{names.RENEWAL_START_PATH}?mailbox={quote(name)}"
    )


def console_execution_url(execution_arn: str) -> str | None:
    """The Step Functions console page of an execution, or None for an ARN it cannot place."""
    parts = execution_arn.split(":")
    if len(parts) < 8 or parts[2] != "states" or parts[5] != "execution":
        return None
    partition, region = parts[1], parts[3]
    hosts = {
        "aws": f"{region}.console.aws.amazon.com",
        "aws-cn": "console.amazonaws.cn",
        "aws-us-gov": "console.amazonaws-us-gov.com",
    }
    host = hosts.get(partition)
    if host is None or not re.fullmatch(r"[a-z0-9-]+", region):
        return None
    return f"https://{host}/states/home?region={region}#/v2/executions/details/{quote(execution_arn, safe=':')}"


# --- pages -------------------------------------------------------------------------------------------

_START_AGAIN = "Open the renewal link from the alert again to start over."


def result_page(result: Result, depth: int | None) -> pages.Page:
    """What /done shows for a result."""
    facts: list[tuple[str, str]] = [("Mailbox", result.mailbox)]
    links: list[pages.Link] = []
    again = pages.Link("Start again", _start_link(result.mailbox))
    if result.outcome == OUTCOME_RENEWED:
        facts.append(("Outcome", "renewed"))
        if result.account:
            facts.append(("Google account", result.account))
        facts.append(("Token valid until", _when(result.token_expires_at)))
        waiting = "unknown" if depth is None else f"{depth} message{'s' if depth != 1 else ''}"
        facts.append(("Mail on its way", waiting))
        paragraphs = [_renewed_text(result, depth)]
        if "audit" in result.notes or "metric" in result.notes:
            paragraphs.append("Some bookkeeping after storing did not work; the function's log says which.")
        console = console_execution_url(result.execution_arn) if result.execution_arn else None
        if console:
            links.append(pages.Link("Watch the delivery (Step Functions console)", console))
        links.append(pages.Link("Check again", names.RENEWAL_RESULT_PATH))
        return pages.Page(f"{_TITLE}: renewed", "Gmail token renewed", paragraphs, pages.TONE_GOOD, facts, links)
    if result.outcome == OUTCOME_DENIED:
        facts.append(("Outcome", "consent denied"))
        text: tuple[str, ...] = (
            "Google says access was not allowed, so nothing was renewed. Start again and choose Allow.",
        )
        return pages.Page(f"{_TITLE}: denied", "Consent denied", text, pages.TONE_BAD, facts, [again])
    if result.outcome == OUTCOME_REFUSED:
        facts.append(("Outcome", "refused"))
        if result.account:
            facts.append(("Google account used", result.account))
        text = (
            "The consent did not come from the Google account this mailbox belongs to, so nothing was stored. "
            "Start again and pick the mailbox's account on Google's account screen.",
        )
        return pages.Page(f"{_TITLE}: refused", "Not this mailbox's account", text, pages.TONE_BAD, facts, [again])
    facts.append(("Outcome", "failed"))
    step = result.notes[0] if result.notes else "unknown"
    facts.append(("Failed at", step))
    text = (_failure_text(step), "Nothing was stored: the old token (if it still works) stays in place.")
    return pages.Page(f"{_TITLE}: failed", "Renewal failed", text, pages.TONE_BAD, facts, [again])


def _renewed_text(result: Result, depth: int | None) -> str:
    if result.execution_arn is None:
        return (
            "The new token is stored. The retry processor could not be started from here; the token monitor "
            "starts it within 15 minutes, so parked mail is still delivered."
        )
    if depth == 0:
        return "The new token is stored and works. No parked mail is waiting."
    return "The new token is stored and works. The retry processor is delivering the parked mail now."


def _failure_text(step: str) -> str:
    if step.startswith("exchange:"):
        return "Google did not accept the sign-in (it may have been used already or be too old)."
    if step.startswith("google:"):
        return f"Google answered with an error ({step.partition(':')[2]}) instead of a consent."
    return {
        "scopes": "A permission this needs was unticked on Google's consent screen; leave every box ticked.",
        "proof": "Google issued a token, but it did not work when tried.",
        "store": "The new token could not be saved; the previous values were put back.",
        "mailbox": "This mailbox can no longer be renewed here.",
    }.get(step, "Something went wrong.")


def _when(iso: str | None) -> str:
    return "no expiry" if iso is None else iso.replace("T", " ").replace("Z", " UTC")


def _page_method() -> pages.Page:
    return pages.Page(
        f"{_TITLE}: not allowed", "Method not allowed", ("This page only answers GET requests.",), pages.TONE_BAD
    )


def _page_not_found() -> pages.Page:
    return pages.Page(f"{_TITLE}: not found", "Not found", ("There is nothing at this address.",), pages.TONE_BAD)


def _page_unknown_mailbox(name: str) -> pages.Page:
    return pages.Page(
        f"{_TITLE}: no such mailbox",
        "No such mailbox",
        (f"There is no mailbox {name[:30]!r} that can be renewed here. Check the link in the alert.",),
        pages.TONE_BAD,
    )


def _page_callback_at_root(base_url: str) -> pages.Page:
    return pages.Page(
        f"{_TITLE}: wrong redirect URI",
        "Google came back to the wrong address",
        (
            "The OAuth client's redirect URI must end in /callback. In Google Cloud's console, register "
            f"{base_url}callback as the web client's redirect URI, then start again.",
        ),
        pages.TONE_BAD,
    )


def _page_no_flow() -> pages.Page:
    return pages.Page(
        f"{_TITLE}: no renewal in progress",
        "No renewal in progress in this browser",
        (
            "This answer from Google does not belong to a renewal started in this browser, so it was ignored.",
            _START_AGAIN,
        ),
        pages.TONE_BAD,
    )


def _page_bad_state() -> pages.Page:
    return pages.Page(
        f"{_TITLE}: not our request",
        "Not the renewal this browser started",
        (
            "This answer from Google does not match the renewal in progress (an old tab, a used link, or a link from "
            "someone else), so nothing was renewed.",
            _START_AGAIN,
        ),
        pages.TONE_BAD,
    )


def _page_tampered() -> pages.Page:
    return pages.Page(
        f"{_TITLE}: invalid cookie",
        "This browser's renewal cookie is not valid",
        ("It was altered, or the page's secret changed since it was set. Nothing was renewed.", _START_AGAIN),
        pages.TONE_BAD,
    )


def _page_expired(start: str) -> pages.Page:
    minutes = FLOW_LIFETIME_SECONDS // 60
    return pages.Page(
        f"{_TITLE}: expired",
        "This renewal expired",
        (f"A renewal must be finished within {minutes} minutes. Nothing was renewed; start again.",),
        pages.TONE_BAD,
        links=(pages.Link("Start again", start),),
    )


def _page_malformed() -> pages.Page:
    return pages.Page(f"{_TITLE}: bad request", "Bad request", ("The address is malformed.",), pages.TONE_BAD)


def _page_no_result() -> pages.Page:
    minutes = RESULT_LIFETIME_SECONDS // 60
    return pages.Page(
        f"{_TITLE}: nothing to show",
        "Nothing to show",
        (f"This page shows the outcome of a renewal made in this browser, for {minutes} minutes.",),
    )


def _page_not_configured(reason: str) -> pages.Page:
    return pages.Page(f"{_TITLE}: not set up", "Renewal from a phone is not set up yet", (reason,), pages.TONE_BAD)


def _page_internal_error() -> pages.Page:
    return pages.Page(
        f"{_TITLE}: error",
        "Something went wrong",
        (
            "The renewal page failed; its log in CloudWatch says why. Nothing was renewed unless a later page says so. "
            "Renew from a terminal with python -m sesmail.refresh if this persists.",
        ),
        pages.TONE_BAD,
    )
