"""Bounded environment caches: least recently used first, never one a running process uses, logged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from airflow_provider.core.environments.local_cache import EnvironmentCache
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.environments.wheels import WheelStore
from airflow_provider.runtime import venv_builder
from tests.helpers import make_wheel, wait_until


def _fake_environment(envs: Path, name: str, size: int, age_seconds: float) -> Path:
    folder = envs / name
    (folder / "bin").mkdir(parents=True)
    (folder / venv_builder.MARKER_NAME).write_text(json.dumps({"size": size}))
    stamp = time.time() - age_seconds
    os.utime(folder, (stamp, stamp))
    return folder


def test_the_least_recently_used_go_first_beyond_the_count(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    for index, age in enumerate((400, 300, 200, 100)):
        _fake_environment(envs, f"env{index}", 10, age)
    removed = venv_builder.evict_environments(str(envs), max_count=2, max_bytes=1 << 40)
    assert [line.split()[0] for line in removed] == ["env0", "env1"]
    assert "least recently used; more than 2 environments" in removed[0]
    assert sorted(p.name for p in envs.iterdir()) == ["env2", "env3"]


def test_the_size_bound_and_keep(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    _fake_environment(envs, "old-big", 600, 300)
    _fake_environment(envs, "kept", 300, 200)
    _fake_environment(envs, "new", 300, 100)
    removed = venv_builder.evict_environments(str(envs), max_count=10, max_bytes=700, keep=("kept",))
    assert [line.split()[0] for line in removed] == ["old-big"]
    assert "over 700 bytes" in removed[0]
    assert sorted(p.name for p in envs.iterdir()) == ["kept", "new"]


def test_an_environment_a_running_process_uses_is_never_evicted(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    busy = _fake_environment(envs, "busy", 10, 500)
    _fake_environment(envs, "idle", 10, 400)
    _fake_environment(envs, "fresh", 10, 100)
    (busy / "bin" / "python").symlink_to("/bin/sleep")  # argv[0] is <env>/bin/python, as for a job
    process = subprocess.Popen([str(busy / "bin" / "python"), "60"])
    try:
        # Popen may return (vfork) before the kernel has put the new program's arguments in place.
        wait_until(lambda: Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(str(busy).encode()),
                   timeout=10, message="the process's command line")
        assert "busy" in venv_builder.environments_in_use(str(envs))
        removed = venv_builder.evict_environments(str(envs), max_count=1, max_bytes=1 << 40)
    finally:
        process.kill()
        process.wait()
    assert [line.split()[0] for line in removed] == ["idle", "fresh"]
    assert busy.exists(), "the environment of a running job was evicted"
    _fake_environment(envs, "newer", 10, 50)
    again = venv_builder.evict_environments(str(envs), max_count=1, max_bytes=1 << 40)
    assert [line.split()[0] for line in again] == ["busy"], "once its process ended it may go"


def test_the_local_cache_evicts_after_a_build_and_logs_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "envs"
    cache = EnvironmentCache(root, max_count=1)
    first, second = Environment("first"), Environment("second")
    first.add_pip_package(str(make_wheel(tmp_path, "evictone", "1.0", "V = 1\n")))
    second.add_pip_package(str(make_wheel(tmp_path, "evicttwo", "1.0", "V = 2\n")))
    built_first = cache.prepare(first)
    with caplog.at_level(logging.INFO, logger="airflow_provider.core.environments.local_cache"):
        built_second = cache.prepare(second)
    assert not (root / built_first.fingerprint).exists()
    assert (root / built_second.fingerprint).exists()
    assert any(built_first.fingerprint in record.getMessage() and "Evicted" in record.getMessage()
               for record in caplog.records)
    assert cache.prepare(first).built, "an evicted environment is built again when needed"


def test_the_wheel_store_is_bounded(tmp_path: Path) -> None:
    store = WheelStore(tmp_path / "wheels", max_bytes=250)
    for index, age in enumerate((300, 200, 100)):
        path = store.path(f"{index:02d}" + "a" * 62)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    removed = store.evict(keep={"00" + "a" * 62})
    assert removed == ["01" + "a" * 62]


def test_a_job_whose_path_holds_the_environment_keeps_it(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    busy = _fake_environment(envs, "viapath", 10, 500)
    _fake_environment(envs, "other", 10, 100)
    process = subprocess.Popen(["/bin/sleep", "60"], env={"PATH": f"{busy / 'bin'}:/usr/bin:/bin"})
    try:
        wait_until(lambda: Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(b"/bin/sleep"),
                   timeout=10, message="the process's command line")
        assert "viapath" in venv_builder.environments_in_use(str(envs))  # `bash run.sh` in a job, say
        removed = venv_builder.evict_environments(str(envs), max_count=1, max_bytes=1 << 40)
        assert [line.split()[0] for line in removed] == ["other"] and busy.exists()
    finally:
        process.kill()
        process.wait()
