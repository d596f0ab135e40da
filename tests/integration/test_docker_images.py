"""Environments as images on a real dockerd: built once per fingerprint, from pip requirements
(local wheels travel in the build context) and/or a Dockerfile; failures before any container."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Environment, EnvironmentBuildError, Experiment, ScriptRunConfig
from airflow_provider.core.environments.docker_images import IMAGE_REPOSITORY
from airflow_provider.core.targets.docker import DEFAULT_IMAGE, LABEL_MANAGED, DockerTarget
from airflow_provider.core.tracking import Tags
from tests.helpers import make_wheel, remove_new_images, write_script

SCRIPT = """
    import sys, tinypkg
    from airflow_provider.core import Run
    run = Run.get_context()
    run.tag("value", tinypkg.VALUE)
    run.tag("python", sys.executable)
    print("value", tinypkg.VALUE)
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture
def target(docker_target: DockerTarget) -> Iterator[DockerTarget]:
    """The shared Docker target; environment images the test built are removed after it."""
    before = {image.id for image in docker_target.client.images.list(IMAGE_REPOSITORY)}
    yield docker_target
    remove_new_images(docker_target.client, before)


def _tags(run_id: str) -> dict[str, str]:
    return dict(MlflowClient().get_run(run_id).data.tags)


def _artifacts(run_id: str) -> set[str]:
    client = MlflowClient()
    return {info.path for info in client.list_artifacts(run_id, "system_logs")}


def _unique_wheel(folder: Path, version: str = "1.0") -> Path:
    """A wheel whose content no earlier test session built an image from."""
    folder.mkdir(parents=True, exist_ok=True)
    return make_wheel(folder, "tinypkg", version, f"VALUE = 'tinypkg {version} {uuid.uuid4().hex[:8]}'\n")


def test_pip_requirements_build_an_image_once_and_a_change_builds_another(target: DockerTarget,
                                                                          tmp_path: Path) -> None:
    write_script(tmp_path / "src", SCRIPT)
    wheel = _unique_wheel(tmp_path / "w1")
    environment = Environment("tiny")
    environment.add_pip_package(str(wheel))
    experiment = Experiment("docker-pip")
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target, environment=environment)

    first = experiment.submit(config)
    assert first.wait_for_completion()["status"] == "Completed"
    tags = _tags(first.id)
    assert tags["value"].startswith("tinypkg 1.0")
    assert tags["python"] == "/opt/training-runs/env/bin/python"
    assert "built now" in tags[Tags.ENVIRONMENT_DESCRIPTION]
    assert "system_logs/image_build.log" in _artifacts(first.id)
    build_log = first.download_file("system_logs/image_build.log", tmp_path / "build.log").read_text()
    assert "tinypkg" in build_log and "Successfully" in build_log

    second = experiment.submit(config)
    assert second.wait_for_completion()["status"] == "Completed"
    assert "cached" in _tags(second.id)[Tags.ENVIRONMENT_DESCRIPTION]
    assert "system_logs/image_build.log" not in _artifacts(second.id)
    assert _tags(second.id)[Tags.ENVIRONMENT_FINGERPRINT] == tags[Tags.ENVIRONMENT_FINGERPRINT]

    changed = Environment("tiny")
    changed.add_pip_package(str(_unique_wheel(tmp_path / "w2", "2.0")))
    third = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                              environment=changed))
    assert third.wait_for_completion()["status"] == "Completed"
    assert _tags(third.id)["value"].startswith("tinypkg 2.0")
    assert _tags(third.id)[Tags.ENVIRONMENT_FINGERPRINT] != tags[Tags.ENVIRONMENT_FINGERPRINT]
    assert "built now" in _tags(third.id)[Tags.ENVIRONMENT_DESCRIPTION]


def test_concurrent_runs_build_the_same_image_once(target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", SCRIPT)
    environment = Environment("shared")
    environment.add_pip_package(str(_unique_wheel(tmp_path)))
    experiment = Experiment("docker-shared")
    run_ids: list[str] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            run = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=DockerTarget(),
                                                    environment=environment))
            run.wait_for_completion()
            run_ids.append(run.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sum("system_logs/image_build.log" in _artifacts(run_id) for run_id in run_ids) == 1
    assert len({_tags(run_id)[Tags.ENVIRONMENT_FINGERPRINT] for run_id in run_ids}) == 1


def test_a_dockerfile_with_its_context_and_pip_packages_on_top(target: DockerTarget, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "data.txt").write_text(f"from the build context {uuid.uuid4().hex}")
    (context / "secret.key").write_text("never in the image")
    (context / ".dockerignore").write_text("*.key\n")
    environment = Environment("from-dockerfile")
    environment.docker.base_dockerfile = (
        f"FROM {DEFAULT_IMAGE}\nCOPY . /opt/context/\nENV FROM_DOCKERFILE=yes\n"
    )
    environment.docker.build_context = str(context)
    environment.add_pip_package(str(_unique_wheel(tmp_path)))
    write_script(tmp_path / "src", """
        import os, tinypkg
        from airflow_provider.core import Run
        run = Run.get_context()
        run.tag("data", open("/opt/context/data.txt").read())
        run.tag("key_in_image", str(os.path.exists("/opt/context/secret.key")))
        run.tag("env", os.environ.get("FROM_DOCKERFILE", ""))
        run.tag("value", tinypkg.VALUE)
    """)
    run = Experiment("docker-dockerfile").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                                 environment=environment))
    assert run.wait_for_completion()["status"] == "Completed"
    tags = _tags(run.id)
    assert tags["data"] == (context / "data.txt").read_text()
    assert tags["key_in_image"] == "False"
    assert tags["env"] == "yes"
    assert tags["value"].startswith("tinypkg 1.0")


def test_a_bad_dockerfile_fails_the_run_with_the_build_error_before_any_container(target: DockerTarget,
                                                                                  tmp_path: Path) -> None:
    environment = Environment("broken-dockerfile")
    environment.docker.base_dockerfile = f"FROM {DEFAULT_IMAGE}\nRUN echo 'about to fail {uuid.uuid4()}' && exit 7\n"
    write_script(tmp_path / "src", "print('never runs')\n")
    experiment = Experiment("docker-bad-dockerfile")
    with pytest.raises(EnvironmentBuildError) as caught:
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                          environment=environment))
    assert "environment.docker.base_dockerfile" in str(caught.value)
    assert "about to fail" in caught.value.log_tail
    assert "returned a non-zero code: 7" in str(caught.value)
    (run,) = MlflowClient().search_runs([experiment.id])
    assert run.info.status == "FAILED" and run.data.tags[Tags.STATE] == "Failed"
    assert "system_logs/image_build.log" in _artifacts(run.info.run_id)
    assert not target.client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"})


def test_a_requirement_that_cannot_resolve_fails_before_any_build(target: DockerTarget, tmp_path: Path) -> None:
    missing = f"no-such-package-{uuid.uuid4().hex[:8]}"
    environment = Environment("broken-pip")
    environment.add_pip_package(missing)
    write_script(tmp_path / "src", "print('never runs')\n")
    images_before = {image.id for image in target.client.images.list()}
    with pytest.raises(ConfigurationError) as caught:
        Experiment("docker-bad-pip").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                            environment=environment))
    assert caught.value.field == "environment.python.pip_packages"
    assert missing in str(caught.value) and "Python 3.11" in str(caught.value)
    assert {image.id for image in target.client.images.list()} <= images_before, "nothing was built"


def test_an_install_failure_names_the_requirements_with_the_log(target: DockerTarget, tmp_path: Path) -> None:
    environment = Environment("failing-install")  # resolves (its metadata is fine), cannot be installed
    environment.add_pip_package(str(make_wheel(tmp_path, f"badcli{uuid.uuid4().hex[:6]}", "1.0", "V = 1\n",
                                               "[console_scripts]\nbad-cli = :::\n")))
    write_script(tmp_path / "src", "print('never runs')\n")
    with pytest.raises(EnvironmentBuildError) as caught:
        Experiment("docker-bad-install").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                                 environment=environment))
    assert "environment.python.pip_packages" in str(caught.value)
    assert "bad-cli" in caught.value.log_tail or "console" in caught.value.log_tail.lower()


def test_a_missing_base_image_that_cannot_be_pulled_names_the_image(target: DockerTarget, tmp_path: Path) -> None:
    environment = Environment("unpullable")
    environment.docker.base_image = "127.0.0.1:9/nowhere/python:3.11"  # a registry port nobody listens on
    environment.python.user_managed_dependencies = True
    write_script(tmp_path / "src", "print('never runs')\n")
    with pytest.raises(ConfigurationError) as caught:
        Experiment("docker-unpullable").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                               environment=environment))
    message = str(caught.value)
    assert caught.value.field == "environment.docker.base_image"
    assert "'127.0.0.1:9/nowhere/python:3.11' is not on the Docker daemon" in message
    assert "no registry is reachable" in message


def test_a_user_managed_environment_uses_the_base_image_as_it_is(target: DockerTarget, tmp_path: Path) -> None:
    environment = Environment("as-is")
    environment.docker.base_image = DEFAULT_IMAGE
    environment.python.user_managed_dependencies = True
    environment.python.interpreter_path = "/usr/bin/python3"
    write_script(tmp_path / "src", """
        import sys
        from airflow_provider.core import Run
        Run.get_context().tag("python", sys.executable)
    """)
    images_before = {image.id for image in target.client.images.list()}
    run = Experiment("docker-as-is").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                            environment=environment))
    assert run.wait_for_completion()["status"] == "Completed"
    assert _tags(run.id)["python"] == "/usr/bin/python3"
    assert {image.id for image in target.client.images.list()} == images_before
