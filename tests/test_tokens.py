"""Client JSON and stored-token parsing, minting against the fake token endpoint, the provider's cache."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from sesmail import names
from sesmail.errors import MailboxRefusedError, TokenExpiredError, TokenNotConfiguredError, TransientError
from sesmail.http import HttpClient
from sesmail.tokens import (
    AccessTokenProvider,
    ClientConfig,
    ClientConfigError,
    RefreshToken,
    RefreshTokenError,
    TokenExpiry,
    mint_access_token,
)
from tests.fakes.google import FakeGoogle


@pytest.mark.parametrize("kind", ["installed", "web"])
def test_client_json_of_either_kind_parses(google: FakeGoogle, kind: str) -> None:
    config = ClientConfig.from_json(json.dumps(google.client_json(kind)), env="test")
    assert (config.kind, config.client_id, config.token_uri) == (kind, google.client_id, google.token_uri)
    assert google.client_secret not in repr(config)


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

    def put(self, name: str, value: str) -> None:
        version = self.values.get(name, ("", 0))[1] + 1
        self.values[name] = (value, version)

    def __call__(self, wanted: Sequence[str]) -> Mapping[str, tuple[str, int]]:
        self.reads += 1
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
