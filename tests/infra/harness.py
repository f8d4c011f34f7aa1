"""What the infra tests import: the Pulumi-mock machinery, which lives in :mod:`sesmail.local.program`.

``run_program`` runs the whole program (``__main__.py``) under fresh recording mocks;
:mod:`sesmail.local.deploy` runs it with mocks that create in moto (the end-to-end scenarios and
``python -m sesmail.demo``). Both share the mocks, the monitor and the config helpers, so they are
defined once there and imported here under the names the tests have always used.
"""

from __future__ import annotations

from sesmail.local.account import ACCOUNT_ID, PARTITION, REGION, STACK
from sesmail.local.program import (
    COMPONENT_TYPE_PREFIX,
    EXAMPLE_STACK_FILE,
    MAIN,
    PROJECT,
    PROVIDER_TYPE_PREFIX,
    REPO_ROOT,
    STACK_TYPE,
    ProgramRun,
    RecordingMocks,
    RecordingMonitor,
    Registration,
    config_strings,
    example_config,
    is_secret,
    run_program,
    stack_config,
    unsecret,
)

__all__ = [
    "ACCOUNT_ID",
    "COMPONENT_TYPE_PREFIX",
    "EXAMPLE_STACK_FILE",
    "MAIN",
    "PARTITION",
    "PROJECT",
    "PROVIDER_TYPE_PREFIX",
    "REGION",
    "REPO_ROOT",
    "STACK",
    "STACK_TYPE",
    "ProgramRun",
    "RecordingMocks",
    "RecordingMonitor",
    "Registration",
    "config_strings",
    "example_config",
    "is_secret",
    "run_program",
    "stack_config",
    "unsecret",
]
