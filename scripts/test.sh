#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, unit, integration and system tests.
# Components the integration tests need are installed and started by scripts/components.sh.
# With TRAINING_RUNS_REQUIRE_COMPONENTS=1 (CI sets it) a missing component fails its tests
# instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/components.sh ]; then
    bash scripts/components.sh
fi
.venv/bin/ruff check airflow_provider tests benchmarks
.venv/bin/mypy airflow_provider/core airflow_provider/runtime airflow_provider/cli
exec .venv/bin/pytest -q -p no:cacheprovider --durations=15 "$@"
