"""Fixtures of the refresh CLI tests: one moto server per worker, reset per test; the fake Google; the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.refresh.harness import SUCCEEDING_PROCESSOR, Cli, Cloud, MotoServer, RefreshFakeGoogle, deploy_stack


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cloud(moto_server: MotoServer) -> Cloud:
    """An empty AWS (moto) for each test."""
    moto_server.reset()
    return Cloud(moto_server)


@pytest.fixture
def google() -> Iterator[RefreshFakeGoogle]:
    """Overrides the shared fixture: the same fake, plus the issued-token list and dead tokens."""
    with RefreshFakeGoogle() as fake:
        yield fake
        assert fake.internal_errors == []


@pytest.fixture
def deployed(cloud: Cloud, google: RefreshFakeGoogle) -> Cloud:
    """The stack as `pulumi up` leaves it, with the OAuth client JSON already uploaded."""
    deploy_stack(cloud, google, processor=SUCCEEDING_PROCESSOR)
    return cloud


@pytest.fixture
def cli(moto_server: MotoServer, google: RefreshFakeGoogle, tmp_path: Path) -> Iterator[Cli]:
    """The CLI as a subprocess. After the test: no token or client secret in any output, ever."""
    runner = Cli(moto_server, tmp_path)
    yield runner
    secrets = google.secrets()
    for result in runner.results:
        for secret in secrets:
            assert secret not in result.stdout, "a secret reached stdout"
            assert secret not in result.stderr, "a secret reached stderr"
