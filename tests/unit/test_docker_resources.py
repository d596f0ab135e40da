"""The Docker target's container limits for a run's resources (against the daemon:
tests/integration/test_docker_resources.py)."""

from __future__ import annotations

from airflow_provider.core.resources import Resources
from airflow_provider.core.targets.docker_resources import check_gpu_runtime, container_limits, out_of_memory_message


def test_a_run_asking_for_no_gpus_gets_none_whatever_the_connection_gives() -> None:
    assert container_limits(Resources(gpus=0))["device_requests"] == []
    assert container_limits(Resources(gpus=2))["device_requests"] == [{"count": 2, "capabilities": [["gpu"]]}]
    assert "device_requests" not in container_limits(Resources(cpus=1))


def test_memory_without_swap_cpus_and_shm() -> None:
    assert container_limits(Resources(cpus=1.5, memory_gb=2, shm_size_gb=0.5)) == {
        "nano_cpus": 1_500_000_000, "mem_limit": 2 << 30, "memswap_limit": 2 << 30, "shm_size": 512 << 20}
    assert container_limits(None) == {}


def test_the_out_of_memory_message_names_the_limit_and_what_set_it() -> None:
    attrs = {"HostConfig": {"Memory": 3 << 29},
             "Config": {"Labels": {"training.memory_limit_from": "resources.memory_gb"}}}
    assert "1.5 GiB, set by resources.memory_gb" in out_of_memory_message(attrs)
    assert "no memory limit was set" in out_of_memory_message({"HostConfig": {"Memory": 0}})


def test_a_daemon_with_the_nvidia_runtime_passes_the_gpu_check() -> None:
    check_gpu_runtime({"Runtimes": {"runc": {}, "nvidia": {}}}, "unix:///var/run/docker.sock", "resources.gpus")
