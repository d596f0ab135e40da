"""What preparing an environment on a target gives the lifecycle: the interpreter to run, and how."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider.core.environments.spec import EnvironmentKind

__all__ = ["PreparedEnvironment"]


@dataclass(frozen=True)
class PreparedEnvironment:
    """The interpreter a run must use, and how it was obtained.

    :param kind: the environment's kind; ``"current"`` when no environment was given.
    :param python: absolute path of the interpreter the run must use.
    :param fingerprint: sha256 hex of what defines the environment (see :func:`environment_fingerprint`).
    :param built: ``True`` when this call built the environment (a cache miss).
    :param build_log: the build log, when this call built the environment.
    :param description: human-readable summary for the run's details.
    :param image: the container image the run uses (container targets only).
    :param build_log_artifact: the build log's name under the run's ``system_logs/``.
    :param lock: the resolved lock the environment was built from (the run's ``environment/lock.txt``).
    """

    kind: EnvironmentKind
    python: str
    fingerprint: str
    built: bool
    build_log: Path | None
    description: str
    image: str | None = None
    build_log_artifact: str = "environment_build.log"
    lock: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {
            "kind": self.kind,
            "python": self.python,
            "fingerprint": self.fingerprint,
            "built": self.built,
            "build_log": None if self.build_log is None else str(self.build_log),
            "description": self.description,
            "image": self.image,
            "build_log_artifact": self.build_log_artifact,
            "lock": self.lock,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedEnvironment:
        """Rebuild from :meth:`to_dict` output.

        :param data: the serialised prepared environment.
        """
        log = data.get("build_log")
        return cls(
            kind=data["kind"],
            python=str(data["python"]),
            fingerprint=str(data["fingerprint"]),
            built=bool(data["built"]),
            build_log=None if log is None else Path(log),
            description=str(data["description"]),
            image=data.get("image"),
            build_log_artifact=str(data.get("build_log_artifact", "environment_build.log")),
            lock=data.get("lock"),
        )
