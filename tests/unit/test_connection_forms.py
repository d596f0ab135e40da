"""The connection forms say what the hooks do: hidden fields are the ones a hook ignores, a default
shown is the hook's own default, and every field whose format is not obvious carries help and
examples. (The forms themselves, in a browser: tests/system/test_browser_ui.py.)"""

from __future__ import annotations

from typing import Any

import pytest

import airflow_provider
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.hooks.docker_options import docker_target_settings
from airflow_provider.hooks.ssh_options import ssh_target_arguments
from airflow_provider.runtime.remote_agent import CACHE_LIMIT_DEFAULTS

_TYPES = {c["connection-type"]: c for c in airflow_provider.get_provider_info()["connection-types"]}


def _defaults(conn_type: str) -> dict[str, Any]:
    """What a form saves when only the fields it requires are filled: every shown default."""
    return {name: field["schema"]["default"] for name, field in _TYPES[conn_type]["conn-fields"].items()
            if field["schema"].get("default") is not None}


def _hidden(conn_type: str) -> set[str]:
    return set(_TYPES[conn_type]["ui-field-behaviour"]["hidden-fields"])


def test_fields_the_hooks_ignore_are_hidden() -> None:
    assert "host" in _hidden("training_mpi")  # hosts are named in the Hosts field
    assert "port" in _hidden("training_docker")  # the daemon URL carries the port
    assert {"host", "port", "login", "password"} <= _hidden("training_local")
    assert "port" in _hidden("mlflow")  # the tracking URI carries it
    for conn_type in ("training_ssh", "training_slurm"):
        assert not {"host", "port", "login", "password"} & _hidden(conn_type)


def test_the_docker_forms_defaults_are_what_the_hook_does_without_them() -> None:
    defaults = _defaults("training_docker")
    assert defaults["tls_skip_verify"] is False  # shown off: TLS checks the daemon unless told not to
    for host in ("unix:///var/run/docker.sock", "tcp://127.0.0.1:2375"):  # the default alone asks for no TLS
        assert docker_target_settings("c", host, None, None, defaults) == docker_target_settings("c", host, None,
                                                                                                 None, {})


def test_tls_is_verified_by_default_once_a_tls_field_is_set(tmp_path: Any) -> None:
    settings = docker_target_settings("c", "https://docker.example.com:2376", None, None, _defaults("training_docker"))
    assert settings["tls"] is not None and settings["tls"]["verify"] is True
    for unchecked in ({"tls_verify": False}, {"tls_skip_verify": True}):
        off = docker_target_settings("c", "tcp://127.0.0.1:2376", None, None, unchecked)
        assert off["tls"] is not None and off["tls"]["verify"] is False
    # a connection made before the switch, asking for TLS with tls_verify alone, still gets it
    earlier = docker_target_settings("c", "tcp://docker.example.com:2376", None, None, {"tls_verify": True})
    assert earlier["tls"] is not None and earlier["tls"]["verify"] is True
    with pytest.raises(ConfigurationError, match="tls_skip_verify"):
        docker_target_settings("c", "tcp://127.0.0.1:2376", None, None, {"tls_verify": True, "tls_skip_verify": True})


@pytest.mark.parametrize("conn_type", ["training_ssh", "training_mpi", "training_slurm"])
def test_the_ssh_forms_defaults_are_what_the_hook_does_without_them(conn_type: str) -> None:
    hook_fields = {"hosts", "ssh_conn_ids", "launcher", "mpirun_options", "partition", "account", "qos",
                   "sbatch_options", "setup", "mpi_launcher", "srun_options"}  # read by the MPI and Slurm hooks
    defaults = {k: v for k, v in _defaults(conn_type).items() if k not in hook_fields}
    assert _effective(ssh_target_arguments("c", "h", None, None, "pw", defaults)) == _effective(
        ssh_target_arguments("c", "h", None, None, "pw", {}))


def _effective(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments with the cache bounds the host's agent applies when none is given."""
    return {**arguments, "cache_limits": {**CACHE_LIMIT_DEFAULTS, **arguments["cache_limits"]}}


def test_the_mpi_and_slurm_forms_defaults_are_their_hooks_defaults() -> None:
    assert _defaults("training_mpi")["launcher"] == "openmpi"
    assert "mpi_launcher" not in _defaults("training_slurm")  # srun unless set: the form shows it empty


@pytest.mark.parametrize(("conn_type", "field"), [
    ("training_ssh", "host_key"), ("training_mpi", "host_key"), ("training_slurm", "host_key"),
    ("training_ssh", "known_hosts"), ("training_ssh", "work_root"), ("training_docker", "shm_size"),
    ("training_docker", "mem_limit"), ("training_docker", "volumes"), ("training_docker", "labels"),
    ("training_docker", "user"), ("training_mpi", "hosts"), ("training_mpi", "ssh_conn_ids"),
    ("training_mpi", "mpirun_options"), ("training_slurm", "sbatch_options"), ("training_slurm", "work_root"),
])
def test_fields_whose_format_is_not_obvious_carry_one_line_of_help(conn_type: str, field: str) -> None:
    definition = _TYPES[conn_type]["conn-fields"][field]
    description = definition.get("description") or ""
    assert description and "\n" not in description and len(description) <= 200, (conn_type, field, description)
    if definition["schema"]["type"][0] == "string" and definition["schema"].get("format") is None:
        assert definition["schema"].get("examples"), (conn_type, field)


def test_every_example_is_accepted_by_its_hook() -> None:
    docker_examples = {name: field["schema"]["examples"][0]
                       for name, field in _TYPES["training_docker"]["conn-fields"].items()
                       if field["schema"].get("examples") and name not in ("tls_hostname",)}
    docker_target_settings("c", "unix:///var/run/docker.sock", None, None, docker_examples)
    ssh_examples = {name: field["schema"]["examples"][0]
                    for name, field in _TYPES["training_ssh"]["conn-fields"].items()
                    if field["schema"].get("examples") and name not in ("host_key", "key_file")}
    ssh_target_arguments("c", "h", None, None, "pw", ssh_examples)

