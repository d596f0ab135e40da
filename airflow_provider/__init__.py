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


def _examples(schema: dict[str, Any], *values: str) -> dict[str, Any]:
    """A text field that suggests ``values`` as it is typed in (Airflow's form lists a schema's examples)."""
    return {**schema, "examples": list(values)}


def _boolean(default: bool) -> dict[str, Any]:
    """A switch that shows the hook's own default."""
    return {**_BOOLEAN, "default": default}


def _integer(default: int, minimum: int = 0) -> dict[str, Any]:
    """A number field that shows the hook's own default."""
    return {**_INTEGER, "default": default, "minimum": minimum}


def _ssh_fields(suffix: str) -> dict[str, Any]:
    """How a connection reaches SSH hosts: the key and the host-key rules (``suffix`` says which hosts)."""
    return {
        "key_file": {"label": f"Private key file{suffix}", "schema": _examples(_STRING, "~/.ssh/id_ed25519"),
                     "description": "A path on the Airflow workers. Or paste the key into Private key."},
        "private_key": {"label": f"Private key, inline{suffix}", "schema": _MULTILINE,
                        "description": f"{_PASTE_KEY} Or set Private key file."},
        "passphrase": {"label": f"Key passphrase{suffix}", "schema": _SECRET,
                       "description": "Only for an encrypted key."},
        "host_key": {"label": f"Pinned host key{suffix}", "schema": _examples(_STRING, "ssh-ed25519 AAAAC3Nz..."),
                     "description": "A known_hosts line without the host name: what ssh-keyscan -t ed25519 HOST "
                                    "prints after the host. Checked first; else known_hosts."},
        "known_hosts": {"label": f"known_hosts file{suffix}", "schema": _examples(_STRING, "~/.ssh/known_hosts"),
                        "description": "Used when no key is pinned (default ~/.ssh/known_hosts of the worker's user)."},
        "accept_unknown_host_keys": {"label": f"Accept unknown host keys{suffix}", "schema": _boolean(False),
                                     "description": "Trust a host seen for the first time (a changed key is always "
                                                    "refused). Off: pin the key or list it in known_hosts."},
    }


_PYTHON_FIELD = {"label": "Remote Python interpreter", "schema": _examples(_STRING, "python3", "/usr/bin/python3.11"),
                 "description": "Its name or path on the host (default python3); environments are made from it."}
_SSH_HOST_ONLY_FIELDS: dict[str, Any] = {
    "work_root": {"label": "Remote working root", "schema": _examples(_STRING, "~/.training-runs"),
                  "description": "Where snapshots, environments and job folders live on the host "
                                 "(default ~/.training-runs)."},
    "python": _PYTHON_FIELD,
    "connect_timeout": {"label": "Connect timeout (s)", "schema": _integer(10, 1)},
    "keepalive": {"label": "Keepalive interval (s)", "schema": _integer(30),
                  "description": "Seconds between keepalive packets (0: none)."},
    "keep_failed_job_folders": {"label": "Keep failed runs' folders", "schema": _boolean(True),
                                "description": "For a look on the host; removed after the days below."},
    "kept_job_max_age_days": {"label": "Days to keep failed runs' folders", "schema": _integer(7)},
    "blob_cache_max_mb": {"label": "Blob cache bound: snapshots and wheels (MB)", "schema": _integer(10240)},
    "env_cache_max_count": {"label": "Environments kept", "schema": _integer(20)},
    "env_cache_max_gb": {"label": "Environment cache bound (GB)", "schema": _integer(50)},
}

_HOST_SHARING_FIELDS: dict[str, Any] = {
    "gpus": {"label": "GPUs of the host",
             "schema": _examples(_STRING, "0,1,2,3", "[0, 1]", "GPU-8f6a2b1c-3d4e-5f60-7182-93a4b5c6d7e8"),
             "description": "Indices as nvidia-smi -L numbers them (or GPU-... UUIDs), shared by runs that ask for "
                            "resources.gpus. Empty: nvidia-smi -L on the host."},
    "reservations_file": {"label": "GPU reservations file",
                          "schema": _examples(_STRING, "/var/tmp/training-runs/reservations.json"),
                          "description": "Where runs reserve the host's GPUs; the same for every connection to the "
                                         "host (default /var/tmp/training-runs/reservations.json)."},
    "queue_timeout_seconds": {"label": "GPU queue timeout (s)", "schema": _integer(86400, 1),
                              "description": "How long a run waits Queued for free GPUs before it fails."},
}

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
                 "conda": _CONDA_FIELD, **_HOST_SHARING_FIELDS},
                ["host", "schema", "login", "password", "port", "extra"],
            ),
            _connection_type(
                "training_docker", "compute.DockerComputeHook", "Training: Docker daemon",
                {
                    "tls_ca_cert": {"label": "TLS CA certificate (path or PEM)", "schema": _MULTILINE,
                                    "description": f"{_PATH_OR_PEM} Setting any TLS field connects over TLS."},
                    "tls_client_cert": {"label": "TLS client certificate (path or PEM)", "schema": _MULTILINE,
                                        "description": _PATH_OR_PEM},
                    "tls_client_private_key": {"label": "TLS client key (path or PEM)", "schema": _MULTILINE,
                                               "description": f"{_PATH_OR_PEM} Unencrypted. Formerly tls_client_key "
                                                              "(still read, but Airflow shows that name in clear)."},
                    "tls_skip_verify": {"label": "Skip checking the daemon's certificate (insecure)",
                                        "schema": _boolean(False),
                                        "description": "Off: TLS checks the daemon against the TLS CA certificate. "
                                                       "On: TLS without that check. (tls_verify, from before, is "
                                                       "still read.)"},
                    "tls_hostname": {"label": "TLS host name", "schema": _examples(_STRING, "docker.example.com"),
                                     "description": "The name the daemon's certificate carries, when not the "
                                                    "host's, e.g. docker.example.com."},
                    "image": {"label": "Default image", "schema": _examples(_STRING, "python:3.11-slim"),
                              "description": "For runs whose environment names no image."},
                    "python": {"label": "Python inside the image", "schema": _examples(_STRING, "python3"),
                               "description": "Its name or path in the image (default python3)."},
                    "registry": {"label": "Registry for base images", "schema": _examples(_STRING,
                                                                                          "registry.example.com:5000"),
                                 "description": "host[:port] that Registry user and password log in to, e.g. "
                                                "registry.example.com:5000."},
                    "network": {"label": "Network", "schema": _examples(_STRING, "bridge", "host", "none"),
                                "description": "The Docker network run containers join (default: the daemon's)."},
                    "user": {"label": "Run as user", "schema": _examples(_STRING, "1000:1000"),
                             "description": "user[:group], by name or id (default: the image's user)."},
                    "shm_size": {"label": "Shared memory size", "schema": _examples(_STRING, "2g", "512m"),
                                 "description": "/dev/shm of each container: bytes, or a number with b, k, m or "
                                                "g, e.g. 2g."},
                    "mem_limit": {"label": "Memory limit", "schema": _examples(_STRING, "16g", "4096m"),
                                  "description": "Per container: bytes, or a number with b, k, m or g, e.g. 16g "
                                                 "(default: no limit)."},
                    "cpus": {"label": "CPU limit", "schema": {"type": ["number", "null"], "minimum": 0},
                             "description": "CPUs a container may use, e.g. 1.5 (default: all)."},
                    "gpus": {"label": "GPU count (-1 for all)", "schema": _INTEGER,
                             "description": "GPUs given to each container through the NVIDIA runtime (default: none)."},
                    "volumes": {"label": "Volumes", "schema": {"type": ["array", "null"], "items": {"type": "string"}},
                                "description": "One a line: /host/path:/container/path[:ro|rw], e.g. /data:/data:ro."},
                    "labels": {"label": "Container labels (JSON object)", "schema": {"type": ["object", "null"]},
                               "description": 'Added to every run\'s container, e.g. {"team": "vision"}.'},
                    "input_cache_volume": {"label": "Input cache volume", "schema": _examples(_STRING, "none"),
                                           "description": "Keeps downloaded inputs on the daemon's host, so a run "
                                                          "sends only changed files. Default training-runs-inputs; "
                                                          "none: send inputs with every job."},
                    "conda": _CONDA_FIELD,
                },
                ["schema", "port"],
                {"host": "Daemon URL", "login": "Registry user", "password": "Registry password"},
                {"host": "unix:///var/run/docker.sock or tcp://HOST:2376"},
            ),
            _connection_type(
                "training_ssh", "compute.SSHComputeHook", "Training: SSH host",
                {**_ssh_fields(""), **_SSH_HOST_ONLY_FIELDS, "conda": _CONDA_FIELD, **_HOST_SHARING_FIELDS},
                ["schema"],
                {"host": "Host", "login": "User", "password": "Password (when no key is set)"},
                {"host": "gpu-1.example.com", "port": "22", "login": "the remote user (default: this worker's)"},
            ),
            _connection_type(
                "training_mpi", "compute.MPIComputeHook", "Training: MPI hosts",
                {
                    "hosts": {"label": "Hosts (host[:slots], comma separated)",
                              "schema": _examples(_STRING, "10.0.0.1:4,10.0.0.2:4"),
                              "description": "Each reached with this connection's port, user and key; slots caps the "
                                             "ranks per host (default: its CPUs). Or use SSH connections instead."},
                    "ssh_conn_ids": {"label": "SSH connections (comma separated)",
                                     "schema": _examples(_STRING, "gpu_node_1,gpu_node_2"),
                                     "description": "training_ssh connections, one a host, the first launching."},
                    "launcher": {"label": "Launcher", "schema": {"type": ["string", "null"], "default": "openmpi",
                                                                 "enum": ["openmpi", "mpich", None]},
                                 "description": "openmpi (mpirun) or mpich (mpiexec.mpich): what every host has."},
                    "mpirun_options": {"label": "Extra mpirun arguments",
                                       "schema": _examples(_STRING, "--mca btl_tcp_if_include 10.0.0.0/24"),
                                       "description": "Added to the launcher's command line, quoted as in a shell."},
                    **_ssh_fields(" (hosts)"),
                    "work_root": {"label": "Remote working root, same on every host",
                                  "schema": _examples(_STRING, "/scratch/training-runs"),
                                  "description": "An absolute folder that exists on every host (default "
                                                 "~/.training-runs): ranks start in the same folder."},
                    "python": _PYTHON_FIELD,
                    "conda": _CONDA_FIELD,
                },
                ["schema", "host"],
                {"login": "User (hosts)", "password": "Password (hosts, when no key is set)"},
                {"port": "22", "login": "the remote user (default: this worker's)"},
            ),
            _connection_type(
                "training_slurm", "compute.SlurmComputeHook", "Training: Slurm cluster",
                {
                    "work_root": {"label": "Shared work root (the same path on every node)",
                                  "schema": _examples(_STRING, "/shared/training-runs"),
                                  "description": "A folder of the cluster's shared filesystem, e.g. "
                                                 "/shared/training-runs: snapshots, environments and job folders."},
                    "partition": {"label": "Default partition", "schema": _examples(_STRING, "gpu"),
                                  "description": "Every job's partition unless the run names one (default: the "
                                                 "cluster's)."},
                    "account": {"label": "Account", "schema": _examples(_STRING, "ml")},
                    "qos": {"label": "QOS", "schema": _examples(_STRING, "normal")},
                    "sbatch_options": {"label": "Extra sbatch arguments",
                                       "schema": _examples(_STRING, '--exclusive --constraint="a100"'),
                                       "description": "Added to every job's sbatch, quoted as in a shell."},
                    "mpi_launcher": {"label": "MPI launcher", "schema": {"type": ["string", "null"],
                                                                         "enum": ["srun", "mpirun", None]},
                                     "description": "srun (default: Slurm's PMI starts the ranks) or mpirun "
                                                    "(Open MPI inside the allocation)."},
                    "srun_options": {"label": "Extra srun arguments for MPI ranks", "schema": _STRING,
                                     "description": "e.g. --mpi=pmix (default: the cluster's MpiDefault)."},
                    "setup": {"label": "Setup lines run before each job", "schema": _MULTILINE,
                              "description": "e.g. module load python/3.11 (one per line)."},
                    "python": {"label": "Python interpreter (login and compute nodes)",
                               "schema": _examples(_STRING, "python3", "/opt/python3.11/bin/python3"),
                               "description": "Its name or path on the nodes, after the setup lines "
                                              "(default python3)."},
                    **_ssh_fields(" (login node)"),
                    "conda": _CONDA_FIELD,
                },
                ["schema"],
                {"host": "Login node", "login": "User", "password": "Password (when no key is set)"},
                {"host": "login.cluster.example.com", "port": "22",
                 "login": "the cluster user (default: this worker's)"},
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
