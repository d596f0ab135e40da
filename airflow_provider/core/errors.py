"""One exception tree for the whole provider.

Every error a user can cause is raised *before* compute is used, names the field at fault and says
how to fix it. Errors from libraries we call (MLflow, docker, paramiko, pip) are mapped onto this
tree in one place each, with ``raise ... from exc`` so the original traceback survives::

    TrainingRunError
    ├── ConfigurationError          a field of ScriptRunConfig / Environment / a distributed config
    │   ├── SnapshotError           source directory too big, symlink leaving it, unreadable file
    │   └── EnvironmentNotFoundError  Environment.get() of an unknown name or version
    ├── TargetError                 a compute target could not be used (unknown, unreachable)
    ├── EnvironmentBuildError       building a venv / image failed (carries the build log tail)
    ├── TrackingError               MLflow could not be reached or refused a write
    │   └── TrackingUnavailableError  the tracking server did not answer (transient: a retry may help)
    └── RunFailedError              the run ended Failed or Canceled (carries details + log tail)
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigurationError",
    "EnvironmentBuildError",
    "EnvironmentNotFoundError",
    "RunFailedError",
    "SnapshotError",
    "TargetError",
    "TrackingError",
    "TrackingUnavailableError",
    "TrainingRunError",
]


class TrainingRunError(Exception):
    """Base class of every error this provider raises on purpose."""


class ConfigurationError(TrainingRunError, ValueError):
    """A configuration field is wrong; raised before any compute is used.

    :param field: dotted name of the field at fault, e.g. ``"ScriptRunConfig.script"``.
    :param problem: what is wrong with it.
    :param fix: what the user should do instead.
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class SnapshotError(ConfigurationError):
    """The source directory cannot be snapshotted as it is (too big, a link leaving it, ...)."""


class EnvironmentNotFoundError(ConfigurationError):
    """No registered environment has the requested name or version."""


class TargetError(TrainingRunError):
    """A compute target is unknown, unreachable or refused an operation."""


class EnvironmentBuildError(TrainingRunError):
    """Preparing an environment failed.

    :param message: one-line summary.
    :param log_tail: the last lines of the build log, shown to the user.
    :param log_path: the whole build log, when it was kept (uploaded as a run artifact).
    :param artifact_name: the build log's name under the run's ``system_logs/``.
    """

    def __init__(self, message: str, log_tail: str = "", log_path: Path | None = None,
                 artifact_name: str = "environment_build.log") -> None:
        self.log_tail = log_tail
        self.log_path = log_path
        self.artifact_name = artifact_name
        super().__init__(f"{message}\n--- build log tail ---\n{log_tail}" if log_tail else message)


class TrackingError(TrainingRunError):
    """MLflow could not be reached or refused a write."""


class TrackingUnavailableError(TrackingError):
    """The tracking server did not answer a quick probe before the run was started.

    Retryable: the configuration may be right and the server down or restarting for a while, so
    Airflow tasks let this error be retried (unlike :class:`ConfigurationError`).
    """


class RunFailedError(TrainingRunError):
    """A submitted run ended Failed or Canceled.

    :param run_id: the MLflow run id.
    :param status: the final detailed state (``Failed`` or ``Canceled``).
    :param error: the run's error message.
    :param log_tail: the last lines of the run's driver log.
    """

    def __init__(self, run_id: str, status: str, error: str, log_tail: str = "") -> None:
        self.run_id = run_id
        self.status = status
        self.error = error
        self.log_tail = log_tail
        message = f"Run {run_id} ended {status}: {error}"
        if log_tail:
            message += f"\n--- driver log tail ---\n{log_tail}"
        super().__init__(message)
