#!/usr/bin/env bash
# Creates the benchmark reference's own virtualenv (benchmarks/.venv-reference) from
# benchmarks/requirements-reference.txt. ses-mail itself never uses it: only the benchmarks
# start the reference forwarder with its interpreter. Run from anywhere:
#   bash benchmarks/setup.sh            # create or update
#   PYTHON=python3.11 bash benchmarks/setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV=".venv-reference"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-reference.txt
"$VENV/bin/python" - <<'PY'
import googleapiclient.discovery, aws_xray_sdk, aws_lambda_powertools, google.auth  # noqa: F401
print("reference virtualenv ready:", __import__("sys").prefix)
PY
