"""The one fingerprint of an environment: equal for the same environment and interpreter on every
target (local cache, SSH and MPI hosts, Docker images add their base image), so a run's
``training.environment.fingerprint`` tag names what it ran in wherever it ran."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from airflow_provider.core.environments.locking import Lock
from airflow_provider.core.environments.requirement_files import localize_requirements
from airflow_provider.core.environments.spec import Environment

__all__ = ["environment_fingerprint"]


def environment_fingerprint(env: Environment | None, python_version: str, lock: Lock | None = None) -> str:
    """Hash what defines a prepared environment; the environment's name and version do not count.

    Requirements that name local files (wheels, ``--find-links`` folders) count by their content,
    not their path: a rebuilt wheel at the same path is a new environment, and the same files
    give the same fingerprint on this machine and on a host they were shipped to.

    :param env: the environment, or ``None`` for the current interpreter.
    :param python_version: the full ``sys.version`` string of the base interpreter.
    :param lock: the environment's resolved lock: then the exact packages and wheel hashes count,
        not the requirement lines (two specifications resolving to one lock share an environment).
    """
    kind = "current" if env is None else env.kind
    requirements = [] if env is None else localize_requirements(env.normalized_requirements(), "<files>")[0]
    payload: dict[str, Any] = {"kind": kind, "python_version": python_version, "requirements": requirements}
    if lock is not None:
        payload["requirements"] = []
        payload["lock"] = lock.identity()
    if env is not None and kind == "user_managed":
        payload["interpreter_path"] = env.python.interpreter_path or "python3"
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
