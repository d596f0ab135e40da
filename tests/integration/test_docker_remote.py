"""The Docker target over TCP + mutual TLS, built from a ``training_docker`` Airflow connection.

The daemon is the real dockerd of scripts/components.sh, which also listens on tcp://127.0.0.1:2376
with ``--tlsverify`` and keeps its CA and client certificate in /var/lib/training-runs-components/
docker-tls. Connections come from ``AIRFLOW_CONN_<ID>`` JSON environment variables, as Airflow reads
them; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, Input, ScriptRunConfig, TargetError
from airflow_provider.core.paths import state_dir
from airflow_provider.core.targets import target_from_spec
from airflow_provider.core.targets.docker import DEFAULT_IMAGE, LABEL_MANAGED, DockerTarget
from airflow_provider.hooks.compute import DockerComputeHook
from tests.conftest import skip_or_fail
from tests.helpers import write_script

TLS_URL = "tcp://127.0.0.1:2376"
TLS_DIR = Path(os.environ.get("TRAINING_RUNS_DOCKER_TLS_DIR", "/var/lib/training-runs-components/docker-tls"))
SECRET = "registry-secret-do-not-leak"


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture(scope="module")
def tls_paths() -> dict[str, str]:
    """The client side of the daemon's TLS endpoint: extra fields naming the certificate files."""
    paths = {"tls_ca_cert": TLS_DIR / "ca.pem", "tls_client_cert": TLS_DIR / "cert.pem",
             "tls_client_private_key": TLS_DIR / "key.pem"}
    missing = [str(path) for path in paths.values() if not os.access(path, os.R_OK)]
    if missing:
        skip_or_fail(f"no Docker TLS client certificates {missing} (run scripts/components.sh as root)")
    extra = {key: str(path) for key, path in paths.items()}
    probe = DockerTarget(TLS_URL, tls={"ca_cert": extra["tls_ca_cert"], "client_cert": extra["tls_client_cert"],
                                       "client_key": extra["tls_client_private_key"]})
    try:
        probe.check()
    except TargetError as exc:
        skip_or_fail(f"no Docker TLS endpoint on {TLS_URL} (run scripts/components.sh as root): {exc}")
    try:
        probe.client.images.get(DEFAULT_IMAGE)
    except Exception:
        skip_or_fail(f"no base image {DEFAULT_IMAGE} (run scripts/components.sh)")
    return extra


@pytest.fixture
def test_labels(tls_paths: dict[str, str]) -> Iterator[dict[str, str]]:
    """Container labels unique to the test; fails the test if a container carrying them is left.

    Only this test's containers are looked at: other sessions may run jobs on the same daemon.
    """
    labels = {"training.test": uuid.uuid4().hex}
    yield labels
    target = DockerTarget(TLS_URL, tls={"ca_cert": tls_paths["tls_ca_cert"],
                                        "client_cert": tls_paths["tls_client_cert"],
                                        "client_key": tls_paths["tls_client_private_key"]})
    leftovers = target.client.containers.list(
        all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"training.test={labels['training.test']}"]})
    for container in leftovers:
        container.remove(force=True)
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


def _hook(monkeypatch: pytest.MonkeyPatch, conn_id: str, extra: dict[str, Any], host: str = TLS_URL,
          **fields: Any) -> DockerComputeHook:
    """A hook on connection ``conn_id``, given to Airflow as an ``AIRFLOW_CONN_<ID>`` JSON variable."""
    connection = {"conn_type": "training_docker", "host": host, "extra": extra, **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return DockerComputeHook(conn_id)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TRAIN = """
    import os, sys
    from airflow_provider.core import Run
    run = Run.get_context()
    for i in range(5):
        run.log("loss", 1.0 / (i + 1))
    limit = "none"
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(path):
            limit = open(path).read().strip()
            break
    print("memory limit", limit)
    print("input", open(os.path.join(sys.argv[1], "x.txt")).read())
    print("cached", os.path.islink(os.path.join(sys.argv[1], "x.txt")))
    os.makedirs("outputs", exist_ok=True)
    open("outputs/model.txt", "w").write("over tls")
"""


def _run_and_check(target: Any, tmp_path: Path, name: str, labels: dict[str, str]) -> list[str]:
    write_script(tmp_path / "src", TRAIN)
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text(f"read over tls {uuid.uuid4().hex}")  # new content: sent to the input cache
    lines: list[str] = []
    run = Experiment(name).submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                  arguments=["${{inputs.train}}"], inputs={"train": Input(str(data))}))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    assert f"input {(data / 'x.txt').read_text()}" in lines
    assert "cached True" in lines, lines  # a link into the input cache: its sync worked over TLS
    assert target.blob_bytes_sent == (data / "x.txt").stat().st_size
    assert details["target"] == f"docker ({TLS_URL}, TLS)"
    assert [m.value for m in MlflowClient().get_metric_history(run.id, "loss")] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert run.download_file("outputs/model.txt", tmp_path / "model.txt").read_text() == "over tls"
    assert run.handle is not None and target.find(run.handle.job_id) is None, "the container was not removed"
    assert not target.client.containers.list(all=True, filters={"label": f"training.test={labels['training.test']}"})
    return lines


def test_a_run_over_tls_with_certificate_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               tls_paths: dict[str, str], test_labels: dict[str, str]) -> None:
    hook = _hook(monkeypatch, "docker_tls_paths", {**tls_paths, "mem_limit": "256m", "cpus": 1,
                                                    "labels": test_labels})
    target = hook.get_target()
    assert isinstance(target, DockerTarget)
    assert target.tls == {"ca_cert": tls_paths["tls_ca_cert"], "client_cert": tls_paths["tls_client_cert"],
                          "client_key": tls_paths["tls_client_private_key"], "verify": True}
    lines = _run_and_check(target, tmp_path, "docker-tls-paths", test_labels)
    assert any(f"memory limit {256 << 20}" in line for line in lines), lines  # the run options reached the daemon


def test_a_run_over_tls_with_inline_pem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        tls_paths: dict[str, str], test_labels: dict[str, str]) -> None:
    inline = {key: Path(path).read_text() for key, path in tls_paths.items()}
    target = _hook(monkeypatch, "docker_tls_inline", {**inline, "tls_hostname": "localhost",
                                                      "labels": test_labels}).get_target()
    assert isinstance(target, DockerTarget) and target.tls is not None
    folder = state_dir() / "docker-tls"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key, name in (("tls_ca_cert", "ca_cert"), ("tls_client_cert", "client_cert"),
                      ("tls_client_private_key", "client_key")):
        written = Path(target.tls[name])
        assert written.parent == folder and stat.S_IMODE(written.stat().st_mode) == 0o600
        assert written.name == hashlib.sha256(written.read_bytes()).hexdigest()
        assert written.read_text().strip() == inline[key].strip()
    again = _hook(monkeypatch, "docker_tls_inline", inline).get_target()
    assert isinstance(again, DockerTarget) and again.tls is not None
    assert again.tls["client_key"] == target.tls["client_key"]  # written once
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(target.tls[n]).name for n in
                                                              ("ca_cert", "client_cert", "client_key"))
    _run_and_check(target, tmp_path, "docker-tls-inline", test_labels)


def test_tls_refused_or_misconfigured_is_a_clear_target_error(monkeypatch: pytest.MonkeyPatch,
                                                              tls_paths: dict[str, str]) -> None:
    no_client_cert = _hook(monkeypatch, "docker_no_client", {"tls_ca_cert": tls_paths["tls_ca_cert"]}).get_target()
    with pytest.raises(TargetError, match=rf"{TLS_URL}.*client cert/CA mismatch.*tls_client_cert"):
        no_client_cert.check()
    wrong_ca = _hook(monkeypatch, "docker_wrong_ca", {**tls_paths, "tls_ca_cert": tls_paths["tls_client_cert"]})
    with pytest.raises(TargetError, match=rf"{TLS_URL}.*not signed by tls_ca_cert"):
        wrong_ca.get_target().check()
    wrong_name = _hook(monkeypatch, "docker_wrong_name", {**tls_paths, "tls_hostname": "wrong.example"})
    with pytest.raises(TargetError, match=r"does not carry this host name.*tls_hostname"):
        wrong_name.get_target().check()
    plain = _hook(monkeypatch, "docker_plain", {})
    with pytest.raises(TargetError, match=rf"{TLS_URL}.*speaks TLS.*tls_ca_cert"):
        plain.get_target().check()
    missing = _hook(monkeypatch, "docker_missing", {**tls_paths, "tls_client_private_key": "/no/such/key.pem"})
    with pytest.raises(TargetError, match=r"/no/such/key.pem \(connection extra tls_client_private_key\)"):
        missing.get_target().check()


def test_an_unreachable_daemon_is_a_target_error_naming_its_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                tls_paths: dict[str, str]) -> None:
    url = f"tcp://127.0.0.1:{_closed_port()}"
    target = _hook(monkeypatch, "docker_down", tls_paths, host=url).get_target()
    with pytest.raises(TargetError, match=rf"the Docker daemon at {url} cannot be reached.*Connection refused"):
        target.check()
    write_script(tmp_path / "src", "print('never')\n")
    with pytest.raises(TargetError, match=url):
        Experiment("docker-down").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))


BAD_OPTIONS = [
    ("mem_limit", "lots", "512m"),
    ("shm_size", "1x", "512m"),
    ("cpus", 0, "above 0"),
    ("cpus", "many", "number of CPUs"),
    ("gpus", "x", '"all"'),
    ("gpus", 1.5, '"all"'),
    ("volumes", ["data:/data"], "absolute"),
    ("volumes", ["/data:/job/work"], "not under /job"),
    ("volumes", ["/data:/data:rx"], "ro|rw"),
    ("volumes", 5, "list"),
    ("labels", {"team": 1}, "mapping of text to text"),
    ("labels", "team=vision", "mapping of text to text"),
    ("tls_verify", "maybe", "true or false"),
    ("tls_ca_cert", "certs/ca.pem", "absolute path"),
    ("tls_client_cert", "-----BEGIN CERTIFICATE-----\nMIIB", "PEM text"),
    ("tls_hostname", "https://docker:2376", "host name"),
    ("user", "a b", "user"),
    ("colour", "blue", "remove it"),
]


@pytest.mark.parametrize(("field", "value", "fix"), BAD_OPTIONS, ids=[f"{f}={v!r}" for f, v, _ in BAD_OPTIONS])
def test_each_bad_option_is_a_configuration_error_before_connecting(
        monkeypatch: pytest.MonkeyPatch, field: str, value: Any, fix: str) -> None:
    # The daemon URL is a closed port: any attempt to connect would be a TargetError instead.
    hook = _hook(monkeypatch, "bad_docker", {field: value}, host=f"tcp://127.0.0.1:{_closed_port()}")
    with pytest.raises(ConfigurationError) as raised:
        hook.get_target()
    assert raised.value.field == f"connection 'bad_docker' extra.{field}"
    assert fix in raised.value.fix, raised.value.fix


def test_bad_connection_fields_outside_extra(monkeypatch: pytest.MonkeyPatch, tls_paths: dict[str, str]) -> None:
    half_key = {"tls_ca_cert": tls_paths["tls_ca_cert"], "tls_client_cert": tls_paths["tls_client_cert"]}
    with pytest.raises(ConfigurationError) as raised:
        _hook(monkeypatch, "bad_docker", half_key).get_target()
    assert raised.value.field == "connection 'bad_docker' extra.tls_client_private_key"
    with pytest.raises(ConfigurationError) as raised:
        _hook(monkeypatch, "bad_docker", tls_paths, host="unix:///var/run/docker.sock").get_target()
    assert raised.value.field == "connection 'bad_docker' host"
    with pytest.raises(ConfigurationError) as raised:
        _hook(monkeypatch, "bad_docker", {}, login="only-user").get_target()
    assert raised.value.field == "connection 'bad_docker' password"


def test_good_options_become_container_options(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"network": "none", "user": 1000, "shm_size": "64m", "mem_limit": 268435456, "cpus": "0.5",
             "gpus": "all", "volumes": ["/srv/data:/data:ro", "/srv/cache:/cache"],
             "labels": {"team": "vision"}, "image": "my/image:1", "python": "/usr/bin/python3",
             "extra__training_docker__tls_hostname": None, "tls_ca_cert": ""}
    target = _hook(monkeypatch, "good_docker", extra, host="127.0.0.1", port=2375).get_target()
    assert isinstance(target, DockerTarget)
    assert target.base_url == "tcp://127.0.0.1:2375" and target.tls is None and target.registry_auth is None
    assert (target.image, target.python) == ("my/image:1", "/usr/bin/python3")
    assert target.run_options == {
        "network": "none", "user": "1000", "shm_size": "64m", "mem_limit": 268435456, "nano_cpus": 500_000_000,
        "device_requests": [{"count": -1, "capabilities": [["gpu"]]}],
        "volumes": ["/srv/data:/data:ro", "/srv/cache:/cache:rw"], "labels": {"team": "vision"},
    }


def test_the_spec_keeps_tls_paths_and_never_the_registry_password(monkeypatch: pytest.MonkeyPatch,
                                                                   tls_paths: dict[str, str]) -> None:
    hook = _hook(monkeypatch, "docker_spec", {**tls_paths, "registry": "registry.example.com:5000"},
                 login="robot", password=SECRET)
    target = hook.get_target()
    assert isinstance(target, DockerTarget)
    assert target.registry_auth == {"username": "robot", "password": SECRET,
                                    "serveraddress": "registry.example.com:5000"}
    spec = json.loads(json.dumps(target.to_spec()))  # what goes to another process
    assert spec["tls"] == target.tls and spec["tls"]["client_key"] == tls_paths["tls_client_private_key"]
    assert SECRET not in json.dumps(spec) and "registry_auth" not in spec and "robot" not in json.dumps(spec)
    rebuilt = target_from_spec(spec)
    assert isinstance(rebuilt, DockerTarget)
    assert rebuilt.tls == target.tls and rebuilt.base_url == TLS_URL and rebuilt.registry_auth is None
    rebuilt.check()  # the rebuilt target reaches the daemon over TLS
