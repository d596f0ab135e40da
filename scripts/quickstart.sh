#!/usr/bin/env bash
# Quick start: set up .venv, then run the train_local example DAG end to end with `airflow dags test`
# on the embedded defaults (SQLite Airflow database, SQLite MLflow store, no servers), and print
# where the run landed in MLflow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.quickstart/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/airflow_provider/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
mkdir -p "$AIRFLOW_HOME"
echo "==> Airflow home: $AIRFLOW_HOME"
.venv/bin/airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1
echo "==> airflow dags test train_local"
.venv/bin/airflow dags test train_local 2>&1 | tee "$AIRFLOW_HOME/dags-test.log" | grep -E '\[run\]|Training run|state=|ERROR' || true
grep -q "state=success" "$AIRFLOW_HOME/dags-test.log" || { echo "The DAG run failed: see $AIRFLOW_HOME/dags-test.log"; exit 1; }
.venv/bin/python - <<'PY'
import os
from mlflow.tracking import MlflowClient
from airflow_provider.core.tracking import resolve_tracking_uri

uri = resolve_tracking_uri()
client = MlflowClient(uri)
experiment = client.get_experiment_by_name("train_local")
run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
print("==> The run landed in MLflow:")
print(f"    tracking URI : {uri}")
print(f"    experiment   : train_local (id {experiment.experiment_id})")
print(f"    run id       : {run.info.run_id}  status {run.info.status} ({run.data.tags.get('training.state')})")
print(f"    metrics      : " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(run.data.metrics.items())))
print(f"    artifacts    : {run.info.artifact_uri}")
print(f"    browse it    : .venv/bin/mlflow ui --backend-store-uri {uri}")
PY
