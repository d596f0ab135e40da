"""Airflow provider for training runs: local, Docker, SSH and MPI targets, run history in MLflow.

This module must stay free of Airflow and MLflow imports: training scripts import
``airflow_provider.core`` through it, and Airflow calls :func:`get_provider_info` while it
discovers providers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

DISTRIBUTION_NAME = "airflow-provider-training-runs"
MINIMUM_AIRFLOW_VERSION = "3.2.0"

_STRING = {"type": ["string", "null"]}
_INTEGER = {"type": ["integer", "null"]}
_BOOLEAN = {"type": ["boolean", "null"]}
_SECRET = {"type": ["string", "null"], "format": "password"}
_MULTILINE = {"type": ["string", "null"], "format": "multiline"}  # a text area: PEM and OpenSSH text keep their lines
_PASTE_KEY = "Paste the whole key file, BEGIN and END lines included."
_CONDA_FIELD = {"label": "Conda specifications", "schema": {"type": ["string", "null"], "default": "auto",
                                                             "enum": ["auto", "rattler", "translate", None]},
                "description": "auto (default: rattler when py-rattler is installed here), rattler (real conda "
                               "environments, solved here and installed with py-rattler) or translate (a virtual "
                               "environment from PyPI)."}
_PATH_OR_PEM = "The absolute path of a PEM file, or the PEM text itself."

SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "training_local": (),
    "training_docker": ("password", "tls_client_private_key"),
    "training_ssh": ("password", "private_key", "passphrase"),
    "training_mpi": ("password", "private_key", "passphrase"),
    "training_slurm": ("password", "private_key", "passphrase"),
    "mlflow": ("password", "token"),
}
"""The fields of each connection type that hold secrets: the connection's own ``password`` and extra
fields. Airflow's secrets masker decides by name alone what its UI and REST API show as ``***`` (a
name holding ``password``, ``private_key``, ``passphrase``, ``token``, ``secret``, ...), so every
secret field's name holds one of those words. A multi-line key field cannot also be a password
input: its name is what hides it."""


def _connection_type(kind: str, hook: str, name: str, fields: dict[str, Any], hidden: list[str],
                     relabeling: dict[str, str] | None = None,
                     placeholders: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "hook-class-name": f"airflow_provider.hooks.{hook}",
        "hook-name": name,
        "connection-type": kind,
        "conn-fields": fields,
        "ui-field-behaviour": {
            "hidden-fields": hidden,
            "relabeling": relabeling or {},
            "placeholders": placeholders or {},
        },
    }


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow (the ``apache_airflow_provider`` entry point)."""
    return {
        "package-name": DISTRIBUTION_NAME,
        "name": "Training Runs",
        "description": "Submit machine-learning training runs to local, Docker, SSH and MPI compute "
        "targets, with run history in MLflow (the Azure ML v1 ScriptRunConfig workflow, open source).",
        "versions": [__version__],
        "integrations": [{"integration-name": "Training Runs", "tags": ["software"]}],
        "operators": [{"integration-name": "Training Runs",
                       "python-modules": ["airflow_provider.operators.submit_training_run",
                                          "airflow_provider.operators.hyperparameter_sweep"]}],
        "hooks": [{"integration-name": "Training Runs",
                   "python-modules": ["airflow_provider.hooks.compute", "airflow_provider.hooks.mlflow"]}],
        "triggers": [{"integration-name": "Training Runs",
                      "python-modules": ["airflow_provider.triggers.training_run"]}],
        "extra-links": ["airflow_provider.links.MLflowRunLink"],
        "connection-types": [
            _connection_type(
                "training_local", "compute.LocalComputeHook", "Training: local processes",
                {"jobs_root": {"label": "Jobs folder", "schema": _STRING,
                               "description": "Where job folders are made (default: under $AIRFLOW_HOME)."},
                 "conda": _CONDA_FIELD},
                ["host", "schema", "login", "password", "port", "extra"],
            ),
            _connection_type(
                "training_docker", "compute.DockerComputeHook", "Training: Docker daemon",
                {
                    "tls_ca_cert": {"label": "TLS CA certificate (path or PEM)", "schema": _MULTILINE,
                                    "description": _PATH_OR_PEM},
                    "tls_client_cert": {"label": "TLS client certificate (path or PEM)", "schema": _MULTILINE,
                                        "description": _PATH_OR_PEM},
                    "tls_client_private_key": {"label": "TLS client key (path or PEM)", "schema": _MULTILINE,
                                               "description": f"{_PATH_OR_PEM} Unencrypted. Formerly tls_client_key "
                                                              "(still read, but Airflow shows that name in clear)."},
                    "tls_verify": {"label": "Verify the daemon's certificate", "schema": _BOOLEAN,
                                   "description": "Default true: check the daemon against the TLS CA certificate."},
                    "tls_hostname": {"label": "TLS host name", "schema": _STRING,
                                     "description": "The name the daemon's certificate carries, when not the host's."},
                    "image": {"label": "Default image", "schema": _STRING},
                    "python": {"label": "Python inside the image", "schema": _STRING},
                    "registry": {"label": "Registry for base images", "schema": _STRING},
                    "network": {"label": "Network", "schema": _STRING},
                    "user": {"label": "Run as user", "schema": _STRING},
                    "shm_size": {"label": "Shared memory size", "schema": _STRING},
                    "mem_limit": {"label": "Memory limit", "schema": _STRING},
                    "cpus": {"label": "CPU limit", "schema": {"type": ["number", "null"]}},
                    "gpus": {"label": "GPU count (-1 for all)", "schema": _INTEGER},
                    "volumes": {"label": "Volumes (host:container[:ro|rw], one a line)",
                                "schema": {"type": ["array", "null"], "items": {"type": "string"}}},
                    "labels": {"label": "Container labels (JSON object)", "schema": {"type": ["object", "null"]}},
                    "input_cache_volume": {"label": "Input cache volume", "schema": _STRING,
                                           "description": "Keeps downloaded inputs on the daemon's host, so a run "
                                                          "sends only changed files. Default training-runs-inputs; "
                                                          "none: send inputs with every job."},
                },
                ["schema"],
                {"host": "Daemon URL", "login": "Registry user", "password": "Registry password"},
                {"host": "unix:///var/run/docker.sock"},
            ),
            _connection_type(
                "training_ssh", "compute.SSHComputeHook", "Training: SSH host",
                {
                    "private_key": {"label": "Private key (inline)", "schema": _MULTILINE,
                                    "description": f"{_PASTE_KEY} Or set key_file."},
                    "key_file": {"label": "Private key file", "schema": _STRING},
                    "passphrase": {"label": "Key passphrase", "schema": _SECRET},
                    "host_key": {"label": "Pinned host key", "schema": _STRING},
                    "known_hosts": {"label": "known_hosts file", "schema": _STRING},
                    "accept_unknown_host_keys": {"label": "Accept unknown host keys", "schema": _BOOLEAN},
                    "work_root": {"label": "Remote working root", "schema": _STRING},
                    "python": {"label": "Remote Python interpreter", "schema": _STRING},
                    "connect_timeout": {"label": "Connect timeout (s)", "schema": _INTEGER},
                    "keepalive": {"label": "Keepalive interval (s)", "schema": _INTEGER},
                    "keep_failed_job_folders": {"label": "Keep failed runs' folders", "schema": _BOOLEAN},
                    "blob_cache_max_mb": {"label": "Blob cache bound: snapshots and wheels (MB)", "schema": _INTEGER},
                    "env_cache_max_count": {"label": "Environments kept", "schema": _INTEGER},
                    "env_cache_max_gb": {"label": "Environment cache bound (GB)", "schema": _INTEGER},
                    "kept_job_max_age_days": {"label": "Days to keep failed runs' folders", "schema": _INTEGER},
                    "conda": _CONDA_FIELD,
                },
                ["schema"],
            ),
            _connection_type(
                "training_mpi", "compute.MPIComputeHook", "Training: MPI hosts",
                {
                    "hosts": {"label": "Hosts (host[:slots], comma separated)", "schema": _STRING},
                    "ssh_conn_ids": {"label": "SSH connections (comma separated)", "schema": _STRING},
                    "launcher": {"label": "Launcher", "schema": {"type": ["string", "null"], "default": "openmpi",
                                                                 "enum": ["openmpi", "mpich", None]}},
                    "mpirun_options": {"label": "Extra mpirun arguments", "schema": _STRING},
                    "key_file": {"label": "Private key file (hosts)", "schema": _STRING},
                    "private_key": {"label": "Private key, inline (hosts)", "schema": _MULTILINE,
                                    "description": f"{_PASTE_KEY} Or set key_file."},
                    "passphrase": {"label": "Key passphrase (hosts)", "schema": _SECRET},
                    "host_key": {"label": "Pinned host key (hosts)", "schema": _STRING},
                    "known_hosts": {"label": "known_hosts file (hosts)", "schema": _STRING},
                    "work_root": {"label": "Remote working root, same on every host", "schema": _STRING},
                    "python": {"label": "Remote Python interpreter", "schema": _STRING},
                    "conda": _CONDA_FIELD,
                },
                ["schema"],
            ),
            _connection_type(
                "training_slurm", "compute.SlurmComputeHook", "Training: Slurm cluster",
                {
                    "work_root": {"label": "Shared work root (the same path on every node)", "schema": _STRING,
                                  "description": "A folder of the cluster's shared filesystem, e.g. "
                                                 "/shared/training-runs: snapshots, environments and job folders."},
                    "partition": {"label": "Default partition", "schema": _STRING},
                    "account": {"label": "Account", "schema": _STRING},
                    "qos": {"label": "QOS", "schema": _STRING},
                    "sbatch_options": {"label": "Extra sbatch arguments", "schema": _STRING},
                    "mpi_launcher": {"label": "MPI launcher", "schema": {"type": ["string", "null"],
                                                                         "enum": ["srun", "mpirun", None]},
                                     "description": "srun (default: Slurm's PMI starts the ranks) or mpirun "
                                                    "(Open MPI inside the allocation)."},
                    "srun_options": {"label": "Extra srun arguments for MPI ranks", "schema": _STRING,
                                     "description": "e.g. --mpi=pmix (default: the cluster's MpiDefault)."},
                    "setup": {"label": "Setup lines run before each job", "schema": _MULTILINE,
                              "description": "e.g. module load python/3.11 (one per line)."},
                    "python": {"label": "Python interpreter (login and compute nodes)", "schema": _STRING},
                    "private_key": {"label": "Private key (inline)", "schema": _MULTILINE,
                                    "description": f"{_PASTE_KEY} Or set key_file."},
                    "key_file": {"label": "Private key file", "schema": _STRING},
                    "passphrase": {"label": "Key passphrase", "schema": _SECRET},
                    "host_key": {"label": "Pinned host key of the login node", "schema": _STRING},
                    "known_hosts": {"label": "known_hosts file", "schema": _STRING},
                    "conda": _CONDA_FIELD,
                },
                ["schema"],
                {"host": "Login node"},
            ),
            _connection_type(
                "mlflow", "mlflow.MLflowTrackingHook", "MLflow tracking server",
                {"token": {"label": "Bearer token", "schema": _SECRET}},
                ["schema", "port", "extra"],
                {"host": "Tracking URI"},
                {"host": "http://mlflow.example.com:5000"},
            ),
        ],
    }
