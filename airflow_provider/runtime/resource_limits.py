"""CPU and memory limits on a job's whole process tree, where the host allows: standard library only,
runnable as a plain file beside :mod:`job_runner` (Python >= 3.9, Linux for anything but the no-op).

The supervisor asks :meth:`ProcessLimits.prepare` for a run's ``cpus`` and ``memory_bytes``; each
resource gets the best mechanism the host offers, decided separately:

``cgroup v2``   a child cgroup ``training-runs/<job>`` with ``memory.max`` (and ``memory.swap.max``
                ``0``: no swap beyond the limit) and ``cpu.max``. It is created under the supervisor's
                own cgroup when that cgroup already passes the controllers to its children (the root
                cgroup), else beside it, under its parent: a cgroup v2 that holds processes cannot
                also give controllers to child cgroups (the "no internal processes" rule).
``cgroup v1``   ``training-runs/<job>`` under the supervisor's cgroup of the ``memory`` hierarchy
                (``memory.limit_in_bytes``, and ``memory.memsw.limit_in_bytes`` the same, when swap
                is accounted, so that the job cannot swap) and of the ``cpu`` hierarchy
                (``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``).
``RLIMIT_AS``   without a writable cgroup: the address space of each process of the job (not their
                sum, and reserved rather than used memory: a blunt stand-in).
CPU affinity    without a writable cgroup: the job runs on ``ceil(cpus)`` CPUs (the caller's
                ``cpu_set``, else the first the supervisor may use).

A cgroup is used only where the supervisor may create it (root, or a delegated subtree); the
controllers must be there too (on a hybrid host, a ``cgroup2`` mount without controllers does not
count and cgroup v1 is used).

The job is *born* inside its limits: :meth:`ProcessLimits.around_spawn` wraps the supervisor's
``posix_spawn`` call. For that moment the supervisor's thread moves into the job's cgroups (a child
starts in the cgroups of the thread that creates it), or lowers its own soft ``RLIMIT_AS`` and its
CPU affinity (a child inherits both when it is created); afterwards everything is as it was, so the
supervisor itself is never limited for longer than the spawn. ``posix_spawn`` maps the new
process's stack in the supervisor's address space, so the supervisor's own address space must be
below the limit at that moment: the supervisor (a few tens of MiB) is, since no limit is below
:data:`MIN_MEMORY_BYTES`. The job may raise its soft ``RLIMIT_AS`` again (up to the hard limit,
which stays the host's): it is a limit for well-behaved jobs, not a security boundary.

:meth:`ProcessLimits.remove` deletes the cgroups once the job's processes are gone (the supervisor
calls it after the process tree is stopped; what is still inside is killed, as it belongs to the
run); nothing is left behind.
"""

from __future__ import annotations

import contextlib  # dataclasses imports it (and functools) anyway
import functools
import math
import os
import sys
import time
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

__all__ = ["CGROUP_FOLDER", "MIN_MEMORY_BYTES", "LimitRequest", "ProcessLimits", "format_bytes_gib"]

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
MIN_MEMORY_BYTES = 64 * MIB
"""The smallest memory limit: below it Python itself fails before the run's script starts."""
CGROUP_FOLDER = "training-runs"
"""The folder of the jobs' cgroups, under the supervisor's cgroup: ``training-runs/<job>``."""
CPU_PERIOD_US = 100_000
"""The period of the CPU quota: ``cpus`` CPUs get ``cpus * CPU_PERIOD_US`` microseconds of it."""
_MIN_QUOTA_US = 1000  # the kernel refuses a smaller quota
_REMOVE_WAIT_SECONDS = 2.0
_OUT_OF_MEMORY_MARKERS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory")
"""What a process that met ``RLIMIT_AS`` prints: Python's exception, C++'s, C's ``strerror(ENOMEM)``."""
_NOT_ENFORCED = "not enforced"
_SIGKILL = 9

MEMORY = "memory"
CPUS = "cpus"


def format_bytes_gib(n: int) -> str:
    """``n`` bytes for a message: in GiB from 1 GiB on, else MiB (or KiB, bytes), at most two decimals.

    :param n: a number of bytes.
    """
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{_number(n / size)} {unit}"
    return f"{n} bytes"


def _number(value: float) -> str:
    """``value`` with at most two decimals, no trailing zeros (``1``, ``1.5``, ``0.25``)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass
class LimitRequest:
    """What a run asked for.

    :param cpus: how many CPUs' worth of time (``resources.cpus``), or None.
    :param memory_bytes: the memory limit in bytes (``resources.memory_gb``), or None.
    :param cpu_set: which CPUs the job may run on when the limit is CPU affinity (chosen by the
        caller, e.g. the host's least used ones), or None for the first the supervisor may use.
    :raises ValueError: memory below :data:`MIN_MEMORY_BYTES`, or ``cpus`` not positive.
    """

    cpus: float | None
    memory_bytes: int | None
    cpu_set: Sequence[int] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse what no host can give.

        :raises ValueError: memory below :data:`MIN_MEMORY_BYTES`, or ``cpus`` not positive.
        """
        if self.memory_bytes is not None and self.memory_bytes < MIN_MEMORY_BYTES:
            raise ValueError(
                f"resources.memory_gb={_gib(self.memory_bytes)} ({format_bytes_gib(self.memory_bytes)}) is too small: "
                f"Python alone needs more before the run's script starts; ask for at least "
                f"memory_gb={_gib(MIN_MEMORY_BYTES)} ({format_bytes_gib(MIN_MEMORY_BYTES)})")
        if self.cpus is not None and not self.cpus > 0:  # also NaN
            raise ValueError(f"resources.cpus={self.cpus} must be a positive number of CPUs")

    @classmethod
    def from_gib(cls, cpus: float | None, memory_gb: float | None,
                 cpu_set: Sequence[int] | None = None) -> LimitRequest:
        """A request from ``resources.cpus`` and ``resources.memory_gb`` (GiB).

        :param cpus: ``resources.cpus``, or None.
        :param memory_gb: ``resources.memory_gb``, or None.
        :param cpu_set: see the class.
        """
        return cls(cpus, int(memory_gb * GIB) if memory_gb is not None else None, cpu_set)


def _gib(n: int) -> str:
    """``n`` bytes as ``resources.memory_gb`` would say it (``0.25``, ``1``, ``1.5``)."""
    return f"{n / GIB:g}"


# ---------------------------------------------------------------------------------------- cgroup files


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    """Write ``value`` to a cgroup file (one ``write`` call: the kernel acts on each)."""
    with open(path, "w") as handle:
        handle.write(value)


def _unescape(field: str) -> str:
    """A mountinfo field without its octal escapes (``\\040`` for a space)."""
    if "\\" not in field:
        return field
    parts = field.split("\\")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 3 and all(c in "01234567" for c in part[:3]):
            out.append(chr(int(part[:3], 8)) + part[3:])
        else:
            out.append("\\" + part)
    return "".join(out)


def _cgroup_mounts() -> list[tuple[str, str, str, list[str]]]:
    """The cgroup mounts: ``(fstype, root in the hierarchy, mount point, superblock options)``."""
    text = _read("/proc/self/mountinfo") or ""
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append((tail[0], _unescape(fields[3]), _unescape(fields[4]), tail[2].split(",")))
    return mounts


def _memberships() -> list[tuple[list[str], str]]:
    """The calling thread's cgroups: ``(controllers, path)``; controllers ``[]`` for cgroup v2."""
    text = _read("/proc/thread-self/cgroup") or _read("/proc/self/cgroup") or ""
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found.append(([c for c in parts[1].split(",") if c], parts[2]))
    return found


class _Hierarchy:
    """Where the calling thread sits in one cgroup hierarchy.

    :param version: 1 or 2.
    :param controller: the v1 controller that names the hierarchy (``memory``, ``cpu``); ``""`` for v2.
    :param mountpoint: where the hierarchy is mounted.
    :param root: which of its cgroups the mount shows at the mount point.
    """

    def __init__(self, version: int, controller: str, mountpoint: str, root: str) -> None:
        self.version = version
        self.controller = controller
        self.mountpoint = mountpoint
        self.root = root

    @classmethod
    def of(cls, controller: str) -> _Hierarchy | None:
        """The v1 hierarchy that holds ``controller``, or with ``""`` the v2 one; None if absent."""
        for fstype, root, mountpoint, options in _cgroup_mounts():
            wanted = fstype == "cgroup" and controller in options if controller else fstype == "cgroup2"
            if wanted:
                hierarchy = cls(1 if controller else 2, controller, mountpoint, root)
                if hierarchy.current() is not None:
                    return hierarchy
        return None

    def current(self) -> str | None:
        """The folder of the calling thread's cgroup in this hierarchy (None: not visible here)."""
        for controllers, path in _memberships():
            if (self.controller in controllers) if self.controller else not controllers:
                return self._folder(path)
        return None

    def _folder(self, path: str) -> str | None:
        if "/.." in path or not path.startswith("/"):
            return None  # outside this cgroup namespace
        root = self.root.rstrip("/")
        if root and path != root and not path.startswith(root + "/"):
            return None  # a mount of another part of the hierarchy
        return self.mountpoint.rstrip("/") + path[len(root):].rstrip("/") or "/"

    @property
    def attach_file(self) -> str:
        """The file that moves a task in: the thread alone in v1 (``tasks``), the process in v2."""
        return "tasks" if self.version == 1 else "cgroup.procs"


class _Cgroup:
    """A job cgroup this module created.

    :param hierarchy: where it is.
    :param path: its folder.
    :param controllers: what it limits (``memory``, ``cpu``); emptied when its limits could not be set.
    :param home: the supervisor's own cgroup in the same hierarchy (where it returns after a spawn).
    """

    def __init__(self, hierarchy: _Hierarchy, path: str, controllers: list[str], home: str) -> None:
        self.hierarchy = hierarchy
        self.path = path
        self.controllers = controllers
        self.home = home
        self.removed = False

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)


def _sanitize(job_name: str) -> str:
    """A cgroup name from a job folder or name: its last component, ``[A-Za-z0-9_-]`` only."""
    name = os.path.basename(job_name.rstrip("/")) or job_name
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in name)[:100]
    if not kept.strip("_"):
        return "job"
    return "job-tasks" if kept == "tasks" else kept  # ``tasks`` is a v1 control file


def _pids_in(path: str) -> set[int]:
    """The processes in the cgroup at ``path`` and in the cgroups below it."""
    pids: set[int] = set()
    for folder, _, _ in os.walk(path):
        text = _read(os.path.join(folder, "cgroup.procs")) or ""
        pids.update(int(token) for token in text.split() if token.isdigit())
    return pids


def _remove_tree(path: str) -> None:
    """``rmdir`` the cgroup at ``path`` and the cgroups below it (the job may have made some)."""
    for folder, subfolders, _ in os.walk(path, topdown=False):
        del subfolders
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(folder)


def _empty_and_remove(path: str, wait_seconds: float, kill: bool = True) -> str | None:
    """Remove the cgroup at ``path`` once no process is in it: wait up to ``wait_seconds`` for its
    processes to end; with ``kill``, SIGKILL those left (they are the run's) and wait again. None
    once it is gone, else why it is not."""
    deadline = time.monotonic() + wait_seconds
    killed_at: float | None = None
    mine = os.getpid()
    while True:
        pids = _pids_in(path) - {mine}
        problem = ""
        if not pids:
            try:
                _remove_tree(path)
                return None
            except FileNotFoundError:
                return None
            except OSError as exc:  # EBUSY: the last tasks are still leaving
                problem = str(exc)
        now = time.monotonic()
        if pids and kill and killed_at is None and now >= deadline:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, _SIGKILL)
            killed_at = now
            deadline = now + wait_seconds
        elif now >= deadline:
            left = f"processes {sorted(pids)} are still in it" if pids else problem
            return f"could not remove cgroup {path}: {left}"
        time.sleep(0.02)


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"[resource_limits] {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------------------- the limits


_SPAWN_MARGIN_BYTES = 32 * 1024 * 1024
"""Room the spawn needs in the supervisor's address space under a lowered ``RLIMIT_AS`` (the new
process's stack is mapped there before it runs)."""


def _address_space_bytes() -> int:
    """This process's address space (``VmSize``); a large number when it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


class _SpawnWindow:
    """:meth:`ProcessLimits.around_spawn`'s context manager (without importing ``contextlib``)."""

    def __init__(self, limits: ProcessLimits) -> None:
        self._limits = limits
        self._undo: list[Callable[[], None]] = []
        self.deferred_address_limit: tuple[int, int] | None = None
        """``RLIMIT_AS`` for the child, set on it once spawned: a supervisor whose own address space
        is near the limit could not map the new process's stack under it."""

    def __enter__(self) -> _SpawnWindow:
        try:
            self._limits._enter(self._undo, self)
        except BaseException:
            self._restore()
            raise
        return self

    def limit_child(self, pid: int) -> None:
        """Call with the spawned child's pid inside the ``with`` block: applies a deferred
        ``RLIMIT_AS`` (microseconds after its birth, before its interpreter has started).

        :param pid: the child.
        """
        if self.deferred_address_limit is not None:
            import resource

            resource.prlimit(pid, resource.RLIMIT_AS, self.deferred_address_limit)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._restore()

    def _restore(self) -> None:
        """Undo every change, latest first; never raise (the caller must keep the child's pid)."""
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # reported, and the remaining changes are still undone
                _warn(f"the supervisor could not undo a limit after the spawn: {exc}")


class ProcessLimits:
    """The CPU and memory limits of one job's process tree; made by :meth:`prepare` or :meth:`none`.

    :param request: what the run asked for (None: no limits).
    :param name: the job's cgroup name.

    ``mechanism`` maps ``memory`` and ``cpus`` (those asked for) to how each is enforced:
    ``cgroup v2``, ``cgroup v1``, ``RLIMIT_AS``; ``cgroup v2 cpu quota``, ``cgroup v1 cpu quota``,
    ``CPU affinity 0,1``; or ``not enforced`` (no mechanism on this host). ``notes`` says why a
    cgroup was not used. ``cgroup_paths`` lists the job's cgroup folders.
    """

    def __init__(self, request: LimitRequest | None, name: str) -> None:
        self.request = request
        self.name = name
        self.mechanism: dict[str, str] = {}
        self.notes: list[str] = []
        self._cgroups: list[_Cgroup] = []
        self._memory_cgroup: _Cgroup | None = None
        self._rlimit_as: int | None = None
        self._affinity: list[int] | None = None
        self._counters: dict[str, int] | None = None  # the memory cgroup's, read before its removal

    @property
    def cgroup_paths(self) -> list[str]:
        """The folders of the job's cgroups (none once removed)."""
        return [cgroup.path for cgroup in self._cgroups if not cgroup.removed]

    @classmethod
    def none(cls) -> ProcessLimits:
        """No limits: every method does nothing."""
        return cls(None, "")

    @classmethod
    def prepare(cls, job_name: str, request: LimitRequest, allow_cgroups: bool = True) -> ProcessLimits:
        """Decide how each requested resource is limited here, and create the job's cgroups.

        :param job_name: the job folder (or its name): the cgroups are ``training-runs/<its name>``.
        :param request: what the run asked for.
        :param allow_cgroups: False to use ``RLIMIT_AS`` and CPU affinity even where cgroups could
            be used (hosts that opt out, tests).
        :raises ValueError: the request cannot be met on any host (see :class:`LimitRequest`).
        """
        request.validate()  # again: a request may have changed since it was made
        if request.cpus is None and request.memory_bytes is None:
            return cls.none()
        limits = cls(request, _sanitize(job_name))
        try:
            if allow_cgroups:
                limits._prepare_cgroups()
                if len(limits.mechanism) == len(limits._wanted()):
                    limits.notes.clear()  # what did not work on the way there is of no interest
            limits._prepare_fallbacks()
        except BaseException:
            limits.remove()
            raise
        return limits

    # ------------------------------------------------------------------ preparing
    def _wanted(self) -> list[str]:
        """The cgroup controllers the request needs: ``memory``, ``cpu``."""
        assert self.request is not None
        return ([MEMORY] if self.request.memory_bytes is not None else []) + (
            ["cpu"] if self.request.cpus is not None else [])

    def _prepare_cgroups(self) -> None:
        missing = self._wanted()
        unified = _Hierarchy.of("")
        if unified is not None:
            parent, usable = self._v2_parent(unified, missing)
            if parent is not None and usable:
                missing = [c for c in missing if c not in self._make_cgroup(unified, parent, usable)]
        for controller in list(missing):
            hierarchy = _Hierarchy.of(controller)
            if hierarchy is None:
                self.notes.append(f"no cgroup hierarchy has the {controller} controller")
                continue
            parent = hierarchy.current()
            if parent is not None and self._make_cgroup(hierarchy, parent, [controller]):
                missing.remove(controller)

    def _v2_parent(self, unified: _Hierarchy, wanted: list[str]) -> tuple[str | None, list[str]]:
        """Where the job's cgroup v2 goes, and which of ``wanted`` it can have there: under the
        supervisor's cgroup if that gives them to its children (the root cgroup), else under its
        parent if that gives them to the supervisor's cgroup."""
        own = unified.current()
        if own is None:
            return None, []
        given = (_read(os.path.join(own, "cgroup.subtree_control")) or "").split()
        if all(c in given for c in wanted):
            return own, wanted
        available = (_read(os.path.join(own, "cgroup.controllers")) or "").split()
        usable = [c for c in wanted if c in available]
        if not usable:
            self.notes.append(f"cgroup v2 gives this process none of the controllers {', '.join(wanted)}")
            return None, []
        if own.rstrip("/") == unified.mountpoint.rstrip("/"):
            return own, [c for c in wanted if c in given]
        return os.path.dirname(own.rstrip("/")), usable

    def _make_cgroup(self, hierarchy: _Hierarchy, parent: str, controllers: list[str]) -> list[str]:
        """Create ``parent/training-runs/<job>`` with the limits of ``controllers``; the controllers
        it limits (none when it could not be made: a note says why)."""
        version = f"cgroup v{hierarchy.version}"
        base = os.path.join(parent, CGROUP_FOLDER)
        cgroup: _Cgroup | None = None
        try:
            for _attempt in range(5):
                try:
                    cgroup = self._make_folder(hierarchy, base, controllers)
                    break
                except FileNotFoundError:  # another job removed training-runs meanwhile: again
                    continue
            if cgroup is None:
                raise OSError(f"{base} kept disappearing")
            self._cgroups.append(cgroup)
            for controller in controllers:
                self._set_limit(cgroup, controller)
        except OSError as exc:
            self.notes.append(f"{version} {'/'.join(controllers)}: {exc}")
            if cgroup is not None:
                cgroup.controllers = []  # never entered; removed now, else by remove()
                self._remove_cgroup(cgroup)
            return []
        if MEMORY in controllers:
            self._memory_cgroup = cgroup
            self.mechanism[MEMORY] = version
        if "cpu" in controllers:
            self.mechanism[CPUS] = f"{version} cpu quota"
        return controllers

    def _make_folder(self, hierarchy: _Hierarchy, base: str, controllers: list[str]) -> _Cgroup:
        if not os.path.isdir(base):
            with contextlib.suppress(FileExistsError):
                os.mkdir(base)
        if hierarchy.version == 2:
            _write(os.path.join(base, "cgroup.subtree_control"), " ".join(f"+{c}" for c in controllers))
        path = os.path.join(base, self.name)
        try:
            os.mkdir(path)
        except FileExistsError:  # left by an earlier supervisor of this job that died
            if _empty_and_remove(path, 0.0, kill=False) is not None:  # its processes are not ours to stop
                path = f"{path}-{os.getpid()}"
            os.mkdir(path)
        home = hierarchy.current()
        if home is None:
            raise OSError(f"the supervisor's own cgroup in {hierarchy.mountpoint} is not visible")
        return _Cgroup(hierarchy, path, controllers, home)

    def _set_limit(self, cgroup: _Cgroup, controller: str) -> None:
        assert self.request is not None
        if controller == MEMORY:
            assert self.request.memory_bytes is not None
            limit = str(self.request.memory_bytes)
            if cgroup.hierarchy.version == 2:
                _write(cgroup.file("memory.max"), limit)
                if os.path.exists(cgroup.file("memory.swap.max")):  # absent without swap accounting
                    _write(cgroup.file("memory.swap.max"), "0")
                if os.path.exists(cgroup.file("memory.oom.group")):  # the OOM killer stops the whole run
                    _write(cgroup.file("memory.oom.group"), "1")
            else:
                _write(cgroup.file("memory.limit_in_bytes"), limit)
                if os.path.exists(cgroup.file("memory.memsw.limit_in_bytes")):  # memory + swap: no swap
                    _write(cgroup.file("memory.memsw.limit_in_bytes"), limit)
                else:
                    with contextlib.suppress(OSError):
                        _write(cgroup.file("memory.swappiness"), "0")  # swap unaccounted: avoid it
        else:
            assert self.request.cpus is not None
            quota = max(_MIN_QUOTA_US, round(self.request.cpus * CPU_PERIOD_US))
            if cgroup.hierarchy.version == 2:
                _write(cgroup.file("cpu.max"), f"{quota} {CPU_PERIOD_US}")
            else:
                _write(cgroup.file("cpu.cfs_period_us"), str(CPU_PERIOD_US))
                _write(cgroup.file("cpu.cfs_quota_us"), str(quota))

    def _prepare_fallbacks(self) -> None:
        assert self.request is not None
        if self.request.memory_bytes is not None and MEMORY not in self.mechanism:
            try:
                import resource

                resource.getrlimit(resource.RLIMIT_AS)
            except (ImportError, AttributeError, OSError):
                self.mechanism[MEMORY] = _NOT_ENFORCED
            else:
                self._rlimit_as = self.request.memory_bytes
                self.mechanism[MEMORY] = "RLIMIT_AS"
        if self.request.cpus is not None and CPUS not in self.mechanism:
            if not hasattr(os, "sched_setaffinity"):
                self.mechanism[CPUS] = _NOT_ENFORCED
                return
            self._affinity = self._choose_cpus(self.request.cpus, self.request.cpu_set)
            self.mechanism[CPUS] = "CPU affinity " + ",".join(str(c) for c in self._affinity)

    @staticmethod
    def _choose_cpus(cpus: float, cpu_set: Sequence[int] | None) -> list[int]:
        """``ceil(cpus)`` CPUs the supervisor may use: from ``cpu_set`` first, then the lowest."""
        allowed = sorted(os.sched_getaffinity(0))
        count = min(len(allowed), math.ceil(cpus))
        chosen: list[int] = []
        for cpu in [*(cpu_set or ()), *allowed]:
            if cpu in allowed and cpu not in chosen and len(chosen) < count:
                chosen.append(cpu)
        return sorted(chosen)

    # ------------------------------------------------------------------ the spawn
    def around_spawn(self) -> _SpawnWindow:
        """A context manager around the supervisor's ``posix_spawn`` (or ``Popen``) of the job: the
        child is born inside the limits, and the supervisor is itself again afterwards (in its own
        cgroups, with its own ``RLIMIT_AS`` and CPU affinity), even when the spawn fails. Moving into
        the cgroups can fail (a cgroup removed meanwhile): ``OSError`` then, and nothing changed."""
        return _SpawnWindow(self)

    def _enter(self, undo: list[Callable[[], None]], window: _SpawnWindow) -> None:
        """Apply the limits to the calling thread, appending how to undo each change to ``undo``."""
        for cgroup in self._cgroups:
            if cgroup.removed or not cgroup.controllers:
                continue
            hierarchy = cgroup.hierarchy
            original = hierarchy.current()
            if original is None:
                raise OSError(f"the supervisor's own cgroup in {hierarchy.mountpoint} is not visible")
            try:
                _write(cgroup.file(hierarchy.attach_file), "0")
            except OSError as exc:
                raise OSError(exc.errno, f"could not enter the job's cgroup {cgroup.path}: {exc.strerror}") from None
            undo.append(functools.partial(_write, os.path.join(original, hierarchy.attach_file), "0"))
        if self._rlimit_as is not None:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            lowest = min(limit for limit in (self._rlimit_as, soft, hard) if limit != resource.RLIM_INFINITY)
            if _address_space_bytes() + _SPAWN_MARGIN_BYTES < lowest:
                resource.setrlimit(resource.RLIMIT_AS, (lowest, hard))
                undo.append(functools.partial(resource.setrlimit, resource.RLIMIT_AS, (soft, hard)))
            else:
                window.deferred_address_limit = (lowest, hard)
        if self._affinity is not None:
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self._affinity)
            undo.append(functools.partial(os.sched_setaffinity, 0, before))

    # ------------------------------------------------------------------ the ending
    def _read_counters(self) -> dict[str, int] | None:
        """The memory cgroup's ``oom_kill`` and ``failcnt`` counts (what the kernel shows of them)."""
        cgroup = self._memory_cgroup
        if cgroup is None or cgroup.removed:
            return self._counters
        counters: dict[str, int] = {}
        events = "memory.events" if cgroup.hierarchy.version == 2 else "memory.oom_control"
        for line in (_read(cgroup.file(events)) or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                counters["oom_kill"] = int(value)
        if cgroup.hierarchy.version == 1:
            for name in ("memory.failcnt", "memory.memsw.failcnt"):
                text = (_read(cgroup.file(name)) or "").strip()
                if text.isdigit():
                    counters["failcnt"] = counters.get("failcnt", 0) + int(text)
        return counters

    def out_of_memory(self, killed_by_signal: int | None, log_tail: str) -> bool:
        """Whether the job hit its memory limit: the kernel killed one of its processes for it
        (cgroup ``oom_kill``; on v1 kernels without that count, the limit was reached and the
        command was SIGKILLed), or with ``RLIMIT_AS`` a process said it could not allocate memory.
        Call it once the job ended, before or after :meth:`remove`.

        :param killed_by_signal: the signal that ended the command, if one did.
        :param log_tail: the end of the command's output.
        """
        mechanism = self.mechanism.get(MEMORY, "")
        if mechanism.startswith("cgroup"):
            counters = self._read_counters() or {}
            if "oom_kill" in counters:
                return counters["oom_kill"] > 0
            return counters.get("failcnt", 0) > 0 and killed_by_signal == _SIGKILL
        if mechanism == "RLIMIT_AS":
            return any(marker in log_tail for marker in _OUT_OF_MEMORY_MARKERS)
        return False

    def out_of_memory_message(self) -> str:
        """The ending's message for a run that hit its memory limit: the limit, the field that set
        it, how it was enforced, and the way out."""
        if self.request is None or self.request.memory_bytes is None:
            return "the run ran out of memory (no memory limit was set: the host itself ran out)"
        limit = self.request.memory_bytes
        mechanism = self.mechanism.get(MEMORY, _NOT_ENFORCED)
        how = ("RLIMIT_AS, which counts the address space a process reserves, not only the memory it uses"
               if mechanism == "RLIMIT_AS" else mechanism)
        return (f"the run ran out of memory: it is limited to {format_bytes_gib(limit)} "
                f"(resources.memory_gb={_gib(limit)}, enforced by {how}); ask for more memory_gb or use less "
                "(a retry with the same limit fails again)")

    def describe(self) -> str:
        """One line for the supervisor's log and the run's record, e.g. ``memory limit 1 GiB
        (cgroup v1), 2 CPUs (cgroup v1 cpu quota)``."""
        if self.request is None:
            return "no CPU or memory limits"
        parts = []
        if self.request.memory_bytes is not None:
            parts.append(f"memory limit {format_bytes_gib(self.request.memory_bytes)} ({self.mechanism[MEMORY]})")
        if self.request.cpus is not None:
            cpus = self.request.cpus
            parts.append(f"{cpus:g} CPU{'' if cpus == 1 else 's'} ({self.mechanism[CPUS]})")
        return ", ".join(parts)

    def remove(self, wait_seconds: float = _REMOVE_WAIT_SECONDS) -> None:
        """Delete the job's cgroups (and ``training-runs`` when no other job uses it). Call it once
        the process tree is stopped: a process still inside gets ``wait_seconds`` to leave, is
        then killed (it belongs to the run). Never raises; what cannot be removed is reported on
        stderr (the supervisor's log). The memory counters are kept for :meth:`out_of_memory`.

        :param wait_seconds: how long to wait for the processes in a cgroup, before and after the kill.
        """
        with contextlib.suppress(Exception):  # the counters only improve a message
            self._counters = self._read_counters()
        for cgroup in reversed(self._cgroups):
            try:
                self._remove_cgroup(cgroup, wait_seconds)
            except Exception as exc:  # a cgroup left behind must not lose the job's ending
                _warn(f"could not remove cgroup {cgroup.path}: {exc}")

    def _remove_cgroup(self, cgroup: _Cgroup, wait_seconds: float = _REMOVE_WAIT_SECONDS) -> None:
        if cgroup.removed:
            return
        hierarchy = cgroup.hierarchy
        here = hierarchy.current()
        if here is not None and (here == cgroup.path or here.startswith(cgroup.path + "/")):
            _write(os.path.join(cgroup.home, hierarchy.attach_file), "0")  # inside after an interrupted spawn
        problem = _empty_and_remove(cgroup.path, wait_seconds)
        if problem is not None:
            _warn(problem)
            return
        cgroup.removed = True
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(cgroup.path))  # training-runs, unless another job's cgroup is there
