"""Fixtures of the end-to-end scenarios: moto's server in this process (one per xdist worker),
the whole Pulumi program deployed into it per test, the fake Google, the edges and the operator.

The world itself lives in :mod:`sesmail.local` (shared with ``python -m sesmail.demo``); these
fixtures build it for each test, with pytest's ``monkeypatch`` as its patcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sesmail.local.edges import E2EFakeGoogle
from sesmail.local.moto_server import InProcessMotoServer
from sesmail.local.world import System, quiet, start_system


@pytest.fixture(scope="session")
def moto_server() -> Iterator[InProcessMotoServer]:
    server = InProcessMotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def google() -> Iterator[E2EFakeGoogle]:
    """Overrides the shared fixture: one fake Google (OAuth + Gmail) per test, on its own port."""
    fake = E2EFakeGoogle()
    with fake:
        yield fake
        assert fake.internal_errors == []


@pytest.fixture
def stack_config() -> dict[str, Any] | None:
    """The stack's config; None is the example stack (Pulumi.test.yaml). A scenario module overrides it."""
    return None


@pytest.fixture
def system(
    moto_server: InProcessMotoServer,
    google: E2EFakeGoogle,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stack_config: dict[str, Any] | None,
    _isolated_aws_environment: None,
) -> Iterator[System]:
    """An empty AWS, ``pulumi up`` of the stack into it, and the world around it."""
    with moto_server.session(), quiet():
        yield start_system(moto_server, google, monkeypatch, tmp_path, stack_config)


def pytest_configure(config: pytest.Config) -> None:
    # pulumi_aws warns about its own deprecated resource classes when its modules load (as in
    # tests/infra); the program uses none of them.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws")
