"""Real conda environments on SSH (and MPI) hosts that have neither conda nor a channel.

The submitting side does everything that needs a network, with py-rattler (the ``conda`` extra):

1. it **solves** the specification for the host's conda platform and virtual packages (its C
   library, kernel and CUDA driver, which the agent's hello reports), cached per machine like every
   lock (:func:`~airflow_provider.core.environments.conda_builder.solve`);
2. it **fetches** the solved package files (and the ``pip:`` section's wheels, locked for the
   solved Python) into the content-addressed store, where they are blobs like snapshot files;
3. it has the host build a small **tool environment** holding py-rattler, from a lock of the same
   version as here, sent as wheels like any pip environment (built once per host and version).

The host's agent then receives only the blobs it lacks and installs the environment offline
(:mod:`airflow_provider.runtime.conda_installer`): it solves again from those files alone with
the exact builds and hashes of the lock, against its own virtual packages, and installs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider.core.environments.conda_builder import (
    conda_fingerprint,
    conda_lock_text,
    conda_packages,
    conda_subdir,
    conda_tool_environment,
    pip_lock_for,
    rattler_available,
    solve,
    virtual_packages_for,
)
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.environments.wheels import WheelStore, files_to_install
from airflow_provider.core.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_provider.core.targets.ssh import SSHTarget

__all__ = ["prepare_conda_environment"]

_FIELD = "environment.python.conda_dependencies"


def prepare_conda_environment(target: SSHTarget, environment: Environment) -> PreparedEnvironment:
    """Build ``environment``'s conda specification on the target's host (once per fingerprint).

    :param target: the SSH host.
    :param environment: an environment of kind ``"conda"``.
    :raises ConfigurationError: the specification cannot be satisfied for the host, or py-rattler is missing.
    :raises EnvironmentBuildError: a channel, a download or the host's install failed (the log tells).
    """
    if not rattler_available():
        conda_tool_environment()  # raises the message naming the extra
    spec = environment.conda_specification()
    assert spec is not None
    hello = target.hello()
    where = f"on {target.settings.address}"
    machine = str(hello.get("machine") or "x86_64")
    if hello.get("system", "linux") != "linux" or machine not in ("x86_64", "aarch64", "arm64"):
        raise ConfigurationError(_FIELD, f"cannot be built {where}: conda environments are built for Linux on "
                                 f"x86_64 or aarch64, and the host is {hello.get('system')} on {machine}.",
                                 "set the connection extra conda to \"translate\" (a virtual environment from PyPI).")
    subdir = conda_subdir(machine)
    virtual = virtual_packages_for(machine, hello.get("libc"), hello.get("kernel"), hello.get("cuda_driver"))
    timeout = target.build_timeout_seconds
    solution = solve(spec, subdir, virtual, timeout)
    pip_lock = pip_lock_for(spec, solution, machine, hello.get("libc"), "submitter", timeout)
    fingerprint = conda_fingerprint(solution, pip_lock)
    lock_text = conda_lock_text(spec, solution, pip_lock, subdir)
    store = WheelStore()
    packages = conda_packages(solution)
    request: dict[str, Any] = {
        "root": target.root, "fingerprint": fingerprint, "timeout": timeout, "limits": dict(target.cache_limits),
        "packages": [{"file_name": p.filename, "sha256": p.sha256, "name": r["name"], "version": r["version"],
                      "build": r["build"], "subdir": r.get("subdir") or r["url"].rsplit("/", 2)[-2]}
                     for p, r in zip(packages, solution, strict=True)],
        "pip_requirements": pip_lock.requirement_lines() if pip_lock is not None else [],
        "wheels": {p.filename: p.sha256 for p in pip_lock.packages} if pip_lock is not None else {}}
    answer = target.agent("conda_env", {**request, "probe": True})  # a cache hit needs no tool
    if answer.get("python") is None:
        tool = target.prepare_pip_environment(conda_tool_environment())
        request.update(tool_python=tool.python, tool_fingerprint=tool.fingerprint)
        uv = target.uv_to_send()
        if uv is not None:
            request["uv_blob"] = uv[0]
        answer = target.agent("conda_env", request, timeout=timeout + 60)
        if answer.get("missing"):  # send what the host lacks, then build
            by_digest: dict[str, Path] = dict(store.fetch_packages(packages))
            if pip_lock is not None:
                wheels = files_to_install(pip_lock, store)
                by_digest.update({p.sha256: wheels[p.filename] for p in pip_lock.packages})
            if uv is not None:
                by_digest[uv[0]] = uv[1]
            target.send_blobs(list(answer["missing"]), lambda digest: by_digest[digest])
            answer = target.agent("conda_env", request, timeout=timeout + 60)
    log_path = target.build_outcome(answer, f"the conda environment {environment.name!r}", _FIELD)
    how = "built now" if answer["built"] else "cached"
    text = (f"conda environment {answer['python'].rsplit('/bin/', 1)[0]} {where} ({how}; {len(solution)} conda "
            f"packages solved here for {subdir} with py-rattler, sent and installed offline"
            f"{f', {len(pip_lock.packages)} pip packages' if pip_lock is not None else ''})")
    return PreparedEnvironment("conda", str(answer["python"]), fingerprint, bool(answer["built"]), log_path, text,
                               lock=lock_text)
