"""The fake Google serving several accounts and two OAuth clients: one deployment, several mailboxes.

Over real HTTP with the standard library's clients, as tests/test_fake_google.py does: each
account's imports, labels and quota stay its own; the account that signs in at the consent screen
owns the grant, whatever ``login_hint`` said; ``openid`` brings an ID token naming that account;
a web client's registered https redirect URI works and any other is Google's redirect_uri_mismatch.
The installed client and the web client are two clients, as at Google: a refresh token or a code
works only with the client that obtained it (the other gets 401 ``unauthorized_client``), and an ID
token's ``aud`` is the client that redeemed the code.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from sesmail.local.google import (
    DEFAULT_ACCOUNT,
    GMAIL_INSERT_SCOPE,
    GMAIL_LABELS_SCOPE,
    ID_TOKEN_ISSUER,
    IMPORT_PATH,
    LABELS_PATH,
    USERINFO_EMAIL_SCOPE,
    WRONG_CLIENT,
    FakeGoogle,
    LabelCall,
)

OTHER = "second.mailbox@gmail.com"
BOUNDARY = "b0und4ry-accounts"
LOOPBACK = "http://127.0.0.1:8765/"
FUNCTION_URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-1.on.aws/renew"
BOTH_SCOPES = f"{GMAIL_INSERT_SCOPE} {GMAIL_LABELS_SCOPE}"

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake
        assert fake.internal_errors == []


# --- helpers ---------------------------------------------------------------------------------


def _request(fake: FakeGoogle, method: str, path: str, body: bytes | None = None, **headers: str) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(fake.base_url).port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _as_client(fake: FakeGoogle, client: str) -> dict[str, str]:
    """The ``client_id`` and ``client_secret`` form fields of the ``installed`` or ``web`` client."""
    section = fake.client_json(client)[client]
    return {"client_id": section["client_id"], "client_secret": section["client_secret"]}


def _post_token(fake: FakeGoogle, client: str = "installed", **fields: str) -> tuple[int, dict[str, Any]]:
    form = {**_as_client(fake, client), **fields}
    request = urllib.request.Request(
        fake.token_uri, data=urlencode(form).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _access_token(fake: FakeGoogle, refresh_token: str) -> str:
    status, payload = _post_token(fake, grant_type="refresh_token", refresh_token=refresh_token)
    assert status == 200, payload
    return str(payload["access_token"])


def _token_for(fake: FakeGoogle, account: str, scope: str = GMAIL_INSERT_SCOPE) -> str:
    return _access_token(fake, fake.issue_refresh_token(scope, account=account))


def _import(fake: FakeGoogle, token: str, subject: str, labels: list[str] | None = None) -> Response:
    metadata = json.dumps({"labelIds": labels if labels is not None else ["INBOX", "UNREAD"]})
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n"
        f"--{BOUNDARY}\r\nContent-Type: message/rfc822\r\n\r\nSubject: {subject}\r\n\r\nhi\r\n"
        f"\r\n--{BOUNDARY}--"
    ).encode()
    return _request(
        fake,
        "POST",
        f"{IMPORT_PATH}?uploadType=multipart",
        body,
        Authorization=f"Bearer {token}",
        **{"Content-Type": f'multipart/related; boundary="{BOUNDARY}"'},
    )


def _labels_call(fake: FakeGoogle, token: str, create: str | None = None) -> tuple[int, Any]:
    body = None if create is None else json.dumps({"name": create}).encode()
    method = "GET" if create is None else "POST"
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, _, answer = _request(fake, method, LABELS_PATH, body, **headers)
    return status, json.loads(answer)


def _consent_reply(fake: FakeGoogle, **overrides: str) -> Response:
    params = {
        "client_id": fake.client_id,
        "redirect_uri": LOOPBACK,
        "response_type": "code",
        "scope": GMAIL_INSERT_SCOPE,
        "state": "st4te",
        "access_type": "offline",
        "prompt": "consent",
        **overrides,
    }
    return _request(fake, "GET", f"/o/oauth2/auth?{urlencode(params)}")


def _consent(fake: FakeGoogle, **overrides: str) -> dict[str, str]:
    """The consent redirect's query parameters, after checking it goes to the redirect URI."""
    status, headers, _ = _consent_reply(fake, **overrides)
    assert status == 302
    location = urlsplit(headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == overrides.get("redirect_uri", LOOPBACK)
    return {key: value for key, [value] in parse_qs(location.query).items()}


def _sign_in(
    fake: FakeGoogle, scope: str, redirect_uri: str = LOOPBACK, client: str = "installed", **consent: str
) -> dict[str, Any]:
    """Consent through ``client``, then exchange the code as that client: the token endpoint's answer."""
    client_id = _as_client(fake, client)["client_id"]
    code = _consent(fake, scope=scope, redirect_uri=redirect_uri, client_id=client_id, **consent)["code"]
    status, payload = _post_token(fake, client, grant_type="authorization_code", code=code, redirect_uri=redirect_uri)
    assert status == 200, payload
    return payload


def _segment(part: str) -> dict[str, Any]:
    assert "=" not in part  # base64url without padding
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# --- mailboxes -------------------------------------------------------------------------------


def test_each_accounts_imports_land_in_its_own_mailbox(google: FakeGoogle) -> None:
    owner, other = _token_for(google, DEFAULT_ACCOUNT), _token_for(google, OTHER)

    statuses = [_import(google, token, subject)[0] for token, subject in ((owner, "a"), (other, "b"), (owner, "c"))]

    assert statuses == [200, 200, 200]
    first, second, third = google.messages  # every account's, in import order
    assert [m.account for m in (first, second, third)] == [DEFAULT_ACCOUNT, OTHER, DEFAULT_ACCOUNT]
    assert google.messages_for(DEFAULT_ACCOUNT) == [first, third]
    assert google.messages_for(OTHER) == [second]
    assert second.raw is not None and b"Subject: b" in second.raw
    assert google.messages_for("nobody@gmail.com") == []


def test_labels_belong_to_one_mailbox(google: FakeGoogle) -> None:
    owners = google.add_label("Receipts")
    others = google.add_label("Receipts", account=OTHER)  # the same name is free in another mailbox
    owner = _token_for(google, DEFAULT_ACCOUNT, BOTH_SCOPES)
    other = _token_for(google, OTHER, BOTH_SCOPES)

    assert owners != others
    status, _, body = _import(google, other, "x", ["INBOX", owners])
    assert status == 400
    assert json.loads(body)["error"]["message"] == f"Invalid label: {owners}"
    assert _import(google, other, "x", ["INBOX", others])[0] == 200
    assert _labels_call(google, other, create="Family")[0] == 200
    status, listed = _labels_call(google, other)
    assert status == 200
    assert [label["name"] for label in listed["labels"] if label["type"] == "user"] == ["Receipts", "Family"]
    assert _labels_call(google, owner, create="Family")[0] == 200  # no 409: the other mailbox's
    with pytest.raises(ValueError, match="exists"):
        google.add_label("family", account=OTHER)

    assert [(label["id"], label["name"]) for label in google.labels if label["type"] == "user"] == [
        (owners, "Receipts"),
        (google.labels[-1]["id"], "Family"),
    ]
    assert [label["name"] for label in google.labels_for(OTHER) if label["type"] == "user"] == ["Receipts", "Family"]
    assert google.label_calls_for(OTHER) == [
        LabelCall("create", "Family", 200, OTHER),
        LabelCall("list", None, 200, OTHER),
    ]
    assert google.label_calls_for(DEFAULT_ACCOUNT) == [LabelCall("create", "Family", 200)]
    assert len(google.label_calls) == 3
    google.delete_label("Receipts", account=OTHER)
    assert _import(google, other, "x", [others])[0] == 400
    assert _import(google, owner, "x", [owners])[0] == 200


def test_a_label_call_with_an_unknown_token_has_no_account(google: FakeGoogle) -> None:
    status, _ = _labels_call(google, "ya29.never-minted")

    assert status == 401
    assert google.label_calls == [LabelCall("list", None, 401, None)]


def test_the_quota_is_per_account(google: FakeGoogle) -> None:
    google.quota_units_per_minute = 50  # two imports a minute, for each account
    owner, other = _token_for(google, DEFAULT_ACCOUNT), _token_for(google, OTHER)

    owners = [_import(google, owner, "a")[0] for _ in range(3)]
    others = [_import(google, other, "b")[0] for _ in range(3)]

    assert owners == [200, 200, 429]
    assert others == [200, 200, 429]  # the owner's exhausted window did not throttle this one
    google.advance_time(60)
    assert _import(google, owner, "a")[0] == _import(google, other, "b")[0] == 200


# --- consent: who signs in -------------------------------------------------------------------


def test_the_account_that_consents_owns_the_grant_whatever_the_login_hint(google: FakeGoogle) -> None:
    google.consent_account = OTHER  # the wrong person signs in at the consent screen

    payload = _sign_in(google, f"openid email {GMAIL_INSERT_SCOPE}", login_hint=DEFAULT_ACCOUNT)

    assert google.consent_requests[0]["login_hint"] == DEFAULT_ACCOUNT
    assert google.decode_id_token(payload["id_token"])["email"] == OTHER
    assert _import(google, _access_token(google, payload["refresh_token"]), "x")[0] == 200
    assert [message.account for message in google.messages] == [OTHER]


def test_consent_defaults_to_the_default_account(google: FakeGoogle) -> None:
    payload = _sign_in(google, GMAIL_INSERT_SCOPE)

    assert _import(google, payload["access_token"], "x")[0] == 200
    assert google.messages_for(DEFAULT_ACCOUNT) != []


# --- OpenID Connect --------------------------------------------------------------------------


def test_openid_email_brings_an_id_token_naming_the_account(google: FakeGoogle) -> None:
    nonce = secrets.token_urlsafe(16)
    scope = f"openid email {GMAIL_INSERT_SCOPE}"
    redirect = _consent(google, scope=scope, nonce=nonce)
    status, payload = _post_token(google, grant_type="authorization_code", code=redirect["code"], redirect_uri=LOOPBACK)

    assert status == 200, payload
    # The redirect keeps the names asked for and adds the long form; the token endpoint names long forms only.
    assert redirect["scope"] == f"openid email {GMAIL_INSERT_SCOPE} {USERINFO_EMAIL_SCOPE}"
    assert payload["scope"] == f"openid {USERINFO_EMAIL_SCOPE} {GMAIL_INSERT_SCOPE}"
    header, body, signature = payload["id_token"].split(".")
    assert _segment(header)["alg"] == "HS256" and signature
    claims = google.decode_id_token(payload["id_token"])
    assert claims == _segment(body)
    assert claims["iss"] == ID_TOKEN_ISSUER == "https://accounts.google.com"
    assert claims["aud"] == claims["azp"] == google.client_id
    assert claims["email"] == DEFAULT_ACCOUNT
    assert claims["email_verified"] is True
    assert claims["nonce"] == nonce
    assert claims["sub"] == google.account_sub(DEFAULT_ACCOUNT)
    assert claims["sub"].isdigit() and claims["sub"] != google.account_sub(OTHER)
    assert claims["exp"] - claims["iat"] == 3600
    refreshed = _post_token(google, grant_type="refresh_token", refresh_token=payload["refresh_token"])[1]
    assert "id_token" not in refreshed  # our code must never count on one from a refresh
    assert refreshed["scope"] == payload["scope"]


def test_the_long_email_scope_counts_and_a_nonce_is_only_echoed_when_sent(google: FakeGoogle) -> None:
    google.unverified_accounts.add(DEFAULT_ACCOUNT)

    payload = _sign_in(google, f"openid {USERINFO_EMAIL_SCOPE} {GMAIL_INSERT_SCOPE}")

    claims = google.decode_id_token(payload["id_token"])
    assert (claims["email"], claims["email_verified"]) == (DEFAULT_ACCOUNT, False)
    assert "nonce" not in claims


def test_no_id_token_without_sign_in_scopes(google: FakeGoogle) -> None:
    payload = _sign_in(google, BOTH_SCOPES)

    assert "id_token" not in payload
    assert payload["scope"] == BOTH_SCOPES


def test_profile_alone_brings_openid_but_no_email(google: FakeGoogle) -> None:
    payload = _sign_in(google, "profile")

    assert payload["scope"] == "https://www.googleapis.com/auth/userinfo.profile openid"
    claims = google.decode_id_token(payload["id_token"])
    assert "email" not in claims and "email_verified" not in claims


def test_an_id_token_not_signed_by_the_fake_is_refused(google: FakeGoogle) -> None:
    token = _sign_in(google, "openid email")["id_token"]
    header, body, signature = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"email": "x@gmail.com"}).encode()).rstrip(b"=").decode()

    with pytest.raises(ValueError, match="signed"):
        google.decode_id_token(f"{header}.{forged}.{signature}")
    with FakeGoogle() as stranger, pytest.raises(ValueError, match="signed"):
        stranger.decode_id_token(token)
    with pytest.raises(ValueError, match="three"):
        google.decode_id_token(body)


# --- web client redirect URIs ----------------------------------------------------------------


def test_a_web_client_redirects_to_its_registered_https_uri(google: FakeGoogle) -> None:
    google.web_redirect_uris.add(FUNCTION_URL)

    payload = _sign_in(google, f"openid email {GMAIL_INSERT_SCOPE}", redirect_uri=FUNCTION_URL, client="web", state="s")

    assert FUNCTION_URL in google.client_json("web")["web"]["redirect_uris"]
    assert google.client_json("installed")["installed"]["redirect_uris"] == ["http://localhost"]
    claims = google.decode_id_token(payload["id_token"])
    assert claims["email"] == DEFAULT_ACCOUNT
    assert claims["aud"] == claims["azp"] == google.web_client_id  # the client that redeemed the code
    mismatch = _post_token(
        google,
        "web",
        grant_type="authorization_code",
        code=_consent(google, redirect_uri=FUNCTION_URL, client_id=google.web_client_id)["code"],
        redirect_uri=FUNCTION_URL + "/other",
    )
    assert (mismatch[0], mismatch[1]["error"]) == (400, "redirect_uri_mismatch")


@pytest.mark.parametrize(
    "redirect_uri",
    [
        FUNCTION_URL + "/",  # exact match only
        "https://evil.example/renew?a=1&b=<2>",
        "http://renew.example.com/",  # http off loopback is no desktop redirect either
        "https://127.0.0.1:8765/",
        LOOPBACK,  # a loopback URI is the installed client's rule, not the web client's
    ],
)
def test_an_unregistered_redirect_uri_is_redirect_uri_mismatch(google: FakeGoogle, redirect_uri: str) -> None:
    google.web_redirect_uris.add(FUNCTION_URL)

    status, headers, body = _consent_reply(google, redirect_uri=redirect_uri, client_id=google.web_client_id)

    assert status == 400
    assert headers["Content-Type"].startswith("text/html")
    assert b"Error 400: redirect_uri_mismatch" in body
    assert b"<2>" not in body  # the URI is quoted into the page escaped
    assert google.consent_requests[0]["redirect_uri"] == redirect_uri


def test_the_installed_client_takes_any_loopback_uri_but_not_the_web_clients(google: FakeGoogle) -> None:
    google.web_redirect_uris.add(FUNCTION_URL)

    assert "code" in _consent(google, redirect_uri="http://localhost:51234/")  # any port: the loopback flow
    status, _, body = _consent_reply(google, redirect_uri=FUNCTION_URL)  # registered for the web client only

    assert status == 400 and b"Error 400: redirect_uri_mismatch" in body


# --- two clients: a grant works only with the client that obtained it ------------------------


@pytest.mark.parametrize(("owner", "other"), [("installed", "web"), ("web", "installed")])
def test_a_refresh_token_presented_by_the_other_client_is_unauthorized_client(
    google: FakeGoogle, owner: str, other: str
) -> None:
    token = google.issue_refresh_token(client=owner)

    refused = _post_token(google, other, grant_type="refresh_token", refresh_token=token)
    minted = _post_token(google, owner, grant_type="refresh_token", refresh_token=token)

    status, error, description = WRONG_CLIENT
    assert (
        refused
        == (status, {"error": error, "error_description": description})
        == (
            401,
            {"error": "unauthorized_client", "error_description": "Unauthorized"},
        )
    )
    assert minted[0] == 200, minted  # the refusal did not spend or revoke the token
    assert google.token_requests[0]["client_id"] == _as_client(google, other)["client_id"]


def test_a_dead_token_is_invalid_grant_whichever_client_presents_it(google: FakeGoogle) -> None:
    token = google.issue_refresh_token(client="web")
    google.revoke(token)

    for client in ("web", "installed"):
        status, payload = _post_token(google, client, grant_type="refresh_token", refresh_token=token)
        assert (status, payload["error"]) == (400, "invalid_grant")


def test_one_clients_secret_does_not_authenticate_the_other(google: FakeGoogle) -> None:
    token = google.issue_refresh_token(client="web")
    crossed = {"client_id": google.web_client_id, "client_secret": google.client_secret}

    status, payload = _post_token(google, grant_type="refresh_token", refresh_token=token, **crossed)

    assert (status, payload["error"]) == (401, "invalid_client")


def test_the_web_client_may_authenticate_with_http_basic(google: FakeGoogle) -> None:
    token = google.issue_refresh_token(client="web")
    basic = base64.b64encode(f"{google.web_client_id}:{google.web_client_secret}".encode()).decode()
    body = urlencode({"grant_type": "refresh_token", "refresh_token": token}).encode()

    status, _, answer = _request(
        google,
        "POST",
        "/token",
        body,
        Authorization=f"Basic {basic}",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert status == 200, answer


@pytest.mark.parametrize(("owner", "other"), [("installed", "web"), ("web", "installed")])
def test_a_code_redeemed_by_the_other_client_is_unauthorized_client_and_spent(
    google: FakeGoogle, owner: str, other: str
) -> None:
    google.web_redirect_uris.add(LOOPBACK)  # one redirect URI both clients may use: only the client differs
    code = _consent(google, client_id=_as_client(google, owner)["client_id"])["code"]

    stolen = _post_token(google, other, grant_type="authorization_code", code=code, redirect_uri=LOOPBACK)
    late = _post_token(google, owner, grant_type="authorization_code", code=code, redirect_uri=LOOPBACK)

    assert stolen == (401, {"error": "unauthorized_client", "error_description": "Unauthorized"})
    assert (late[0], late[1]["error"]) == (400, "invalid_grant")  # codes are single-use, even on a refusal
    assert google.consent_requests[0]["client_id"] == _as_client(google, owner)["client_id"]


def test_a_grant_from_a_code_belongs_to_the_client_that_redeemed_it(google: FakeGoogle) -> None:
    google.web_redirect_uris.add(FUNCTION_URL)
    web = _sign_in(google, f"openid email {GMAIL_INSERT_SCOPE}", redirect_uri=FUNCTION_URL, client="web")
    installed = _sign_in(google, f"openid email {GMAIL_INSERT_SCOPE}")

    assert google.decode_id_token(installed["id_token"])["aud"] == google.client_id
    assert google.decode_id_token(web["id_token"])["aud"] == google.web_client_id
    for token, owner, other in ((web, "web", "installed"), (installed, "installed", "web")):
        assert _post_token(google, other, grant_type="refresh_token", refresh_token=token["refresh_token"])[0] == 401
        assert _post_token(google, owner, grant_type="refresh_token", refresh_token=token["refresh_token"])[0] == 200


def test_issue_refresh_token_names_only_the_two_clients(google: FakeGoogle) -> None:
    with pytest.raises(ValueError, match="installed"):
        google.issue_refresh_token(client="desktop")
