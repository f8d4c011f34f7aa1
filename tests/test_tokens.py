"""Client JSON and stored-token parsing, minting against the fake token endpoint, the provider's cache."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from sesmail import names
from sesmail.local.google import FakeGoogle
from sesmail.runtime.errors import MailboxRefusedError, TokenExpiredError, TokenNotConfiguredError, TransientError
from sesmail.runtime.http import HttpClient
from sesmail.runtime.tokens import (
    AccessTokenProvider,
    ClientConfig,
    ClientConfigError,
    RefreshToken,
    RefreshTokenError,
    TokenExpiry,
    client_for,
    mint_access_token,
)


@pytest.mark.parametrize("kind", ["installed", "web"])
def test_client_json_of_either_kind_parses(google: FakeGoogle, kind: str) -> None:
    config = ClientConfig.from_json(json.dumps(google.client_json(kind)), env="test")
    client_id, secret = (google.client_id, google.client_secret)
    if kind == "web":
        client_id, secret = (google.web_client_id, google.web_client_secret)
    assert (config.kind, config.client_id, config.token_uri) == (kind, client_id, google.token_uri)
    assert secret not in repr(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "not configured yet"),
        (names.placeholder_value("test"), "not configured yet"),
        ("{oops", "not valid JSON"),
        ('{"other": {}}', "neither an 'installed' nor a 'web' section"),
        ('{"installed": {"client_id": "x"}}', "lacks client_secret, token_uri, auth_uri"),
        (
            '{"installed": {"client_id": "x", "client_secret": "y", "token_uri": "ftp://h", "auth_uri": "https://a"}}',
            "token_uri is not an http",
        ),
    ],
)
def test_bad_client_json_says_what_to_do(text: str | None, message: str) -> None:
    with pytest.raises(ClientConfigError, match=message) as caught:
        ClientConfig.from_json(text, env="test")
    assert "python -m sesmail.refresh --env test --client-secret FILE" in caught.value.reason
    assert isinstance(caught.value, TokenNotConfiguredError)  # the forwarder parks mail on it


def test_refresh_token_json_round_trip_hides_the_token_in_repr() -> None:
    now = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    token = RefreshToken.issued_now("1//secret-value", lifetime=timedelta(days=7), scopes=[names.GMAIL_SCOPE], now=now)
    stored = json.loads(token.to_json())
    assert stored == {
        "token": "1//secret-value",
        "created_at": "2026-11-24T08:00:00Z",
        "expires_at": "2026-12-01T08:00:00Z",
        "scopes": [names.GMAIL_SCOPE],
    }
    assert RefreshToken.from_json(token.to_json()) == token
    assert "secret-value" not in repr(token)


@pytest.mark.parametrize("text", [None, names.placeholder_value("test"), "{}", '{"token": ""}', "nope"])
def test_unusable_refresh_token_json_is_not_configured(text: str | None) -> None:
    with pytest.raises(RefreshTokenError, match=re.escape("python -m sesmail.refresh --env test")):
        RefreshToken.from_json(text, env="test")


def test_expiry_metadata_matches_the_design_shape() -> None:
    expiry = TokenExpiry(datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert json.loads(expiry.to_json()) == {
        "created_at": "2026-11-24T00:00:00Z",
        "expires_at": "2026-12-01T00:00:00Z",
        "expires_at_epoch": 1796083200,
    }
    assert TokenExpiry.from_json(expiry.to_json()) == expiry
    assert expiry.hours_left(datetime(2026, 11, 30, tzinfo=UTC)) == 24.0
    assert TokenExpiry(expiry.created_at, None).hours_left() is None


def test_mint_access_token_against_the_token_endpoint(google: FakeGoogle) -> None:
    client = ClientConfig.from_json(json.dumps(google.client_json()))
    clock = iter([1000.0]).__next__
    token = mint_access_token(HttpClient(), client, google.issue_refresh_token(), clock=clock)
    assert token.minted_now
    assert token.expires_at == 1000.0 + 3599 - names.ACCESS_TOKEN_SAFETY_MARGIN_SECONDS
    [request] = google.token_requests
    assert request["grant_type"] == "refresh_token"


def test_mint_classifies_token_endpoint_failures(google: FakeGoogle) -> None:
    client = ClientConfig.from_json(json.dumps(google.client_json()))
    http = HttpClient()
    with pytest.raises(TokenExpiredError, match="invalid_grant"):
        mint_access_token(http, client, "1//unknown")
    google.fail_token(503, headers={"Retry-After": "3"})
    with pytest.raises(TransientError) as transient:
        mint_access_token(http, client, google.issue_refresh_token())
    assert transient.value.retry_after == 3.0
    wrong_client = ClientConfig(client.kind, client.client_id, "wrong", client.token_uri, client.auth_uri)
    # A client Google refuses is our setup, not a dead token: renewing the token would not help.
    with pytest.raises(MailboxRefusedError, match="invalid_client"):
        mint_access_token(http, wrong_client, google.issue_refresh_token())


class _Parameters:
    """An in-memory SSM for the provider: values with versions, counting reads."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, int]] = {}
        self.reads = 0
        self.asked: list[list[str]] = []

    def put(self, name: str, value: str) -> None:
        version = self.values.get(name, ("", 0))[1] + 1
        self.values[name] = (value, version)

    def __call__(self, wanted: Sequence[str]) -> Mapping[str, tuple[str, int]]:
        self.reads += 1
        self.asked.append(list(wanted))
        return {n: self.values[n] for n in wanted if n in self.values}


def _provider(google: FakeGoogle, now: list[float]) -> tuple[AccessTokenProvider, _Parameters]:
    parameters = _Parameters()
    parameters.put(names.client_credentials_parameter("test"), json.dumps(google.client_json()))
    parameters.put(names.refresh_token_parameter("test"), json.dumps({"token": google.issue_refresh_token()}))
    return AccessTokenProvider("test", parameters, HttpClient(), clock=lambda: now[0]), parameters


def test_provider_caches_for_the_lifetime_less_the_margin(google: FakeGoogle) -> None:
    now = [0.0]
    provider, parameters = _provider(google, now)
    first = provider.get()
    now[0] = 3599 - names.ACCESS_TOKEN_SAFETY_MARGIN_SECONDS - 1
    assert provider.get().value == first.value
    assert not provider.get().minted_now
    now[0] += 2
    assert provider.get().value != first.value
    assert len(google.token_requests) == 2
    assert parameters.reads == 1  # SSM is read once; the credentials are cached with the container


def test_provider_rereads_ssm_once_on_invalid_grant(google: FakeGoogle) -> None:
    now = [0.0]
    provider, parameters = _provider(google, now)
    old = json.loads(parameters.values[names.refresh_token_parameter("test")][0])["token"]
    provider.get()
    google.revoke(old)
    parameters.put(names.refresh_token_parameter("test"), json.dumps({"token": google.issue_refresh_token()}))
    now[0] = 10_000  # the cached access token has expired
    provider.get()
    assert parameters.reads == 2
    assert [r["refresh_token"] == old for r in google.token_requests] == [True, True, False]


def test_provider_remembers_a_dead_version_and_only_rechecks_ssm(google: FakeGoogle) -> None:
    now = [0.0]
    provider, parameters = _provider(google, now)
    google.revoke(json.loads(parameters.values[names.refresh_token_parameter("test")][0])["token"])
    for _ in range(3):
        with pytest.raises(TokenExpiredError, match=re.escape("python -m sesmail.refresh --env test")):
            provider.get()
    assert len(google.token_requests) == 1
    assert parameters.reads == 4  # first load, the one re-read, then one version check per call


def test_expiry_without_an_expires_key_is_unreadable_not_never_expiring() -> None:
    with pytest.raises(RefreshTokenError, match="unreadable"):
        TokenExpiry.from_json("{}")
    assert TokenExpiry.from_json('{"expires_at": null}').expires_at is None


def test_provider_of_a_mailbox_reads_its_token_and_names_its_renewal(google: FakeGoogle) -> None:
    parameters = _Parameters()
    parameters.put(names.client_credentials_parameter("test"), json.dumps(google.client_json()))
    parameters.put(names.refresh_token_parameter("test"), json.dumps({"token": "1//the-default-token"}))
    alice = google.issue_refresh_token()
    parameters.put(names.refresh_token_parameter("test", "alice"), json.dumps({"token": alice}))
    provider = AccessTokenProvider("test", parameters, HttpClient(), mailbox="alice")
    provider.get()
    assert [r["refresh_token"] for r in google.token_requests] == [alice]
    google.revoke(alice)
    provider.forget(provider.get())
    with pytest.raises(TokenExpiredError, match=re.escape(names.refresh_command("test", "alice"))):
        provider.get()


def test_provider_of_a_mailbox_without_a_token_says_which_command_fixes_it(google: FakeGoogle) -> None:
    parameters = _Parameters()
    parameters.put(names.client_credentials_parameter("test"), json.dumps(google.client_json()))
    parameters.put(names.refresh_token_parameter("test"), json.dumps({"token": google.issue_refresh_token()}))
    provider = AccessTokenProvider("test", parameters, HttpClient(), mailbox="bob")
    with pytest.raises(RefreshTokenError, match=re.escape(names.refresh_command("test", "bob"))):
        provider.get()
    assert google.token_requests == []


# --- the client a stored record names (DESIGN.md, "Values stored in SSM") ---------------------------

ENV = "test"
INSTALLED_PARAMETER = names.client_credentials_parameter(ENV)
WEB_PARAMETER = names.web_client_credentials_parameter(ENV)


def _record(token: str, client_id: str | None = None) -> str:
    """A stored refresh-token record, as the CLI (no client_id) or the renewal page (client_id) writes it."""
    record: dict[str, object] = {"token": token, "created_at": "2026-11-20T00:00:00Z", "expires_at": None}
    if client_id is not None:
        record["client_id"] = client_id
    return json.dumps(record)


def _two_clients(
    google: FakeGoogle,
    record: str,
    *,
    installed: str | None = "json",
    web: str | None = "json",
    mailbox: str = "default",
) -> tuple[AccessTokenProvider, _Parameters]:
    """A provider over both client JSONs (``"json"``: the fake's; None: absent; else that value) and ``record``."""
    parameters = _Parameters()
    for name, kind, value in ((INSTALLED_PARAMETER, "installed", installed), (WEB_PARAMETER, "web", web)):
        if value is not None:
            parameters.put(name, json.dumps(google.client_json(kind)) if value == "json" else value)
    parameters.put(names.refresh_token_parameter(ENV, mailbox), record)
    return AccessTokenProvider(ENV, parameters, HttpClient(), mailbox=mailbox), parameters


def test_a_record_naming_the_web_client_mints_with_the_web_client_json(google: FakeGoogle) -> None:
    token = google.issue_refresh_token(client="web")  # renewed on the phone page
    provider, parameters = _two_clients(google, _record(token, google.web_client_id))

    provider.get()

    [request] = google.token_requests
    assert (request["client_id"], request["client_secret"]) == (google.web_client_id, google.web_client_secret)
    assert request["refresh_token"] == token
    # one SSM call for all three: installed JSON, web JSON, the mailbox's token
    assert parameters.asked == [[INSTALLED_PARAMETER, WEB_PARAMETER, names.refresh_token_parameter(ENV)]]


def test_a_record_without_client_id_mints_with_the_installed_client_json(google: FakeGoogle) -> None:
    provider, _ = _two_clients(google, _record(google.issue_refresh_token()))

    provider.get()

    assert [r["client_id"] for r in google.token_requests] == [google.client_id]


def test_a_record_naming_the_installed_client_mints_with_it(google: FakeGoogle) -> None:
    provider, _ = _two_clients(google, _record(google.issue_refresh_token(), google.client_id))

    provider.get()

    assert [r["client_id"] for r in google.token_requests] == [google.client_id]


def test_a_record_naming_an_unknown_client_mints_nothing_and_says_what_to_do(google: FakeGoogle) -> None:
    stranger = "999999999999-stranger.apps.googleusercontent.com"
    provider, _ = _two_clients(google, _record(google.issue_refresh_token(client="web"), stranger), mailbox="alice")

    with pytest.raises(ClientConfigError) as caught:
        provider.get()

    reason = caught.value.reason
    assert stranger in reason and "neither stored client JSON" in reason
    assert INSTALLED_PARAMETER in reason and WEB_PARAMETER in reason
    assert names.refresh_command(ENV, "alice") in reason
    assert isinstance(caught.value, TokenNotConfiguredError)  # the forwarder parks the mail
    assert google.token_requests == []


@pytest.mark.parametrize("web", [names.placeholder_value(ENV), None], ids=["placeholder", "absent"])
def test_a_web_token_without_a_configured_web_client_json_says_how_to_store_it(
    google: FakeGoogle, web: str | None
) -> None:
    record = _record(google.issue_refresh_token(client="web"), google.web_client_id)
    provider, _ = _two_clients(google, record, web=web)

    with pytest.raises(ClientConfigError) as caught:
        provider.get()

    reason = caught.value.reason
    assert f"the web client JSON {WEB_PARAMETER} is not configured yet" in reason
    assert f"python -m sesmail.refresh --env {ENV} --web-client-secret FILE" in reason
    assert google.web_client_id in reason and "not the installed one" in reason
    assert google.token_requests == []


def test_a_placeholder_installed_client_json_does_not_break_a_web_token(google: FakeGoogle) -> None:
    record = _record(google.issue_refresh_token(client="web"), google.web_client_id)
    provider, _ = _two_clients(google, record, installed=names.placeholder_value(ENV))

    provider.get()

    assert [r["client_id"] for r in google.token_requests] == [google.web_client_id]


def test_a_placeholder_web_client_json_does_not_break_an_installed_token(google: FakeGoogle) -> None:
    provider, _ = _two_clients(google, _record(google.issue_refresh_token()), web=names.placeholder_value(ENV))

    provider.get()

    assert [r["client_id"] for r in google.token_requests] == [google.client_id]


def test_an_installed_token_with_a_placeholder_installed_json_fails_as_before(google: FakeGoogle) -> None:
    provider, _ = _two_clients(google, _record(google.issue_refresh_token()), installed=names.placeholder_value(ENV))

    with pytest.raises(ClientConfigError, match="--client-secret FILE"):
        provider.get()
    assert google.token_requests == []


def test_the_wrong_client_is_refused_so_the_selection_matters(google: FakeGoogle) -> None:
    """Google (and the fake) answers ``unauthorized_client`` when the other client presents a token."""
    web_token = google.issue_refresh_token(client="web")
    installed = ClientConfig.from_json(json.dumps(google.client_json("installed")))
    web = ClientConfig.from_json(json.dumps(google.client_json("web")))
    http = HttpClient()

    with pytest.raises(MailboxRefusedError, match="unauthorized_client"):
        mint_access_token(http, installed, web_token)
    with pytest.raises(MailboxRefusedError, match="unauthorized_client"):
        mint_access_token(http, web, google.issue_refresh_token())
    assert mint_access_token(http, web, web_token).minted_now


def test_a_dead_installed_token_renewed_on_the_page_is_reloaded_with_the_web_client(google: FakeGoogle) -> None:
    now = [0.0]
    old = google.issue_refresh_token()
    parameters = _Parameters()
    parameters.put(INSTALLED_PARAMETER, json.dumps(google.client_json("installed")))
    parameters.put(WEB_PARAMETER, json.dumps(google.client_json("web")))
    parameters.put(names.refresh_token_parameter(ENV), _record(old))
    provider = AccessTokenProvider(ENV, parameters, HttpClient(), clock=lambda: now[0])
    provider.get()
    google.revoke(old)
    renewed = google.issue_refresh_token(client="web")
    parameters.put(names.refresh_token_parameter(ENV), _record(renewed, google.web_client_id))
    now[0] = 10_000  # the cached access token has expired

    provider.get()

    assert [(r["client_id"], r["refresh_token"]) for r in google.token_requests] == [
        (google.client_id, old),
        (google.client_id, old),  # invalid_grant: SSM is re-read once ...
        (google.web_client_id, renewed),  # ... and the new record's client mints
    ]


def test_renewed_switches_to_the_client_of_the_new_record(google: FakeGoogle) -> None:
    provider, parameters = _two_clients(google, _record(google.issue_refresh_token()))
    provider.get()
    renewed = google.issue_refresh_token(client="web")
    parameters.put(names.refresh_token_parameter(ENV), _record(renewed, google.web_client_id))

    assert provider.renewed()
    provider.get()

    assert [r["client_id"] for r in google.token_requests] == [google.client_id, google.web_client_id]


def _token(client_id: str | None) -> RefreshToken:
    return RefreshToken("1//t", datetime(2026, 11, 20, tzinfo=UTC), None, client_id=client_id)


def test_client_for_picks_by_client_id_and_parses_only_the_one_it_picks(google: FakeGoogle) -> None:
    installed, web = json.dumps(google.client_json("installed")), json.dumps(google.client_json("web"))

    assert client_for(_token(None), installed, "{broken", env=ENV).client_id == google.client_id
    assert client_for(_token(google.client_id), installed, None, env=ENV).kind == "installed"
    assert client_for(_token(google.web_client_id), "{broken", web, env=ENV).kind == "web"
    assert client_for(_token(google.web_client_id), None, web, env=ENV).client_secret == google.web_client_secret


def test_client_for_names_the_web_upload_when_the_matching_web_json_is_incomplete(google: FakeGoogle) -> None:
    web = google.client_json("web")
    del web["web"]["client_secret"]

    with pytest.raises(ClientConfigError) as caught:
        client_for(_token(google.web_client_id), None, json.dumps(web), env=ENV)

    assert "web OAuth client JSON's 'web' section lacks client_secret" in caught.value.reason
    assert "--web-client-secret FILE" in caught.value.reason


def test_client_for_says_what_is_wrong_with_an_unreadable_web_json(google: FakeGoogle) -> None:
    installed = json.dumps(google.client_json("installed"))

    with pytest.raises(ClientConfigError) as caught:
        client_for(_token(google.web_client_id), installed, "{broken", env=ENV)

    assert "the web OAuth client JSON is not valid JSON" in caught.value.reason
    assert "--web-client-secret FILE" in caught.value.reason
