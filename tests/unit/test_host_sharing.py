"""A shared host's GPU settings (connection fields ``gpus``, ``reservations_file``,
``queue_timeout_seconds``): parsed and checked with the field named, refused runs before compute,
and what the job's supervisor is asked to do (``host_resources`` in ``job.json``)."""

from __future__ import annotations

import pytest

from airflow_provider import get_provider_info
from airflow_provider.core import ConfigurationError, Resources
from airflow_provider.core.targets.host_sharing import DEFAULT_QUEUE_TIMEOUT_SECONDS, HostSharing
from airflow_provider.core.targets.local import LocalTarget
from airflow_provider.hooks.ssh_options import ssh_target_arguments

FIELD = "connection 'gpu1' extra"


@pytest.mark.parametrize(("given", "devices"), [
    ("0,1,2,3", ("0", "1", "2", "3")), ("[0, 1]", ("0", "1")), ([2, 3], ("2", "3")), (4, ("0", "1", "2", "3")),
    ("", None), (None, None), ("[]", ()), ("GPU-8f6a2b1c-3d4e", ("GPU-8f6a2b1c-3d4e",)),
])
def test_the_hosts_gpus_are_read_in_every_form_a_connection_holds(given: object, devices: object) -> None:
    assert HostSharing.from_extra({"gpus": given}, FIELD).gpus == devices


@pytest.mark.parametrize(("extra", "field", "problem"), [
    ({"gpus": "0,0"}, "gpus", "lists 0 twice"),
    ({"gpus": "zero"}, "gpus", "not a GPU index"),
    ({"gpus": "[0, 1"}, "gpus", "not a JSON list"),
    ({"gpus": True}, "gpus", "must list"),
    ({"reservations_file": "relative.json"}, "reservations_file", "absolute path"),
    ({"queue_timeout_seconds": "soon"}, "queue_timeout_seconds", "positive number"),
    ({"queue_timeout_seconds": 0}, "queue_timeout_seconds", "positive number"),
])
def test_a_malformed_field_is_named_with_its_fix(extra: dict[str, object], field: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        HostSharing.from_extra(extra, FIELD)
    assert caught.value.field == f"{FIELD}.{field}"
    assert caught.value.fix


def test_every_example_the_forms_suggest_is_accepted() -> None:
    for connection in get_provider_info()["connection-types"]:
        if connection["connection-type"] not in ("training_local", "training_ssh"):
            continue
        fields = connection["conn-fields"]
        for name in ("gpus", "reservations_file"):
            for example in fields[name]["schema"]["examples"]:
                HostSharing.from_extra({name: example}, FIELD)
        assert fields["queue_timeout_seconds"]["schema"]["default"] == DEFAULT_QUEUE_TIMEOUT_SECONDS


def test_an_ssh_connection_carries_its_hosts_gpus_to_the_target() -> None:
    arguments = ssh_target_arguments("gpu1", "gpu1.example", None, "me", "pw",
                                     {"gpus": "0,1", "queue_timeout_seconds": "600"})
    assert arguments["host_sharing"] == HostSharing(("0", "1"), None, 600.0)
    with pytest.raises(ConfigurationError, match="gpus"):
        ssh_target_arguments("gpu1", "gpu1.example", None, "me", "pw", {"gpus": "a,b"})


def test_what_the_supervisor_is_asked_to_do() -> None:
    declared = HostSharing(("0", "1", "2"), "/var/tmp/r.json", 60.0)
    assert declared.job_json(Resources(gpus=2, memory_gb=1)) == {"host_resources": {
        "gpus": 2, "cpus": None, "memory_bytes": 1024 ** 3, "devices": ["0", "1", "2"], "ledger": "/var/tmp/r.json",
        "queue_timeout_seconds": 60.0, "hide_gpus": False}}
    # A run that asks for no GPU on a host that shares its GPUs sees none; elsewhere nothing changes.
    assert declared.job_json(None) == {"host_resources": {"gpus": 0, "hide_gpus": True}}
    assert declared.job_json(Resources(cpus=2))["host_resources"]["hide_gpus"] is True
    assert HostSharing().job_json(None) == {} and HostSharing().job_json(Resources(partition="x")) == {}
    assert HostSharing().job_json(Resources(gpus=1))["host_resources"]["devices"] is None  # nvidia-smi -L there


def test_a_run_the_host_can_never_serve_is_refused_before_compute() -> None:
    declared = HostSharing(("0", "1"))
    declared.check(Resources(gpus=2), "gpu1")
    with pytest.raises(ConfigurationError, match="asks for 3 GPUs; gpu1 declares 2") as caught:
        declared.check(Resources(gpus=3), "gpu1")
    assert caught.value.field == "ScriptRunConfig.resources.gpus"
    with pytest.raises(ConfigurationError, match="too little for Python"):
        declared.check(Resources(memory_gb=0.01), "gpu1")
    with pytest.raises(ConfigurationError, match="asks for 1 GPU; gpu1 has none"):
        HostSharing().check(Resources(gpus=1), "gpu1", discovered=())
    HostSharing().check(Resources(gpus=8), "gpu1")  # nothing known here: the host's supervisor asks nvidia-smi


def test_the_local_target_keeps_its_sharing_across_processes() -> None:
    target = LocalTarget(host_sharing=HostSharing(("0",), "/var/tmp/r.json", 30.0))
    rebuilt = LocalTarget.from_spec(target.to_spec())
    assert rebuilt.host_sharing == target.host_sharing
    assert sorted(rebuilt.supported_resources) == ["cpus", "gpus", "memory_gb"]
