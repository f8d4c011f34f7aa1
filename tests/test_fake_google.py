"""Tests of the fake Google itself, over real HTTP with the standard library's clients.

The forwarder and refresh-CLI tests trust this fake to behave like Google; these tests pin
the behaviours they rely on, so a regression in the fake cannot make those tests lie.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from sesmail.local.google import (
    GMAIL_INSERT_SCOPE,
    IMPORT_PATH,
    IMPORT_QUOTA_UNITS,
    LABELS_CREATE_QUOTA_UNITS,
    LABELS_LIST_QUOTA_UNITS,
    LABELS_PATH,
    MAX_MESSAGE_BYTES,
    SYSTEM_LABELS,
    FakeGoogle,
    LabelCall,
)

BOUNDARY = "b0und4ry-fake"
QUERY = "uploadType=multipart&internalDateSource=dateHeader&neverMarkSpam=true"
# CRLF, bare LF, lone CR, NUL, 8-bit bytes, a near-miss of the delimiter, trailing blank line.
TRICKY_RAW = (
    b"From: a@example.com\r\nSubject: caf\xc3\xa9\r\n\r\n"
    b"crlf line\r\nbare lf line\nlone cr\r in the middle \x00\xff\xfe\x80\r\n"
    b"--b0und4ry-fak is one byte short of the boundary\r\n\r\n"
)

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


# --- helpers ---------------------------------------------------------------------------------


def _connection(fake: FakeGoogle, timeout: float = 10) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", urlsplit(fake.base_url).port, timeout=timeout)


def _request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def _post_token(fake: FakeGoogle, **fields: str) -> tuple[int, dict[str, Any]]:
    """POST /token with urllib, as a plain client would; client credentials by default."""
    form = {"client_id": fake.client_id, "client_secret": fake.client_secret, **fields}
    request = urllib.request.Request(
        fake.token_uri,
        data=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _access_token(fake: FakeGoogle, refresh_token: str | None = None) -> str:
    status, payload = _post_token(
        fake, grant_type="refresh_token", refresh_token=refresh_token or fake.issue_refresh_token()
    )
    assert status == 200, payload
    return str(payload["access_token"])


def _frame(metadata: object, boundary: str = BOUNDARY) -> tuple[bytes, bytes]:
    """What goes before and after the raw message in a multipart/related import body."""
    head = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(metadata)}"
        f"\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
    )
    return head.encode(), f"\r\n--{boundary}--".encode()


def _multipart(
    raw: bytes, labels: list[str] | None = None, boundary: str = BOUNDARY, *, metadata: object = None
) -> bytes:
    """An import body; ``metadata`` (any JSON value) replaces the usual ``{"labelIds": ...}``."""
    if metadata is None:
        metadata = {"labelIds": labels if labels is not None else ["INBOX", "UNREAD"]}
    head, tail = _frame(metadata, boundary)
    return head + raw + tail


def _import(
    conn: http.client.HTTPConnection,
    token: str,
    body: bytes | Iterable[bytes],
    *,
    query: str = QUERY,
    content_type: str = f'multipart/related; boundary="{BOUNDARY}"',
) -> Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    if isinstance(body, bytes):
        headers["Content-Length"] = str(len(body))
    return _request(conn, "POST", f"{IMPORT_PATH}?{query}", body, headers)


def _error(body: bytes) -> dict[str, Any]:
    """The ``error`` object of a Gmail error response, after checking it has Google's envelope."""
    payload = json.loads(body)
    assert set(payload) == {"error"}
    error: dict[str, Any] = payload["error"]
    assert set(error) - {"details"} == {"code", "message", "errors", "status"}, error
    assert isinstance(error["code"], int) and error["message"] and error["status"].isupper()
    [item] = error["errors"]
    assert set(item) <= {"message", "domain", "reason", "location", "locationType"}, item
    assert item["message"] and item["reason"], item
    return error


def _consent(fake: FakeGoogle, **overrides: str) -> dict[str, list[str]]:
    """GET the consent URL without following the redirect; the redirect's query params."""
    params = {
        "client_id": fake.client_id,
        "redirect_uri": "http://127.0.0.1:8765/",
        "response_type": "code",
        "scope": "https://www.googleapis.com/auth/gmail.insert",
        "state": "st4te",
        "access_type": "offline",
        "prompt": "consent",
        **overrides,
    }
    status, headers, _ = _request(_connection(fake), "GET", f"/o/oauth2/auth?{urlencode(params)}")
    assert status == 302
    location = urlsplit(headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"].split("?")[0]
    return parse_qs(location.query)


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


# --- token endpoint --------------------------------------------------------------------------


def test_refresh_token_grant_mints_a_bearer_token(google: FakeGoogle) -> None:
    refresh_token = google.issue_refresh_token()

    status, payload = _post_token(google, grant_type="refresh_token", refresh_token=refresh_token)

    assert status == 200
    assert payload["access_token"].startswith("ya29.")
    assert payload["expires_in"] == 3599
    assert payload["token_type"] == "Bearer"
    assert payload["scope"] == "https://www.googleapis.com/auth/gmail.insert"
    assert google.token_requests == [
        {
            "client_id": google.client_id,
            "client_secret": google.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        }
    ]


def test_wrong_client_secret_is_invalid_client(google: FakeGoogle) -> None:
    status, payload = _post_token(
        google, client_secret="nope", grant_type="refresh_token", refresh_token=google.issue_refresh_token()
    )

    assert (status, payload["error"]) == (401, "invalid_client")


def test_unknown_grant_type_is_unsupported(google: FakeGoogle) -> None:
    status, payload = _post_token(google, grant_type="password")

    assert (status, payload["error"]) == (400, "unsupported_grant_type")


def test_revoke_kills_the_refresh_token_and_its_access_tokens(google: FakeGoogle) -> None:
    refresh_token = google.issue_refresh_token()
    access_token = _access_token(google, refresh_token)
    other_access_token = _access_token(google)  # from another grant: must survive

    google.revoke(refresh_token)

    status, payload = _post_token(google, grant_type="refresh_token", refresh_token=refresh_token)
    assert status == 400
    assert payload == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    conn = _connection(google)
    status, headers, body = _import(conn, access_token, _multipart(b"Subject: x\r\n\r\nhi\r\n"))
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="https://accounts.google.com/"'
    assert _error(body) == {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
        "or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/"
        "devconsole-project.",
        "errors": [
            {
                "message": "Invalid Credentials",
                "domain": "global",
                "reason": "authError",
                "location": "Authorization",
                "locationType": "header",
            }
        ],
        "status": "UNAUTHENTICATED",
    }
    assert _import(conn, other_access_token, _multipart(b"Subject: x\r\n\r\nhi\r\n"))[0] == 200
    assert google.issued_access_tokens() == [access_token, other_access_token]


def test_access_tokens_expire_after_their_lifetime_or_on_demand(google: FakeGoogle) -> None:
    conn, body = _connection(google), _multipart(b"Subject: x\r\n\r\nhi\r\n")
    aged = _access_token(google)
    google.advance_time(3599)
    expired_on_demand = _access_token(google)
    google.expire_access_tokens()

    assert _import(conn, aged, body)[0] == 401
    assert _import(conn, expired_on_demand, body)[0] == 401
    assert _import(conn, _access_token(google), body)[0] == 200


# --- Gmail import ----------------------------------------------------------------------------


@pytest.mark.parametrize("store_bodies", [True, False])
@pytest.mark.parametrize("chunked", [False, True])
def test_import_keeps_the_message_byte_exact(store_bodies: bool, chunked: bool) -> None:
    with FakeGoogle(store_bodies=store_bodies) as google:
        token = _access_token(google)
        label = google.add_label("Receipts")
        body = _multipart(TRICKY_RAW, ["INBOX", "UNREAD", label])
        sent: bytes | Iterable[bytes] = body
        if chunked:  # odd 7-byte chunks split every CRLF and delimiter somewhere
            sent = iter([body[i : i + 7] for i in range(0, len(body), 7)])
        conn = _connection(google)

        first = _import(conn, token, sent)
        socket_after_first = conn.sock
        second = _import(conn, token, _multipart(b"Subject: 2\r\n\r\nsecond"))

        assert first[0] == 200, first[2]
        assert second[0] == 200, second[2]
        assert conn.sock is socket_after_first  # keep-alive: one connection for both
        payload = json.loads(first[2])
        message = google.messages[0]
        assert payload == {"id": message.id, "threadId": message.thread_id, "labelIds": ["INBOX", "UNREAD", label]}
        assert len(message.id) == 16 and int(message.id, 16) >= 0
        assert message.raw == (TRICKY_RAW if store_bodies else None)
        assert message.size == len(TRICKY_RAW)
        assert message.sha256 == hashlib.sha256(TRICKY_RAW).hexdigest()
        assert message.label_ids == ["INBOX", "UNREAD", label]
        assert message.params == {
            "uploadType": "multipart",
            "internalDateSource": "dateHeader",
            "neverMarkSpam": "true",
        }
        assert message.access_token == token
        assert google.import_requests == 2


def test_import_accepts_trailing_crlf_after_close_delimiter(google: FakeGoogle) -> None:
    status, _, _ = _import(_connection(google), _access_token(google), _multipart(TRICKY_RAW) + b"\r\n")

    assert status == 200
    assert google.messages[0].raw == TRICKY_RAW


_RAW = b"Subject: x\r\n\r\nbody\r\n"
_GOOD = _multipart(_RAW)


@pytest.mark.parametrize(
    ("body", "query", "content_type"),
    [
        pytest.param(_GOOD[: -len("--")], QUERY, None, id="no-close-delimiter"),
        pytest.param(_GOOD.split(b"\r\n--" + BOUNDARY.encode() + b"\r\n")[0], QUERY, None, id="metadata-only"),
        pytest.param(_multipart(b""), QUERY, None, id="empty-message"),
        pytest.param(_multipart(b"a\r\n--" + BOUNDARY.encode() + b"\r\nb"), QUERY, None, id="boundary-in-message"),
        # RFC 2046: no line of a part may even start with the delimiter
        pytest.param(_multipart(b"a\r\n--" + BOUNDARY.encode() + b"X\r\n"), QUERY, None, id="boundary-prefix"),
        pytest.param(_GOOD.replace(b"message/rfc822", b"text/plain"), QUERY, None, id="wrong-media-type"),
        pytest.param(_GOOD.replace(b'{"labelIds"', b'{labelIds"'), QUERY, None, id="bad-json"),
        pytest.param(_multipart(_RAW, ["my-label"]), QUERY, None, id="unknown-label"),
        pytest.param(_GOOD.replace(b"\r\n", b"\n"), QUERY, None, id="lf-delimiters"),
        pytest.param(_GOOD, "uploadType=media", None, id="not-multipart-upload"),
        pytest.param(_GOOD, QUERY + "&internalDateSource=bogus", None, id="bad-internal-date-source"),
        pytest.param(_GOOD, QUERY, "message/rfc822", id="not-multipart-content-type"),
    ],
)
def test_malformed_import_is_invalid_argument(
    google: FakeGoogle, body: bytes, query: str, content_type: str | None
) -> None:
    token = _access_token(google)
    kwargs = {"content_type": content_type} if content_type else {}

    status, _, response = _import(_connection(google), token, body, query=query, **kwargs)

    assert status == 400
    assert _error(response)["status"] == "INVALID_ARGUMENT"
    assert google.messages == []
    assert google.import_requests == 1


# --- at least as strict as Gmail (DESIGN.md "Proven against the real rules") ----------------
# Each test below sends a request today's Gmail refuses (or, for the "accepted" ones, a request it
# takes) and pins the answer, source and shape included; sesmail/local/google.py cites the sources.


def _refused(google: FakeGoogle, body: bytes, query: str = QUERY, content_type: str | None = None) -> dict[str, Any]:
    """Import once with a fresh token; the error object of the 400 that must come back."""
    kwargs = {"content_type": content_type} if content_type else {}
    status, _, response = _import(_connection(google), _access_token(google), body, query=query, **kwargs)
    assert status == 400, response
    assert google.messages == []
    return _error(response)


def _parse_failure(message: str, field: str) -> dict[str, Any]:
    """Google's answer to a request its front end cannot bind: reason "invalid", no domain."""
    return {
        "code": 400,
        "message": message,
        "errors": [{"message": message, "reason": "invalid"}],
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": message}],
            }
        ],
    }


def test_a_user_label_exists_only_once_created(google: FakeGoogle) -> None:
    token, conn = _access_token(google), _connection(google)

    status, _, body = _import(conn, token, _multipart(_RAW, ["INBOX", "Label_1"]))

    assert status == 400
    assert _error(body) == {
        "code": 400,
        "message": "Invalid label: Label_1",
        "errors": [{"message": "Invalid label: Label_1", "domain": "global", "reason": "invalidArgument"}],
        "status": "INVALID_ARGUMENT",
    }
    assert (google.add_label("Receipts"), google.add_label("Family/School")) == ("Label_1", "Label_2")
    assert _import(conn, token, _multipart(_RAW, ["INBOX", "Label_1", "Label_2"]))[0] == 200
    assert [m.label_ids for m in google.messages] == [["INBOX", "Label_1", "Label_2"]]
    assert google.labels[-2:] == [
        {"id": "Label_1", "name": "Receipts", "type": "user"},
        {"id": "Label_2", "name": "Family/School", "type": "user"},
    ]
    assert {label["id"] for label in google.labels if label["type"] == "system"} == SYSTEM_LABELS | {"CHAT"}
    with pytest.raises(ValueError, match="exists"):
        google.add_label("receipts")  # Gmail's label names are unique regardless of case


def test_every_system_label_is_accepted(google: FakeGoogle) -> None:
    labels = sorted(SYSTEM_LABELS)

    status, _, body = _import(_connection(google), _access_token(google), _multipart(_RAW, labels))

    assert status == 200, body
    assert google.messages[0].label_ids == labels


@pytest.mark.parametrize(
    "label",
    [
        pytest.param("Label_2", id="user-label-never-created"),
        pytest.param("Receipts", id="a-label-name-is-not-an-id"),
        pytest.param("CATEGORY_BOGUS", id="no-such-category"),
        pytest.param("CHAT", id="chat-cannot-be-imported"),
        pytest.param("inbox", id="ids-are-case-sensitive"),
    ],
)
def test_a_label_the_mailbox_lacks_is_an_invalid_label(google: FakeGoogle, label: str) -> None:
    google.add_label("Receipts")  # Label_1

    error = _refused(google, _multipart(_RAW, ["INBOX", "Label_1", label]))

    assert (error["message"], error["errors"][0]["reason"]) == (f"Invalid label: {label}", "invalidArgument")


@pytest.mark.parametrize(
    ("extra", "message", "field"),
    [
        pytest.param(
            "x=1",
            'Invalid JSON payload received. Unknown name "x": Cannot bind query parameter. '
            "Field 'x' could not be found in request message.",
            "x",
            id="unknown-name",
        ),
        pytest.param(
            "labelIds=INBOX",
            'Invalid JSON payload received. Unknown name "labelIds": Cannot bind query parameter. '
            "Field 'labelIds' could not be found in request message.",
            "labelIds",
            id="labels-belong-in-the-metadata",
        ),
        pytest.param(
            "neverMarkSpam=yes", "Invalid value at 'never_mark_spam' (TYPE_BOOL), \"yes\"", "never_mark_spam", id="bool"
        ),
        pytest.param(
            "processForCalendar=True",
            "Invalid value at 'process_for_calendar' (TYPE_BOOL), \"True\"",
            "process_for_calendar",
            id="bool-is-lower-case",
        ),
        pytest.param("deleted=1", "Invalid value at 'deleted' (TYPE_BOOL), \"1\"", "deleted", id="bool-is-a-word"),
        pytest.param(
            "prettyPrint=no", "Invalid value at 'pretty_print' (TYPE_BOOL), \"no\"", "pretty_print", id="system-bool"
        ),
        pytest.param(
            "internalDateSource=DATE_HEADER",
            "Invalid value at 'internal_date_source' (TYPE_ENUM), \"DATE_HEADER\"",
            "internal_date_source",
            id="enum",
        ),
        pytest.param("alt=xml", "Invalid value at 'alt' (TYPE_ENUM), \"xml\"", "alt", id="system-enum"),
    ],
)
def test_unknown_query_parameters_and_bad_values_are_refused(
    google: FakeGoogle, extra: str, message: str, field: str
) -> None:
    error = _refused(google, _GOOD, query=f"{QUERY}&{extra}")

    assert error == _parse_failure(message, field)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("internalDateSource=dateHeader", id="missing"),
        pytest.param("uploadType=bogus", id="unknown"),
        pytest.param("uploadType=Multipart", id="case-sensitive"),
    ],
)
def test_an_upload_needs_a_known_upload_type(google: FakeGoogle, query: str) -> None:
    error = _refused(google, _GOOD, query=query)

    message = "Upload requests must include an uploadType URL parameter and a URL path beginning with /upload/"
    assert error["errors"] == [{"message": message, "domain": "global", "reason": "wrongUrlForUpload"}]


def test_every_documented_query_parameter_is_accepted(google: FakeGoogle) -> None:
    params = {
        "uploadType": "multipart",
        "internalDateSource": "receivedTime",
        "neverMarkSpam": "false",
        "processForCalendar": "false",
        "deleted": "false",
        "$.xgafv": "2",
        "alt": "json",
        "fields": "id,threadId",
        "prettyPrint": "false",
        "quotaUser": "forwarder",
        "upload_protocol": "multipart",
    }

    status, _, body = _import(_connection(google), _access_token(google), _GOOD, query=urlencode(params))

    assert status == 200, body
    assert google.messages[0].params == params


def test_media_upload_imports_the_bare_message_without_labels(google: FakeGoogle) -> None:
    token, conn = _access_token(google), _connection(google)

    ok = _import(conn, token, TRICKY_RAW, query="uploadType=media", content_type="message/rfc822")
    refused = _import(conn, token, TRICKY_RAW, query="uploadType=media", content_type="text/plain")

    assert ok[0] == 200, ok[2]
    [message] = google.messages
    assert (message.raw, message.label_ids) == (TRICKY_RAW, [])
    assert refused[0] == 400
    assert _error(refused[2])["message"] == "Media type 'text/plain' is not supported. Valid media types: [message/*]"


def test_a_resumable_upload_is_a_visible_gap_of_the_fake(google: FakeGoogle) -> None:
    status, _, body = _import(_connection(google), _access_token(google), _GOOD, query="uploadType=resumable")

    assert status == 501
    assert _error(body)["errors"][0]["reason"] == "notImplemented"
    assert google.internal_errors == [
        "not implemented by the fake: uploadType=resumable (the forwarder sends multipart)"
    ]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        pytest.param({"labelIds": ["INBOX"], "labels": ["INBOX"]}, "labels", id="unknown-field"),
        pytest.param({"LabelIds": ["INBOX"]}, "LabelIds", id="names-are-case-sensitive"),
        pytest.param({"labelIds": ["INBOX"], "neverMarkSpam": True}, "neverMarkSpam", id="a-query-parameter"),
    ],
)
def test_unknown_metadata_fields_are_refused(google: FakeGoogle, metadata: object, message: str) -> None:
    error = _refused(google, _multipart(_RAW, metadata=metadata))

    text = f"Invalid JSON payload received. Unknown name \"{message}\" at 'message': Cannot find field."
    assert error == _parse_failure(text, "message")


@pytest.mark.parametrize(
    ("metadata", "field", "message"),
    [
        pytest.param({"labelIds": "INBOX"}, "message.label_ids", '(TYPE_STRING), "INBOX"', id="labels-not-a-list"),
        pytest.param({"labelIds": ["INBOX", 7]}, "message.label_ids[1]", "(TYPE_STRING), 7", id="label-not-a-string"),
        pytest.param({"labelIds": [None]}, "message.label_ids[0]", "(TYPE_STRING), null", id="null-label"),
        pytest.param({"threadId": 17}, "message.thread_id", "(TYPE_STRING), 17", id="thread-id"),
        pytest.param({"internalDate": "soon"}, "message.internal_date", '(TYPE_INT64), "soon"', id="internal-date"),
        pytest.param({"historyId": -1}, "message.history_id", "(TYPE_UINT64), -1", id="history-id"),
        pytest.param({"sizeEstimate": 2**31}, "message.size_estimate", "(TYPE_INT32), 2147483648", id="size"),
        pytest.param({"sizeEstimate": True}, "message.size_estimate", "(TYPE_INT32), true", id="bool-is-no-int"),
        pytest.param({"raw": "not base64!"}, "message.raw", '(TYPE_BYTES), "not base64!"', id="raw"),
        pytest.param({"payload": "text"}, "message.payload", '(TYPE_MESSAGE), "text"', id="payload"),
        pytest.param(
            {"classificationLabelValues": {}},
            "message.classification_label_values",
            "(TYPE_MESSAGE), {}",
            id="classification-labels",
        ),
    ],
)
def test_metadata_of_the_wrong_type_is_refused(google: FakeGoogle, metadata: object, field: str, message: str) -> None:
    error = _refused(google, _multipart(_RAW, metadata=metadata))

    assert error == _parse_failure(f"Invalid value at '{field}' {message}", field)


def test_metadata_that_is_no_message_is_refused(google: FakeGoogle) -> None:
    error = _refused(google, _multipart(_RAW, metadata=["INBOX"]))

    assert error == _parse_failure("Invalid JSON payload received. Root element must be a message.", "message")


def test_every_message_field_is_accepted_by_json_or_proto_name(google: FakeGoogle) -> None:
    metadata = {
        "label_ids": ["INBOX", "UNREAD"],  # proto3 JSON parsers take the proto name too
        "id": None,  # null is the field's default
        "threadId": "18c0ffee00000000",
        "snippet": "hi",
        "historyId": "12345",
        "internalDate": 1700000000000,
        "payload": {"mimeType": "text/plain"},
        "sizeEstimate": 42,
        "raw": None,
        "classificationLabelValues": [],
    }

    status, _, body = _import(_connection(google), _access_token(google), _multipart(_RAW, metadata=metadata))

    assert status == 200, body
    assert google.messages[0].label_ids == ["INBOX", "UNREAD"]


def _streamed_upload(message_size: int) -> Iterator[bytes]:
    """A chunked import body with a message of exactly ``message_size`` bytes, never all in memory."""
    head, tail = _frame({"labelIds": ["INBOX"]})
    yield head + b"Subject: big\r\n\r\n"
    remaining, chunk = message_size - len(b"Subject: big\r\n\r\n"), b"x" * (1024 * 1024)
    while remaining > 0:
        yield chunk[: min(len(chunk), remaining)]
        remaining -= len(chunk)
    yield tail


def test_the_message_size_limit_is_the_discovery_documents_max_size() -> None:
    assert MAX_MESSAGE_BYTES == 52_428_800  # gmail.v1.json: users.messages.import mediaUpload.maxSize
    with FakeGoogle(store_bodies=False) as google:
        token, conn = _access_token(google), _connection(google, timeout=60)

        at_limit = _import(conn, token, _streamed_upload(MAX_MESSAGE_BYTES))
        over = _import(conn, token, _streamed_upload(MAX_MESSAGE_BYTES + 1))

        assert at_limit[0] == 200, at_limit[2]
        assert [m.size for m in google.messages] == [MAX_MESSAGE_BYTES]
        assert over[0] == 413
        message = "Request payload size exceeds the limit: 52428800 bytes."
        assert _error(over[2]) == {
            "code": 413,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "uploadTooLarge"}],
            "status": "INVALID_ARGUMENT",
        }


@pytest.mark.parametrize(
    ("status", "domain", "reason"),
    [
        (400, "global", "badRequest"),
        (403, "global", "forbidden"),
        (404, "global", "notFound"),
        (413, "global", "uploadTooLarge"),
        (429, "usageLimits", "rateLimitExceeded"),
        (500, "global", "backendError"),
        (503, "global", "backendError"),
    ],
)
def test_injected_failures_have_googles_shape_and_reasons(
    google: FakeGoogle, status: int, domain: str, reason: str
) -> None:
    google.fail_gmail(status)

    answer = _import(_connection(google), _access_token(google), _GOOD)

    assert answer[0] == status
    [item] = _error(answer[2])["errors"]
    assert (item["domain"], item["reason"]) == (domain, reason)


def test_a_token_without_an_import_scope_is_403_insufficient_permissions(google: FakeGoogle) -> None:
    readonly = google.issue_refresh_token("https://www.googleapis.com/auth/gmail.readonly")

    status, _, body = _import(_connection(google), _access_token(google, readonly), _GOOD)

    assert status == 403
    assert _error(body) == {
        "code": 403,
        "message": "Request had insufficient authentication scopes.",
        "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
        "status": "PERMISSION_DENIED",
    }


# --- failure injection and quota -------------------------------------------------------------


def test_injected_gmail_failures_come_first_and_count_as_requests(google: FakeGoogle) -> None:
    token = _access_token(google)
    google.fail_gmail(503, times=2, headers={"Retry-After": "7"})
    conn = _connection(google)

    first = _import(conn, "not-even-a-valid-token", _GOOD)  # injection precedes auth
    second = _import(conn, token, _GOOD)
    third = _import(conn, token, _GOOD)

    assert (first[0], second[0], third[0]) == (503, 503, 200)
    assert first[1]["Retry-After"] == "7"
    assert _error(first[2]) == {
        "code": 503,
        "message": "Service Unavailable",
        "errors": [{"message": "Service Unavailable", "domain": "global", "reason": "backendError"}],
        "status": "UNAVAILABLE",
    }
    assert google.import_requests == 3
    assert len(google.messages) == 1


def test_injected_token_failure_with_custom_body(google: FakeGoogle) -> None:
    google.fail_token(500, body={"error": "internal_failure"})
    refresh_token = google.issue_refresh_token()

    failed = _post_token(google, grant_type="refresh_token", refresh_token=refresh_token)
    succeeded = _post_token(google, grant_type="refresh_token", refresh_token=refresh_token)

    assert failed == (500, {"error": "internal_failure"})
    assert succeeded[0] == 200
    assert len(google.token_requests) == 2


def test_injected_disconnect_and_delay_look_like_network_failures(google: FakeGoogle) -> None:
    token = _access_token(google)
    google.fail_gmail(503, disconnect=True)
    google.fail_gmail(503, delay=30)

    with pytest.raises(http.client.RemoteDisconnected):
        _import(_connection(google), token, _GOOD)
    with pytest.raises(TimeoutError):
        _import(_connection(google, timeout=0.3), token, _GOOD)
    assert _import(_connection(google), token, _GOOD)[0] == 200


def test_quota_exhaustion_is_429_with_retry_after(google: FakeGoogle) -> None:
    google.quota_units_per_minute = 50  # two imports a minute
    token = _access_token(google)
    conn = _connection(google)

    statuses = [_import(conn, token, _GOOD)[0] for _ in range(2)]
    status, headers, body = _import(conn, token, _GOOD)

    assert statuses == [200, 200]
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 60
    error = _error(body)
    assert (error["code"], error["message"], error["status"]) == (
        429,
        "User-rate limit exceeded.",
        "RESOURCE_EXHAUSTED",
    )
    assert error["errors"][0]["reason"] == "rateLimitExceeded"
    google.advance_time(int(headers["Retry-After"]))
    assert _import(conn, token, _GOOD)[0] == 200


# --- consent and authorization-code exchange -------------------------------------------------


def test_consent_and_code_exchange_with_pkce(google: FakeGoogle) -> None:
    google.refresh_token_expires_in = 604799
    verifier = secrets.token_urlsafe(48)
    consent = {"code_challenge": _s256(verifier), "code_challenge_method": "S256"}
    redirect = _consent(google, **consent)
    assert redirect["state"] == ["st4te"]
    assert redirect["scope"] == ["https://www.googleapis.com/auth/gmail.insert"]

    exchange = {"grant_type": "authorization_code", "redirect_uri": "http://127.0.0.1:8765/"}
    status, payload = _post_token(google, code=redirect["code"][0], code_verifier=_s256(verifier), **exchange)
    assert (status, payload["error"]) == (400, "invalid_grant")  # wrong verifier, and the code is now spent
    status, payload = _post_token(google, code=redirect["code"][0], code_verifier=verifier, **exchange)
    assert (status, payload["error"]) == (400, "invalid_grant")

    code = _consent(google, **consent)["code"][0]
    status, payload = _post_token(google, code=code, code_verifier=verifier, **exchange)

    assert status == 200, payload
    assert payload["refresh_token_expires_in"] == 604799
    assert payload["token_type"] == "Bearer"
    assert _access_token(google, payload["refresh_token"])
    assert google.consent_requests[0]["code_challenge_method"] == "S256"
    assert google.consent_requests[0]["access_type"] == "offline"


def test_code_exchange_needs_the_same_redirect_uri(google: FakeGoogle) -> None:
    google.return_refresh_token = False
    code = _consent(google)["code"][0]

    mismatch = _post_token(google, grant_type="authorization_code", code=code, redirect_uri="http://localhost:1/")
    code = _consent(google)["code"][0]
    ok = _post_token(google, grant_type="authorization_code", code=code, redirect_uri="http://127.0.0.1:8765/")

    assert mismatch[0] == 400
    assert ok[0] == 200
    assert "refresh_token" not in ok[1]


def test_redirect_uri_with_query_gets_ampersand(google: FakeGoogle) -> None:
    params = _consent(google, redirect_uri="http://localhost:8080/cb?x=1")

    assert params["x"] == ["1"]
    assert "code" in params


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [("deny", {"error": ["access_denied"], "state": ["st4te"]}), ("wrong_state", {"state": ["tampered-st4te"]})],
)
def test_consent_behaviors(google: FakeGoogle, behavior: str, expected: dict[str, list[str]]) -> None:
    google.consent_behavior = behavior

    params = _consent(google)

    assert {key: params[key] for key in expected} == expected
    assert ("code" in params) == (behavior == "wrong_state")


def test_consent_with_unknown_client_is_an_error_page(google: FakeGoogle) -> None:
    query = urlencode({"client_id": "unknown", "redirect_uri": "http://127.0.0.1:1/", "response_type": "code"})

    status, headers, body = _request(_connection(google), "GET", f"/o/oauth2/auth?{query}")

    assert status == 400
    assert headers["Content-Type"].startswith("text/html")
    assert b"invalid_client" in body


# --- the rest --------------------------------------------------------------------------------


def test_unknown_path_is_json_404(google: FakeGoogle) -> None:
    status, headers, body = _request(_connection(google), "GET", "/gmail/v1/users/me/drafts")

    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert _error(body)["code"] == 404


@pytest.mark.parametrize(("kind", "redirect"), [("installed", "http://localhost"), ("web", "http://localhost:8080/")])
def test_client_json_has_the_console_shape(google: FakeGoogle, kind: str, redirect: str) -> None:
    section = google.client_json(kind)[kind]
    installed = kind == "installed"

    # Two clients of one project, as the console lists them: each file carries its own id and secret.
    assert section["client_id"] == (google.client_id if installed else google.web_client_id)
    assert section["client_secret"] == (google.client_secret if installed else google.web_client_secret)
    assert google.web_client_id != google.client_id and google.web_client_secret != google.client_secret
    assert (section["token_uri"], section["auth_uri"]) == (google.token_uri, google.auth_uri)
    assert section["redirect_uris"] == [redirect]
    assert {"project_id", "auth_provider_x509_cert_url"} <= section.keys()
    assert google.internal_errors == []


# --- users.labels.list and users.labels.create ----------------------------------------------------
# What the forwarder's label resolver needs of Gmail's labels API, as strict as Gmail: each method's
# own scopes, Gmail's rules for names, the 409 for a taken name (sesmail/local/google.py cites why).

_LABELS_SCOPE = "https://www.googleapis.com/auth/gmail.labels"
_READONLY_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"
_VISIBLE = {"labelListVisibility": "labelShow", "messageListVisibility": "show"}
_INSUFFICIENT = {
    "code": 403,
    "message": "Request had insufficient authentication scopes.",
    "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
    "status": "PERMISSION_DENIED",
}


def _labels_call(
    google: FakeGoogle, token: str, body: object = None, *, query: str = "", raw: bytes | None = None
) -> tuple[int, Any]:
    """GET (no body) or POST (a JSON body, or ``raw`` bytes) /gmail/v1/users/me/labels; status and JSON."""
    path = LABELS_PATH + (f"?{query}" if query else "")
    headers = {"Authorization": f"Bearer {token}"}
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    if data is not None:
        headers.update({"Content-Type": "application/json", "Content-Length": str(len(data))})
    status, _, answer = _request(_connection(google), "GET" if data is None else "POST", path, data, headers)
    return status, json.loads(answer)


def _labels_token(google: FakeGoogle, scope: str = f"{GMAIL_INSERT_SCOPE} {_LABELS_SCOPE}") -> str:
    return _access_token(google, google.issue_refresh_token(scope))


def test_labels_list_shows_system_labels_then_user_labels(google: FakeGoogle) -> None:
    google.add_label("Receipts")

    status, payload = _labels_call(google, _labels_token(google))

    assert status == 200
    system = [label for label in payload["labels"] if label["type"] == "system"]
    assert {label["id"] for label in system} == SYSTEM_LABELS | {"CHAT"}  # CHAT is listed, never importable
    assert all(label["name"] == label["id"] for label in system)
    assert payload["labels"][-1] == {"id": "Label_1", "name": "Receipts", "type": "user"}
    assert google.label_calls == [LabelCall("list", None, 200)]


def test_labels_create_answers_the_label_and_the_id_imports(google: FakeGoogle) -> None:
    token = _labels_token(google)

    status, created = _labels_call(google, token, {"name": "Family/School", **_VISIBLE})

    assert status == 200
    assert created == {"id": "Label_1", "name": "Family/School", **_VISIBLE, "type": "user"}
    assert _labels_call(google, token)[1]["labels"][-1] == created
    assert _import(_connection(google), token, _multipart(_RAW, ["INBOX", "Label_1"]))[0] == 200
    assert google.label_calls == [LabelCall("create", "Family/School", 200), LabelCall("list", None, 200)]


@pytest.mark.parametrize("taken", ["Receipts", "receipts", "RECEIPTS"])
def test_a_name_taken_in_any_case_is_409_label_name_exists_or_conflicts(google: FakeGoogle, taken: str) -> None:
    google.add_label("Receipts")

    status, payload = _labels_call(google, _labels_token(google), {"name": taken, **_VISIBLE})

    assert status == 409
    assert payload["error"] == {
        "code": 409,
        "message": "Label name exists or conflicts",
        "errors": [{"message": "Label name exists or conflicts", "domain": "global", "reason": "aborted"}],
        "status": "ABORTED",
    }
    assert [label["name"] for label in google.labels if label["type"] == "user"] == ["Receipts"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Inbox", id="a-system-label-in-another-case"),
        pytest.param("SPAM", id="a-system-label-id"),
        pytest.param("chat", id="chat"),
        pytest.param("Muted", id="reserved-muted"),
        pytest.param("Inbox/Receipts", id="nested-under-a-system-label"),
        pytest.param("Family//School", id="empty-level"),
        pytest.param("Family/", id="trailing-slash"),
        pytest.param(" Receipts", id="leading-space"),
        pytest.param("Unread\r", id="control-character"),
        pytest.param("x" * 226, id="longer-than-225"),
        pytest.param("   ", id="blank"),
    ],
)
def test_a_name_gmail_refuses_is_400_invalid_label_name(google: FakeGoogle, name: str) -> None:
    status, payload = _labels_call(google, _labels_token(google), {"name": name, **_VISIBLE})

    assert status == 400
    assert payload["error"]["errors"] == [
        {"message": "Invalid label name", "domain": "global", "reason": "invalidArgument"}
    ]
    assert not [label for label in google.labels if label["type"] == "user"]


def test_the_longest_accepted_name_is_225_characters(google: FakeGoogle) -> None:
    assert _labels_call(google, _labels_token(google), {"name": "x" * 225})[0] == 200


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        pytest.param(
            {"name": "Receipts", "colour": "red"},
            "Invalid JSON payload received. Unknown name \"colour\" at 'label': Cannot find field.",
            "label",
            id="unknown-field",
        ),
        pytest.param(
            {"name": "Receipts", "labelListVisibility": "show"},
            "Invalid value at 'label.label_list_visibility' (TYPE_ENUM), \"show\"",
            "label.label_list_visibility",
            id="bad-visibility",
        ),
        pytest.param(
            ["Receipts"], "Invalid JSON payload received. Root element must be a message.", "label", id="list"
        ),
    ],
)
def test_a_create_body_that_is_no_label_is_refused(google: FakeGoogle, body: object, message: str, field: str) -> None:
    status, payload = _labels_call(google, _labels_token(google), body)

    assert status == 400
    assert payload["error"] == _parse_failure(message, field)


def test_labels_calls_take_only_the_global_query_parameters(google: FakeGoogle) -> None:
    token = _labels_token(google)

    assert _labels_call(google, token, query="prettyPrint=false&fields=labels(id,name)")[0] == 200
    status, payload = _labels_call(google, token, query="includeHidden=true")
    assert status == 400
    assert payload["error"]["errors"][0]["reason"] == "invalid"


@pytest.mark.parametrize(
    ("scope", "list_status", "create_status"),
    [
        pytest.param(GMAIL_INSERT_SCOPE, 403, 403, id="insert-only-a-token-from-before-labels"),
        pytest.param(_READONLY_SCOPE, 200, 403, id="readonly-lists-but-cannot-create"),
        pytest.param("https://www.googleapis.com/auth/gmail.metadata", 200, 403, id="metadata-lists"),
        pytest.param(_LABELS_SCOPE, 200, 200, id="labels"),
        pytest.param("https://www.googleapis.com/auth/gmail.modify", 200, 200, id="modify"),
        pytest.param("https://mail.google.com/", 200, 200, id="full"),
    ],
)
def test_each_labels_method_takes_its_documented_scopes(
    google: FakeGoogle, scope: str, list_status: int, create_status: int
) -> None:
    token = _labels_token(google, scope)

    listed, list_payload = _labels_call(google, token)
    created, create_payload = _labels_call(google, token, {"name": "Receipts"})

    assert (listed, created) == (list_status, create_status)
    for status, payload in ((listed, list_payload), (created, create_payload)):
        if status == 403:
            assert payload["error"] == _INSUFFICIENT


def test_labels_calls_need_a_live_token(google: FakeGoogle) -> None:
    status, payload = _labels_call(google, "ya29.not-a-token")

    assert status == 401
    assert payload["error"]["errors"][0]["reason"] == "authError"


def test_labels_calls_cost_their_quota_units(google: FakeGoogle) -> None:
    google.quota_units_per_minute = IMPORT_QUOTA_UNITS + LABELS_CREATE_QUOTA_UNITS + LABELS_LIST_QUOTA_UNITS
    token = _labels_token(google)

    assert _labels_call(google, token)[0] == 200
    assert _labels_call(google, token, {"name": "Receipts"})[0] == 200
    assert _import(_connection(google), token, _GOOD)[0] == 200
    status, payload = _labels_call(google, token)
    assert status == 429
    assert payload["error"]["errors"][0]["reason"] == "rateLimitExceeded"


def test_injected_labels_failures_come_first(google: FakeGoogle) -> None:
    google.fail_labels(503, times=2)

    assert _labels_call(google, "not-even-a-token")[0] == 503
    assert _labels_call(google, _labels_token(google), {"name": "Receipts"})[0] == 503
    assert _labels_call(google, _labels_token(google))[0] == 200
    assert [call.status for call in google.label_calls] == [503, 503, 200]
    assert google.import_requests == 0  # an import is not a labels call, and vice versa


def test_a_deleted_label_is_an_invalid_label_afterwards(google: FakeGoogle) -> None:
    label_id = google.add_label("Receipts")
    google.delete_label("receipts")  # Gmail's UI finds it in any case, too

    error = _refused(google, _multipart(_RAW, ["INBOX", label_id]))

    assert error["message"] == f"Invalid label: {label_id}"
    assert google.add_label("Receipts") != label_id  # ids are never reused


def test_the_consent_takes_the_label_scope_and_refuses_unknown_scopes(google: FakeGoogle) -> None:
    both = f"{GMAIL_INSERT_SCOPE} {_LABELS_SCOPE}"
    assert _consent(google, scope=both)["scope"] == [both]

    query = urlencode(
        {
            "client_id": google.client_id,
            "redirect_uri": "http://127.0.0.1:8765/",
            "response_type": "code",
            "scope": f"{GMAIL_INSERT_SCOPE} https://www.googleapis.com/auth/gmail.everything",
        }
    )
    status, _, body = _request(_connection(google), "GET", f"/o/oauth2/auth?{query}")

    assert status == 400
    assert b"invalid_scope" in body and b"gmail.everything" in body
