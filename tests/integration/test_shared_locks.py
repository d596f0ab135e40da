"""Locks shared between machines through a real MLflow server (several Airflow workers): a worker that
has no lock of its own takes the one another published, so the same specification gets the same
packages everywhere while the index moves on; a refresh retires it. Each "machine" is its own state
folder; the index and the conda channel are served over HTTP on loopback, and get new releases
during the tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Environment, Experiment, ScriptRunConfig
from airflow_provider.core.environments import shared_locks
from airflow_provider.core.environments.conda_builder import forget_conda_locks, solve
from airflow_provider.core.environments.conda_spec import CondaDependencies
from airflow_provider.core.environments.locking import TargetPlatform, forget_locks, lock_requirements
from airflow_provider.core.targets.local import LocalTarget
from tests import conda_channel
from tests.helpers import make_wheel, serve_folder, write_script

PLATFORM = TargetPlatform.current()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback, and its URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serve_folder(folder) as url:
        yield folder, url


def _release(folder: Path, version: str) -> None:
    """Publish sharedpkg ``version`` on the simple index (PEP 503) in ``folder``."""
    files = folder / "files"
    files.mkdir(exist_ok=True)
    make_wheel(files, "sharedpkg", version, f"VERSION = {version!r}\n")
    links = folder / "simple" / "sharedpkg"
    links.mkdir(parents=True, exist_ok=True)
    anchors = "".join(f'<a href="../../files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
                      f"{w.name}</a>\n" for w in sorted(files.glob("sharedpkg-*.whl")))
    (links / "index.html").write_text(f"<html><body>\n{anchors}</body></html>\n")


def _machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    """From now on, this process is another machine: its own state folder (lock cache, environments) and
    caches (py-rattler's repodata, uv's pages), as another worker has."""
    monkeypatch.setenv("TRAINING_RUNS_HOME", str(tmp_path / name))
    monkeypatch.setenv("TRAINING_RUNS_CACHE", str(tmp_path / name / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / name / "uv-cache"))


def _pinned(requirements: list[str]) -> str:
    (package,) = lock_requirements(requirements, PLATFORM).packages
    return package.version


def test_workers_share_a_pip_lock_until_it_is_refreshed(mlflow_server: str, served: tuple[Path, str],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = served
    _release(folder, "1.0")
    requirements = [f"--index-url {url}/simple", "sharedpkg"]
    store = shared_locks.SharedLocks(mlflow_server)
    _machine(monkeypatch, tmp_path, "worker-a")
    with shared_locks.sharing_locks(store):
        assert _pinned(requirements) == "1.0"
    _release(folder, "2.0")  # the index moves on

    _machine(monkeypatch, tmp_path, "alone")
    assert _pinned(requirements) == "2.0", "a machine that shares nothing resolves the newest"
    _machine(monkeypatch, tmp_path, "worker-b")
    with shared_locks.sharing_locks(store):
        assert _pinned(requirements) == "1.0", "worker b takes worker a's lock instead of resolving"
        assert forget_locks(requirements) >= 2  # b's own copy, and the published one
        assert _pinned(requirements) == "2.0"
    _machine(monkeypatch, tmp_path, "worker-c")
    with shared_locks.sharing_locks(store):
        assert _pinned(requirements) == "2.0", "the refreshed lock is the one shared now"

    experiment = MlflowClient(mlflow_server).get_experiment_by_name(shared_locks.EXPERIMENT)
    runs = MlflowClient(mlflow_server).search_runs([experiment.experiment_id])
    assert runs and all(run.data.tags[shared_locks.KEY_TAG] for run in runs)


def test_a_lock_naming_a_file_of_this_machine_or_credentials_is_never_published(
        mlflow_server: str, served: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = served
    _release(folder, "1.0")
    wheel = make_wheel(tmp_path, "localonly", "1.0", "V = 1\n")
    secret = url.replace("http://", "http://alice:s3cret@")
    store = shared_locks.SharedLocks(mlflow_server)
    _machine(monkeypatch, tmp_path, "worker-a")
    with shared_locks.sharing_locks(store):
        lock_requirements([str(wheel)], PLATFORM)
        lock_requirements([f"--index-url {secret}/simple", "sharedpkg"], PLATFORM)
    experiment = MlflowClient(mlflow_server).get_experiment_by_name(shared_locks.EXPERIMENT)
    published = [] if experiment is None else MlflowClient(mlflow_server).search_runs([experiment.experiment_id])
    names = " ".join(run.info.run_name or "" for run in published)
    assert "localonly" not in names and "s3cret" not in names


def test_submissions_on_two_workers_install_the_same_packages(mlflow_server: str, served: tuple[Path, str],
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the whole submission: the run's lock, and what the script imports."""
    folder, url = served
    _release(folder, "1.0")
    environment = Environment("shared-lock-e2e")
    environment.python.pip_packages = [f"--index-url {url}/simple", "sharedpkg"]
    environment.python.install_from = "submitter"
    write_script(tmp_path / "src", "import sharedpkg\nprint('sharedpkg', sharedpkg.VERSION)\n")
    printed = []
    for worker in ("worker-a", "worker-b"):
        _machine(monkeypatch, tmp_path, worker)
        lines: list[str] = []
        run = Experiment("shared-locks", tracking_uri=mlflow_server).submit(ScriptRunConfig(
            tmp_path / "src", "train.py", compute_target=LocalTarget(), environment=environment))
        assert run.wait_for_completion(output=lines.append)["status"] == "Completed", lines
        printed.append(lines[0])
        _release(folder, "2.0")  # between the two workers' runs
    assert printed == ["sharedpkg 1.0", "sharedpkg 1.0"]


def test_workers_share_a_conda_solution(mlflow_server: str, served: tuple[Path, str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rattler", reason="py-rattler (the conda extra) is not installed")
    folder, url = served
    channel = conda_channel.make_channel(folder)  # served at {url}/channel: python, condalib 1.0 and 2.0
    spec = CondaDependencies.create(conda_packages=["condalib"], channels=[f"{url}/channel"])
    spec.remove_channel("conda-forge")  # unreachable from here: only the served channel
    store = shared_locks.SharedLocks(mlflow_server)

    def version() -> str:
        solution = solve(spec, "linux-64", ["__glibc=2.36=0", "__unix=0=0"])
        return next(str(record["version"]) for record in solution if record["name"] == "condalib")

    _machine(monkeypatch, tmp_path, "worker-a")
    with shared_locks.sharing_locks(store):
        assert version() == "2.0"
    conda_channel.noarch_package(channel, "condalib", "3.0", "VERSION = '3.0'\n")
    conda_channel.index(channel)
    _machine(monkeypatch, tmp_path, "alone")
    assert version() == "3.0"
    _machine(monkeypatch, tmp_path, "worker-b")
    with shared_locks.sharing_locks(store):
        assert version() == "2.0"
        assert forget_conda_locks(spec) >= 2
        assert version() == "3.0"
    published = json.dumps([run.data.tags for run in MlflowClient(mlflow_server).search_runs(
        [MlflowClient(mlflow_server).get_experiment_by_name(shared_locks.EXPERIMENT).experiment_id])])
    assert "conda" in published
