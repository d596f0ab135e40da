"""Real conda environments on the local target, on an SSH host and in a Docker image (neither of which
has conda, a channel or an index), built with py-rattler from a local file channel the tests make (no
conda channel is reachable here): solved, locked, installed once, run."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Environment, Experiment, ScriptRunConfig
from airflow_provider.core.environments.conda_spec import CondaDependencies
from airflow_provider.core.environments.docker_images import IMAGE_REPOSITORY
from airflow_provider.core.targets.docker import DockerTarget
from airflow_provider.core.targets.local import LocalTarget
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.core.tracking import Tags
from tests import conda_channel
from tests.helpers import make_wheel, remove_new_images, serve_folder, write_script
from tests.ssh_hosts import SSHHost

SCRIPT = """
    import json, sys, condademo, condalib, tinypip
    print(json.dumps({"prefix": sys.prefix, "demo": condademo.__version__, "lib": condademo.LIB,
                      "pip": tinypip.VALUE}))
"""


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("rattler", reason="py-rattler (the conda extra) is not installed")
    return conda_channel.make_channel(tmp_path_factory.mktemp("conda"))


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _environment(channel: Path, tmp_path: Path, *packages: str) -> Environment:
    wheel = make_wheel(tmp_path, "tinypip", "1.0", "VALUE = 'from pip'\n")
    (tmp_path / "environment.yml").write_text(
        f"name: project_environment\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - python=3.11\n"
        + "".join(f"  - {p}\n" for p in packages) + f"  - pip:\n    - {wheel}\n")
    return Environment.from_conda_specification("real-conda", tmp_path / "environment.yml")


def test_a_conda_specification_builds_a_real_conda_environment(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condademo")
    write_script(tmp_path / "src", SCRIPT)
    target = LocalTarget(conda="rattler")
    lines: list[str] = []
    run = Experiment("conda-real").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                          environment=environment))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", (details, lines)
    seen = json.loads(lines[0])
    assert seen["demo"] == "1.2.3" and seen["lib"] == "2.0" and seen["pip"] == "from pip"  # the solver chose 2.0
    prefix = Path(seen["prefix"])
    assert sorted(p.name.rsplit("-", 2)[0] for p in (prefix / "conda-meta").glob("*.json")) == [
        "condademo", "condalib", "python"]
    description = MlflowClient().get_run(run.id).data.tags[Tags.ENVIRONMENT_DESCRIPTION]
    assert "conda environment" in description and "py-rattler" in description
    lock = Path(MlflowClient().download_artifacts(run.id, "environment/lock.txt", str(tmp_path))).read_text()
    assert "@EXPLICIT" in lock and "condalib-2.0-pyh0_0.conda#sha256:" in lock and "# pip: tinypip==1.0" in lock

    again = target.prepare_environment(environment)
    assert not again.built and again.python == str(prefix / "bin" / "python")


def test_the_lock_holds_until_it_is_refreshed(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condalib")
    target = LocalTarget(conda="rattler")
    first = target.prepare_environment(environment)
    version = "import condalib; print(condalib.VERSION)"
    assert subprocess.run([first.python, "-c", version], capture_output=True, text=True).stdout.strip() == "2.0"
    conda_channel.noarch_package(channel, "condalib", "3.0", "VERSION = '3.0'\n")  # a new release appears
    conda_channel.index(channel)
    try:
        assert target.prepare_environment(environment).fingerprint == first.fingerprint, "the lock holds"
        assert environment.refresh_lock() >= 1
        newer = target.prepare_environment(environment)
        assert newer.built and newer.fingerprint != first.fingerprint
        assert subprocess.run([newer.python, "-c", version], capture_output=True, text=True).stdout.strip() == "3.0"
    finally:
        (channel / "noarch" / "condalib-3.0-pyh0_0.conda").unlink()
        conda_channel.index(channel)


def test_an_unsatisfiable_specification_names_the_package(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condademo>=9")
    with pytest.raises(ConfigurationError) as caught:
        LocalTarget(conda="rattler").prepare_environment(environment)
    assert caught.value.field == "environment.python.conda_dependencies" and "condademo" in str(caught.value)


def test_a_local_channel_that_does_not_exist_is_refused_before_any_run(tmp_path: Path) -> None:
    environment = Environment("missing-channel")
    environment.python.conda_dependencies = CondaDependencies.create(conda_packages=["numpy"],
                                                                     channels=[str(tmp_path / "nowhere")])
    write_script(tmp_path / "src", "print('never')\n")
    experiment = Experiment("conda-missing-channel")
    with pytest.raises(ConfigurationError, match="nowhere"):
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=environment))
    assert MlflowClient().search_runs([experiment.id]) == []


def test_a_channel_the_server_does_not_have_is_refused_not_translated(tmp_path: Path) -> None:
    """A typo in a channel's name is the user's to fix: even conda="auto" does not fall back to PyPI."""
    pytest.importorskip("rattler", reason="py-rattler (the conda extra) is not installed")
    with serve_folder(tmp_path) as url:
        environment = Environment("typo-channel")
        environment.python.conda_dependencies = CondaDependencies.create(conda_packages=["numpy"],
                                                                         channels=[f"{url}/conda-froge"])
        environment.python.conda_dependencies.remove_channel("conda-forge")
        with pytest.raises(ConfigurationError) as caught:
            LocalTarget(conda="auto").prepare_environment(environment)
    assert caught.value.field == "environment.python.conda_dependencies"
    assert f"{url}/conda-froge does not exist" in str(caught.value) and "name or URL" in str(caught.value)


def test_from_run_rebuilds_the_same_conda_packages(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condademo")
    write_script(tmp_path / "src", SCRIPT)
    target = LocalTarget(conda="rattler")
    run = Experiment("conda-from-run").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                              environment=environment))
    assert run.wait_for_completion()["status"] == "Completed"
    again = Environment.from_run(run.id)
    spec = again.conda_specification()
    assert spec is not None and spec.channels == [channel.as_uri()]
    assert spec.get_python_version() == ".".join(map(str, __import__("sys").version_info[:3]))
    assert sorted(spec.conda_packages) == ["condademo==1.2.3=pyh0_0", "condalib==2.0=pyh0_0"]
    assert spec.pip_packages == ["tinypip==1.0"]


def _ssh_target(host: SSHHost, root: str) -> SSHTarget:
    settings = SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                           host_key=host.host_public_key)
    return SSHTarget(settings, work_root=root, conda="rattler")


def _host_files(host: SSHHost, command: str) -> str:
    return subprocess.run(["docker", "exec", host.name, "sh", "-c", command], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_a_real_conda_environment_on_an_ssh_host_without_conda_or_a_channel(channel: Path, tmp_path: Path,
                                                                            ssh_container: SSHHost) -> None:
    """The host has no conda and reaches no channel: the packages solved here are sent, then installed
    there by py-rattler (itself sent as a locked wheel), and a second environment sends only its own."""
    assert "conda" not in _host_files(ssh_container, "ls /usr/bin /usr/local/bin; echo")
    root = f"/tmp/tr-conda-ssh-{uuid.uuid4().hex[:8]}"
    target = _ssh_target(ssh_container, root)
    environment = _environment(channel, tmp_path, "condademo")
    write_script(tmp_path / "src", SCRIPT)
    lines: list[str] = []
    run = Experiment("conda-ssh").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                         environment=environment))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", (details, lines)
    seen = json.loads(lines[0])
    assert seen["demo"] == "1.2.3" and seen["lib"] == "2.0" and seen["pip"] == "from pip"
    assert seen["prefix"].startswith(f"{root}/envs/")
    installed = _host_files(ssh_container, f"ls {seen['prefix']}/conda-meta").split()
    assert sorted(name.rsplit("-", 2)[0] for name in installed if name.endswith(".json")) == [
        "condademo", "condalib", "python"]
    description = MlflowClient().get_run(run.id).data.tags[Tags.ENVIRONMENT_DESCRIPTION]
    assert "conda environment" in description and "installed offline" in description, description
    lock = Path(MlflowClient().download_artifacts(run.id, "environment/lock.txt", str(tmp_path))).read_text()
    assert "@EXPLICIT" in lock and "condademo-1.2.3-pyh0_0.conda#sha256:" in lock and "# pip: tinypip==1.0" in lock
    first_sent = target.blob_bytes_sent
    assert first_sent > 10_000_000, "python, py-rattler and uv (if the host lacks it) went to the host"

    # Another process: a cache hit in one round trip, nothing sent, the same interpreter.
    again = _ssh_target(ssh_container, root)
    reused = again.prepare_environment(environment)
    assert not reused.built and again.blob_bytes_sent == 0 and reused.python == f"{seen['prefix']}/bin/python"

    # A second environment: the tool environment and python are on the host already; only what is new travels.
    conda_channel.noarch_package(channel, "condaextra", "0.1", "VALUE = 1\n")
    conda_channel.index(channel)
    try:
        (tmp_path / "second").mkdir()
        second = _environment(channel, tmp_path / "second", "condademo", "condaextra")
        prepared = again.prepare_environment(second)
        assert prepared.built and 0 < again.blob_bytes_sent < 100_000, again.blob_bytes_sent
        assert "condaextra" in _host_files(ssh_container, f"ls {prepared.python.rsplit('/bin/', 1)[0]}/conda-meta")
    finally:
        (channel / "noarch" / "condaextra-0.1-pyh0_0.conda").unlink()
        conda_channel.index(channel)


def test_a_package_the_hosts_c_library_cannot_run_is_refused_before_anything_is_sent(
        channel: Path, tmp_path: Path, ssh_container: SSHHost) -> None:
    conda_channel.noarch_package(channel, "needsnewglibc", "1.0", "VALUE = 1\n", ["__glibc >=99"])
    conda_channel.index(channel)
    try:
        target = _ssh_target(ssh_container, f"/tmp/tr-conda-ssh-{uuid.uuid4().hex[:8]}")
        with pytest.raises(ConfigurationError) as caught:
            target.prepare_environment(_environment(channel, tmp_path, "needsnewglibc"))
        message = str(caught.value)
        assert caught.value.field == "environment.python.conda_dependencies"
        assert "needsnewglibc" in message and "__glibc=2.36" in message and "linux-64" in message, message
        assert target.blob_bytes_sent == 0
    finally:
        (channel / "noarch" / "needsnewglibc-1.0-pyh0_0.conda").unlink()
        conda_channel.index(channel)


def test_a_real_conda_environment_in_an_image_built_without_any_network(channel: Path, tmp_path: Path,
                                                                        docker_target: DockerTarget) -> None:
    """The image's build reaches no channel and no index: the packages solved here, py-rattler's wheel
    and the pip: section's wheels travel in the build context; a second run builds nothing."""
    docker_target.conda = "rattler"
    client = docker_target.client
    before = {image.id for image in client.images.list(IMAGE_REPOSITORY)}
    try:
        environment = _environment(channel, tmp_path, "condademo")
        write_script(tmp_path / "src", SCRIPT)
        lines: list[str] = []
        run = Experiment("conda-docker").submit(ScriptRunConfig(tmp_path / "src", "train.py",
                                                                compute_target=docker_target, environment=environment))
        details = run.wait_for_completion(output=lines.append)
        assert details["status"] == "Completed", (details, lines)
        seen = json.loads(lines[0])
        assert seen == {"prefix": "/opt/training-runs/env", "demo": "1.2.3", "lib": "2.0", "pip": "from pip"}
        tags = MlflowClient().get_run(run.id).data.tags
        description = tags[Tags.ENVIRONMENT_DESCRIPTION]
        assert "a conda environment of 3 packages" in description and "installed offline" in description, description
        lock = Path(MlflowClient().download_artifacts(run.id, "environment/lock.txt", str(tmp_path))).read_text()
        assert "@EXPLICIT" in lock and "# pip: tinypip==1.0" in lock
        image = description.split()[1]
        listing = client.containers.run(image, ["sh", "-c", "ls /opt/training-runs/env/conda-meta; "
                                                "ls /opt/training-runs/build 2>&1 || true"], remove=True,
                                        network_disabled=True).decode()
        assert "condademo-1.2.3-pyh0_0.json" in listing and "No such file" in listing, listing
        again = docker_target.prepare_environment(environment)
        assert not again.built and again.image == image
    finally:
        remove_new_images(client, before)
