"""Lambda entry point of the renewal page (a function URL): function URL events in, responses out.

A thin adapter onto :mod:`sesmail.renewal.app`. Function URLs send payload format 2.0 events:
``requestContext.http.method``, ``rawPath``, ``rawQueryString`` (parsed here, so a parameter
given twice is seen as such rather than comma-joined as in ``queryStringParameters``),
``cookies`` (a list of ``name=value``; the ``Cookie`` header is not in ``headers``), lower-case
``headers`` and ``requestContext.domainName``. Responses are ``{"statusCode", "headers",
"cookies", "body", "isBase64Encoded": false}``: Lambda turns ``cookies`` into one ``Set-Cookie``
header each.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from sesmail.renewal import pages
from sesmail.renewal.app import RenewalApp, Request, Response, page_response
from sesmail.renewal.settings import NotConfigured, SecretsCache, Settings
from sesmail.runtime.aws import AwsClients
from sesmail.runtime.log import bound, get_logger

log = get_logger("sesmail.renewal")

#: More query parameters than this is not a request from Google or from the alert's link.
MAX_QUERY_FIELDS = 20
MAX_QUERY_CHARS = 4096

_app: RenewalApp | None = None


def app() -> RenewalApp:
    """The warm container's app (settings, AWS clients, secrets cache, keep-alive HTTP client)."""
    global _app
    if _app is None:
        settings = Settings.from_environ()
        clients = AwsClients()
        _app = RenewalApp(settings, clients, SecretsCache(clients.read_parameters, settings.env))
    return _app


def request_from_event(event: dict[str, Any]) -> Request:
    """The :class:`Request` of a function URL event; ``ValueError`` for a malformed query string."""
    context = event.get("requestContext") or {}
    http = context.get("http") or {}
    raw_query = str(event.get("rawQueryString") or "")
    if len(raw_query) > MAX_QUERY_CHARS:
        raise ValueError("query string too long")
    query = parse_qs(raw_query, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS)
    cookies: dict[str, str] = {}
    for item in event.get("cookies") or []:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if sep and name and name not in cookies:  # the first of two same-named cookies; both must verify anyway
            cookies[name] = value.strip()
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    return Request(
        method=str(http.get("method") or "").upper(),
        path=str(event.get("rawPath") or http.get("path") or "/"),
        query=query,
        cookies=cookies,
        domain=context.get("domainName"),
        source_ip=http.get("sourceIp"),
        user_agent=http.get("userAgent") or headers.get("user-agent"),
        request_id=context.get("requestId"),
    )


def to_event_response(response: Response) -> dict[str, Any]:
    return {
        "statusCode": response.status,
        "headers": dict(response.headers),
        "cookies": list(response.cookies),
        "body": response.body,
        "isBase64Encoded": False,
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", None)
    try:
        renewal = app()
    except NotConfigured as exc:
        log.error("the renewal page is not configured", extra={"event": "renewal.not_configured", "reason": str(exc)})
        page = pages.Page("ses-mail: not set up", "Renewal from a phone is not set up yet", (str(exc),), pages.TONE_BAD)
        return to_event_response(page_response(503, page))
    with bound(env=renewal.settings.env, requestId=request_id):
        try:
            request = request_from_event(event)
        except ValueError:
            log.info("refused a request", extra={"event": "renewal.rejected", "status": 400, "reason": "query"})
            page = pages.Page("ses-mail: bad request", "Bad request", ("The address is malformed.",), pages.TONE_BAD)
            return to_event_response(page_response(400, page))
        return to_event_response(renewal.handle(request))


def reset() -> None:
    """Forget the warm container's app (tests simulate a cold start)."""
    global _app
    _app = None
