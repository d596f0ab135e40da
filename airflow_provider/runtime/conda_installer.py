"""Real conda environments on a host without conda or a channel: standard library at import.

The submitting side solves the specification for the host's platform and virtual packages, and
sends the solved package files as blobs (a host's blob store is its package cache). Here they
become a channel of this host (``<tmp>/<subdir>/<file>``, hard links to the blobs), and
:func:`build_conda_env` runs this file's :func:`main` with the interpreter of a small tool
environment that holds py-rattler (itself a locked wheel sent like any other): it indexes that
channel, solves again with the exact versions, builds and sha256 of the lock (the host's own
virtual packages decide: a host whose C library is too old fails here, before any job), and
installs them into the final folder. The ``pip:`` section follows with uv, offline, from wheels
sent the same way. Conda packages carry their prefix, so the install goes to the final folder; a
completion marker is written last, and a folder without one is removed and built again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

try:
    from airflow_provider.runtime import venv_builder
except ImportError:  # on a host: a plain file beside venv_builder.py (run with -I: its folder is not on the path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import venv_builder  # type: ignore[no-redef]

__all__ = ["build_conda_env", "main"]


def build_conda_env(final: str, packages: Sequence[Mapping[str, str]], tool_python: str, uv: str | None,
                    pip_requirements: Sequence[str], pip_wheels: Mapping[str, str], cache: str, log: IO[bytes],
                    timeout: float) -> None:
    """Install the solved conda packages, then the ``pip:`` section, into ``final``.

    :param final: the environment's folder (replaced when it holds no completion marker).
    :param packages: each package's ``file_name``, ``subdir``, ``name``, ``version``, ``build``,
        ``sha256`` and ``path`` (its blob on this host).
    :param tool_python: an interpreter that imports ``rattler``.
    :param uv: the ``uv`` executable (needed for a ``pip:`` section).
    :param pip_requirements: the ``pip:`` section's lock lines (empty: none).
    :param pip_wheels: the wheels of those lines by file name: their blobs on this host.
    :param cache: py-rattler's package cache folder (extracted packages, hard-linked into environments).
    :param log: the build log (binary, appended).
    :param timeout: the longest a step may take, in seconds.
    :raises venv_builder.BuildFailedError: a step failed (nothing is left at ``final``).
    """
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(final):  # no marker: a build that never finished
        shutil.rmtree(final)
    scratch = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(final)}-conda-", dir=parent)
    started = time.monotonic()
    try:
        channel = os.path.join(scratch, "channel")
        for package in packages:
            subdir = package["subdir"]
            if subdir not in ("noarch", "linux-64", "linux-aarch64"):
                raise ValueError(f"not a conda platform: {subdir!r}")
            venv_builder.link_files({package["file_name"]: package["path"]}, os.path.join(channel, subdir), log)
        for subdir in ("noarch", "linux-64", "linux-aarch64"):
            os.makedirs(os.path.join(channel, subdir), exist_ok=True)
        request = {"channel": channel, "prefix": final, "cache": cache,
                   "packages": [{key: package[key] for key in ("name", "version", "build", "sha256", "subdir")}
                                for package in packages]}
        request_path = os.path.join(scratch, "request.json")
        with open(request_path, "w", encoding="utf-8") as out:
            json.dump(request, out)
        # -I: neither PYTHONPATH nor the user's site reach the tool; its own site-packages do.
        venv_builder.run_step([tool_python, "-I", os.path.abspath(__file__), request_path], log, timeout,
                              "installing the conda packages")
        log.write(f"[conda packages installed in {time.monotonic() - started:.1f} s]\n".encode())
        if pip_requirements:
            if uv is None:
                log.write(b"the pip: section needs uv, which this host lacks and was not sent\n")
                raise venv_builder.BuildFailedError("installing the pip: section", -1)
            links = os.path.join(scratch, "wheels")
            venv_builder.link_files(pip_wheels, links, log)
            requirements = os.path.join(scratch, "requirements.txt")
            with open(requirements, "w", encoding="utf-8") as out:
                out.write("\n".join(pip_requirements) + "\n")
            venv_builder.run_step([uv, "pip", "install", "--python", os.path.join(final, "bin", "python"),
                                   "--no-index", "--find-links", links, "--no-deps", "-r", requirements],
                                  log, timeout, "installing the pip: section")
        with open(os.path.join(final, venv_builder.MARKER_NAME), "w", encoding="utf-8") as marker:
            json.dump({"kind": "conda", "packages": len(packages), "pip": list(pip_requirements),
                       "tool": "py-rattler", "offline": True, "size": venv_builder.folder_size(final)}, marker,
                      indent=2)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    """The tool side (run by an interpreter with py-rattler): index, solve exactly, install.

    :param argv: ``[request.json]`` (see :func:`build_conda_env`).
    :return: the exit code (1 with the reason printed when the packages do not fit this host).
    """
    import asyncio

    with open(argv[0], encoding="utf-8") as source:
        request = json.load(source)
    try:
        asyncio.run(_install(request))
    except _MismatchError as exc:
        print(f"ERROR: {exc}", flush=True)
        return 1
    return 0


class _MismatchError(Exception):
    """The packages received are not those the lock names."""


async def _install(request: dict[str, Any]) -> None:
    import pathlib

    import rattler
    from rattler.index import index_fs

    channel = request["channel"]
    started = time.monotonic()
    await index_fs(pathlib.Path(channel), write_zst=False, write_shards=False, force=True)
    print(f"indexed {len(request['packages'])} packages in {time.monotonic() - started:.1f} s", flush=True)
    platforms = sorted({p["subdir"] for p in request["packages"]} - {"noarch"}) or ["linux-64"]
    virtual = rattler.VirtualPackage.detect()
    print("virtual packages of this host:",
          ", ".join(f"{g.name.normalized}={g.version}={g.build_string}" for g in (v.into_generic() for v in virtual)),
          flush=True)
    specs = [f"{p['name']} =={p['version']} {p['build']}" for p in request["packages"]]
    gateway = rattler.Gateway(cache_dir=pathlib.Path(request["cache"], "repodata"))
    records = await rattler.solve(sources=[rattler.Channel("file://" + os.path.abspath(channel))], specs=specs,
                                  gateway=gateway, platforms=[*platforms, "noarch"], virtual_packages=virtual)
    expected = {p["name"]: p["sha256"] for p in request["packages"]}
    found = {r.name.normalized: (r.sha256.hex() if isinstance(r.sha256, bytes) else str(r.sha256)) for r in records}
    if found != expected:
        changed = sorted(name for name in set(found) | set(expected) if found.get(name) != expected.get(name))
        raise _MismatchError(f"the packages received differ from the lock for {changed}")
    print(f"$ rattler install {len(records)} packages into {request['prefix']}", flush=True)
    await rattler.install(records, target_prefix=request["prefix"], cache_dir=pathlib.Path(request["cache"], "pkgs"),
                          show_progress=False)


if __name__ == "__main__":
    _code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # py-rattler's runtime threads may still release the GIL while the interpreter finalizes, which
    # aborts the process ("PyGILState_Release: thread state ... must be current", seen once in CI)
    # after the install has completed: this tool process ends without finalizing.
    os._exit(_code)
