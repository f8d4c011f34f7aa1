#!/usr/bin/env bash
# One command from a fresh clone to a tested tree: creates the virtualenv from the pinned
# requirements (or brings an existing one up to date), installs the validators built from the
# services' own rules (npm, from the committed lock file) and a real browser (Debian's Chromium,
# when missing and this runs as root), then lint, type check and pytest.
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

# asl-validator and friends, exactly as locked (tests/rules/package-lock.json).
npm ci --prefix tests/rules --no-audit --no-fund --loglevel=error

# The browser tests drive Debian's Chromium (a downloaded browser build cannot be had here).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: no chromium on PATH and not root: the real-browser tests will be skipped" >&2
    fi
fi

"$VENV/bin/ruff" check .
"$VENV/bin/mypy" sesmail handlers docs/render_flow.py

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
