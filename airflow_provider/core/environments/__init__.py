"""Environments: what a run's Python is made of, and how each target makes it ready.

=================  ===============================================================================
module             role
=================  ===============================================================================
spec               :class:`Environment` (Azure ML v1's names), its validation and the registry
                   (``register()`` / ``Environment.get``)
fingerprint        :func:`environment_fingerprint`: one id for an environment and an interpreter,
                   the same on every target (the run's ``training.environment.fingerprint``)
prepared           :class:`PreparedEnvironment`: what the lifecycle gets back (interpreter, how)
requirement_files  local files named by requirements (wheels, ``-r`` files), shipped to targets
local_cache        the local target's cache of virtual environments, built once per fingerprint
docker_images      the Docker target's images, built once per fingerprint
=================  ===============================================================================

Every virtual environment, on this machine or on a host, is built by one builder,
:mod:`airflow_provider.runtime.venv_builder` (standard library only, shipped to hosts with the
runtime): ``uv`` when present, else ``venv`` + pip, in a temporary folder published by one rename.

Seams for what comes next: a conda environment is another ``Environment.kind`` with its own
section of the fingerprint and its own builder beside the venv builder; a curated environment is
a registry entry shipped with the package.
"""

from __future__ import annotations

from airflow_provider.core.environments.fingerprint import environment_fingerprint
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import DockerSection, Environment, EnvironmentKind, PythonSection

__all__ = ["DockerSection", "Environment", "EnvironmentKind", "PreparedEnvironment", "PythonSection",
           "environment_fingerprint"]
