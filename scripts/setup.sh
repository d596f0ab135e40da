#!/usr/bin/env bash
# Create .venv and install the provider with its pinned dependencies (uv: seconds; pip: minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet uv
fi
UV=$(command -v uv || echo "$PYTHON -m uv")
[ -x .venv/bin/python ] || $UV venv --quiet --python "$PYTHON" .venv
$UV pip install --quiet --python .venv/bin/python -r requirements-lock.txt
$UV pip install --quiet --python .venv/bin/python --no-deps -e ".[test,cluster]"
