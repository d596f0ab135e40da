"""CPU and memory limits of a job's process tree (:mod:`airflow_provider.runtime.resource_limits`),
against the real kernel: children are spawned inside ``around_spawn()`` as the supervisor does, and
meet real cgroups (where this process may create them) or a real ``RLIMIT_AS`` and CPU affinity."""

from __future__ import annotations

import glob
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_provider.runtime import resource_limits
from airflow_provider.runtime.resource_limits import (
    CGROUP_FOLDER,
    LimitRequest,
    ProcessLimits,
    format_bytes_gib,
)
from tests.conftest import skip_or_fail

MIB = 1 << 20
LIMIT = 256 * MIB
ALLOCATE_600_MB = "data = b'\\x01' * (600 * 1000 * 1000); print('allocated', len(data))"
ALLOCATE_50_MB = "data = b'\\x01' * (50 * 1000 * 1000); print('allocated', len(data))"
SHOW_PLACE = ("import os, resource; print(open('/proc/self/cgroup').read()); "
              "print('cpus', sorted(os.sched_getaffinity(0))); "
              "print('rlimit_as', resource.getrlimit(resource.RLIMIT_AS)[0])")

Prepare = Callable[..., ProcessLimits]
Spawn = Callable[[ProcessLimits, str], int]


def _supervisor_state() -> tuple[str, tuple[int, int], set[int]]:
    """What around_spawn() must give back: this thread's cgroups, RLIMIT_AS and CPU affinity."""
    return Path("/proc/thread-self/cgroup").read_text(), resource.getrlimit(resource.RLIMIT_AS), os.sched_getaffinity(0)


@pytest.fixture
def prepare() -> Iterator[Prepare]:
    """``ProcessLimits.prepare`` with a unique job name; whatever it made is removed at the end."""
    made: list[ProcessLimits] = []

    def make(request: LimitRequest, name: str | None = None, allow_cgroups: bool = True) -> ProcessLimits:
        limits = ProcessLimits.prepare(name or f"/jobs/test-{uuid.uuid4().hex[:10]}", request, allow_cgroups)
        made.append(limits)
        return limits

    yield make
    for limits in made:
        limits.remove(wait_seconds=0.5)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start ``python -c CODE`` inside ``limits.around_spawn()`` with ``posix_spawn``, as the
    supervisor does (its own session, output to ``<pid>.log`` in tmp_path); children still running
    at the end are killed."""
    started: list[int] = []

    def start(limits: ProcessLimits, code: str) -> int:
        log = os.open(tmp_path / "child.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with limits.around_spawn() as window:
                pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", code], dict(os.environ),
                                     setsid=True, file_actions=[(os.POSIX_SPAWN_DUP2, log, 1),
                                                                (os.POSIX_SPAWN_DUP2, log, 2)])
                window.limit_child(pid)  # an RLIMIT_AS this large test process could not spawn under
        finally:
            os.close(log)
        started.append(pid)
        return pid

    yield start
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _wait(pid: int, timeout: float = 30.0) -> int:
    """The child's exit code (minus the signal that killed it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    raise AssertionError(f"child {pid} still running after {timeout}s")


def _log(tmp_path: Path) -> str:
    return (tmp_path / "child.log").read_text()


def _with_cgroups(prepare: Prepare, request: LimitRequest, name: str | None = None) -> ProcessLimits:
    limits = prepare(request, name)
    if not all(mechanism.startswith("cgroup") for mechanism in limits.mechanism.values()):
        skip_or_fail(f"cgroups are not writable here: {'; '.join(limits.notes)} (got {limits.mechanism})")
    return limits


# ------------------------------------------------------------------------------------------ no host needed


def test_byte_counts_read_as_gib_below_which_mib() -> None:
    assert format_bytes_gib(1 << 30) == "1 GiB"
    assert format_bytes_gib(3 << 29) == "1.5 GiB"
    assert format_bytes_gib(LIMIT) == "256 MiB"
    assert format_bytes_gib(1536) == "1.5 KiB"
    assert format_bytes_gib(512) == "512 bytes"


def test_a_memory_limit_python_cannot_start_under_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"resources\.memory_gb=0\.01 .*at least memory_gb=0\.0625 \(64 MiB\)"):
        LimitRequest.from_gib(cpus=None, memory_gb=0.01)
    with pytest.raises(ValueError, match=r"resources\.cpus=0"):
        LimitRequest(cpus=0, memory_bytes=None)
    request = LimitRequest(cpus=None, memory_bytes=64 * MIB)  # the smallest accepted
    request.memory_bytes = 1000
    with pytest.raises(ValueError, match=r"resources\.memory_gb"):
        ProcessLimits.prepare("job", request)


def test_no_request_limits_nothing() -> None:
    before = _supervisor_state()
    for limits in (ProcessLimits.none(), ProcessLimits.prepare("job", LimitRequest(cpus=None, memory_bytes=None))):
        assert limits.mechanism == {} and limits.cgroup_paths == []
        with limits.around_spawn():
            assert _supervisor_state() == before
        assert not limits.out_of_memory(signal.SIGKILL, "MemoryError")
        assert limits.describe() == "no CPU or memory limits"
        limits.remove()
    assert _supervisor_state() == before


def test_the_module_runs_as_a_plain_file_with_the_standard_library_alone(tmp_path: Path) -> None:
    shutil.copy(resource_limits.__file__, tmp_path / "resource_limits.py")
    pythons = [p for p in glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9") if os.access(p, os.X_OK)]
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"  # -I: the working folder is not on sys.path
            "import resource_limits as r\n"
            "limits = r.ProcessLimits.prepare('job', r.LimitRequest.from_gib(1, 0.5), allow_cgroups=False)\n"
            "print(limits.describe())\n")
    for python in [*pythons[:1], sys.executable]:
        done = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("memory limit 512 MiB (RLIMIT_AS), 1 CPU (CPU affinity ")


# ------------------------------------------------------------------------------------------ the fallback


def test_without_cgroups_rlimit_as_and_affinity_limit_the_child_and_not_the_supervisor(
        prepare: Prepare, spawn: Spawn, tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    limits = prepare(LimitRequest(cpus=1, memory_bytes=LIMIT, cpu_set=[allowed[-1]]), allow_cgroups=False)
    assert limits.mechanism == {"memory": "RLIMIT_AS", "cpus": f"CPU affinity {allowed[-1]}"}
    assert limits.cgroup_paths == []
    assert limits.describe() == f"memory limit 256 MiB (RLIMIT_AS), 1 CPU (CPU affinity {allowed[-1]})"
    before = _supervisor_state()

    assert _wait(spawn(limits, SHOW_PLACE + "\n" + ALLOCATE_50_MB)) == 0
    assert _supervisor_state() == before
    log = _log(tmp_path)
    assert f"cpus [{allowed[-1]}]" in log and f"rlimit_as {LIMIT}" in log and "allocated 50000000" in log
    assert not limits.out_of_memory(None, log)

    assert _wait(spawn(limits, ALLOCATE_600_MB)) == 1
    assert _supervisor_state() == before
    log = _log(tmp_path)
    assert "MemoryError" in log
    assert limits.out_of_memory(None, log[-2000:])
    message = limits.out_of_memory_message()
    assert "limited to 256 MiB (resources.memory_gb=0.25, enforced by RLIMIT_AS" in message
    assert "ask for more memory_gb or use less" in message


def test_without_a_cpu_set_the_first_cpus_are_used(prepare: Prepare, spawn: Spawn, tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    limits = prepare(LimitRequest(cpus=1.5, memory_bytes=None), allow_cgroups=False)
    wanted = allowed[:2]
    assert limits.mechanism == {"cpus": "CPU affinity " + ",".join(map(str, wanted))}
    assert limits.describe().startswith("1.5 CPUs (CPU affinity ")
    assert _wait(spawn(limits, SHOW_PLACE)) == 0
    assert f"cpus {wanted}" in _log(tmp_path)


def test_the_supervisor_is_itself_again_when_the_spawn_fails(prepare: Prepare) -> None:
    limits = prepare(LimitRequest(cpus=1, memory_bytes=LIMIT), allow_cgroups=False)
    before = _supervisor_state()
    with pytest.raises(OSError), limits.around_spawn():
        os.posix_spawn("/nonexistent/program", ["program"], {})
    assert _supervisor_state() == before


# ------------------------------------------------------------------------------------------ cgroups


def test_under_cgroups_the_job_is_born_in_its_cgroup_with_its_cpu_quota_and_memory_limit(
        prepare: Prepare, spawn: Spawn, tmp_path: Path) -> None:
    limits = _with_cgroups(prepare, LimitRequest(cpus=1, memory_bytes=LIMIT), name="/jobs/run 1!")
    version = limits.mechanism["memory"]
    assert limits.mechanism == {"memory": version, "cpus": f"{version} cpu quota"}
    assert limits.describe() == f"memory limit 256 MiB ({version}), 1 CPU ({version} cpu quota)"
    paths = limits.cgroup_paths
    assert paths and all(path.endswith(f"/{CGROUP_FOLDER}/run_1_") and os.path.isdir(path) for path in paths)
    if version == "cgroup v1":
        cpu = next(path for path in paths if os.path.exists(os.path.join(path, "cpu.cfs_quota_us")))
        assert Path(cpu, "cpu.cfs_quota_us").read_text().strip() == "100000"
        assert Path(cpu, "cpu.cfs_period_us").read_text().strip() == "100000"
        memory = next(path for path in paths if os.path.exists(os.path.join(path, "memory.limit_in_bytes")))
        assert Path(memory, "memory.limit_in_bytes").read_text().strip() == str(LIMIT)
    else:
        assert Path(paths[0], "cpu.max").read_text().split() == ["100000", "100000"]
        assert Path(paths[0], "memory.max").read_text().strip() == str(LIMIT)
    before = _supervisor_state()

    assert _wait(spawn(limits, SHOW_PLACE + "\n" + ALLOCATE_50_MB)) == 0
    assert _supervisor_state() == before
    log = _log(tmp_path)
    assert "allocated 50000000" in log
    memberships = [line for line in log.splitlines() if line.endswith(f"/{CGROUP_FOLDER}/run_1_")]
    assert len(memberships) == len(paths), log  # the child was born in each of the job's cgroups
    assert not limits.out_of_memory(None, log)

    limits.remove()
    assert not any(os.path.exists(path) for path in paths)
    assert limits.cgroup_paths == []
    assert _supervisor_state() == before


def test_under_a_cgroup_memory_limit_the_oom_killer_ends_the_job_and_says_which_limit(
        prepare: Prepare, spawn: Spawn, tmp_path: Path) -> None:
    limits = _with_cgroups(prepare, LimitRequest(cpus=None, memory_bytes=LIMIT))
    paths = limits.cgroup_paths
    before = _supervisor_state()
    assert _wait(spawn(limits, ALLOCATE_600_MB)) == -signal.SIGKILL
    assert _supervisor_state() == before
    assert "allocated" not in _log(tmp_path)
    assert limits.out_of_memory(signal.SIGKILL, _log(tmp_path))
    message = limits.out_of_memory_message()
    assert message.startswith(
        f"the run ran out of memory: it is limited to 256 MiB (resources.memory_gb=0.25, enforced by "
        f"{limits.mechanism['memory']}); ask for more memory_gb or use less")
    limits.remove()
    assert not any(os.path.exists(path) for path in paths)
    assert limits.out_of_memory(signal.SIGKILL, "")  # kept from before the removal


def test_removing_the_cgroups_stops_what_is_left_inside(prepare: Prepare, spawn: Spawn) -> None:
    limits = _with_cgroups(prepare, LimitRequest(cpus=2, memory_bytes=LIMIT))
    paths = limits.cgroup_paths
    pid = spawn(limits, "import time; time.sleep(60)")
    limits.remove(wait_seconds=0.2)
    assert _wait(pid, timeout=5) == -signal.SIGKILL
    assert not any(os.path.exists(path) for path in paths)


def test_a_cgroup_left_by_a_supervisor_that_died_is_replaced(prepare: Prepare) -> None:
    name = f"/jobs/test-{uuid.uuid4().hex[:10]}"
    _with_cgroups(prepare, LimitRequest(cpus=1, memory_bytes=LIMIT), name)  # never removed by its owner
    again = prepare(LimitRequest(cpus=1, memory_bytes=LIMIT), name)
    paths = again.cgroup_paths
    assert [os.path.basename(path) for path in paths] == [os.path.basename(name)] * len(paths)
    again.remove()
    assert not any(os.path.exists(path) for path in paths)
