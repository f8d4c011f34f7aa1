"""Pulumi-mock tests of the resource graph (sesmail/infra + __main__.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:  # `tests.infra.harness` and `sesmail` import from the root
    sys.path.insert(0, _REPO_ROOT)

from tests.infra.harness import ProgramRun, run_program  # noqa: E402


@pytest.fixture(scope="module")
def example_run() -> ProgramRun:
    """The example stack (Pulumi.test.yaml) run once per module: runs are read-only records."""
    return run_program()
