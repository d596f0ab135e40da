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
# Compile every module once, here: uv installs without bytecode, and where Python may not write it
# (PYTHONDONTWRITEBYTECODE, a read-only mount of this environment on another worker) every process
# would compile MLflow and Airflow again at import: ~2 s more per Airflow task, per run, per test.
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    airflow_provider >/dev/null
