"""Train the same small model on a remote Linux host over SSH.

Needs an Airflow connection ``training_ssh_default`` of type ``training_ssh``: host, port, login,
and a private key (extra ``key_file`` or ``private_key``); the host's key pinned in extra
``host_key`` (``ssh-keyscan -p PORT HOST`` prints it) or found in a ``known_hosts`` file. The host
needs Python 3; this example's script uses only the standard library. Example::

    AIRFLOW_CONN_TRAINING_SSH_DEFAULT='{"conn_type": "training_ssh", "host": "gpu-box-1", "login": "trainer",
        "extra": {"key_file": "~/.ssh/id_ed25519", "host_key": "ssh-ed25519 AAAA..."}}'

Only the files the host does not hold yet are sent; the run continues if the connection drops, and
a retried task reattaches to it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = Path(__file__).parent / "train_ssh_src"

with DAG(
    dag_id="train_ssh",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["training", "example", "ssh"],
    doc_md=__doc__,
) as dag:
    SubmitTrainingRunOperator(
        task_id="train",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", 20],
        compute_target="training_ssh_default",
        experiment_name="train_ssh",
        max_run_duration_seconds=600,
        retries=2,
        retry_delay=timedelta(seconds=10),
    )
