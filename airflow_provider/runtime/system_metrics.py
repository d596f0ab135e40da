"""System metrics of the machine a job runs on, written to the run's events file as MLflow's ``system/*`` metrics.

Standard library only, Python >= 3.9, runnable as a plain file next to ``job_runner.py`` (``python3 -I -S``):
it does not import :mod:`events` (only some runtime files travel with the supervisor) and builds its metric
lines itself, in the same format (``{"e":"metric","k":...,"v":...,"s":...,"t":...}``).

Names and units are MLflow's own (``mlflow/system_metrics/metrics/*.py``), so the MLflow UI shows them in its
"System metrics" section: ``system/`` + (``<node_id>/`` on multi-node runs) + a name such as
``cpu_utilization_percentage``. The numbers are computed with psutil's Linux formulas, read directly from
``/proc`` and ``os.statvfs`` (psutil itself is used only where there is no ``/proc`` and it can be imported).
GPUs are read through NVML (``libnvidia-ml.so.1``) with ``ctypes``: only the devices the command may use
(``CUDA_VISIBLE_DEVICES``), named ``gpu_<i>`` by their position in that list, i.e. as the script's ``cuda:<i>``.

:class:`SystemMetricsSampler` is the daemon thread that samples every interval and appends one write per
sample; :class:`HostSampler` and :class:`NvmlSampler` are its probes.
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

__all__ = ["DEFAULT_INTERVAL_SECONDS", "INTERVAL_OPTION", "NVML_LIBRARY", "HostSampler", "NvmlSampler",
           "SystemMetricsSampler", "metric_prefix", "parse_interval", "select_nvml_devices", "visible_gpu_selection"]

DEFAULT_INTERVAL_SECONDS = 10.0
"""MLflow's default sampling interval."""
INTERVAL_OPTION = "system_metrics_interval_seconds"
"""The job option that sets the interval (see :func:`parse_interval`)."""
NVML_LIBRARY = "libnvidia-ml.so.1"
"""The NVIDIA driver's management library (installed with the driver, not with CUDA)."""
FINAL_SAMPLE_MIN_GAP_SECONDS = 0.5
"""The last sample at stop is taken only this long after the previous one (a CPU share over less is noise)."""

_MEGABYTE = 1e6  # MLflow's megabytes are decimal
_HOST_PROBES = ("cpu", "memory", "disk", "network")
# /proc/stat's "cpu" line, in order (psutil's scputimes on Linux)
_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
_NO_GPU_VALUES = ("", "-1", "NoDevFiles")
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def metric_prefix(node_id: str | None) -> str:
    """The prefix of every system metric's key: ``system/``, or ``system/<node_id>/`` (MLflow's form).

    :param node_id: the node's id on a multi-node run (e.g. ``"node_1"``); ``None`` or ``""`` for one node.
    """
    return f"system/{node_id}/" if node_id else "system/"


def parse_interval(value: object) -> float | None:
    """Check the ``system_metrics_interval_seconds`` option.

    :param value: the option's value: a number of seconds, as a number or a text.
    :return: the interval in seconds, or ``None`` when system metrics are off (``None``, ``0``, ``"0"``,
        ``"off"``).
    :raises ValueError: for anything else (a negative number, a text that is no number, a boolean, ...).
    """
    if value is None:
        return None
    number = float("nan")
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "off":
            return None
        try:  # noqa: SIM105 - contextlib is an import the supervisor does without
            number = float(text)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number == 0:
        return None
    if not 0 < number < float("inf"):
        raise ValueError(
            f"{INTERVAL_OPTION}={value!r} is not a number of seconds: give a positive number, e.g. "
            f"{INTERVAL_OPTION}={DEFAULT_INTERVAL_SECONDS:g} (MLflow's default), or 0 or 'off' to record no "
            "system metrics."
        )
    return number


# --- CPU, memory, disk, network ----------------------------------------------------------------------------


class HostSampler:
    """CPU, memory, disk and network of this machine, with MLflow's names (without the ``system/`` prefix).

    The numbers are psutil's, hence MLflow's: CPU busy share of all CPUs since the previous :meth:`sample`
    (the first: since the sampler was made); memory used = MemTotal - MemAvailable; disk usage of
    ``disk_path`` (``os.statvfs``); network bytes received and sent over all interfaces, ``lo`` included,
    since the sampler was made. Megabytes are decimal (10^6 bytes); the values MLflow rounds are rounded to
    one decimal. A probe that fails (a file missing, no permission) is left out of the sample and reported
    once in :meth:`problems`; it is tried again at every sample.

    Not thread-safe: sample from one thread.

    :param disk_path: a path on the file system whose usage is reported.
    :param proc_path: where procfs is mounted. Without ``<proc_path>/stat`` (not Linux), psutil is used if
        it can be imported; otherwise only the disk is measured.
    """

    def __init__(self, disk_path: str = "/", proc_path: str = "/proc") -> None:
        self.disk_path = disk_path
        self._stat_path = os.path.join(proc_path, "stat")
        self._meminfo_path = os.path.join(proc_path, "meminfo")
        self._netdev_path = os.path.join(proc_path, "net", "dev")
        self._psutil: Any = None
        self._unsupported = ""
        if not os.path.exists(self._stat_path):
            try:
                import psutil
            except ImportError:
                self._unsupported = f"no {self._stat_path} (not Linux) and psutil cannot be imported"
            else:
                self._psutil = psutil
        self._problems: dict[str, str] = {}
        self.measured: tuple[str, ...] | None = None
        """The probes that gave values at the last sample (``None`` before the first)."""
        self._cpu_fields: tuple[str, ...] = _CPU_FIELDS
        self._cpu_last: list[float] | None = None
        self._network_last: dict[str, tuple[int, int]] | None = None
        self._received = 0
        self._transmitted = 0
        try:  # baselines: CPU share and network bytes count from here
            self._cpu_last = self._cpu_times()
            self._network_last = self._network_counters()
        except Exception:  # the sample that needs it reports the failure
            pass
        self._probes = ((_HOST_PROBES[0], self._cpu), (_HOST_PROBES[1], self._memory),
                        (_HOST_PROBES[2], self._disk), (_HOST_PROBES[3], self._network))

    def sample(self) -> dict[str, float]:
        """One sample: MLflow's metric names (without prefix) and their values."""
        values: dict[str, float] = {}
        measured = []
        for name, probe in self._probes:
            try:
                values.update(probe())
            except Exception as error:  # any failure of one probe leaves the others
                if name not in self._problems:
                    self._problems[name] = f"no {name} metrics: {error}"
            else:
                measured.append(name)
        self.measured = tuple(measured)
        return values

    def problems(self) -> list[str]:
        """What could not be measured and why, one line per probe (each said once)."""
        return list(self._problems.values())

    # CPU: psutil.cpu_percent(): per-field deltas (never negative); total excludes guest times (already in
    # user and nice), busy excludes idle and iowait.
    def _cpu_times(self) -> list[float]:
        if self._psutil is not None:
            times = self._psutil.cpu_times()
            self._cpu_fields = tuple(times._fields)
            return [float(value) for value in times]
        if self._unsupported:
            raise OSError(self._unsupported)
        with open(self._stat_path, "rb") as stat:
            fields = stat.readline().split()
        if not fields or fields[0] != b"cpu":
            raise ValueError(f"{self._stat_path} does not start with the 'cpu' line")
        return [float(value) for value in fields[1:len(_CPU_FIELDS) + 1]]

    def _cpu(self) -> dict[str, float]:
        now = self._cpu_times()
        before = self._cpu_last if self._cpu_last is not None and len(self._cpu_last) == len(now) else [0.0] * len(now)
        self._cpu_last = now
        fields = zip(self._cpu_fields, before, now)  # noqa: B905 - runs on Python 3.9 hosts too
        deltas = {name: max(0.0, after - earlier) for name, earlier, after in fields}
        total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
        busy = total - deltas.get("idle", 0.0) - deltas.get("iowait", 0.0)
        percent = min(100.0, max(0.0, busy / total * 100)) if total > 0 else 0.0
        return {"cpu_utilization_percentage": round(percent, 1)}

    def _memory(self) -> dict[str, float]:
        if self._psutil is not None:
            memory = self._psutil.virtual_memory()
            used, total = float(memory.used), float(memory.total)
        else:
            if self._unsupported:
                raise OSError(self._unsupported)
            with open(self._meminfo_path, "rb") as meminfo:
                text = b"\n" + meminfo.read()
            total = _meminfo_bytes(text, b"MemTotal")
            free = _meminfo_bytes(text, b"MemFree")
            try:
                available = _meminfo_bytes(text, b"MemAvailable")
            except ValueError:  # kernels before 3.14: the old estimate
                available = free + _meminfo_bytes(text, b"Buffers") + _meminfo_bytes(text, b"Cached")
            if available > total:  # a container's distorted view (psutil and procps do the same)
                available = free
            used = total - available
        return {"system_memory_usage_megabytes": round(used / _MEGABYTE, 1),
                "system_memory_usage_percentage": round(used / total * 100, 1)}

    # Disk: psutil.disk_usage(): "free" is what users may still use, the percentage is of used + that.
    def _disk(self) -> dict[str, float]:
        usage = os.statvfs(self.disk_path)
        used = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
        free = usage.f_bavail * usage.f_frsize
        percent = used / (used + free) * 100 if used + free else 0.0
        return {"disk_usage_percentage": round(percent, 1),
                "disk_usage_megabytes": round(used / _MEGABYTE, 1),
                "disk_available_megabytes": round(free / _MEGABYTE, 1)}

    def _network_counters(self) -> dict[str, tuple[int, int]]:
        """Bytes (received, sent) by interface."""
        if self._psutil is not None:
            return {name: (int(counters.bytes_recv), int(counters.bytes_sent))
                    for name, counters in self._psutil.net_io_counters(pernic=True).items()}
        if self._unsupported:
            raise OSError(self._unsupported)
        with open(self._netdev_path, "rb") as netdev:
            lines = netdev.read().splitlines()[2:]
        counters = {}
        for line in lines:
            colon = line.rfind(b":")
            fields = line[colon + 1:].split()
            counters[line[:colon].strip().decode(errors="replace")] = (int(fields[0]), int(fields[8]))
        return counters

    # Network: bytes since the sampler was made. Counted per interface, so a counter that restarts (an
    # interface re-created) or an interface that goes away does not make the totals go back; an interface
    # that appears later counts from 0 (as MLflow's difference of system-wide totals does).
    def _network(self) -> dict[str, float]:
        counters = self._network_counters()
        if self._network_last is not None:
            for name, (received, sent) in counters.items():
                received_before, sent_before = self._network_last.get(name, (0, 0))
                self._received += received - received_before if received >= received_before else received
                self._transmitted += sent - sent_before if sent >= sent_before else sent
        self._network_last = counters
        return {"network_receive_megabytes": self._received / _MEGABYTE,
                "network_transmit_megabytes": self._transmitted / _MEGABYTE}


def _meminfo_bytes(text: bytes, name: bytes) -> float:
    """A ``/proc/meminfo`` value in bytes; ``text`` starts with a newline."""
    start = text.find(b"\n" + name + b":")
    if start < 0:
        raise ValueError(f"no {name.decode()} in /proc/meminfo")
    start += len(name) + 2
    end = text.find(b"\n", start)
    return float(text[start:end if end >= 0 else len(text)].split()[0]) * 1024


# --- GPUs ---------------------------------------------------------------------------------------------------


def visible_gpu_selection(env: Mapping[str, str]) -> list[str] | None:
    """The GPUs a command may use, from ``CUDA_VISIBLE_DEVICES`` in its environment, read as CUDA reads it.

    :param env: the command's environment.
    :return: ``None`` when the variable is unset (every device); ``[]`` for ``""``, ``"-1"`` or
        ``"NoDevFiles"`` (no GPU); else the entries (device indexes as ``"0"``, ``GPU-``/``MIG-`` UUIDs or
        their prefixes) up to the first one CUDA would not accept, as CUDA ignores everything from there.
    """
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    if value.strip() in _NO_GPU_VALUES:
        return []
    selected: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if entry.isdigit():
            selected.append(str(int(entry)))
        elif entry.startswith(("GPU-", "MIG-")) and len(entry) > 4:
            selected.append(entry)
        else:
            break
    return selected


def select_nvml_devices(selection: Sequence[str] | None, device_count: int,
                        uuids: Sequence[str] = ()) -> list[int | str]:
    """The NVML devices of a :func:`visible_gpu_selection`, in the order the command sees them (``cuda:0``,
    ``cuda:1``, ...). As CUDA does, the list stops at the first entry that names no device: an index out of
    range, a UUID prefix that matches no device or several, or a device named twice.

    :param selection: :func:`visible_gpu_selection`'s answer.
    :param device_count: how many devices NVML sees.
    :param uuids: the devices' UUIDs by NVML index (``GPU-...``); needed only for ``GPU-`` entries.
    :return: NVML indexes, and MIG UUIDs as they were given (NVML resolves those itself).
    """
    if selection is None:
        return list(range(device_count))
    devices: list[int | str] = []
    for entry in selection:
        device: int | str
        if entry.isdigit():
            device = int(entry)
            if device >= device_count:
                break
        elif entry.startswith("MIG-"):
            device = entry
        else:
            matches = [index for index, uuid in enumerate(uuids) if uuid.startswith(entry)]
            if len(matches) != 1:
                break
            device = matches[0]
        if device in devices:
            break
        devices.append(device)
    return devices


class _NvmlError(Exception):
    """An NVML call that did not return NVML_SUCCESS."""


class NvmlSampler:
    """Memory, utilization and power of the command's GPUs through NVML, with MLflow's names (without prefix):
    ``gpu_<i>_memory_usage_percentage``, ``gpu_<i>_memory_usage_megabytes``, ``gpu_<i>_utilization_percentage``,
    ``gpu_<i>_power_usage_watts``, ``gpu_<i>_power_usage_percentage``, ``i`` being the device's position in
    the selection (the script's ``cuda:<i>``). NVML is loaded and initialized at the first use of
    :attr:`available`, :attr:`reason` or :meth:`sample`. A value NVML does not give (an error, e.g. no
    utilization on MIG) is left out and reported once in :meth:`problems`.

    :param selection: :func:`visible_gpu_selection`'s answer: ``None`` for every device, ``[]`` for none.
    :param library: the NVML library to load.
    """

    def __init__(self, selection: list[str] | None = None, library: str = NVML_LIBRARY) -> None:
        self.selection = selection
        self.library = library
        self.checked = False
        """True once NVML was looked for (whether found or not)."""
        self._nvml: Any = None
        self._ctypes: Any = None
        self._memory_type: Any = None
        self._utilization_type: Any = None
        self._devices: list[tuple[int, Any]] = []  # (position in the selection, NVML handle); [] once closed
        self._positions: list[int] = []
        self._reason = ""
        self._problems: dict[str, str] = {}

    @property
    def available(self) -> bool:
        """True when NVML is loaded and at least one selected device was found (still True once closed)."""
        self._open()
        return bool(self._positions)

    @property
    def reason(self) -> str:
        """Why there are no GPU metrics ("" when :attr:`available`)."""
        self._open()
        return self._reason

    @property
    def device_positions(self) -> list[int]:
        """The ``i`` of every sampled ``gpu_<i>``."""
        self._open()
        return list(self._positions)

    def problems(self) -> list[str]:
        """Values NVML did not give, one line per kind (each said once)."""
        return list(self._problems.values())

    def sample(self) -> dict[str, float]:
        """One sample of every selected device (empty without NVML)."""
        self._open()
        values: dict[str, float] = {}
        ctypes = self._ctypes
        for position, handle in self._devices:
            prefix = f"gpu_{position}_"
            try:
                memory = self._memory_type()
                self._call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(memory))
                values[prefix + "memory_usage_percentage"] = round(memory.used / memory.total * 100, 1)
                values[prefix + "memory_usage_megabytes"] = round(memory.used / _MEGABYTE, 1)
            except (_NvmlError, ZeroDivisionError) as error:
                self._note("memory", position, error)
            try:
                utilization = self._utilization_type()
                self._call("nvmlDeviceGetUtilizationRates", handle, ctypes.byref(utilization))
                values[prefix + "utilization_percentage"] = round(float(utilization.gpu), 1)
            except _NvmlError as error:
                self._note("utilization", position, error)
            try:
                milliwatts, limit = ctypes.c_uint(), ctypes.c_uint()
                self._call("nvmlDeviceGetPowerUsage", handle, ctypes.byref(milliwatts))
                self._call("nvmlDeviceGetEnforcedPowerLimit", handle, ctypes.byref(limit))
                values[prefix + "power_usage_watts"] = round(milliwatts.value / 1000, 1)
                values[prefix + "power_usage_percentage"] = round(milliwatts.value / limit.value * 100, 1)
            except (_NvmlError, ZeroDivisionError) as error:
                self._note("power", position, error)
        return values

    def close(self) -> None:
        """Shut NVML down (``nvmlShutdown``); later samples are empty."""
        nvml, self._nvml, self._devices = self._nvml, None, []
        self.checked = True
        if nvml is not None:
            try:  # noqa: SIM105 - contextlib is an import the supervisor does without
                nvml.nvmlShutdown()
            except Exception:  # the process ends its use of NVML anyway
                pass

    def _note(self, kind: str, position: int, error: Exception) -> None:
        key = f"{kind}:{position}"
        if key not in self._problems:
            self._problems[key] = f"no gpu_{position} {kind} metrics: {error}"

    def _call(self, name: str, *arguments: Any) -> None:
        code = getattr(self._nvml, name)(*arguments)
        if code:
            raise _NvmlError(f"{name}: {self._error_text(code)}")

    def _error_text(self, code: int) -> str:
        try:
            text = self._nvml.nvmlErrorString(code)
            return text.decode(errors="replace") if text else f"NVML error {code}"
        except Exception:
            return f"NVML error {code}"

    def _open(self) -> None:
        if self.checked:
            return
        self.checked = True
        if self.selection == []:
            self._reason = "CUDA_VISIBLE_DEVICES selects no GPU"
            return
        try:
            import ctypes
        except ImportError as error:  # a Python built without ctypes
            self._reason = f"ctypes cannot be imported ({error})"
            return
        try:
            nvml = ctypes.CDLL(self.library)
        except OSError as error:
            missing = "No such file" in str(error) or "cannot open shared object" in str(error)
            self._reason = f"{self.library} not found" if missing else f"{self.library} cannot be loaded: {error}"
            return
        self._nvml, self._ctypes = nvml, ctypes
        for name in ("nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex"):
            if hasattr(nvml, f"{name}_v2"):  # the _v2 entry points, which drivers have had for a decade
                setattr(nvml, name, getattr(nvml, f"{name}_v2"))

        class Memory(ctypes.Structure):
            _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

        class Utilization(ctypes.Structure):
            _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]

        self._memory_type, self._utilization_type = Memory, Utilization
        try:
            nvml.nvmlErrorString.restype = ctypes.c_char_p
            self._call("nvmlInit")
        except (_NvmlError, AttributeError) as error:
            self._nvml = None
            self._reason = f"NVML does not start: {error}"
            return
        try:
            self._devices = self._find_devices()
        except (_NvmlError, AttributeError) as error:
            self._reason = f"NVML does not list the GPUs: {error}"
        self._positions = [position for position, _ in self._devices]
        if not self._devices:
            if not self._reason:
                self._reason = "NVML sees none of the GPUs of CUDA_VISIBLE_DEVICES" if self.selection else (
                    "NVML sees no GPU")
            self.close()

    def _find_devices(self) -> list[tuple[int, Any]]:
        ctypes = self._ctypes
        count = ctypes.c_uint()
        self._call("nvmlDeviceGetCount", ctypes.byref(count))
        handles = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            self._call("nvmlDeviceGetHandleByIndex", ctypes.c_uint(index), ctypes.byref(handle))
            handles.append(handle)
        uuids: list[str] = []
        if self.selection and any(entry.startswith("GPU-") for entry in self.selection):
            for handle in handles:
                text = ctypes.create_string_buffer(96)
                self._call("nvmlDeviceGetUUID", handle, text, ctypes.c_uint(len(text)))
                uuids.append(text.value.decode(errors="replace"))
        devices: list[tuple[int, Any]] = []
        for position, device in enumerate(select_nvml_devices(self.selection, count.value, uuids)):
            if isinstance(device, int):
                devices.append((position, handles[device]))
                continue
            handle = ctypes.c_void_p()
            try:
                self._call("nvmlDeviceGetHandleByUUID", device.encode(), ctypes.byref(handle))
            except _NvmlError as error:  # CUDA would stop at a device it cannot find too
                self._problems[device] = f"no metrics for {device} and the GPUs after it: {error}"
                break
            devices.append((position, handle))
        return devices


# --- the sampling thread ------------------------------------------------------------------------------------


class SystemMetricsSampler:
    """Samples this machine every ``interval_seconds`` in a daemon thread and appends each sample to the
    events file: one line per metric, every key of a sample with the same step (0, 1, ...) and timestamp
    (wall clock, ms), all lines of a sample in one ``write``. The thread never raises: what fails is in
    :meth:`problems` and :meth:`describe`.

    :param events_path: the run's events file (appended to; created if missing).
    :param interval_seconds: the time between two samples (on the monotonic clock: points do not drift).
    :param node_id: the node's id on a multi-node run (keys ``system/<node_id>/...``); ``None`` on one node.
    :param env: the command's environment, for its ``CUDA_VISIBLE_DEVICES``; ``None``: this process's.
    :param disk_path: a path on the file system whose usage is reported.
    :param on_ready: called from the sampler's thread with :meth:`describe` once the baseline is taken.
    """

    def __init__(self, events_path: str, interval_seconds: float, node_id: str | None = None,
                 env: Mapping[str, str] | None = None, disk_path: str = "/",
                 on_ready: Callable[[str], None] | None = None) -> None:
        if not 0 < interval_seconds < float("inf"):
            raise ValueError(f"the sampling interval must be a positive number of seconds, not {interval_seconds!r}")
        self.events_path = os.path.abspath(events_path)
        self.interval_seconds = float(interval_seconds)
        self.prefix = metric_prefix(node_id)
        self._host = HostSampler(disk_path)
        self._gpus = NvmlSampler(visible_gpu_selection(os.environ if env is None else env))
        self._problems: dict[str, str] = {}
        self._heads: dict[str, str] = {}
        self._step = 0
        self._fd = -1
        self._final_sample = True
        self._closed = False
        self._last_sample_at = 0.0
        self._thread: threading.Thread | None = None
        self._wake: threading.Event | None = None
        self._write_lock: threading.Lock | None = None
        self._on_ready = on_ready

    def start(self) -> None:
        """Start the thread. It takes the baseline sample at once (not written: CPU and network count from
        there; NVML is opened there, so a GPU driver that hangs never holds up the caller), calls
        ``on_ready`` with :meth:`describe`, and writes its first sample one interval later."""
        import threading

        if self._thread is not None:
            raise RuntimeError("the system metrics sampler was started already")
        self._last_sample_at = time.monotonic()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="system-metrics", daemon=True)
        self._thread.start()

    def stop(self, final_sample: bool = True, timeout: float = 5.0) -> None:
        """Stop the thread: it takes a last sample (when ``final_sample``, at least
        :data:`FINAL_SAMPLE_MIN_GAP_SECONDS` after the previous one, and once a point was written: as in
        MLflow, a run shorter than the interval gets none), then shuts NVML down. Once this returns,
        nothing more is written, even by a thread stuck in a probe past ``timeout``.

        :param final_sample: take the last sample.
        :param timeout: how long to wait for the thread.
        """
        thread, wake, lock = self._thread, self._wake, self._write_lock
        if thread is None or wake is None or lock is None:
            self._closed = True
            self._gpus.close()
            return
        self._final_sample = final_sample
        wake.set()
        thread.join(timeout)
        if thread.is_alive():
            self._note("stop", f"the sampler did not stop within {timeout:g}s; nothing more is written")
        acquired = lock.acquire(timeout=1.0)
        self._closed = True
        if acquired:
            lock.release()

    def problems(self) -> list[str]:
        """What could not be sampled or written, and why (each said once)."""
        return list(self._problems.values()) + self._host.problems() + self._gpus.problems()

    def describe(self) -> str:
        """One line for the supervisor's log: what is sampled, what is not and why."""
        measured = list(_HOST_PROBES if self._host.measured is None else self._host.measured)
        if self._gpus.checked:
            positions = self._gpus.device_positions
            measured += [f"gpu_{position}" for position in positions]
            gpu_note = "" if positions else f"; no GPU metrics: {self._gpus.reason}"
        else:
            gpu_note = "; GPUs not looked for yet"
        line = f"system metrics every {self.interval_seconds:g}s: {', '.join(measured) or 'nothing'}{gpu_note}"
        problems = self.problems()
        return f"{line}; problems: {'; '.join(problems)}" if problems else line

    def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        interval = self.interval_seconds
        try:
            try:
                self._collect()
            except Exception as error:
                self._note("baseline", f"the first sample failed: {error!r}")
            self._last_sample_at = time.monotonic()
            if self._on_ready is not None:
                self._on_ready(self.describe())
            deadline = self._last_sample_at + interval
            while not wake.wait(max(0.0, deadline - time.monotonic())):
                try:
                    self._write_sample()
                except Exception as error:  # this point is lost, not the next ones
                    self._note("sample", f"a sample failed: {error!r}")
                    self._last_sample_at = time.monotonic()
                deadline += interval
                now = time.monotonic()
                if deadline <= now:  # behind (a slow probe, a suspended machine): skip the points missed
                    deadline += interval * (int((now - deadline) / interval) + 1)
            if (self._final_sample and self._step > 0
                    and time.monotonic() - self._last_sample_at >= FINAL_SAMPLE_MIN_GAP_SECONDS):
                self._write_sample()
        except Exception as error:
            self._note("thread", f"the sampler stopped: {error!r}")
        finally:
            self._gpus.close()
            if self._fd >= 0:
                try:  # noqa: SIM105 - contextlib is an import the supervisor does without
                    os.close(self._fd)
                except OSError:
                    pass
                self._fd = -1

    def _collect(self) -> dict[str, float]:
        values = self._host.sample()
        try:
            values.update(self._gpus.sample())
        except Exception as error:  # NVML failing in a way it should not: the host's metrics still go out
            self._note("gpu", f"no GPU metrics: {error!r}")
        return values

    def _write_sample(self) -> None:
        timestamp_ms = int(time.time() * 1000)
        values = self._collect()
        self._last_sample_at = time.monotonic()
        if not values:
            return
        tail = f',"s":{self._step},"t":{timestamp_ms}}}\n'
        data = "".join(self._head(key) + _ENCODER.encode(value) + tail for key, value in values.items()).encode()
        lock = self._write_lock
        assert lock is not None
        with lock:
            if self._closed:
                return
            try:
                if self._fd < 0:
                    self._fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                written = os.write(self._fd, data)
                if written < len(data):  # a full disk: end the cut line, so the next ones stay readable
                    os.write(self._fd, b"\n")
                    raise OSError(f"only {written} of {len(data)} bytes written")
            except OSError as error:
                self._note("write", f"cannot write to {self.events_path}: {error}")
                return
        self._step += 1

    def _head(self, name: str) -> str:
        """The start of a metric line up to its value (the same text as :func:`events.encode_event`'s)."""
        head = self._heads.get(name)
        if head is None:
            head = self._heads[name] = '{"e":"metric","k":' + _ENCODER.encode(self.prefix + name) + ',"v":'
        return head

    def _note(self, kind: str, message: str) -> None:
        if kind not in self._problems:
            self._problems[kind] = message
