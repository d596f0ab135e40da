"""Environments: what a run's Python is made of, and how each target makes it ready.

=================  ===============================================================================
module             role
=================  ===============================================================================
spec               :class:`Environment` (Azure ML v1's names), its validation and the registry
                   (``register()`` / ``Environment.get``)
fingerprint        :func:`environment_fingerprint`: one id for an environment and an interpreter,
                   the same on every target (the run's ``training.environment.fingerprint``)
prepared           :class:`PreparedEnvironment`: what the lifecycle gets back (interpreter, how)
requirement_files  local files named by requirements, counted by content in fingerprints and lock keys
locking            :func:`lock_requirements`: a lock resolved here for the target's platform (uv)
wheels             :class:`WheelStore`: the lock's wheels downloaded once, by sha256, for targets
interpreters       which interpreter a conda specification's ``python=X.Y`` selects
conda_spec         :class:`CondaDependencies` (Azure ML v1) and its translation to pip requirements
conda_builder      conda solutions for any target (py-rattler, the ``conda`` extra), and real conda
                   environments on this machine
curated            the shipped curated environments and their Azure ML v1 names
local_cache        the local target's cache of environments, built once per fingerprint
docker_images      the Docker target's images, built once per fingerprint
=================  ===============================================================================

Every virtual environment, on this machine or on a host, is built by one builder,
:mod:`airflow_provider.runtime.venv_builder` (standard library only, shipped to hosts with the
runtime): ``uv`` when present, else ``venv`` + pip, in a temporary folder published by one rename.
Conda environments on hosts and in images are installed by
:mod:`airflow_provider.runtime.conda_installer`, from package files solved and fetched here.

Every managed environment is built from a lock (see :mod:`locking`), bounded caches evict the
least recently used first and never an environment a running job uses.
"""

from __future__ import annotations

from airflow_provider.core.environments.fingerprint import environment_fingerprint
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import DockerSection, Environment, EnvironmentKind, PythonSection

__all__ = ["DockerSection", "Environment", "EnvironmentKind", "PreparedEnvironment", "PythonSection",
           "environment_fingerprint"]
