#!/usr/bin/env bash
# One command from a fresh clone to a tested tree: creates the virtualenv from the pinned
# requirements (or brings an existing one up to date), then lint, type check and pytest.
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh -k forwarder    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

"$VENV/bin/ruff" check .
"$VENV/bin/mypy" sesmail handlers

set +e
# -n auto: one pytest worker per core (pytest-xdist); every test is independent of the others.
"$VENV/bin/python" -m pytest -n auto "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: treating that as a failure" >&2
    exit 1
fi
exit "$status"
