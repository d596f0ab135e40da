"""Scale the MPI example out to a Slurm cluster, without changing its script.

The same ``train_mpi_src/train.py`` as the ``train_mpi`` example, now as one Slurm job of 2 nodes x
2 ranks: ``srun`` starts the ranks (Slurm's PMI), each rank's output becomes
``system_logs/rank_<N>.log`` and its metrics ``rank_<N>/<name>``. The run waits in Slurm's queue as
``Queued`` (with Slurm's reason), shows as ``training-<run id>`` in ``squeue`` and ``sacct``, and a
retried task reattaches to the same job.

Needs an Airflow connection ``training_slurm_default`` of type ``training_slurm``: the login node
(host, login, a key and its pinned host key) and ``work_root``, a folder of the cluster's shared
filesystem. The nodes need Python 3 and Open MPI; they need no package index: the environment's
wheels (numpy, mpi4py) are fetched here and built once on the shared root. Example::

    AIRFLOW_CONN_TRAINING_SLURM_DEFAULT='{"conn_type": "training_slurm", "host": "login-1", "login": "trainer",
        "extra": {"key_file": "~/.ssh/id_ed25519", "host_key": "ssh-ed25519 AAAA...",
                  "work_root": "/shared/training-runs", "partition": "cpu"}}'
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.core import Environment, MpiConfiguration
from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = Path(__file__).parent / "train_mpi_src"
REQUIREMENTS = Path(__file__).parent / "train_slurm_env" / "requirements.txt"

with DAG(
    dag_id="train_slurm",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["training", "example", "distributed", "slurm"],
    doc_md=__doc__,
) as dag:
    SubmitTrainingRunOperator(
        task_id="train",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", 30],
        environment=Environment.from_pip_requirements("slurm-mpi", REQUIREMENTS),
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=2),
        compute_resources={"memory_gb": 1},
        compute_target="training_slurm_default",
        experiment_name="train_slurm",
        max_run_duration_seconds=900,
        retries=2,
        retry_delay=timedelta(seconds=10),
    )
