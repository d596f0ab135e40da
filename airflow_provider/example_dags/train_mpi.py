"""Data-parallel training with MPI: ``MpiConfiguration`` starts the script once per rank with
``mpirun``; ranks average their gradients with mpi4py.

Runs on the local target here (all ranks on the worker's machine: needs ``mpirun`` from Open MPI
and ``mpi4py`` + ``numpy`` in the interpreter); point ``compute_target`` at a ``training_docker``
connection with an MPI image, or a ``training_ssh`` host, to run the ranks there. Each rank's output
becomes ``system_logs/rank_<N>.log``; the task log shows rank 0; ranks other than 0 log their
metrics as ``rank_<N>/<name>``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.core import MpiConfiguration
from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = Path(__file__).parent / "train_mpi_src"

with DAG(
    dag_id="train_mpi",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["training", "example", "distributed"],
    doc_md=__doc__,
) as dag:
    SubmitTrainingRunOperator(
        task_id="train",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", 30],
        distributed_job_config=MpiConfiguration(process_count_per_node=4),
        experiment_name="train_mpi",
        max_run_duration_seconds=600,
    )
