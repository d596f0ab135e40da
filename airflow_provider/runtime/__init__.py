"""What runs on the target: standard library only, Python >= 3.9.

Every module of this package is shipped to the machine where a job runs (this one, a container, an
SSH or MPI host, a cluster node) and must import with the standard library alone on Python 3.9
(a test checks it): no Airflow, no MLflow, no third-party package, no ``zip(strict=)``, no ``|`` in
runtime type expressions.

===============  ===================================================================================
module           role
===============  ===================================================================================
job_runner       the supervisor of one job (``python3 job_runner.py JOB_DIR``), its job folder
remote_agent     the SSH/MPI hosts' helper (``python3 remote_agent.py serve``)
run_context      ``Run.get_context()`` / ``run.log(...)`` for training scripts
events           the events file's line format, shared by the script side and the watcher
rank_launcher    the per-rank wrapper of distributed runs (``python -m training_runs_launcher``)
venv_builder     the one builder of virtual environments (this machine's cache and the hosts' agent)
conda_installer  conda environments on hosts, from solved packages sent there (py-rattler as a tool)
===============  ===================================================================================

What travels, and how: :func:`host_files` (the supervisor and the agent, copied once per version
to a host, or into each container) and :func:`job_files` (the run-context package put on the
job's ``PYTHONPATH``, and with ``azureml_compat`` the Azure ML v1 layer) are the only lists of
shipped files; every target ships through them.

The job folder (one per run, named by its run id, on every target)
------------------------------------------------------------------
``job.json``       written by the submitting side before the supervisor starts
                   (:class:`job_runner.JobJson`): ``argv``, ``env``, ``secret_env`` (names of
                   ``env`` entries that are secrets: the supervisor rewrites the file without their
                   values as soon as it has read it), ``unset_env``, ``path_prepend``,
                   ``max_run_duration_seconds``, ``grace_seconds``, ``echo_output`` (in a container:
                   the supervisor also copies ``driver.log`` to its stdout as it grows, prints its
                   exit line on stderr, and ``exit.json`` gets ``driver_log_bytes``, the log's size).
``runner.json``    the supervisor's pids and start ticks (:class:`job_runner.RunnerJson`), written
                   atomically; once the command started, also its pid and process group.
``exit.json``      how the job ended (:class:`job_runner.ExitJson`): ``exit_code``, ``signal``,
                   ``reason`` (``exited``, ``timeout``, ``canceled``, ``launch_failed``),
                   ``message``, ``ended_at``; written atomically, last.
``driver.log``     the command's stdout and stderr (appended; watchers read it from byte offsets).
``events.jsonl``   the script's events, one JSON object per line (:mod:`events`); the watcher
                   relays complete lines from a byte offset and stores the offset in the run's
                   tag ``training.bookkeeping`` with the values it relayed, so a new
                   watcher resumes where the last stopped, nothing lost or doubled.
``uploads/``       files the script passed to ``upload_file`` / ``log_image`` (copies).
``work/``          the snapshot, the script's working folder (``./outputs``, ``./logs``).
``ranks/``         ``rank_<N>.log`` and ``rank_<N>.exit`` of distributed runs.
``runtime/``       :func:`job_files`.
``runner.log``     the supervisor's own output; ``.launched`` marks a launch in progress or done.
"""

from __future__ import annotations

import functools
import os

__all__ = ["COMPAT_PATH_DIR", "LAUNCHER_MODULE", "RUNTIME_DIR", "compiled_supervisor", "host_files",
           "host_files_version", "job_files"]

RUNTIME_DIR = "runtime"
"""Folder of the job that holds :func:`job_files`, put on the job's ``PYTHONPATH``."""
LAUNCHER_MODULE = "training_runs_launcher"
"""Module name of :mod:`rank_launcher` in the job's runtime folder (``python -m training_runs_launcher``)."""
COMPAT_PATH_DIR = "azureml_compat"
"""Folder under the job's runtime folder that holds the ``azureml`` package (on ``PYTHONPATH``)."""

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE = os.path.dirname(_HERE)
_HOST_MODULES = ("remote_agent.py", "job_runner.py", "venv_builder.py", "conda_installer.py", "system_metrics.py",
                 "host_resources.py", "gpu_reservations.py", "resource_limits.py")
_JOB_MODULES = ("__init__.py", "events.py", "run_context.py", "rank_launcher.py", "system_metrics.py")
_CORE_STAND_IN = (b'"""In a job only ``Run`` is here: the rest of the core stays on the submitting side."""\n'
                  b"from airflow_provider.core.run_context import Run\n__all__ = [\"Run\"]\n")


def _read(path: str) -> bytes:
    with open(path, "rb") as source:
        return source.read()


@functools.cache
def _host_files() -> tuple[tuple[str, bytes], ...]:
    return tuple((name, _read(os.path.join(_HERE, name))) for name in _HOST_MODULES)


def host_files() -> dict[str, bytes]:
    """The supervisor, the remote agent and the venv builder it uses, by file name: copied to a host
    once per version (see :func:`host_files_version`); a container gets the supervisor. They run
    as plain files."""
    return dict(_host_files())


@functools.cache
def compiled_supervisor() -> tuple[str, bytes]:
    """The supervisor compiled by this interpreter: its path next to ``job_runner.py`` and the
    bytes of an unchecked-hash ``.pyc``. A container whose Python is this version loads it instead
    of compiling the source (milliseconds at every start); any other version ignores it (the file
    name carries the version tag)."""
    import importlib.util
    import py_compile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="supervisor-pyc-") as scratch:
        compiled = py_compile.compile(os.path.join(_HERE, "job_runner.py"), cfile=os.path.join(scratch, "c.pyc"),
                                      doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        assert compiled is not None  # doraise: an error raises
        return importlib.util.cache_from_source("job_runner.py"), _read(compiled)


def host_files_version() -> str:
    """A short hash of :func:`host_files`: a host keeps one copy per version."""
    import hashlib  # here, not at the top: a training script imports this package (through Run)

    return hashlib.sha256(b"".join(content for _, content in _host_files())).hexdigest()[:16]


@functools.cache
def _job_files(azureml_compat: bool) -> tuple[tuple[str, bytes], ...]:
    package = f"{RUNTIME_DIR}/airflow_provider"
    files = {
        f"{package}/__init__.py": b"",
        f"{package}/core/__init__.py": _CORE_STAND_IN,
        f"{package}/core/run_context.py": _read(os.path.join(_PACKAGE, "core", "run_context.py")),
        **{f"{package}/runtime/{name}": _read(os.path.join(_HERE, name)) for name in _JOB_MODULES},
        f"{RUNTIME_DIR}/{LAUNCHER_MODULE}.py": _read(os.path.join(_HERE, "rank_launcher.py")),
    }
    if azureml_compat:
        files.update(_compat_files())
    return tuple(files.items())


def job_files(azureml_compat: bool = False) -> dict[str, bytes]:
    """The files a job's folder gets besides its snapshot, by their path in the job folder: the
    run-context package (``from airflow_provider.core import Run`` works in the script), the rank
    launcher, and with ``azureml_compat`` the Azure ML v1 layer (read from disk once per process).

    :param azureml_compat: also ship ``runtime/airflow_provider/compat/azureml/`` (the v1 ``Run``
        on our run context) and ``runtime/azureml_compat/azureml/`` (the ``azureml`` package a v1
        script imports; a real ``azureml-core`` in the environment wins over it).
    """
    return dict(_job_files(azureml_compat))


def _compat_files() -> dict[str, bytes]:
    source = os.path.join(_PACKAGE, "compat", "azureml")
    files = {f"{RUNTIME_DIR}/airflow_provider/compat/__init__.py": b""}
    for folder, _dirs, names in sorted(os.walk(source)):
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            relative = os.path.relpath(os.path.join(folder, name), source).replace(os.sep, "/")
            if relative.startswith("shim/"):
                files[f"{RUNTIME_DIR}/{COMPAT_PATH_DIR}/{relative[len('shim/'):]}"] = _read(os.path.join(folder, name))
            else:
                files[f"{RUNTIME_DIR}/airflow_provider/compat/azureml/{relative}"] = _read(os.path.join(folder, name))
    return files
