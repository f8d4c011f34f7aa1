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

from tests.fakes.google import IMPORT_PATH, FakeGoogle

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


def _multipart(raw: bytes, labels: list[str] | None = None, boundary: str = BOUNDARY) -> bytes:
    metadata = json.dumps({"labelIds": labels if labels is not None else ["INBOX", "UNREAD"]}).encode()
    return (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode()
        + metadata
        + f"\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n".encode()
        + raw
        + f"\r\n--{boundary}--".encode()
    )


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
    error: dict[str, Any] = json.loads(body)["error"]
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
        "message": "Request had invalid authentication credentials.",
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
        body = _multipart(TRICKY_RAW, ["INBOX", "UNREAD", "Label_7"])
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
        assert payload == {"id": message.id, "threadId": message.thread_id, "labelIds": ["INBOX", "UNREAD", "Label_7"]}
        assert len(message.id) == 16 and int(message.id, 16) >= 0
        assert message.raw == (TRICKY_RAW if store_bodies else None)
        assert message.size == len(TRICKY_RAW)
        assert message.sha256 == hashlib.sha256(TRICKY_RAW).hexdigest()
        assert message.label_ids == ["INBOX", "UNREAD", "Label_7"]
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


def test_message_over_50_mib_is_413() -> None:
    with FakeGoogle(store_bodies=False) as google:
        raw = b"Subject: big\r\n\r\n" + b"x" * (50 * 1024 * 1024)

        status, _, body = _import(_connection(google, timeout=60), _access_token(google), _multipart(raw))

        assert status == 413, body
        assert google.messages == []


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
    assert _error(first[2]) == {"code": 503, "message": "Service Unavailable", "status": "UNAVAILABLE"}
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
    status, headers, body = _request(_connection(google), "GET", "/gmail/v1/users/me/labels")

    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert _error(body)["code"] == 404


@pytest.mark.parametrize(("kind", "redirect"), [("installed", "http://localhost"), ("web", "http://localhost:8080/")])
def test_client_json_has_the_console_shape(google: FakeGoogle, kind: str, redirect: str) -> None:
    section = google.client_json(kind)[kind]

    assert section["client_id"] == google.client_id
    assert section["client_secret"] == google.client_secret
    assert (section["token_uri"], section["auth_uri"]) == (google.token_uri, google.auth_uri)
    assert section["redirect_uris"] == [redirect]
    assert {"project_id", "auth_provider_x509_cert_url"} <= section.keys()
    assert google.internal_errors == []
