"""System metrics sampled on the target (``runtime/system_metrics.py``): MLflow's names and units, read from
this machine's /proc (psutil, which MLflow uses, is only the yardstick), written to a real events file."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from airflow_provider.runtime import system_metrics
from airflow_provider.runtime.events import MetricEvent, decode_event, encode_event
from airflow_provider.runtime.system_metrics import (
    HostSampler,
    NvmlSampler,
    SystemMetricsSampler,
    metric_prefix,
    parse_interval,
    select_nvml_devices,
    visible_gpu_selection,
)

linux_only = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's /proc")

HOST_KEYS = {"cpu_utilization_percentage", "system_memory_usage_megabytes", "system_memory_usage_percentage",
             "disk_usage_percentage", "disk_usage_megabytes", "disk_available_megabytes",
             "network_receive_megabytes", "network_transmit_megabytes"}
PERCENTAGES = {"cpu_utilization_percentage", "system_memory_usage_percentage", "disk_usage_percentage"}


def assert_sane(values: dict[str, float]) -> None:
    assert set(values) == HOST_KEYS
    for key, value in values.items():
        assert isinstance(value, float), key
        assert value >= 0, key
        if key in PERCENTAGES:
            assert value <= 100, key


@linux_only
def test_host_sampler_gives_mlflows_eight_metrics_with_psutils_numbers() -> None:
    sampler = HostSampler()
    values = sampler.sample()
    memory, disk = psutil.virtual_memory(), psutil.disk_usage("/")
    assert_sane(values)
    assert sampler.problems() == [] and sampler.measured == ("cpu", "memory", "disk", "network")
    assert values["system_memory_usage_megabytes"] == pytest.approx(memory.used / 1e6, rel=0.03)
    assert values["system_memory_usage_percentage"] == pytest.approx(memory.percent, abs=1.0)
    assert values["disk_usage_percentage"] == pytest.approx(disk.percent, abs=0.2)
    assert values["disk_usage_megabytes"] == pytest.approx(disk.used / 1e6, rel=0.01)
    assert values["disk_available_megabytes"] == pytest.approx(disk.free / 1e6, rel=0.01)
    for key in ("cpu_utilization_percentage", "system_memory_usage_megabytes", "disk_usage_megabytes"):
        assert values[key] == round(values[key], 1), "MLflow rounds these to one decimal"


@linux_only
def test_cpu_share_rises_while_a_process_spins() -> None:
    sampler = HostSampler()
    sampler.sample()  # from here
    subprocess.run([sys.executable, "-c", "import time\nend = time.time() + 1\nwhile time.time() < end: pass"],
                   check=True)
    busy = sampler.sample()["cpu_utilization_percentage"]
    # one of the machine's cores spun all the time: 100 / cores % at least, less the start-up of Python
    assert busy > 50 / (os.cpu_count() or 1), busy


@linux_only
def test_network_counts_bytes_sent_over_loopback_since_the_sampler_started() -> None:
    sampler = HostSampler()
    before = sampler.sample()
    payload = b"x" * 5_000_000
    with socket.create_server(("127.0.0.1", 0)) as server:
        received = bytearray()

        def receive() -> None:
            connection, _ = server.accept()
            with connection:
                while chunk := connection.recv(1 << 20):
                    received.extend(chunk)

        receiver = threading.Thread(target=receive)
        receiver.start()
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(payload)
        receiver.join(10)
    assert len(received) == len(payload)
    after = sampler.sample()
    assert after["network_receive_megabytes"] - before["network_receive_megabytes"] >= 5.0
    assert after["network_transmit_megabytes"] - before["network_transmit_megabytes"] >= 5.0


def test_a_probe_that_fails_is_left_out_and_reported_once(tmp_path: Path) -> None:
    sampler = HostSampler(disk_path=str(tmp_path / "gone"))
    for _ in range(2):
        values = sampler.sample()
        assert "disk_usage_percentage" not in values and "disk_usage_megabytes" not in values
    problems = sampler.problems()
    assert len(problems) == 1 and problems[0].startswith("no disk metrics:") and "gone" in problems[0]
    assert "disk" not in (sampler.measured or ())


def test_without_proc_psutil_gives_the_same_metrics(tmp_path: Path) -> None:
    sampler = HostSampler(proc_path=str(tmp_path / "no-proc"))
    time.sleep(0.05)
    values = sampler.sample()
    assert_sane(values)
    assert sampler.problems() == []


def test_without_proc_or_psutil_only_the_disk_is_measured(tmp_path: Path) -> None:
    runtime_dir = Path(system_metrics.__file__).parent
    program = (f"import sys, json; sys.path.insert(0, {str(runtime_dir)!r}); import system_metrics\n"
               f"sampler = system_metrics.HostSampler(proc_path={str(tmp_path / 'no-proc')!r})\n"
               "print(json.dumps([sorted(sampler.sample()), sampler.sample() and sampler.problems()]))")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", program], capture_output=True, text=True, check=True)
    keys, problems = json.loads(done.stdout)
    assert keys == ["disk_available_megabytes", "disk_usage_megabytes", "disk_usage_percentage"]
    assert len(problems) == 3 and all("psutil cannot be imported" in problem for problem in problems)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    ("", []), ("-1", []), ("NoDevFiles", []), (" ", []),
    ("0", ["0"]), ("1,0", ["1", "0"]), (" 2 , 3 ", ["2", "3"]), ("01", ["1"]),
    ("0,-1,1", ["0"]), ("0,x,1", ["0"]), ("0,,1", ["0"]), ("-1,0", []),
    ("GPU-8932f937-d72c,1", ["GPU-8932f937-d72c", "1"]),
    ("MIG-GPU-8932f937/1/0", ["MIG-GPU-8932f937/1/0"]), ("MIG-c7384736-a75d", ["MIG-c7384736-a75d"]),
    ("GPU-", []),
])
def test_cuda_visible_devices_is_read_as_cuda_reads_it(value: str | None, expected: list[str] | None) -> None:
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert visible_gpu_selection(env) == expected


def test_nvml_devices_follow_the_selection_and_stop_where_cuda_stops() -> None:
    uuids = ["GPU-aaaa-1", "GPU-bbbb-1", "GPU-bbbb-2"]
    assert select_nvml_devices(None, 3) == [0, 1, 2]
    assert select_nvml_devices([], 3) == []
    assert select_nvml_devices(["2", "0"], 3) == [2, 0]
    assert select_nvml_devices(["1", "3", "0"], 3) == [1], "an index out of range ends the list"
    assert select_nvml_devices(["0", "0", "1"], 3) == [0], "a device named twice ends the list"
    assert select_nvml_devices(["GPU-bbbb-2", "GPU-aaaa"], 3, uuids) == [2, 0], "UUIDs and unique prefixes"
    assert select_nvml_devices(["1", "GPU-bbbb", "0"], 3, uuids) == [1], "an ambiguous prefix ends the list"
    assert select_nvml_devices(["MIG-abc", "1"], 3, uuids) == ["MIG-abc", 1]


def test_without_the_nvml_library_there_are_no_gpu_metrics_and_the_reason_says_so(tmp_path: Path) -> None:
    library = str(tmp_path / "libnvidia-ml.so.1")
    sampler = NvmlSampler(None, library=library)
    assert not sampler.checked, "NVML is looked for at first use"
    assert not sampler.available
    assert sampler.reason == f"{library} not found"
    assert sampler.sample() == {} and sampler.problems() == []
    sampler.close()

    none_selected = NvmlSampler([], library=library)
    assert not none_selected.available and none_selected.reason == "CUDA_VISIBLE_DEVICES selects no GPU"


FAKE_NVML = r"""
#include <stdio.h>
typedef struct { unsigned long long total, free, used; } memory_t;
typedef struct { unsigned int gpu, memory; } utilization_t;
static int devices[3] = {0, 1, 2};
static int shutdowns = 0;
int fake_shutdowns(void) { return shutdowns; }
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { shutdowns++; return 0; }
const char *nvmlErrorString(int code) { return code == 3 ? "Not Supported" : "Not Found"; }
int nvmlDeviceGetCount_v2(unsigned int *count) { *count = 3; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **handle) {
    if (i > 2) return 2; *handle = &devices[i]; return 0; }
int nvmlDeviceGetHandleByUUID(const char *uuid, void **handle) { return 6; }
int nvmlDeviceGetUUID(void *handle, char *text, unsigned int size) {
    snprintf(text, size, "GPU-%d0000000-1111", *(int *)handle); return 0; }
int nvmlDeviceGetMemoryInfo(void *handle, memory_t *memory) {
    memory->total = 16000000000ULL; memory->used = (*(int *)handle + 1) * 1000000000ULL;
    memory->free = memory->total - memory->used; return 0; }
int nvmlDeviceGetUtilizationRates(void *handle, utilization_t *rates) {
    if (*(int *)handle == 2) return 3; rates->gpu = 10 * (*(int *)handle + 1); rates->memory = 5; return 0; }
int nvmlDeviceGetPowerUsage(void *handle, unsigned int *milliwatts) { *milliwatts = 100000; return 0; }
int nvmlDeviceGetEnforcedPowerLimit(void *handle, unsigned int *milliwatts) { *milliwatts = 400000; return 0; }
"""


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A stand-in for libnvidia-ml.so.1 (three GPUs; the third without utilization, as MIG), so the ctypes
    calls run for real on a machine without a GPU."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a stand-in NVML")
    folder = tmp_path_factory.mktemp("nvml")
    (folder / "nvml.c").write_text(FAKE_NVML)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / "libnvml.so"), str(folder / "nvml.c")],
                   check=True)
    return str(folder / "libnvml.so")


def test_gpus_are_named_by_their_position_among_the_visible_ones(fake_nvml: str) -> None:
    sampler = NvmlSampler(["2", "0"], library=fake_nvml)
    assert sampler.available and sampler.reason == "" and sampler.device_positions == [0, 1]
    values = sampler.sample()
    assert values == {
        "gpu_0_memory_usage_percentage": 18.8, "gpu_0_memory_usage_megabytes": 3000.0,
        "gpu_0_power_usage_watts": 100.0, "gpu_0_power_usage_percentage": 25.0,
        "gpu_1_memory_usage_percentage": 6.2, "gpu_1_memory_usage_megabytes": 1000.0,
        "gpu_1_utilization_percentage": 10.0,
        "gpu_1_power_usage_watts": 100.0, "gpu_1_power_usage_percentage": 25.0,
    }, "gpu_0 (NVML's device 2) has no utilization: only that key is missing"
    sampler.sample()
    assert sampler.problems() == ["no gpu_0 utilization metrics: nvmlDeviceGetUtilizationRates: Not Supported"]
    shutdowns = ctypes.CDLL(fake_nvml).fake_shutdowns
    before = shutdowns()
    sampler.close()
    assert shutdowns() == before + 1 and sampler.sample() == {}


def test_gpus_given_by_uuid_and_a_mig_device_nvml_cannot_find(fake_nvml: str) -> None:
    assert NvmlSampler(["GPU-1"], library=fake_nvml).device_positions == [0]
    sampler = NvmlSampler(["1", "MIG-gone", "0"], library=fake_nvml)
    assert set(sampler.sample()) == {f"gpu_0_{name}" for name in ("memory_usage_percentage", "memory_usage_megabytes",
                                                                 "utilization_percentage", "power_usage_watts",
                                                                 "power_usage_percentage")}
    assert sampler.problems() == ["no metrics for MIG-gone and the GPUs after it: nvmlDeviceGetHandleByUUID: Not Found"]
    sampler.close()
    unknown = NvmlSampler(["7"], library=fake_nvml)
    assert not unknown.available and unknown.reason == "NVML sees none of the GPUs of CUDA_VISIBLE_DEVICES"


def read_samples(path: Path) -> list[tuple[int, int, dict[str, float]]]:
    """(step, timestamp, values) of every sample in the file, in file order; every line exactly as
    :func:`events.encode_event` writes it, and every sample's lines together."""
    samples: list[tuple[int, int, dict[str, float]]] = []
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    for line in raw.splitlines(keepends=True):
        event = decode_event(line)
        assert isinstance(event, MetricEvent) and encode_event(event) == line, line
        assert not event.child and event.step >= 0
        if not samples or samples[-1][0] != event.step:
            samples.append((event.step, event.timestamp_ms, {}))
        _, timestamp, values = samples[-1]
        assert event.timestamp_ms == timestamp
        values[event.key] = event.value
    return samples


@linux_only
def test_the_sampler_writes_one_complete_sample_every_interval(tmp_path: Path) -> None:
    interval = 0.3
    samplers = {node_id: SystemMetricsSampler(str(tmp_path / f"{node_id}.jsonl"), interval, node_id, env={})
                for node_id in (None, "node_1")}
    started = time.time() * 1000
    for sampler in samplers.values():
        sampler.start()
    time.sleep(2.0)
    for sampler in samplers.values():
        sampler.stop()  # 0.2 s after the last point: no final one
    for node_id, sampler in samplers.items():
        path = tmp_path / f"{node_id}.jsonl"
        samples = read_samples(path)
        assert 5 <= len(samples) <= 7, samples
        assert [step for step, _, _ in samples] == list(range(len(samples)))
        prefix = "system/node_1/" if node_id else "system/"
        for _, _, values in samples:
            assert {key.removeprefix(prefix) for key in values} == HOST_KEYS
            assert all(key.startswith(prefix) and key.count("/") == prefix.count("/") for key in values)
        timestamps = [timestamp for _, timestamp, _ in samples]
        assert abs(timestamps[0] - started - interval * 1000) < 250  # a loaded machine wakes threads late
        gaps = [later - earlier for earlier, later in itertools.pairwise(timestamps)]
        assert all(abs(gap - interval * 1000) < 250 for gap in gaps), gaps
        assert abs(sum(gaps) / len(gaps) - interval * 1000) < 60, "points on a fixed grid: no drift"
        assert sampler.problems() == []
        assert sampler.describe().startswith("system metrics every 0.3s: cpu, memory, disk, network; "), \
            sampler.describe()
        size = path.stat().st_size
        time.sleep(interval + 0.1)
        assert path.stat().st_size == size, "a stopped sampler writes nothing more"
    assert metric_prefix(None) == metric_prefix("") == "system/" and metric_prefix("node_1") == "system/node_1/"


@linux_only
def test_stop_takes_a_last_sample_once_a_point_was_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sampler = SystemMetricsSampler(str(path), 2, env={"CUDA_VISIBLE_DEVICES": ""})
    sampler.start()
    time.sleep(3.0)
    began = time.monotonic()
    sampler.stop()
    assert time.monotonic() - began < 1.5, "stop wakes the thread"
    assert [step for step, _, _ in read_samples(path)] == [0, 1]  # the point at 2 s, the last at 3 s
    (_, _, values) = read_samples(path)[-1]
    assert {key.removeprefix("system/") for key in values} == HOST_KEYS

    short = tmp_path / "short.jsonl"  # shorter than the interval: no point, as in MLflow
    sampler = SystemMetricsSampler(str(short), 10, env={"CUDA_VISIBLE_DEVICES": ""})
    sampler.start()
    time.sleep(0.6)
    sampler.stop()
    assert not short.exists() or not read_samples(short)
    assert sampler.describe() == ("system metrics every 10s: cpu, memory, disk, network; "
                                  "no GPU metrics: CUDA_VISIBLE_DEVICES selects no GPU")

    no_final = SystemMetricsSampler(str(tmp_path / "none.jsonl"), 10)
    no_final.start()
    time.sleep(0.6)
    no_final.stop(final_sample=False)
    assert not (tmp_path / "none.jsonl").exists()
    SystemMetricsSampler(str(tmp_path / "never.jsonl"), 10).stop()  # never started: nothing to do
    assert not (tmp_path / "never.jsonl").exists()


def test_an_unwritable_events_file_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "missing-folder" / "events.jsonl"
    sampler = SystemMetricsSampler(str(path), 0.1, env={"CUDA_VISIBLE_DEVICES": "-1"})
    sampler.start()
    time.sleep(0.6)
    sampler.stop()
    assert not path.exists()
    problems = sampler.problems()
    assert len(problems) == 1 and problems[0].startswith(f"cannot write to {path}: ") and "No such file" in problems[0]
    assert sampler.describe().endswith(f"; problems: {problems[0]}")


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (0, None), (0.0, None), ("0", None), ("off", None), (" OFF ", None), ("0.0", None),
    (10, 10.0), (0.5, 0.5), ("15", 15.0), (" 2.5 ", 2.5),
])
def test_the_interval_option(value: object, expected: float | None) -> None:
    assert parse_interval(value) == expected


@pytest.mark.parametrize("value", [-1, "-3", "ten", "", True, float("nan"), float("inf"), [10], "10s"])
def test_a_wrong_interval_says_how_to_write_it(value: object) -> None:
    with pytest.raises(ValueError, match=r"system_metrics_interval_seconds=.*give a positive number.*or 0 or 'off'"):
        parse_interval(value)
