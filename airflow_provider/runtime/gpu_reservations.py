"""GPU reservations and CPU spreading of the jobs of one host: standard library only, runnable as a plain file.

Several jobs on one host (this machine, an SSH host) share its GPUs. Before it starts the user's
command, a job's supervisor reserves the GPU devices the job asked for in a ledger shared by every
job of the host (:data:`DEFAULT_LEDGER`) and holds them for the job's lifetime; the device ids it
gets go into ``CUDA_VISIBLE_DEVICES``. While too few are free it waits: it calls
:meth:`ReservationLedger.try_reserve_gpus` again and reports :meth:`ReservationLedger.waiting_reason`.
The same ledger spreads the jobs' CPU affinity (:meth:`ReservationLedger.assign_cpus`, which never
waits).

Every entry names its owner: the job folder, and the supervisor's pid and start time (clock ticks
since boot, from /proc), so an entry whose owner died (kill -9, a crash) is recognized as dead even
once its pid is reused, and is reclaimed by the next reserver. The ledger is JSON, read and
rewritten under an exclusive ``flock`` of ``<ledger>.lock``. Every user of the host shares it: a
folder created here is world-writable and sticky (1777), and files created here are 0666.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass

# Imported by the supervisor (job_runner.py), as a plain file beside it: the standard library only,
# and only what is used (``subprocess`` where GPUs are discovered). Typing is for mypy alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypedDict, TypeVar

    class HolderJson(TypedDict):
        """One entry of the ledger: what one job holds, and which process holds it for the job."""

        pid: int
        start_ticks: int | None  # None where the host has no /proc
        gpus: list[str]
        cpus: list[int]
        since: float  # when the GPUs (or else the CPUs) were taken, seconds since the epoch

    _Result = TypeVar("_Result")
else:
    HolderJson = dict

DEFAULT_LEDGER = "/var/tmp/training-runs/reservations.json"
"""The ledger shared by the jobs of a host (``/var/tmp`` survives reboots and tmp cleaners' short ages)."""
LEDGER_VERSION = 1
_FOLDER_MODE = 0o1777  # every user of the host reserves here; the sticky bit keeps their files theirs
_FILE_MODE = 0o666


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat); None if it is
    gone, a zombie, or not visible (no /proc, or another user's process hidden by ``hidepid``).

    :param pid: the process id.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (the state first); None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def owner_alive(pid: int, start_ticks: int | None) -> bool:
    """True when ``pid`` runs and is the process that started at ``start_ticks`` (a pid reused by
    another process is not). Without /proc (or where it hides the process), a process that exists is
    taken as alive.

    :param pid: the owner's process id.
    :param start_ticks: its start time from :func:`process_start_ticks` (None: not checked).
    """
    if pid <= 0:
        return False  # os.kill would signal a process group
    fields = _stat_fields(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False
        try:
            return start_ticks is None or int(fields[19]) == start_ticks
        except (IndexError, ValueError):
            return True
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's process (its /proc entry hidden): its start time is unknown
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Owner:
    """Who holds a reservation: a job (its folder, the ledger's key) and the supervisor process of
    that job (pid and start ticks), whose death frees what it held.

    :param job_dir: the job folder.
    :param pid: the supervisor's process id.
    :param start_ticks: the supervisor's start time (:func:`process_start_ticks`); None when unknown.
    """

    job_dir: str
    pid: int
    start_ticks: int | None

    @classmethod
    def current(cls, job_dir: str) -> Owner:
        """This process, holding for the job in ``job_dir``.

        :param job_dir: the job folder (made absolute).
        """
        pid = os.getpid()
        return cls(os.path.abspath(job_dir), pid, process_start_ticks(pid))

    def holds(self, entry: HolderJson) -> bool:
        """True when ``entry`` was recorded by this process (same pid, and same start when both are known).

        :param entry: a ledger entry of this owner's job folder.
        """
        return entry["pid"] == self.pid and (
            entry["start_ticks"] is None or self.start_ticks is None or entry["start_ticks"] == self.start_ticks)


def parse_nvidia_smi_list(text: str) -> list[str]:
    """The GPU indices listed by ``nvidia-smi -L`` (``GPU 0: <name> (UUID: GPU-...)`` lines), in order,
    as strings. MIG instances (indented ``MIG ... Device 0:`` lines under their GPU) are not GPUs.

    :param text: the output of ``nvidia-smi -L``.
    """
    found: list[str] = []
    for line in text.splitlines():
        line = line.lstrip()
        if not line.startswith("GPU "):
            continue
        index = line[4:].split(":", 1)[0].strip()
        if index.isascii() and index.isdigit() and str(int(index)) not in found:
            found.append(str(int(index)))
    return found


def discover_gpus(timeout: float = 10.0) -> list[str]:
    """The GPU indices of this host (``["0", "1", ...]``) from ``nvidia-smi -L``; empty when
    nvidia-smi is not on ``PATH``, fails (no driver, no device) or takes longer than ``timeout``.

    :param timeout: seconds nvidia-smi may take.
    """
    import subprocess  # here: only a job that asks for GPUs needs it

    try:
        done = subprocess.run(["nvidia-smi", "-L"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return parse_nvidia_smi_list(done.stdout.decode("utf-8", "replace"))


class ReservationLedger:
    """The GPUs and CPUs held by the jobs of this host, in a JSON file shared by all of them.

    Every operation takes an exclusive ``flock`` of ``<path>.lock``, reads the ledger, drops the
    entries whose owner died, and rewrites the ledger (atomically) if anything changed. An
    unreadable ledger is taken as empty and rewritten.

    :param path: the ledger file; its folder is created (mode 1777) when missing.
    """

    def __init__(self, path: str = DEFAULT_LEDGER) -> None:
        self.path = os.path.abspath(path)
        self.lock_path = f"{self.path}.lock"

    def try_reserve_gpus(self, owner: Owner, count: int, devices: Sequence[str]) -> list[str] | None:
        """Reserve ``count`` of ``devices`` for ``owner``, if that many are free: the lowest-numbered
        free ones, in the order of ``devices``. An owner that holds GPUs already (a second call of
        the same supervisor) gets them again.

        :param owner: the job and its supervisor process.
        :param count: how many GPUs the job needs (0: none, nothing recorded).
        :param devices: the host's GPU device ids (:func:`discover_gpus`, or declared).
        :return: the reserved device ids (for ``CUDA_VISIBLE_DEVICES``); None while too few are free
            (:meth:`waiting_reason` says why), or while another live process of the same job folder
            holds the job's GPUs.
        :raises ValueError: ``count`` is negative or more than the host has: it can never be satisfied.
        """
        devices = _unique(devices)
        if count < 0:
            raise ValueError(f"resources.gpus must not be negative (got {count})")
        if count > len(devices):
            raise ValueError(_never_enough(count, devices))
        if count == 0:
            return []

        def reserve(holders: dict[str, HolderJson]) -> list[str] | None:
            entry = holders.get(owner.job_dir)
            if entry is not None and not owner.holds(entry):
                return None  # a live process of the same job holds them (the ledger has one entry per job)
            if entry is not None and len(entry["gpus"]) == count and set(entry["gpus"]) <= set(devices):
                return [device for device in devices if device in entry["gpus"]]
            taken = {gpu for job_dir, other in holders.items() if job_dir != owner.job_dir for gpu in other["gpus"]}
            free = [device for device in devices if device not in taken]
            if len(free) < count:
                return None
            chosen = set(sorted(free, key=_device_order)[:count])
            reserved = [device for device in devices if device in chosen]
            holders[owner.job_dir] = _entry(owner, entry, gpus=reserved, cpus=None)
            return reserved

        return self._transact(reserve)

    def waiting_reason(self, count: int, devices: Sequence[str]) -> str:
        """Why ``count`` of ``devices`` cannot be reserved now, e.g. ``waiting for 2 GPUs: 1 of 3
        free on this host (GPUs 0,1 held by job /path/x since 12:03:04)``.

        :param count: how many GPUs the job needs.
        :param devices: the host's GPU device ids.
        """
        devices = _unique(devices)

        def describe(holders: dict[str, HolderJson]) -> str:
            held: list[str] = []
            busy: set[str] = set()
            for job_dir, entry in sorted(holders.items(), key=lambda item: (item[1]["since"], item[0])):
                gpus = [device for device in devices if device in entry["gpus"]]
                if gpus:
                    busy.update(gpus)
                    held.append(f"{'GPUs' if len(gpus) > 1 else 'GPU'} {','.join(gpus)} held by job {job_dir} "
                                f"since {_clock(entry['since'])}")
            reason = (f"waiting for {count} {'GPU' if count == 1 else 'GPUs'}: "
                      f"{len(devices) - len(busy)} of {len(devices)} free on this host")
            return f"{reason} ({'; '.join(held)})" if held else reason

        return self._transact(describe)

    def assign_cpus(self, owner: Owner, count: int, allowed: Sequence[int]) -> list[int]:
        """The ``count`` CPUs of ``allowed`` least used by the other jobs of this host (the lowest
        numbers among equals), recorded for ``owner``; never waits. An owner that has CPUs of
        ``allowed`` already, as many, gets them again.

        :param owner: the job and its supervisor process.
        :param count: how many CPUs the job gets (at least 1).
        :param allowed: the CPUs this process may use (``os.sched_getaffinity(0)``).
        :return: the CPUs, in increasing order (all of ``allowed`` when ``count`` is not less).
        :raises ValueError: ``count`` is less than 1.
        """
        cpus = sorted(set(allowed))
        if count < 1:
            raise ValueError(f"resources.cpus must be at least 1 (got {count})")

        def assign(holders: dict[str, HolderJson]) -> list[int]:
            entry = holders.get(owner.job_dir)
            mine = entry is None or owner.holds(entry)
            held = sorted(entry["cpus"]) if entry is not None and mine else []
            if held and set(held) <= set(cpus) and len(held) == min(count, len(cpus)):
                return held
            if count >= len(cpus):
                chosen = cpus
            else:
                use = dict.fromkeys(cpus, 0)
                for job_dir, other in holders.items():
                    if job_dir == owner.job_dir:
                        continue
                    for cpu in other["cpus"]:
                        if cpu in use:
                            use[cpu] += 1
                chosen = sorted(sorted(cpus, key=lambda cpu: (use[cpu], cpu))[:count])
            if mine:  # else another live process of this job holds its entry: not recorded
                holders[owner.job_dir] = _entry(owner, entry, gpus=None, cpus=chosen)
            return chosen

        return self._transact(assign)

    def release(self, owner: Owner) -> None:
        """Remove what ``owner`` holds (GPUs and CPUs); nothing happens when it holds nothing.

        :param owner: the job and its supervisor process (an entry of the job recorded by another
            live process stays).
        """
        if not os.path.exists(self.path):
            return

        def remove(holders: dict[str, HolderJson]) -> None:
            entry = holders.get(owner.job_dir)
            if entry is not None and owner.holds(entry):
                del holders[owner.job_dir]

        self._transact(remove)

    def holders(self) -> dict[str, HolderJson]:
        """What the live jobs of this host hold, by job folder (``pid``, ``start_ticks``, ``gpus``,
        ``cpus``, ``since``): for diagnostics."""
        def copy(holders: dict[str, HolderJson]) -> dict[str, HolderJson]:
            return {job_dir: _copy(entry) for job_dir, entry in holders.items()}

        return self._transact(copy)

    def _transact(self, change: Callable[[dict[str, HolderJson]], _Result]) -> _Result:
        """Run ``change`` on the live entries under the lock; write the ledger if it changed."""
        self._make_folder()
        lock = self._lock()
        try:
            text = _read_text(self.path)
            holders = {job_dir: entry for job_dir, entry in _parse(text).items()
                       if owner_alive(entry["pid"], entry["start_ticks"])}
            result = change(holders)
            new_text = json.dumps({"version": LEDGER_VERSION, "holders": holders}, indent=1, sort_keys=True) + "\n"
            if new_text != text:
                self._write(new_text)
            return result
        finally:
            os.close(lock)  # releases the lock

    def _make_folder(self) -> None:
        folder = os.path.dirname(self.path)
        if os.path.isdir(folder):
            return
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        try:
            os.mkdir(folder)
        except FileExistsError:
            return  # another reserver made it
        os.chmod(folder, _FOLDER_MODE)

    def _lock(self) -> int:
        """An open descriptor of the lock file, exclusively locked (closing it unlocks)."""
        while True:
            descriptor = _open_shared(self.lock_path, os.O_RDONLY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                locked, current = os.fstat(descriptor), os.stat(self.lock_path)
                if (locked.st_dev, locked.st_ino) == (current.st_dev, current.st_ino):
                    return descriptor
            except FileNotFoundError:
                pass  # the lock file was removed (a tmp cleaner) while we waited: lock the new one
            except BaseException:
                os.close(descriptor)
                raise
            os.close(descriptor)

    def _write(self, text: str) -> None:
        """Replace the ledger atomically; in place where it cannot be replaced (another user's ledger
        in the sticky folder, or a folder this user may not write), still under the lock."""
        data = text.encode()
        temporary = f"{self.path}.tmp.{os.getpid()}.{time.monotonic_ns()}"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            try:
                os.fchmod(descriptor, _FILE_MODE)
                _write_all(descriptor, data)
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
            return
        except PermissionError:
            _remove(temporary)
        except BaseException:
            _remove(temporary)
            raise
        try:
            descriptor = os.open(self.path, os.O_WRONLY)  # no O_CREAT: refused on others' files in sticky folders
        except PermissionError as error:
            raise PermissionError(f"cannot write the reservation ledger {self.path}: {error}") from error
        try:
            _write_all(descriptor, data)
            os.ftruncate(descriptor, len(data))
        finally:
            os.close(descriptor)


def _open_shared(path: str, flags: int) -> int:
    """Open ``path``, creating it (mode 0666 whatever the umask) if it does not exist. An existing
    file is opened without ``O_CREAT``, which ``fs.protected_regular`` refuses on another user's file
    in a sticky folder."""
    while True:
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            pass
        try:
            descriptor = os.open(path, flags | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except FileExistsError:
            continue  # created by another process meanwhile
        try:  # noqa: SIM105 - contextlib is an import the supervisor does without
            os.fchmod(descriptor, _FILE_MODE)
        except OSError:
            pass
        return descriptor


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]
    os.fsync(descriptor)


def _remove(path: str) -> None:
    try:  # noqa: SIM105 - contextlib is an import the supervisor does without
        os.unlink(path)
    except OSError:
        pass


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _parse(text: str) -> dict[str, HolderJson]:
    """The valid entries of a ledger's text; nothing (an empty ledger) when it is not a ledger."""
    try:
        document: Any = json.loads(text)
    except ValueError:
        return {}
    holders = document.get("holders") if isinstance(document, dict) else None
    if not isinstance(holders, dict):
        return {}
    valid: dict[str, HolderJson] = {}
    for job_dir, entry in holders.items():
        if not isinstance(entry, dict):
            continue
        pid: Any = entry.get("pid")
        ticks: Any = entry.get("start_ticks")
        gpus: Any = entry.get("gpus")
        cpus: Any = entry.get("cpus")
        since: Any = entry.get("since")
        if (_is_int(pid) and (ticks is None or _is_int(ticks)) and isinstance(gpus, list)
                and all(isinstance(gpu, str) for gpu in gpus) and isinstance(cpus, list)
                and all(_is_int(cpu) for cpu in cpus) and (_is_int(since) or isinstance(since, float))):
            valid[job_dir] = {"pid": pid, "start_ticks": ticks, "gpus": gpus, "cpus": cpus, "since": float(since)}
    return valid


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(owner: Owner, entry: HolderJson | None, gpus: list[str] | None, cpus: list[int] | None) -> HolderJson:
    """``owner``'s entry with ``gpus`` or ``cpus`` (None: as they were) set."""
    new: HolderJson = _copy(entry) if entry is not None else {
        "pid": owner.pid, "start_ticks": owner.start_ticks, "gpus": [], "cpus": [], "since": time.time()}
    new["pid"] = owner.pid
    if owner.start_ticks is not None:
        new["start_ticks"] = owner.start_ticks
    if gpus is not None:
        if gpus != new["gpus"]:
            new["since"] = time.time()
        new["gpus"] = gpus
    if cpus is not None:
        new["cpus"] = cpus
    return new


def _copy(entry: HolderJson) -> HolderJson:
    return {"pid": entry["pid"], "start_ticks": entry["start_ticks"], "gpus": list(entry["gpus"]),
            "cpus": list(entry["cpus"]), "since": entry["since"]}


def _unique(devices: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(str(device) for device in devices))


def _device_order(device: str) -> tuple[int, int, str]:
    """Numbered devices by number, then any other id (a UUID) by name."""
    return (0, int(device), "") if device.isascii() and device.isdigit() else (1, 0, device)


def _never_enough(count: int, devices: list[str]) -> str:
    if not devices:
        return f"resources.gpus asks for {count} GPU{'s' if count > 1 else ''} but this host has no GPUs"
    return (f"resources.gpus asks for {count} GPUs but this host has only {len(devices)} "
            f"(GPU{'s' if len(devices) > 1 else ''} {','.join(devices)}): the job can never start here")


def _clock(since: float) -> str:
    """``since`` as local time: the time of day, with the date when it is not today."""
    moment = time.localtime(since)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M:%S", moment)
