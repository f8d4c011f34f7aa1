"""Import a raw message into Gmail through the upload endpoint, streaming its body.

``users.messages.import`` (not ``send``) keeps the original headers, authentication results
and date. The multipart/related upload carries the label metadata and the message bytes
unchanged; the JSON ``raw`` route would base64-inflate the message by a third, past Gmail's
limit for big mail, and hold it all in memory.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from sesmail import names
from sesmail.errors import PermanentError, TokenExpiredError, TransientError, classify, classify_http_status
from sesmail.http import HttpClient, Response, parse_retry_after
from sesmail.tokens import AccessTokenProvider

UPLOAD_TIMEOUT_SECONDS = 60.0

#: Opens the message body anew for each attempt: (chunks, exact size in bytes).
BodyOpener = Callable[[], tuple[Iterable[bytes], int]]

# 403 reasons that mean "slow down" rather than "you may not".
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"})


@dataclass(frozen=True)
class ImportedMessage:
    gmail_id: str
    thread_id: str | None


def labels_for(is_spam: bool, extra: Sequence[str] = ()) -> list[str]:
    base = names.SPAM_LABELS if is_spam else names.DEFAULT_LABELS
    return list(dict.fromkeys([*base, *extra]))


class GmailImporter:
    def __init__(self, base_url: str, tokens: AccessTokenProvider, http: HttpClient) -> None:
        query = urlencode({"uploadType": "multipart", "internalDateSource": "dateHeader"})
        self._url = f"{base_url.rstrip('/')}{names.GMAIL_IMPORT_UPLOAD_PATH}?{query}"
        self._tokens = tokens
        self._http = http

    def import_message(self, open_body: BodyOpener, labels: Sequence[str]) -> ImportedMessage:
        """One import; a 401 on a cached access token is retried once with a fresh one."""
        for _ in range(2):
            token = self._tokens.get()
            response = self._post(token.value, open_body, labels)
            if response.status != 401:
                return _result(response)
            self._tokens.reject(token, _detail(response))  # raises TokenExpiredError if it was fresh
        raise TokenExpiredError("Gmail rejected two access tokens in a row")  # pragma: no cover

    def _post(self, access_token: str, open_body: BodyOpener, labels: Sequence[str]) -> Response:
        boundary = f"sesmail-{secrets.token_hex(24)}"
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps({'labelIds': list(labels)})}\r\n"
            f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        try:
            chunks, size = open_body()
        except Exception as exc:
            raise classify(exc) from None
        if size > names.GMAIL_MAX_MESSAGE_BYTES:
            raise PermanentError(f"message is {size} bytes; Gmail imports at most {names.GMAIL_MAX_MESSAGE_BYTES}")
        if size == 0:
            raise PermanentError("message is empty")
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": f"multipart/related; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
            "Accept": "application/json",
        }
        try:
            return self._http.request(
                "POST",
                self._url,
                headers=headers,
                body=_framed(head, chunks, size, tail),
                timeout=UPLOAD_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            raise classify(exc) from None


def _framed(head: bytes, chunks: Iterable[bytes], size: int, tail: bytes) -> Iterator[bytes]:
    yield head
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            break
        yield chunk
    if sent != size:
        # Sending the tail now would submit a corrupted message under a valid length.
        raise TransientError(f"message body was {sent} bytes, expected {size}")
    yield tail


def _result(response: Response) -> ImportedMessage:
    if 200 <= response.status < 300:
        try:
            payload = json.loads(response.body)
            return ImportedMessage(str(payload["id"]), payload.get("threadId"))
        except (ValueError, KeyError, TypeError):
            raise TransientError("Gmail answered success without a message id") from None
    detail = _detail(response)
    retry_after = parse_retry_after(response.header("Retry-After"))
    if response.status == 403:
        if _reasons(response) & _RATE_LIMIT_REASONS:
            raise TransientError(f"Gmail rate limit (403): {detail}", retry_after=retry_after)
        # Missing scope, API not enabled, account suspended: credentials an operator must fix.
        raise TokenExpiredError(f"Gmail refused the credentials (403): {detail}")
    raise classify_http_status(response.status, detail, retry_after=retry_after)


def _error_body(response: Response) -> dict[str, object]:
    try:
        payload = json.loads(response.body)
    except ValueError:
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def _detail(response: Response) -> str:
    error = _error_body(response)
    message = error.get("message") or response.body[:200].decode("utf-8", "replace")
    status = error.get("status")
    return f"{status}: {message}" if status else str(message)


def _reasons(response: Response) -> set[str]:
    errors = _error_body(response).get("errors")
    if not isinstance(errors, list):
        return set()
    return {str(e.get("reason")) for e in errors if isinstance(e, dict)}
