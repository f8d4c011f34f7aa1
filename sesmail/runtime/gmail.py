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
from typing import Protocol
from urllib.parse import urlencode

from sesmail import names
from sesmail.runtime.errors import (
    GMAIL_INVALID_LABEL,
    MailboxRefusedError,
    PermanentError,
    SesMailError,
    TransientError,
    classify,
    classify_gmail_answer,
)
from sesmail.runtime.http import HttpClient, Response, parse_retry_after
from sesmail.runtime.tokens import AccessTokenProvider

UPLOAD_TIMEOUT_SECONDS = 60.0

#: Opens the message body anew for each attempt: (chunks, exact size in bytes).
BodyOpener = Callable[[], tuple[Iterable[bytes], int]]


@dataclass(frozen=True)
class ImportedMessage:
    gmail_id: str
    thread_id: str | None


def labels_for(is_spam: bool, extra: Sequence[str] = ()) -> list[str]:
    base = names.SPAM_LABELS if is_spam else names.DEFAULT_LABELS
    return list(dict.fromkeys([*base, *extra]))


class LabelIds(Protocol):
    """Turns configured label names or ids into the ids an import carries (:mod:`sesmail.runtime.labels`)."""

    def resolve(self, labels: Sequence[str]) -> list[str]: ...

    def stale(self, labels: Sequence[str]) -> bool:
        """After Gmail refused an id it resolved: forget the cache; True if resolving again may help."""
        ...


class _IdsOnly:
    """No resolver: every label is already an id (how the importer was used before label names)."""

    def resolve(self, labels: Sequence[str]) -> list[str]:
        return list(labels)

    def stale(self, labels: Sequence[str]) -> bool:
        return False


def authorized(tokens: AccessTokenProvider, send: Callable[[str], Response]) -> Response:
    """One Gmail call; a 401 is retried once with a freshly minted access token (Google's advice).

    One 401 is not a dead token: the refresh token is judged only by the token endpoint
    (``invalid_grant``). A second 401 in a row, on a token minted a moment ago, means Gmail
    refuses this account or client, which renewing the token would not fix.
    """
    detail = ""
    for _ in range(2):
        token = tokens.get()
        response = send(token.value)
        if response.status != 401:
            return response
        detail = _detail(response)
        tokens.forget(token)
    raise MailboxRefusedError(f"Gmail answered 401 to two access tokens in a row, the second just minted: {detail}")


class GmailImporter:
    def __init__(
        self, base_url: str, tokens: AccessTokenProvider, http: HttpClient, *, labels: LabelIds | None = None
    ) -> None:
        query = urlencode({"uploadType": "multipart", "internalDateSource": "dateHeader"})
        self._url = f"{base_url.rstrip('/')}{names.GMAIL_IMPORT_UPLOAD_PATH}?{query}"
        self._tokens = tokens
        self._http = http
        self._labels: LabelIds = labels or _IdsOnly()

    def import_message(self, open_body: BodyOpener, labels: Sequence[str]) -> ImportedMessage:
        """One import carrying ``labels`` (names or ids), resolved to ids just before the upload.

        A label id Gmail no longer knows (deleted in Gmail after this container cached it) is
        resolved once more from a fresh list, which recreates a missing label, and the upload is
        retried once; a second refusal stands (mailbox refused).
        """
        label_ids = self._labels.resolve(labels)
        try:
            return self._upload(open_body, label_ids)
        except MailboxRefusedError as refused:
            if GMAIL_INVALID_LABEL not in refused.reason or not self._labels.stale(labels):
                raise
        return self._upload(open_body, self._labels.resolve(labels))

    def _upload(self, open_body: BodyOpener, label_ids: Sequence[str]) -> ImportedMessage:
        return _result(authorized(self._tokens, lambda access_token: self._post(access_token, open_body, label_ids)))

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
    raise answer_error(response)


def answer_error(response: Response) -> SesMailError:
    """A non-2xx Gmail answer, classified by the one classifier (its detail and reasons extracted here)."""
    return classify_gmail_answer(
        response.status,
        _detail(response),
        reasons=answer_reasons(response),
        retry_after=parse_retry_after(response.header("Retry-After")),
    )


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


def answer_reasons(response: Response) -> frozenset[str]:
    """Google's ``errors[].reason`` values and its ``status`` (e.g. ``FAILED_PRECONDITION``)."""
    error = _error_body(response)
    errors = error.get("errors")
    reasons = {str(e.get("reason")) for e in errors if isinstance(e, dict)} if isinstance(errors, list) else set()
    if isinstance(error.get("status"), str):
        reasons.add(str(error["status"]))
    return frozenset(reasons)
