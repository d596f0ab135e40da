"""The one builder of virtual environments, on this machine and on hosts: standard library only.

The local target's cache and the SSH/MPI hosts' agent both call :func:`build_venv`; locking and
deciding *whether* to build stay with them. A build happens in a temporary folder beside the final
one (``uv venv --relocatable`` when uv is there, else ``python -m venv`` + pip, whose absolute
temporary paths in ``bin/`` are rewritten to the final path), writes a completion marker last,
and is published by one ``os.rename``: nobody ever sees a half-built environment, and a cache hit
is one ``stat`` of the marker. Every command and its output go to the build log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO

__all__ = ["MARKER_NAME", "BuildFailedError", "build_venv", "environments_in_use", "evict_environments", "folder_size",
           "is_built", "link_files", "run_step"]

MARKER_NAME = ".training-runs-complete"
"""Written last into a finished environment (JSON: requirements, interpreter version, tool)."""
_BUILD_VARIABLES = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "UV_PYTHON_DOWNLOADS": "never",
                    # Trust the host's certificate store, as pip does (truststore): hosts behind a TLS-inspecting
                    # proxy add its CA there. UV_NATIVE_TLS is the name uv versions before 0.9 read.
                    "UV_SYSTEM_CERTS": "1", "UV_NATIVE_TLS": "1"}


class BuildFailedError(Exception):
    """A build step failed; the build log says why.

    :param step: what was being done (``creating the virtual environment``, ``pip install``).
    :param code: the step's exit code (-1: it could not start or timed out).
    """

    def __init__(self, step: str, code: int) -> None:
        self.step = step
        self.code = code
        super().__init__(f"{step} exited with code {code}")


def is_built(final: str) -> bool:
    """True when ``final`` holds a finished environment (its marker exists).

    :param final: the environment's folder.
    """
    return os.path.exists(os.path.join(final, MARKER_NAME))


def build_venv(final: str, requirements: Sequence[str], base_python: str, uv: str | None, log: IO[bytes],
               timeout: float, python_version: str, wheels: Mapping[str, str] | None = None,
               offline: bool = False, complete: bool = False) -> str:
    """Build the environment of ``requirements`` and publish it at ``final``.

    With ``wheels``, the installer finds packages in a folder of those files (``--find-links``,
    linked beside the build and removed after it); with ``offline`` too, nowhere else
    (``--no-index``): a host without a package index installs a lock's wheels sent to it.

    :param final: where the finished environment goes (replaced when it holds no marker).
    :param requirements: requirement lines for ``pip install -r``.
    :param base_python: the interpreter the environment is based on.
    :param uv: the ``uv`` executable, or None for ``venv`` + pip.
    :param log: the build log (binary, appended).
    :param timeout: the longest a step may take, in seconds (its process group is killed then).
    :param python_version: ``sys.version`` of ``base_python``, recorded in the marker.
    :param wheels: package files by their file name: the path each is linked (or copied) from.
    :param offline: install from ``wheels`` only, never from a package index.
    :param complete: the requirements are a whole lock (every dependency listed): installed as they
        are (``--no-deps``), so what the base interpreter provides is used, never replaced.
    :return: the tool used (``"uv"`` or ``"venv + pip"``).
    :raises BuildFailedError: a step failed (nothing is left at ``final`` or in the temporary folder).
    """
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(final)}-", dir=parent)
    links = None if wheels is None else f"{temporary}.wheels"
    options = (([] if links is None else ["--find-links", links]) + (["--no-index"] if offline else [])
               + (["--no-deps"] if complete else []))
    try:
        if wheels is not None and links is not None:
            link_files(wheels, links, log)
        tool = _build_in(temporary, final, list(requirements), base_python, uv, log, timeout, options)
        with open(os.path.join(temporary, MARKER_NAME), "w", encoding="utf-8") as marker:
            json.dump({"requirements": list(requirements), "python_version": python_version, "tool": tool,
                       "offline": offline, "size": folder_size(temporary)}, marker, indent=2)
        if os.path.exists(final):  # a folder without marker: left by hand or by a crash, never finished
            shutil.rmtree(final)
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        if links is not None:
            shutil.rmtree(links, ignore_errors=True)
    return tool


def link_files(wheels: Mapping[str, str], folder: str, log: IO[bytes]) -> None:
    """A folder of ``wheels`` (file name: source path; hard links, copies across file systems), for
    ``--find-links`` or a local conda channel.

    :param wheels: the files by the name they get in ``folder``.
    :param folder: the folder (made when missing).
    :param log: the build log.
    :raises BuildFailedError: a source is gone (evicted from the host's store).
    """
    os.makedirs(folder, exist_ok=True)
    for name, source in wheels.items():
        if os.sep in name or name in ("", ".", ".."):
            raise ValueError(f"not a file name: {name!r}")
        target = os.path.join(folder, name)
        try:
            os.link(source, target)
        except FileNotFoundError:
            log.write(f"the wheel {name} is no longer in the host's store ({source}); submit again to send it\n"
                      .encode())
            raise BuildFailedError("linking the wheels", -1) from None
        except OSError:
            shutil.copyfile(source, target)


def _build_in(temporary: str, final: str, requirements: list[str], base_python: str, uv: str | None,
              log: IO[bytes], timeout: float, options: list[str]) -> str:
    requirements_file = os.path.join(temporary, "requirements.txt")
    with open(requirements_file, "w", encoding="utf-8") as out:
        out.write("\n".join(requirements) + "\n")
    python = os.path.join(temporary, "bin", "python")
    prompt = f"env-{os.path.basename(final)[:12]}"
    if uv is not None:
        create = [uv, "venv", "--relocatable", "--allow-existing", "--prompt", prompt, "--python", base_python,
                  temporary]
        install = [uv, "pip", "install", "--python", python, *options, "-r", requirements_file]
    else:
        create = [base_python, "-m", "venv", "--prompt", prompt, temporary]
        install = [python, "-m", "pip", "install", *options, "-r", requirements_file]
    run_step(create, log, timeout, "creating the virtual environment")
    run_step(install, log, timeout, "pip install")
    if uv is None:
        _rewrite_paths(temporary, final)
    return "uv" if uv is not None else "venv + pip"


def run_step(command: list[str], log: IO[bytes], timeout: float, step: str) -> None:
    """Run one build step, its output into the log, in its own process group (killed on timeout).

    :param command: the program and its arguments.
    :param log: the build log (binary, appended).
    :param timeout: the longest it may take, in seconds.
    :param step: what it does, for the error.
    :raises BuildFailedError: it failed, could not start or timed out.
    """
    log.write(f"$ {' '.join(command)}\n".encode())
    log.flush()
    try:
        # Its own process group: a timeout stops the installer's helpers too, which would otherwise
        # go on writing into the folder being removed.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **_BUILD_VARIABLES}, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            log.write(f"timed out after {timeout:g} s (build_timeout_seconds)\n".encode())
            code = -1
    except OSError as exc:
        log.write(f"{exc}\n".encode())
        code = -1
    log.write(f"[exit code {code}]\n".encode())
    log.flush()
    if code != 0:
        raise BuildFailedError(step, code)


def _rewrite_paths(temporary: str, final: str) -> None:
    """Replace the temporary folder's path by the final one in text files of bin/ and pyvenv.cfg
    (``venv`` writes absolute paths; uv's ``--relocatable`` environments need none of this)."""
    old, new = temporary.encode(), final.encode()
    bin_dir = os.path.join(temporary, "bin")
    for path in [*(os.path.join(bin_dir, name) for name in os.listdir(bin_dir)),
                 os.path.join(temporary, "pyvenv.cfg")]:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as source:
            data = source.read()
        if old in data and b"\0" not in data:
            with open(path, "wb") as out:
                out.write(data.replace(old, new))


def folder_size(folder: str) -> int:
    """The bytes of the files under ``folder`` (links counted as links; one ``scandir`` per folder,
    whose entries carry what ``lstat`` would say)."""
    total = 0
    pending = [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def environments_in_use(envs_dir: str) -> set[str]:
    """Names of the environments under ``envs_dir`` that a running process uses: its ``argv[0]`` is
    inside one (a job runs ``<env>/bin/python``, and so do the processes it starts), or its ``PATH``
    holds one's ``bin`` (a job's commands, ``bash run.sh``, inherit the PATH the job was given)."""
    prefix = os.path.realpath(envs_dir).rstrip("/") + "/"
    plain = os.path.abspath(envs_dir).rstrip("/") + "/"
    used: set[str] = set()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                program = handle.read().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        for root in (prefix, plain):
            if program.startswith(root):
                used.add(program[len(root):].split("/", 1)[0])
        used.update(_on_path(entry, (prefix, plain)))  # `bash run.sh`, `python x.py`: the job's PATH
    return used


def _on_path(pid: str, roots: tuple[str, ...]) -> set[str]:
    """Environments whose ``bin`` is on a process's ``PATH`` (jobs get their environment's first)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            variables = handle.read().split(b"\0")
    except OSError:
        return set()
    found: set[str] = set()
    for variable in variables:
        if variable.startswith(b"PATH="):
            for folder in variable[5:].decode(errors="replace").split(":"):
                for root in roots:
                    if folder.startswith(root) and folder.endswith("/bin"):
                        found.add(folder[len(root):].split("/", 1)[0])
    return found


def evict_environments(envs_dir: str, max_count: int, max_bytes: int, keep: Sequence[str] = ()) -> list[str]:
    """Remove the least recently used finished environments beyond ``max_count`` or ``max_bytes``.

    An environment's last use is its folder's modification time (touched at every use); one a
    running process uses, or named in ``keep``, is never removed. Removal is one rename out of the
    cache (nobody sees half an environment), then the folder's deletion.

    :param envs_dir: the folder of environments (one per fingerprint).
    :param max_count: the most environments to keep.
    :param max_bytes: the most bytes they may take together (sizes recorded in their markers).
    :param keep: names never to remove (the one just built or chosen).
    :return: one line per removed environment: its name, size and why.
    """
    if not os.path.isdir(envs_dir):
        return []
    entries: list[tuple[float, int, str]] = []
    for name in os.listdir(envs_dir):
        folder = os.path.join(envs_dir, name)
        if name.startswith(".evicted-"):  # an earlier removal was interrupted
            shutil.rmtree(folder, ignore_errors=True)
        if name.startswith(".") or not is_built(folder):
            continue
        try:
            with open(os.path.join(folder, MARKER_NAME), encoding="utf-8") as marker:
                size = int(json.load(marker).get("size") or 0)
            entries.append((os.stat(folder).st_mtime, size, name))
        except (OSError, ValueError):
            continue
    count, total = len(entries), sum(size for _, size, _ in entries)
    if count <= max_count and total <= max_bytes:
        return []
    in_use = environments_in_use(envs_dir)
    removed: list[str] = []
    for _, size, name in sorted(entries):
        if count <= max_count and total <= max_bytes:
            break
        if name in keep or name in in_use:
            continue
        why = f"more than {max_count} environments" if count > max_count else f"over {max_bytes} bytes"
        doomed = os.path.join(envs_dir, f".evicted-{name}-{os.getpid()}")
        try:
            os.rename(os.path.join(envs_dir, name), doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        count, total = count - 1, total - size
        removed.append(f"{name} ({size} bytes, least recently used; {why})")
    return removed
