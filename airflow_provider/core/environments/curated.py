"""Curated environments: a small shipped set, versioned and pinned, with Azure ML v1's names as aliases.

=========================  ======================================================================
name                       what it is
=========================  ======================================================================
``training-minimal``       the target's Python as it is, plus the provider's runtime (shipped with
                           every job): nothing to build
``training-sklearn``       scikit-learn, NumPy, SciPy, pandas and the MLflow client, pinned
``training-pytorch-cpu``   PyTorch (CPU build, from PyTorch's own index) and the MLflow client, pinned
=========================  ======================================================================

Each name keeps its earlier versions (``Environment.get(name, version=1)``); without a version the
latest is used. PyTorch's CPU builds come from its own index, ``download.pytorch.org/whl/cpu``; a
site behind a firewall names its mirror of that index in the environment variable
:data:`PYTORCH_INDEX_VARIABLE` on the machines that submit runs (the targets never need it: the
wheels are sent to them).

Each is resolved into a lock for the target's platform like any environment (the pins fix the
versions; the lock fixes their dependencies and wheel hashes), built once per host (a cached venv,
or an image on the Docker target) and reused. Azure ML v1's curated names resolve to them with
``azureml_compat`` on, so v1 scripts run unchanged: ``AzureML-Minimal``, ``AzureML-sklearn-*``,
``AzureML-pytorch-*-cpu*`` (e.g. ``AzureML-sklearn-1.0-ubuntu20.04-py38-cpu``,
``AzureML-pytorch-1.10-ubuntu18.04-py37-cpu-inference``). A GPU name is refused with the reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError

__all__ = ["AZUREML_ALIASES", "CURATED", "PYTORCH_INDEX", "PYTORCH_INDEX_VARIABLE", "curated_environment",
           "curated_names"]

PYTORCH_INDEX = "https://download.pytorch.org/whl/cpu"
"""PyTorch's own index of CPU builds."""
PYTORCH_INDEX_VARIABLE = "TRAINING_RUNS_PYTORCH_INDEX_URL"
"""The environment variable naming a mirror of :data:`PYTORCH_INDEX` (a PEP 503 simple index URL)."""
_PYTORCH_INDEX_LINE = "--extra-index-url {pytorch_index}"


@dataclass(frozen=True)
class _Curated:
    version: str
    pip_packages: tuple[str, ...]
    summary: str


_MLFLOW = "mlflow-skinny==3.5.0"
CURATED: dict[str, tuple[_Curated, ...]] = {
    "training-minimal": (_Curated("1", (), "the target's Python as it is, with the provider's runtime"),),
    "training-sklearn": (_Curated("1", ("scikit-learn==1.7.2", "numpy==2.2.6", "scipy==1.15.3", "pandas==2.3.3",
                                        _MLFLOW), "scikit-learn 1.7, NumPy, SciPy, pandas, MLflow client"),),
    "training-pytorch-cpu": (
        _Curated("1", (_PYTORCH_INDEX_LINE, "torch==2.9.1+cpu", "numpy==2.2.6", _MLFLOW),
                 "PyTorch 2.9 (CPU build), NumPy, MLflow client"),
        _Curated("2", (_PYTORCH_INDEX_LINE, "torch==2.13.0+cpu", "numpy==2.2.6", _MLFLOW),
                 "PyTorch 2.13 (CPU build), NumPy, MLflow client"),
    ),
}
"""The curated environments by name, oldest version first (Python 3.10 to 3.13; PyTorch 2.13's CPU
build from Python 3.10)."""

AZUREML_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"AzureML-Minimal(?:-.*)?\Z", re.IGNORECASE), "training-minimal"),
    (re.compile(r"AzureML-(?:Tutorial|sklearn)(?:-.*)?\Z", re.IGNORECASE), "training-sklearn"),
    (re.compile(r"AzureML-(?:pytorch|acpt-pytorch)-.*cpu.*\Z", re.IGNORECASE), "training-pytorch-cpu"),
)
"""Azure ML v1 curated names and the environment each resolves to (with ``azureml_compat`` on)."""
_LISTED_ALIASES = ("AzureML-Minimal", "AzureML-sklearn-1.7-cpu", "AzureML-pytorch-2.13-cpu")
_GPU = re.compile(r"AzureML-.*(?:gpu|cuda)", re.IGNORECASE)


def curated_names() -> list[str]:
    """The curated environments and the Azure ML names listed for them."""
    return [*CURATED, *_LISTED_ALIASES]


def curated_environment(name: str, version: str | int | None = None) -> Environment | None:
    """The curated environment ``name`` (or an Azure ML alias of one); None when it is not one.

    :param name: a curated name or an Azure ML v1 curated name.
    :param version: its version; ``None`` means the latest (each has one version so far).
    :raises ConfigurationError: an Azure ML GPU environment, or a version that does not exist.
    """
    target, compat = name, False
    if name not in CURATED:
        target = next((canonical for pattern, canonical in AZUREML_ALIASES if pattern.match(name)), "")
        compat = True
        if not target:
            if _GPU.match(name):
                raise ConfigurationError(
                    "environment", f"{name!r} is an Azure ML GPU environment; the curated set here is CPU only.",
                    "build a GPU environment from your own Dockerfile or conda specification (CUDA from the image).")
            return None
    versions = CURATED[target]
    curated = versions[-1] if version is None else next((v for v in versions if v.version == str(version)), None)
    if curated is None:
        raise ConfigurationError("environment.version", f"curated environment {name!r} has no version {version!r}.",
                                 f"use one of {', '.join(v.version for v in versions)}, or omit it for the latest.")
    pytorch_index = os.environ.get(PYTORCH_INDEX_VARIABLE, "").strip() or PYTORCH_INDEX
    env = Environment(name)
    env.version = curated.version
    env.python.pip_packages = [line.format(pytorch_index=pytorch_index) for line in curated.pip_packages]
    env.azureml_compat = compat
    return env
