"""Managed environments: a cold build vs ``uv pip install`` of the same lock, and cache hits per target.

* Local target, cold: ``EnvironmentCache.prepare`` of a scikit-learn environment into an empty
  environment cache (the lock already resolved, uv's own cache warm) vs ``uv venv`` + ``uv pip
  install -r lock.txt`` of the same lock into a new folder, with the same uv and cache. Interleaved,
  medians of N.
* SSH host without a package index, cold: ``prepare_environment`` into a new work root (every wheel
  sent over SSH, and uv when the host has none, then installed offline) vs the same installer alone
  on the same host with the wheels already there (``uv venv`` + ``uv pip install --no-index
  --find-links``): the price of the transfer; and vs what a user does by hand on such a host (goal:
  <= 1.2x): the same wheels and uv sent with ``tar | ssh`` (OpenSSH), then the same offline install
  over a second ``ssh``.
* Cache hits: ``prepare_environment`` of an environment already built, on the local, SSH and Docker
  targets (goal: under 0.2 s each).

Needs the components (``scripts/components.sh``) and this machine's package index (first run
downloads the wheels). Usage::

    .venv/bin/python benchmarks/bench_environments.py [N]      # N=3 by default
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout

GOAL_COLD_RATIO = 1.2
GOAL_HIT_SECONDS = 0.2
REQUIREMENTS = ["scikit-learn"]


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="bench_envs_") as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        from airflow_provider.core.environments.local_cache import EnvironmentCache
        from airflow_provider.core.environments.locking import find_uv
        from airflow_provider.core.environments.spec import Environment

        env = Environment("bench-sklearn")
        for requirement in REQUIREMENTS:
            env.add_pip_package(requirement)
        uv = find_uv()
        assert uv is not None
        warm = EnvironmentCache(Path(scratch) / "warm").prepare(env)  # resolves the lock, fills uv's cache
        lock_file = Path(scratch) / "lock.txt"
        assert warm.lock is not None
        lock_file.write_text(warm.lock)

        ours: list[float] = []
        bare: list[float] = []
        for index in range(repetitions):
            root = Path(scratch) / f"ours-{index}"
            ours.append(_timed(lambda root=root: EnvironmentCache(root).prepare(env)))  # type: ignore[misc]
            folder = Path(scratch) / f"bare-{index}"
            bare.append(_timed(lambda folder=folder: (  # type: ignore[misc]
                subprocess.run([uv, "venv", "-q", "--relocatable", str(folder)], check=True),
                subprocess.run([uv, "pip", "install", "-q", "--python", str(folder / "bin" / "python"), "-r",
                                str(lock_file)], check=True))))
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
        ratio = statistics.median(ours) / statistics.median(bare)
        print(f"local cold build:  ours {statistics.median(ours):.2f} s, uv venv + uv pip install "
              f"{statistics.median(bare):.2f} s: {ratio:.2f}x (goal <= {GOAL_COLD_RATIO}x)")
        local_hit = statistics.median(_timed(lambda: EnvironmentCache(Path(scratch) / "warm").prepare(env))
                                      for _ in range(5))
        print(f"local cache hit:   {local_hit * 1000:.0f} ms (goal < {GOAL_HIT_SECONDS * 1000:.0f} ms)")
        _ssh(env, repetitions)
        _docker(env)


def _ssh(env: object, repetitions: int) -> None:
    from airflow_provider.core.environments.spec import Environment
    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings
    from tests.ssh_hosts import container_host

    assert isinstance(env, Environment)
    host = container_host()
    if host is None:
        print("ssh: the SSH host container is not running (scripts/components.sh); skipped")
        return

    def target(root: str) -> SSHTarget:
        return SSHTarget(SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                                     host_key=host.host_public_key), work_root=root)

    ours: list[float] = []
    bare: list[float] = []
    by_hand: list[float] = []
    sent: list[int] = []
    for _ in range(repetitions):
        root = f"/tmp/bench-envs-{uuid.uuid4().hex[:8]}"
        fresh = target(root)
        fresh.hello()  # the connection and the agent are not the build
        ours.append(_timed(lambda fresh=fresh: fresh.prepare_environment(env)))  # type: ignore[misc]
        sent.append(fresh.blob_bytes_sent)
        lock = fresh.lock(env)
        wheels = f"{root}/bench-wheels"
        names = " ".join(f"ln -sf {root}/blobs/{p.sha256[:2]}/{p.sha256} {wheels}/{p.filename};" for p in lock.packages)
        lines = "\\n".join(lock.requirement_lines())
        setup = f"mkdir -p {wheels} && {names} printf '{lines}\\n' > {root}/lock.txt"
        subprocess.run(["docker", "exec", host.name, "sh", "-c", setup], check=True)
        # The same installer ours used: the uv it sent (the host had none), else the host's venv + pip.
        command = (f"U=$(ls {root}/tools/uv-*/uv 2>/dev/null | head -1); if [ -n \"$U\" ]; then "
                   f"$U venv -q --relocatable {root}/bare && $U pip install -q --python {root}/bare/bin/python "
                   f"--no-index --no-deps --find-links {wheels} -r {root}/lock.txt; "
                   f"else python3 -m venv {root}/bare && {root}/bare/bin/pip install -q --no-index --no-deps "
                   f"--find-links {wheels} -r {root}/lock.txt; fi")
        bare.append(_timed(lambda command=command: subprocess.run(  # type: ignore[misc]
            ["docker", "exec", host.name, "sh", "-c", command], check=True)))
        by_hand.append(_by_hand(host, lock, f"/tmp/bench-envs-hand-{uuid.uuid4().hex[:8]}"))
        hit_target = fresh
        subprocess.run(["docker", "exec", host.name, "rm", "-rf", root], check=False)
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"ssh cold build (offline host, wheels sent): ours {statistics.median(ours):.2f} s, the same installer on "
          f"the host from wheels already there {statistics.median(bare):.2f} s: {ratio:.2f}x; "
          f"{statistics.median(sent) / 1e6:.0f} MB sent to a new work root (the wheels, and uv once per root)")
    hand_ratio = statistics.median(ours) / statistics.median(by_hand)
    print(f"ssh cold build vs by hand (tar | ssh of the same wheels and uv, then ssh uv pip install --no-index): "
          f"{statistics.median(by_hand):.2f} s: {hand_ratio:.2f}x (goal <= {GOAL_COLD_RATIO}x)")
    root = f"/tmp/bench-envs-{uuid.uuid4().hex[:8]}"
    warm = target(root)
    warm.prepare_environment(env)
    again = target(root)
    again.hello()
    hit = statistics.median(_timed(lambda: again.prepare_environment(env)) for _ in range(5))
    print(f"ssh cache hit:     {hit * 1000:.0f} ms (goal < {GOAL_HIT_SECONDS * 1000:.0f} ms)")
    subprocess.run(["docker", "exec", host.name, "rm", "-rf", root], check=False)
    del hit_target


def _by_hand(host: object, lock: object, root: str) -> float:
    """What a user does by hand for a host without an index: the lock's wheels (from this machine's
    wheel store, where ours took them) and uv sent in one ``tar | ssh``, then installed offline."""
    from airflow_provider.core.environments.locking import Lock, find_uv
    from airflow_provider.core.environments.wheels import WheelStore
    from tests.ssh_hosts import SSHHost

    assert isinstance(host, SSHHost) and isinstance(lock, Lock)
    uv = find_uv()
    assert uv is not None
    store = WheelStore()
    ssh = ["ssh", "-q", "-i", str(host.key_path), "-p", str(host.port), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", f"{host.username}@{host.host}"]
    with tempfile.TemporaryDirectory(prefix="bench_by_hand_") as folder:
        for package in lock.packages:
            os.link(store.path(package.sha256), Path(folder) / package.filename)
        shutil.copy2(uv, Path(folder) / "uv")
        (Path(folder) / "lock.txt").write_text("\n".join(lock.requirement_lines()) + "\n")
        started = time.perf_counter()
        tar = subprocess.Popen(["tar", "-c", "-C", folder, "."], stdout=subprocess.PIPE)
        subprocess.run([*ssh, f"mkdir -p {root} && tar -x -C {root}"], stdin=tar.stdout, check=True)
        assert tar.wait() == 0
        subprocess.run([*ssh, f"{root}/uv venv -q {root}/venv && {root}/uv pip install -q --python "
                              f"{root}/venv/bin/python --no-index --no-deps --find-links {root} -r {root}/lock.txt"],
                       check=True)
        elapsed = time.perf_counter() - started
    subprocess.run([*ssh, f"rm -rf {root}"], check=False)
    return elapsed


def _docker(env: object) -> None:
    from airflow_provider.core.environments.spec import Environment
    from airflow_provider.core.targets.docker import DockerTarget

    assert isinstance(env, Environment)
    target = DockerTarget()
    try:
        target.check()
    except Exception as exc:
        print(f"docker: no daemon ({exc}); skipped")
        return
    built = target.prepare_environment(env)
    hit = statistics.median(_timed(lambda: target.prepare_environment(env)) for _ in range(5))
    print(f"docker cache hit:  {hit * 1000:.0f} ms (goal < {GOAL_HIT_SECONDS * 1000:.0f} ms); image {built.image}")
    if built.built and built.image:
        target.client.images.remove(built.image, force=True)


if __name__ == "__main__":
    main()
