"""Environments with real PyPI packages (numpy, scikit-learn) on targets that cannot reach a package
index: the SSH host container and the Docker daemon's containers, like GPU machines behind a firewall.
The submitting side resolves the lock for the target's Python and platform, downloads the wheels,
and the target installs them offline; a host's blob store is its wheel cache."""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Environment, EnvironmentBuildError, Experiment, ScriptRunConfig
from airflow_provider.core.environments.conda_spec import CondaDependencies
from airflow_provider.core.environments.docker_images import IMAGE_REPOSITORY
from airflow_provider.core.targets.docker import DockerTarget
from airflow_provider.core.targets.local import LocalTarget
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.core.tracking import Tags
from tests.conftest import skip_or_fail
from tests.helpers import make_wheel, remove_new_images, serve_folder, write_script
from tests.ssh_hosts import SSHHost

SKLEARN_SCRIPT = """
    import sys
    import numpy as np
    import sklearn
    from sklearn.linear_model import LinearRegression
    from airflow_provider.core import Run
    x = np.arange(20, dtype=float).reshape(-1, 1)
    model = LinearRegression().fit(x, 3.0 * x.ravel() + 1.0)
    Run.get_context().log("coef", float(model.coef_[0]))
    print("sklearn", sklearn.__version__, "from", sklearn.__file__)
"""
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+) --hash=sha256:[0-9a-f]{64}$")


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _ssh_target(host: SSHHost, root: str) -> SSHTarget:
    """The host; conda specifications translated to PyPI (py-rattler is installed: "auto" would build
    real conda, and no conda channel is reachable here)."""
    settings = SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                           host_key=host.host_public_key)
    return SSHTarget(settings, work_root=root, conda="translate")


def _assert_offline(command: list[str]) -> None:
    """The premise: this place cannot install from a package index."""
    done = subprocess.run([*command, "python3", "-m", "pip", "download", "--no-deps", "-d", "/tmp/probe",
                           "--timeout", "3", "--retries", "0", "six"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, f"expected no package index to be reachable, but pip downloaded six: {done.stdout}"


def _lock_pins(run_id: str, folder: Path) -> dict[str, str]:
    path = MlflowClient().download_artifacts(run_id, "environment/lock.txt", str(folder))
    lines = [line for line in Path(path).read_text().splitlines() if line and not line.startswith("#")]
    pins = {}
    for line in lines:
        match = _PIN.match(line)
        assert match is not None, f"not a hash-pinned lock line: {line!r}"
        pins[match.group(1)] = match.group(2)
    return pins


def _target(where: str, request: pytest.FixtureRequest) -> SSHTarget | DockerTarget | LocalTarget:
    """The target of a parametrized test; images a Docker test builds are removed after it."""
    if where == "ssh":
        return _ssh_target(request.getfixturevalue("ssh_container"), f"/tmp/tr-envs-{uuid.uuid4().hex[:8]}")
    if where == "docker":
        target: DockerTarget = request.getfixturevalue("docker_target")
        target.conda = "translate"  # py-rattler is installed: "auto" would build real conda
        client = target.client
        before = {image.id for image in client.images.list(IMAGE_REPOSITORY)}
        request.addfinalizer(lambda: remove_new_images(client, before))
        return target
    return LocalTarget(conda="translate")  # py-rattler is installed: "auto" would build real conda


def _completed(target: SSHTarget | DockerTarget | LocalTarget, environment: Environment, source: Path,
               experiment: str) -> tuple[str, list[str]]:
    """Submit ``source/train.py`` in ``environment``, wait, and return the run id and its output lines."""
    lines: list[str] = []
    run = Experiment(experiment).submit(ScriptRunConfig(source, "train.py", compute_target=target,
                                                        environment=environment))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", (details, lines)
    return run.id, lines


def _run_sklearn(target: SSHTarget | DockerTarget, environment: Environment, source: Path) -> str:
    write_script(source, SKLEARN_SCRIPT)
    run_id, lines = _completed(target, environment, source, "offline-envs")
    assert MlflowClient().get_metric_history(run_id, "coef")[0].value == pytest.approx(3.0)
    assert lines and lines[0].startswith("sklearn "), lines
    return run_id


def test_scikit_learn_on_an_ssh_host_without_a_package_index(ssh_container: SSHHost, tmp_path: Path) -> None:
    _assert_offline(["docker", "exec", ssh_container.name])
    root = f"/tmp/training-runs-offline-{uuid.uuid4().hex[:8]}"
    target = _ssh_target(ssh_container, root)
    environment = Environment("sklearn-offline")
    environment.add_pip_package("scikit-learn")

    run_id = _run_sklearn(target, environment, tmp_path / "src")
    tags = MlflowClient().get_run(run_id).data.tags
    assert "wheels sent from the submitting side and installed offline" in tags[Tags.ENVIRONMENT_DESCRIPTION]
    pins = _lock_pins(run_id, tmp_path / "lock1")
    assert {"scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"} <= set(pins)
    first_sent = target.blob_bytes_sent
    assert first_sent > 20_000_000, "numpy, scipy and scikit-learn wheels went to the host"

    # A second environment sharing numpy and threadpoolctl: only the new wheel (six) travels.
    second = Environment("shares-numpy")
    for name in ("numpy", "threadpoolctl"):
        second.add_pip_package(f"{name}=={pins[name]}")
    second.add_pip_package("six")
    prepared = target.prepare_environment(second)
    assert prepared.built
    new_bytes = target.blob_bytes_sent - first_sent
    assert 0 < new_bytes < 200_000, f"only six's wheel should be sent, not {new_bytes} bytes"
    assert prepared.lock is not None and f"numpy=={pins['numpy']} " in prepared.lock

    # The same environment from another process: built once, nothing sent, same lock and interpreter.
    again = _ssh_target(ssh_container, root)
    reused = again.prepare_environment(environment)
    assert not reused.built and again.blob_bytes_sent == 0
    assert "cached" in reused.description


def test_scikit_learn_image_on_a_docker_daemon_without_a_package_index(docker_target: DockerTarget,
                                                                        tmp_path: Path) -> None:
    _assert_offline(["docker", "run", "--rm", docker_target.image])
    before = {image.id for image in docker_target.client.images.list(IMAGE_REPOSITORY)}
    try:
        environment = Environment("sklearn-image-offline")
        environment.add_pip_package("scikit-learn")
        run_id = _run_sklearn(docker_target, environment, tmp_path / "src")
        tags = MlflowClient().get_run(run_id).data.tags
        assert "wheels sent in the build context and installed offline" in tags[Tags.ENVIRONMENT_DESCRIPTION]
        assert "scikit-learn" in _lock_pins(run_id, tmp_path / "lock")
        again = docker_target.prepare_environment(environment)
        assert not again.built and again.image == tags[Tags.ENVIRONMENT_DESCRIPTION].split()[1]
    finally:
        remove_new_images(docker_target.client, before)


def test_a_package_without_a_wheel_for_the_host_fails_before_anything_is_sent(ssh_container: SSHHost,
                                                                              tmp_path: Path) -> None:
    target = _ssh_target(ssh_container, f"/tmp/training-runs-offline-{uuid.uuid4().hex[:8]}")
    sdist = _sdist(tmp_path, f"sdistonly{uuid.uuid4().hex[:6]}")
    environment = Environment("no-wheel")
    environment.add_pip_package("six")
    environment.add_pip_package(str(sdist))
    with pytest.raises(ConfigurationError) as caught:
        target.prepare_environment(environment)
    message = str(caught.value)
    assert caught.value.field == "environment.python.pip_packages"
    assert sdist.name.split("-")[0] in message and "Python 3.11" in message and "x86_64" in message
    assert 'install_from = "target"' in message
    assert target.blob_bytes_sent == 0


def test_install_from_target_uses_the_hosts_own_index(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    """The loopback host reaches this machine's package index: it downloads the locked versions itself."""
    target = _ssh_target(ssh_loopback, str(tmp_path / "host-root"))
    environment = Environment("from-target")
    environment.add_pip_package("six")
    environment.python.install_from = "target"
    prepared = target.prepare_environment(environment)
    assert prepared.built and target.blob_bytes_sent == 0, "nothing is sent: the host downloads the packages"
    assert "installed from the host's package index" in prepared.description
    assert prepared.lock is not None and "install_from=target" in prepared.lock
    (pin,) = [line for line in prepared.lock.splitlines() if line.startswith("six==")]
    done = subprocess.run([prepared.python, "-c", "import six; print(six.__version__)"], capture_output=True,
                          text=True, check=True, timeout=60)
    assert pin.startswith(f"six=={done.stdout.strip()} --hash=sha256:")


def _sdist(folder: Path, name: str) -> Path:
    """A source distribution with a PEP 517 build (it has no wheel for any platform)."""
    import tarfile

    base = f"{name}-1.0"
    staging = folder / base
    staging.mkdir(parents=True)
    (staging / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\n'
    )
    (staging / f"{name}.py").write_text("VALUE = 1\n")
    (staging / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    archive = folder / f"{base}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname=base)
    return archive



CONDA_YML = """\
name: project_environment
channels:
  - conda-forge
dependencies:
  - python=3.11
  - numpy
  - conda-forge::threadpoolctl
  - pip:
    - six
"""
CONDA_SCRIPT = """
    import numpy, six, threadpoolctl
    print("numpy", numpy.__version__, "six", six.__version__)
"""


@pytest.mark.parametrize("where", ["local", "ssh", "docker"])
def test_a_conda_specification_runs_translated_on_every_target(where: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    target = _target(where, request)
    (tmp_path / "environment.yml").write_text(CONDA_YML)
    environment = Environment.from_conda_specification("conda-translated", tmp_path / "environment.yml")
    write_script(tmp_path / "src", CONDA_SCRIPT)
    run_id, lines = _completed(target, environment, tmp_path / "src", "conda-envs")
    assert lines[0].startswith("numpy ") and " six " in lines[0]
    tags = MlflowClient().get_run(run_id).data.tags
    assert "conda specification translated" in tags[Tags.ENVIRONMENT_DESCRIPTION]
    assert {"numpy", "six", "threadpoolctl"} <= set(_lock_pins(run_id, tmp_path / "lock"))


@pytest.mark.parametrize("where", ["local", "ssh", "docker"])
def test_auto_translates_a_specification_whose_channels_cannot_be_read_from_here(
        where: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """conda="auto" with py-rattler installed: conda-forge is unreachable from this machine, so the
    specification is translated to PyPI, and the run's details say why; "rattler" refuses instead."""
    target = _target(where, request)
    target.conda = "auto"
    environment = Environment("auto-conda")
    environment.python.conda_dependencies = CondaDependencies.create(python_version="3.11", conda_packages=["six"])
    prepared = target.prepare_environment(environment)
    assert "conda channels could not be read from here" in prepared.description, prepared.description
    assert prepared.lock is not None and "six==" in prepared.lock
    target.conda = "rattler"
    with pytest.raises(EnvironmentBuildError, match="reading the conda channels"):
        target.prepare_environment(environment)


def test_a_python_version_the_host_lacks_is_refused_naming_both(ssh_container: SSHHost, tmp_path: Path) -> None:
    target = _ssh_target(ssh_container, f"/tmp/tr-conda-{uuid.uuid4().hex[:8]}")
    environment = Environment("wants-3-13")
    environment.python.conda_dependencies = CondaDependencies.create(python_version="3.13", conda_packages=["numpy"])
    with pytest.raises(ConfigurationError) as caught:
        target.prepare_environment(environment)
    message = str(caught.value)
    assert "python=3.13" in message and "Python 3.11.2" in message and "extra 'python'" in message
    assert target.blob_bytes_sent == 0


def test_from_run_rebuilds_the_runs_lock_on_another_target(ssh_container: SSHHost, tmp_path: Path) -> None:
    environment = Environment("pinned-later")
    environment.add_pip_package("six")
    environment.add_pip_package("threadpoolctl")
    environment.environment_variables = {"TRAINING_FLAVOUR": "lock"}
    write_script(tmp_path / "src", "import six, threadpoolctl\nprint('ok')\n")
    run = Experiment("from-run").submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=environment))
    assert run.wait_for_completion()["status"] == "Completed"
    pins = _lock_pins(run.id, tmp_path / "lock")

    again = Environment.from_run(run.id)
    assert again.name == "pinned-later" and again.environment_variables == {"TRAINING_FLAVOUR": "lock"}
    assert sorted(again.python.pip_packages) == sorted(f"{name}=={version}" for name, version in pins.items())
    remote = _ssh_target(ssh_container, f"/tmp/tr-from-run-{uuid.uuid4().hex[:8]}").prepare_environment(again)
    assert remote.lock is not None
    remote_pins = {line.split("==")[0]: line.split("==")[1].split()[0] for line in remote.lock.splitlines()
                   if line and not line.startswith("#")}
    assert remote_pins == pins, "the same versions on the other target"


def test_from_run_of_a_run_without_a_managed_environment_says_so(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('ok')\n")
    run = Experiment("from-run-plain").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    assert run.wait_for_completion()["status"] == "Completed"
    with pytest.raises(ConfigurationError, match=r"no environment/lock\.txt"):
        Environment.from_run(run.id)


def test_a_hosts_environment_cache_is_bounded_and_logs_evictions(ssh_container: SSHHost, tmp_path: Path) -> None:
    root = f"/tmp/tr-evict-{uuid.uuid4().hex[:8]}"
    settings = SSHSettings(ssh_container.host, ssh_container.port, username=ssh_container.username,
                           key_file=str(ssh_container.key_path), host_key=ssh_container.host_public_key)
    target = SSHTarget(settings, work_root=root, cache_limits={"env_cache_max_count": 1})
    prepared = []
    for name in ("evictfirst", "evictsecond"):
        environment = Environment(name)
        environment.add_pip_package(str(make_wheel(tmp_path, name, "1.0", "VALUE = 1\n")))
        prepared.append(target.prepare_environment(environment))
    listing = subprocess.run(["docker", "exec", ssh_container.name, "sh", "-c",
                              f"ls {root}/envs; cat {root}/logs/evictions.log"], capture_output=True, text=True,
                             check=True).stdout
    assert prepared[1].fingerprint in listing
    assert f"evicted environment {prepared[0].fingerprint}" in listing and "more than 1 environments" in listing
    assert listing.split().count(prepared[0].fingerprint) == 1, "only the log names the first one now"


AZUREML_SCRIPT = """
    import mlflow, sklearn
    from azureml.core import Run
    from sklearn.linear_model import LogisticRegression
    run = Run.get_context()
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    run.log("accuracy", float(model.score([[0.0], [3.0]], [0, 1])))
    print("sklearn", sklearn.__version__, "mlflow", mlflow.__version__)
"""


@pytest.mark.parametrize("where", ["ssh", "docker"])
def test_an_azure_ml_curated_environment_runs_a_v1_script_unchanged(where: str, request: pytest.FixtureRequest,
                                                                   tmp_path: Path) -> None:
    target = _target(where, request)
    environment = Environment.get("AzureML-sklearn-1.0-ubuntu20.04-py38-cpu")
    write_script(tmp_path / "src", AZUREML_SCRIPT)
    run_id, lines = _completed(target, environment, tmp_path / "src", "curated")
    assert lines[0].startswith("sklearn 1.7.2 mlflow 3.5.0"), lines
    assert MlflowClient().get_metric_history(run_id, "accuracy")[0].value == 1.0
    assert _lock_pins(run_id, tmp_path / "lock")["scikit-learn"] == "1.7.2"
    assert not target.prepare_environment(environment).built, "prepared once per host"


TORCH_CPU_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
"""PyTorch's own CPU build, as its index serves it; this kind of machine keeps the file on disk."""
TORCH_SCRIPT = """
    import mlflow
    import torch
    from azureml.core import Run
    run = Run.get_context()
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    run.log("total", float(weights.sum()))
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "mlflow", mlflow.__version__)
"""


@pytest.fixture(scope="module")
def pytorch_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mirror of PyTorch's CPU index (what a firewalled site keeps), served from 127.0.0.1 with the
    real CPU wheel: the submitting side resolves and downloads from it; the targets never see it."""
    if not TORCH_CPU_WHEEL.is_file():
        skip_or_fail(f"needs PyTorch's CPU wheel at {TORCH_CPU_WHEEL}")
    root = tmp_path_factory.mktemp("pytorch-mirror")
    (root / "files").mkdir()
    (root / "files" / TORCH_CPU_WHEEL.name).symlink_to(TORCH_CPU_WHEEL)
    digest = hashlib.sha256()
    with TORCH_CPU_WHEEL.open("rb") as wheel:
        for chunk in iter(lambda: wheel.read(1 << 20), b""):
            digest.update(chunk)
    (root / "simple" / "torch").mkdir(parents=True)
    link = f"../../files/{TORCH_CPU_WHEEL.name.replace('+', '%2B')}#sha256={digest.hexdigest()}"
    (root / "simple" / "torch" / "index.html").write_text(
        f'<html><body><a href="{link}" data-requires-python="&gt;=3.10">{TORCH_CPU_WHEEL.name}</a></body></html>\n')
    with serve_folder(root) as url:
        yield f"{url}/simple"


@pytest.mark.parametrize("where", ["ssh", "docker"])
def test_the_curated_pytorch_cpu_environment_from_a_mirror_of_pytorchs_index(
        where: str, request: pytest.FixtureRequest, pytorch_mirror: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """``AzureML-pytorch-*-cpu`` on a host without an index: PyTorch's CPU build from the site's mirror
    of its index (named on the submitting side), the rest from PyPI, all installed offline there."""
    monkeypatch.setenv("TRAINING_RUNS_PYTORCH_INDEX_URL", pytorch_mirror)
    target = _target(where, request)
    environment = Environment.get("AzureML-pytorch-1.13-ubuntu20.04-py38-cpu")
    assert environment.version == "2" and environment.azureml_compat
    write_script(tmp_path / "src", TORCH_SCRIPT)
    run_id, lines = _completed(target, environment, tmp_path / "src", "curated-pytorch")
    assert lines[0] == "torch 2.13.0+cpu cuda False mlflow 3.5.0", lines
    assert MlflowClient().get_metric_history(run_id, "total")[0].value == 15.0
    pins = _lock_pins(run_id, tmp_path / "lock")
    assert pins["torch"] == "2.13.0+cpu" and {"sympy", "networkx", "filelock"} <= set(pins)
    assert not any(name.startswith("nvidia") for name in pins), "the CPU build needs no CUDA packages"
    assert not target.prepare_environment(environment).built, "prepared once per host"


def test_what_the_image_already_has_is_kept_not_replaced(docker_target: DockerTarget, request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    """As pip kept a satisfied requirement: an image's own build of a package (a CUDA torch, say) is
    used as it is; the lock resolves around its version and leaves it out."""
    client = docker_target.client
    before = {image.id for image in client.images.list(IMAGE_REPOSITORY)}
    request.addfinalizer(lambda: remove_new_images(client, before))
    builder_facts = docker_target.client.containers.run(
        docker_target.image, [docker_target.python, "-c", "import wheel; print(wheel.__version__)"], remove=True)
    image_wheel = builder_facts.decode().strip()
    environment = Environment("keeps-image-packages")
    environment.add_pip_package("wheel")  # the image has its own (Debian's)
    environment.add_pip_package("six")
    prepared = docker_target.prepare_environment(environment)
    assert prepared.lock is not None and "six==" in prepared.lock and "\nwheel==" not in prepared.lock
    write_script(tmp_path / "src", "import wheel, six\nprint(wheel.__version__, wheel.__file__)\n")
    lines: list[str] = []
    run = Experiment("image-kept").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=docker_target,
                                                          environment=environment))
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed", lines
    version, location = lines[0].split()
    assert version == image_wheel and "/opt/training-runs/env" not in location
