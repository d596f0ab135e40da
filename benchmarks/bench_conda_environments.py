"""Real conda environments (py-rattler): a cold build vs py-rattler's own install, and cache hits.

No conda channel is reachable here: the channel is the tests' local one (``tests/conda_channel.py``:
this machine's CPython as a ``python`` package, and small noarch packages).

* Local target, cold: ``CondaBuilder.prepare`` into an empty environment cache (solution cached,
  py-rattler's package cache warm) vs ``rattler.install`` of the same records into a new folder with
  the same package cache: the price of our layer (lock check, marker, eviction). Interleaved, medians.
* SSH host without conda, a channel or an index, cold: ``prepare_environment`` into a new work root
  (the packages, py-rattler's wheel and uv sent, the tool environment built, then the install) and a
  second environment on the same host (only its new package sent; the tool is there).
* Cache hits: ``prepare_environment`` of a built conda environment on the local, SSH and Docker
  targets (goal: under 0.2 s each).

Usage::

    .venv/bin/python benchmarks/bench_conda_environments.py [N]      # N=3 by default
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout

GOAL_COLD_RATIO = 1.2
GOAL_HIT_SECONDS = 0.2


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="bench_conda_") as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        import rattler

        from airflow_provider.core.environments.conda_builder import CondaBuilder
        from airflow_provider.core.environments.spec import Environment
        from airflow_provider.core.paths import cache_dir
        from tests import conda_channel

        channel = conda_channel.make_channel(Path(scratch) / "conda")
        conda_channel.noarch_package(channel, "condaextra", "0.1", "VALUE = 1\n")
        conda_channel.index(channel)
        spec_file = Path(scratch) / "environment.yml"
        spec_file.write_text(f"channels:\n  - {channel.as_uri()}\ndependencies:\n  - python=3.11\n  - condademo\n")
        env = Environment.from_conda_specification("bench-conda", spec_file)
        spec = env.conda_specification()
        assert spec is not None
        CondaBuilder(Path(scratch) / "warm").prepare(env)  # solves, fills py-rattler's package cache
        records = asyncio.run(rattler.solve(sources=[rattler.Channel(channel.as_uri())], specs=spec.match_specs(),
                                            platforms=["linux-64", "noarch"]))
        ours, bare = [], []
        for index in range(repetitions):
            root = Path(scratch) / f"ours-{index}"
            ours.append(_timed(lambda root=root: CondaBuilder(root).prepare(env)))  # type: ignore[misc]
            prefix = Path(scratch) / f"bare-{index}"
            bare.append(_timed(lambda prefix=prefix: asyncio.run(rattler.install(  # type: ignore[misc]
                records, target_prefix=prefix, cache_dir=cache_dir() / "rattler" / "pkgs", show_progress=False))))
            shutil.rmtree(root)
            shutil.rmtree(prefix)
        ratio = statistics.median(ours) / statistics.median(bare)
        print(f"local cold: {statistics.median(ours):.3f} s vs rattler.install {statistics.median(bare):.3f} s "
              f"-> {ratio:.2f}x (goal <= {GOAL_COLD_RATIO}x) {'met' if ratio <= GOAL_COLD_RATIO else 'MISSED'}")
        hits = [_timed(lambda: CondaBuilder(Path(scratch) / "warm").prepare(env)) for _ in range(5)]
        _hit("local", statistics.median(hits))
        _ssh(env, channel, Path(scratch))
        _docker(env)


def _hit(where: str, seconds: float) -> None:
    print(f"{where} cache hit: {seconds * 1000:.1f} ms (goal < {GOAL_HIT_SECONDS * 1000:.0f} ms) "
          f"{'met' if seconds < GOAL_HIT_SECONDS else 'MISSED'}")


def _ssh(env: object, channel: Path, scratch: Path) -> None:
    from airflow_provider.core.environments.spec import Environment
    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings
    from tests.ssh_hosts import container_host

    assert isinstance(env, Environment)
    host = container_host()
    if host is None:
        print("ssh: no SSH host container (scripts/components.sh)")
        return
    settings = SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                           host_key=host.host_public_key)
    target = SSHTarget(settings, work_root=f"/tmp/bench-conda-{uuid.uuid4().hex[:8]}", conda="rattler")
    target.check()
    cold = _timed(lambda: target.prepare_environment(env))
    print(f"ssh cold (nothing on the host): {cold:.3f} s, {target.blob_bytes_sent / 1e6:.1f} MB sent")
    sent = target.blob_bytes_sent
    spec_file = scratch / "second.yml"
    spec_file.write_text(f"channels:\n  - {channel.as_uri()}\ndependencies:\n  - python=3.11\n  - condademo\n"
                         "  - condaextra\n")
    second = Environment.from_conda_specification("bench-conda-2", spec_file)
    warm_tool = _timed(lambda: target.prepare_environment(second))
    print(f"ssh cold, second environment (tool and python there): {warm_tool:.3f} s, "
          f"{(target.blob_bytes_sent - sent) / 1e3:.1f} kB sent")
    _hit("ssh", statistics.median([_timed(lambda: target.prepare_environment(env)) for _ in range(5)]))


def _docker(env: object) -> None:
    from airflow_provider.core.environments.docker_images import IMAGE_REPOSITORY
    from airflow_provider.core.environments.spec import Environment
    from airflow_provider.core.targets.docker import DockerTarget

    assert isinstance(env, Environment)
    target = DockerTarget(conda="rattler")
    try:
        target.check()
    except Exception as exc:  # no daemon here
        print(f"docker: {exc}")
        return
    before = {image.id for image in target.client.images.list(IMAGE_REPOSITORY)}
    try:
        cold = _timed(lambda: target.prepare_environment(env))
        print(f"docker cold (image build): {cold:.3f} s")
        _hit("docker", statistics.median([_timed(lambda: target.prepare_environment(env)) for _ in range(5)]))
    finally:
        for image in target.client.images.list(IMAGE_REPOSITORY):
            if image.id not in before:
                target.client.images.remove(image.id, force=True)


if __name__ == "__main__":
    main()
