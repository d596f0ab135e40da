"""Distributed data-parallel PyTorch: ``PyTorchConfiguration`` starts ``torchrun`` with two
processes; they train one model with DDP over the gloo backend (CPU).

The interpreter needs torch: set ``TRAINING_RUNS_TORCH_PYTHON`` to a Python that has it (the tests
use the venv ``scripts/components.sh`` makes), or replace the environment below with
``Environment.from_pip_requirements(...)`` naming a torch build. Each process's output becomes
``system_logs/rank_<N>.log``; the task log shows rank 0.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.core import Environment, PyTorchConfiguration
from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = Path(__file__).parent / "train_pytorch_ddp_src"

torch_environment = Environment("torch-cpu")
torch_environment.python.user_managed_dependencies = True
torch_environment.python.interpreter_path = os.environ.get("TRAINING_RUNS_TORCH_PYTHON", "python3")

with DAG(
    dag_id="train_pytorch_ddp",
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
        arguments=["--epochs", 20],
        environment=torch_environment,
        distributed_job_config=PyTorchConfiguration(communication_backend="gloo", process_count=2),
        experiment_name="train_pytorch_ddp",
        max_run_duration_seconds=900,
    )
