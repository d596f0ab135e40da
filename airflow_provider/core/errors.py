"""One exception tree for the whole provider, where each class says whether a retry can help.

Every error a user can cause is raised *before* compute is used, names the field at fault and says
how to fix it. Errors from libraries we call (MLflow, docker, paramiko, pip) are mapped onto this
tree in one place each (:class:`~airflow_provider.core.tracking.Tracker` for MLflow, the Docker
target's ``_docker_errors`` for docker, :meth:`SSHConnection.retrying
<airflow_provider.core.targets.ssh_connection.SSHConnection.retrying>` for paramiko), with
``raise ... from exc`` so the original survives as ``__cause__``. The ``retryable`` column is the
class attribute :attr:`TrainingRunError.retryable`; :func:`is_retryable` reads it::

    class                                  retryable  what
    TrainingRunError                       -          base class, never raised itself
    ├── ConfigurationError                 no         a field of ScriptRunConfig / Environment / a
    │   │                                             distributed config / a connection
    │   ├── SnapshotError                  no         source directory too big, symlink leaving it, ...
    │   ├── EnvironmentNotFoundError       no         Environment.get() of an unknown name or version
    │   └── TargetConfigurationError  (*)  no         unknown target, bad TLS files, unknown or changed
    │                                                 host key, failed login, a refused job id
    ├── TargetError                        yes        host unreachable, connection dropped, daemon
    │   │                                             restarting, a job that did not start
    │   └── TargetConfigurationError  (*)  no         (also a ConfigurationError, see above)
    ├── EnvironmentBuildError              yes        building a venv / image failed (a package index
    │                                                 down; carries the build log tail)
    ├── TrackingError                      yes        MLflow failed in a way not classified below
    │   ├── TrackingUnavailableError       yes        the server did not answer, 5xx, TEMPORARILY_UNAVAILABLE
    │   └── TrackingRefusedError           no         MLflow refused the request for what it holds
    │       │                                         (INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ...)
    │       └── ArtifactNotFoundError      no         a run has no such artifact (also a FileNotFoundError)
    └── RunFailedError                     run        the run ended Failed (the script failed)
        └── RunCanceledError               run        the run ended Canceled

    (*) one class with both bases: ``except TargetError`` and ``except ConfigurationError`` both catch it.

"no": the Airflow task fails at once (``AirflowFailException``); a retry cannot fix it. "yes": a
transient failure, re-raised so that the task's ``retries`` apply. "run": the run itself failed;
the task fails with ``AirflowException`` and the user's ``retries`` decide (``retryable`` is True).
Exceptions outside this tree (bugs, ``KeyboardInterrupt``) count as retryable, as Airflow treats them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

__all__ = [
    "ArtifactNotFoundError",
    "ConfigurationError",
    "EnvironmentBuildError",
    "EnvironmentNotFoundError",
    "RunCanceledError",
    "RunFailedError",
    "SnapshotError",
    "TargetConfigurationError",
    "TargetError",
    "TrackingError",
    "TrackingRefusedError",
    "TrackingUnavailableError",
    "TrainingRunError",
    "is_retryable",
    "is_run_failure",
]


class TrainingRunError(Exception):
    """Base class of every error this provider raises on purpose."""

    retryable: ClassVar[bool] = True
    """Whether a retry of the same call (an Airflow task retry) may succeed; see the tree above."""


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying what raised ``exc`` may help: the class's :attr:`TrainingRunError.retryable`
    for errors of the tree, True for anything else (Airflow's retries apply to those as before).

    :param exc: the exception.
    """
    return exc.retryable if isinstance(exc, TrainingRunError) else True


def is_run_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the run itself ended Failed or Canceled (the user's ``retries`` decide).

    :param exc: the exception.
    """
    return isinstance(exc, RunFailedError)


class ConfigurationError(TrainingRunError, ValueError):
    """A configuration field is wrong; raised before any compute is used. Never retryable.

    :param field: dotted name of the field at fault, e.g. ``"ScriptRunConfig.script"``.
    :param problem: what is wrong with it.
    :param fix: what the user should do instead.
    """

    retryable: ClassVar[bool] = False

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
    """A compute target could not be used for now: unreachable, a dropped connection, a restarting
    daemon, a job that did not start. Retryable; its subclass :class:`TargetConfigurationError` is not."""


class TargetConfigurationError(TargetError, ConfigurationError):
    """A compute target cannot be used as it is configured: an unknown target, unreadable TLS or key
    files, an unknown or changed host key, a failed login, a job id that was tampered with.

    Both a :class:`TargetError` and a :class:`ConfigurationError`; never retryable.

    :param message: the whole message (what is wrong and how to fix it).
    :param field: the field or connection at fault.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, field: str = "compute_target") -> None:
        self.field = field
        self.problem = message
        self.fix = ""
        TrainingRunError.__init__(self, message)


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
    """MLflow failed (retryable unless a subclass says otherwise)."""


class TrackingUnavailableError(TrackingError):
    """The tracking server did not answer (refused connection, timeout, a 5xx answer, MLflow's
    ``TEMPORARILY_UNAVAILABLE``).

    Retryable: the configuration may be right and the server down or restarting for a while, so
    Airflow tasks let this error be retried (unlike :class:`ConfigurationError`).
    """


class TrackingRefusedError(TrackingError):
    """MLflow refused a request for what it holds (a bad value, a missing run, a name taken): the same
    request is refused again, so it is not retryable.

    :param message: what was refused.
    :param error_code: MLflow's error code, e.g. ``INVALID_PARAMETER_VALUE``.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, error_code: str = "") -> None:
        self.error_code = error_code
        super().__init__(message)


class ArtifactNotFoundError(TrackingRefusedError, FileNotFoundError):
    """A run has no artifact of that name (also a :class:`FileNotFoundError`, as before).

    :param message: which run and artifact, and what the run has.
    """

    def __init__(self, message: str) -> None:
        TrackingRefusedError.__init__(self, message, "RESOURCE_DOES_NOT_EXIST")


class RunFailedError(TrainingRunError):
    """A submitted run ended Failed or Canceled (:class:`RunCanceledError`).

    Retryable in the sense that the user's ``retries`` decide: the task fails with
    ``AirflowException``, which Airflow retries as often as the task allows.

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

    @classmethod
    def for_status(cls, run_id: str, status: str, error: str, log_tail: str = "") -> RunFailedError:
        """The error for a run that ended ``status``: :class:`RunCanceledError` for ``Canceled``.

        :param run_id: the MLflow run id.
        :param status: the final detailed state.
        :param error: the run's error message.
        :param log_tail: the last lines of the run's driver log.
        """
        error_class = RunCanceledError if status == "Canceled" else RunFailedError
        return error_class(run_id, status, error, log_tail)


class RunCanceledError(RunFailedError):
    """A submitted run ended Canceled (someone canceled it, or its task was killed)."""
