"""Data bound to runs on real servers and targets: inputs from local folders, an HTTP server, the SSH
hosts over SFTP and a real MLflow server (runs:/, models:/); outputs copied to their URI on success
and on failure; lineage in MLflow; a second run sends only the changed bytes to a remote host."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import (
    ConfigurationError,
    Experiment,
    Input,
    MpiConfiguration,
    Output,
    RunFailedError,
    ScriptRunConfig,
)
from airflow_provider.core.data.outputs import MARKER
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from tests.helpers import serve_folder, write_script
from tests.ssh_hosts import SSHHost

READER = """
    import hashlib, json, os, sys
    from airflow_provider.core import Run
    run = Run.get_context()
    source, out = sys.argv[1], sys.argv[2]
    found = {}
    if os.path.isfile(source):
        found[os.path.basename(source)] = hashlib.sha256(open(source, "rb").read()).hexdigest()
    else:
        for folder, _, names in os.walk(source):
            for name in names:
                path = os.path.join(folder, name)
                found[os.path.relpath(path, source)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert run.input_datasets["train"] == source, (run.input_datasets, source)
    assert run.output_datasets["model"] == out, (run.output_datasets, out)
    with open(os.path.join(out, "seen.json"), "w") as handle:
        json.dump(found, handle)
    run.log("files", len(found))
    if os.environ.get("FAIL_AFTER_WRITING"):
        sys.exit(3)
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _data(folder: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def _sha(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()


def _config(source: Path, train: Input, out_uri: str, **kwargs: Any) -> ScriptRunConfig:
    write_script(source, READER)
    return ScriptRunConfig(source_directory=source, script="train.py",
                           arguments=["${{inputs.train}}", "${{outputs.model}}"],
                           inputs={"train": train}, outputs={"model": Output(out_uri)}, **kwargs)


def _seen(out_root: Path, run_id: str) -> dict[str, str]:
    return dict(json.loads((out_root / run_id / "seen.json").read_text()))


def test_local_folder_in_output_out_lineage_recorded(tmp_path: Path) -> None:
    """A local folder arrives whole, the output lands at its URI with a marker, and MLflow records the
    input's source, digest, size and file count, and the output's URI and digest."""
    files = {"a.csv": b"1,2\n", "sub/b.csv": b"3,4\n" * 100}
    data = _data(tmp_path / "data", files)
    out = tmp_path / "models"
    run = Experiment("data").submit(_config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/"))
    run.wait_for_completion()
    assert _seen(out, run.id) == {name: _sha(content) for name, content in files.items()}
    marker = json.loads((out / run.id / MARKER).read_text())
    assert marker["run_id"] == run.id and [f[0] for f in marker["files"]] == ["seen.json"]
    recorded = MlflowClient().get_run(run.id)
    (dataset_input,) = recorded.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "train" and json.loads(dataset.source) == {"uri": str(data)}
    assert json.loads(dataset.profile) == {"mode": "download", "num_files": 2, "total_bytes": 404}
    assert len(dataset.digest) == 32
    assert recorded.data.tags["training.data.output.model.uri"] == f"{out}/{run.id}/"
    assert recorded.data.tags["training.data.output.model.digest"] == marker["digest"]
    manifest = json.loads(Path(MlflowClient().download_artifacts(run.id, "data/outputs/model.json",
                                                                 str(tmp_path / "dl"))).read_text())
    assert manifest["digest"] == marker["digest"]


def test_output_copied_when_the_run_fails_and_digest_changes_with_content(tmp_path: Path) -> None:
    """A failing run's output is copied all the same; a changed input changes the recorded digest."""
    data = _data(tmp_path / "data", {"x.txt": b"first"})
    out = tmp_path / "models"
    config = _config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/",
                     environment_variables={"FAIL_AFTER_WRITING": "1"})
    run = Experiment("data").submit(config)
    with pytest.raises(RunFailedError):
        run.wait_for_completion()
    assert _seen(out, run.id) == {"x.txt": _sha(b"first")}
    (data / "x.txt").write_bytes(b"second")
    second = Experiment("data").submit(config)
    with pytest.raises(RunFailedError):
        second.wait_for_completion()
    digests = [MlflowClient().get_run(r.id).inputs.dataset_inputs[0].dataset.digest for r in (run, second)]
    assert digests[0] != digests[1]
    assert _seen(out, second.id) == {"x.txt": _sha(b"second")}


def test_an_output_holding_another_runs_data_is_refused_before_the_job(tmp_path: Path) -> None:
    """A fixed output URI already written by another run is refused (naming the output and the fix)
    before the job starts; overwrite=True replaces it."""
    data = _data(tmp_path / "data", {"x.txt": b"x"})
    out = tmp_path / "fixed"
    experiment = Experiment("data")
    first = experiment.submit(_config(tmp_path / "src", Input(str(data)), str(out)))
    first.wait_for_completion()
    with pytest.raises(ConfigurationError, match=r"outputs\['model'\].*already holds data written by run"):
        experiment.submit(_config(tmp_path / "src", Input(str(data)), str(out)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "someone.txt").write_text("not a run")
    with pytest.raises(ConfigurationError, match="something other than a training run"):
        experiment.submit(_config(tmp_path / "src", Input(str(data)), str(tmp_path / "other")))
    config = _config(tmp_path / "src", Input(str(data)), str(out))
    config.outputs = {"model": Output(str(out), overwrite=True)}
    third = experiment.submit(config)
    third.wait_for_completion()
    assert json.loads((out / MARKER).read_text())["run_id"] == third.id


def test_http_folder_and_file_inputs_and_unchanged_files_not_read_again(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A folder served over HTTP (listed through its index page) and a single file arrive; a second
    run reads from the server only the file that changed (Last-Modified / size)."""
    served = _data(tmp_path / "www" / "set", {"a.txt": b"alpha", "b.txt": b"beta"})
    out = tmp_path / "models"
    with serve_folder(tmp_path / "www") as url:
        run = Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/set/"), f"{out}/{{run_id}}/"))
        run.wait_for_completion()
        assert _seen(out, run.id) == {"a.txt": _sha(b"alpha"), "b.txt": _sha(b"beta")}
        single = Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/set/a.txt"), f"{out}/{{run_id}}/"))
        single.wait_for_completion()
        assert _seen(out, single.id) == {"a.txt": _sha(b"alpha")}
        os.utime(served / "b.txt", (1_700_000_000, 1_700_000_000))
        (served / "b.txt").write_bytes(b"beta, changed")
        caplog.clear()
        with caplog.at_level("INFO", logger="airflow_provider.core.data.inputs"):
            again = Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/set/"), f"{out}/{{run_id}}/"))
        again.wait_for_completion()
        assert "2 files, 13 bytes read" in caplog.text, caplog.text
        assert _seen(out, again.id)["b.txt"] == _sha(b"beta, changed")
    with pytest.raises(ConfigurationError, match=r"inputs\['train'\].*does not exist"), \
            serve_folder(tmp_path / "www") as url:
        Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/missing.txt"), f"{out}/{{run_id}}/"))


def _sftp_options(host: SSHHost) -> dict[str, Any]:
    return {"username": host.username, "key_file": str(host.key_path), "host_key": host.host_public_key}


def test_sftp_input_and_output_on_an_ssh_host(ssh_container: SSHHost, tmp_path: Path) -> None:
    """Data on the SSH host is read over SFTP with its pinned host key, and the output is written back
    there; an unknown host key is refused before any compute is used."""
    import paramiko

    folder = f"/tmp/data-{uuid.uuid4().hex[:8]}"
    key = paramiko.Ed25519Key.from_private_key_file(str(ssh_container.key_path))
    client = paramiko.SSHClient()
    client.get_host_keys().add(ssh_container.host, ssh_container.host_public_key.split()[0],
                               paramiko.PKey.from_type_string(ssh_container.host_public_key.split()[0],
                                                              __import__("base64").b64decode(
                                                                  ssh_container.host_public_key.split()[1])))
    client.connect(ssh_container.host, ssh_container.port, username=ssh_container.username, pkey=key)
    try:
        sftp = client.open_sftp()
        sftp.mkdir(folder)
        with sftp.open(f"{folder}/rows.csv", "wb") as handle:
            handle.write(b"remote rows")
        options = _sftp_options(ssh_container)
        base = f"sftp://{ssh_container.host}:{ssh_container.port}"
        config = _config(tmp_path / "src", Input(f"{base}{folder}/", storage_options=options), "/unused")
        config.outputs = {"model": Output(f"{base}{folder}/out/{{run_id}}/", storage_options=options)}
        run = Experiment("data").submit(config)
        run.wait_for_completion()
        with sftp.open(f"{folder}/out/{run.id}/seen.json") as handle:
            assert json.loads(handle.read()) == {"rows.csv": _sha(b"remote rows")}
        unpinned = {k: v for k, v in options.items() if k != "host_key"} | {"known_hosts": str(tmp_path / "none")}
        (tmp_path / "none").write_text("")
        with pytest.raises(ConfigurationError, match=r"host key of .* is unknown"):
            Experiment("data").submit(_config(tmp_path / "src", Input(f"{base}{folder}/", storage_options=unpinned),
                                              str(tmp_path / "o" / "{run_id}")))
    finally:
        client.exec_command(f"rm -rf {folder}")[1].channel.recv_exit_status()
        client.close()


def test_runs_and_models_inputs_from_a_real_mlflow_server(mlflow_server: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A DAG chains runs: runs:/<id>/<path> and models:/<name>@<alias> of an earlier run are inputs, read
    from the tracking server (models:/ resolved to its version's artifacts, recorded in the lineage)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"producer-{uuid.uuid4().hex[:8]}")
    producer = client.create_run(experiment_id)
    prepared = _data(tmp_path / "prepared", {"train.csv": b"a,b\n1,2\n", "meta/info.txt": b"v1"})
    client.log_artifacts(producer.info.run_id, str(prepared), "prepared")
    client.set_terminated(producer.info.run_id)
    name = f"clf-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{producer.info.run_id}/prepared", producer.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    out = tmp_path / "models"
    run = Experiment("consumer", tracking_uri=mlflow_server).submit(
        _config(tmp_path / "src", Input(f"runs:/{producer.info.run_id}/prepared"), f"{out}/{{run_id}}/"))
    run.wait_for_completion()
    expected = {"train.csv": _sha(b"a,b\n1,2\n"), "meta/info.txt": _sha(b"v1")}
    assert _seen(out, run.id) == expected
    by_model = Experiment("consumer", tracking_uri=mlflow_server).submit(
        _config(tmp_path / "src", Input(f"models:/{name}@champion"), f"{out}/{{run_id}}/"))
    by_model.wait_for_completion()
    assert _seen(out, by_model.id) == expected
    (recorded,) = client.get_run(by_model.id).inputs.dataset_inputs
    tags = {tag.key: tag.value for tag in recorded.tags}
    assert tags["source"] == f"models:/{name}@champion"
    resolved = tags["resolved_source"]
    assert producer.info.run_id in resolved and resolved.endswith("prepared"), resolved
    with pytest.raises(ConfigurationError, match="cannot be read from MLflow"):
        Experiment("consumer", tracking_uri=mlflow_server).submit(
            _config(tmp_path / "src", Input(f"models:/{name}@nope"), f"{out}/{{run_id}}/")).wait_for_completion()


def _ssh_target(host: SSHHost, root: str) -> SSHTarget:
    settings = SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                           host_key=host.host_public_key)
    return SSHTarget(settings, work_root=root)


def test_ssh_target_second_run_sends_only_the_changed_bytes(ssh_container: SSHHost, tmp_path: Path) -> None:
    """On an SSH host the input arrives; a second run with one of 20 files changed sends only that
    file's bytes (the host keeps the blobs), and outputs come back to this machine's URI."""
    files = {f"part-{i:02d}.bin": os.urandom(64 * 1024) for i in range(20)}
    data = _data(tmp_path / "data", files)
    out = tmp_path / "models"
    target = _ssh_target(ssh_container, f"/tmp/tr-data-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/", compute_target=target)
    first = Experiment("data").submit(config)
    first.wait_for_completion()
    sent_first = target.blob_bytes_sent
    assert sent_first >= 20 * 64 * 1024
    (data / "part-07.bin").write_bytes(os.urandom(64 * 1024))
    second = Experiment("data").submit(config)
    second.wait_for_completion()
    sent_second = target.blob_bytes_sent - sent_first
    assert 64 * 1024 <= sent_second < 2 * 64 * 1024, sent_second
    assert _seen(out, second.id)["part-07.bin"] == _sha((data / "part-07.bin").read_bytes())
    with pytest.raises(ConfigurationError, match=r"inputs\['train'\].mode.*cannot mount"):
        Experiment("data").submit(_config(tmp_path / "src", Input(str(data), mode="mount"), f"{out}/{{run_id}}/",
                                          compute_target=target))


def test_docker_target_download_and_read_only_mount(docker_target: Any, tmp_path: Path) -> None:
    """In a container the downloaded input arrives, and a mount input is the host folder bound
    read-only (the script cannot write into it)."""
    data = _data(tmp_path / "data", {"d.txt": b"docker data"})
    out = tmp_path / "models"
    run = Experiment("data").submit(_config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/",
                                            compute_target=docker_target))
    run.wait_for_completion()
    assert _seen(out, run.id) == {"d.txt": _sha(b"docker data")}
    write_script(tmp_path / "mount_src", """
        import os, sys
        path = sys.argv[1]
        assert path == "/mnt/inputs/train", path
        print("READ", open(os.path.join(path, "d.txt")).read())
        try:
            open(os.path.join(path, "new.txt"), "w")
        except OSError as exc:
            print("READ-ONLY", exc.errno)
    """)
    mounted = Experiment("data").submit(ScriptRunConfig(
        tmp_path / "mount_src", "train.py", arguments=["${{inputs.train}}"], compute_target=docker_target,
        inputs={"train": Input(str(data), mode="mount")}))
    mounted.wait_for_completion()
    log = mounted.get_details()
    text = json.dumps(log)
    assert "READ docker data" in text or "READ docker data" in _driver_log(mounted.id, tmp_path)
    assert "READ-ONLY 30" in _driver_log(mounted.id, tmp_path)
    assert not (data / "new.txt").exists()


def _driver_log(run_id: str, tmp_path: Path) -> str:
    folder = tmp_path / f"log-{run_id}"
    path = MlflowClient().download_artifacts(run_id, "system_logs/driver.log", str(folder))
    return Path(path).read_text()


def test_mpi_ranks_on_every_host_read_the_input(mpi_hosts: list[SSHHost], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Across MPI hosts every rank finds the downloaded input at the same path."""
    from airflow_provider.hooks.compute import compute_hook_for

    first = mpi_hosts[0]
    connection = {"conn_type": "training_mpi", "login": first.username, "port": first.port,
                  "extra": {"hosts": ",".join(f"{h.host}:2" for h in mpi_hosts[:2]), "key_file": str(first.key_path),
                            "host_key": first.host_public_key, "work_root": "/root/mpi-data-runs",
                            "mpirun_options": "--mca btl_tcp_if_include 172.28.0.0/24 "
                                              "--mca oob_tcp_if_include 172.28.0.0/24"}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_MPI_DATA", json.dumps(connection))
    target = compute_hook_for("test_mpi_data").get_target()
    data = _data(tmp_path / "data", {"shard.txt": b"every rank reads this"})
    write_script(tmp_path / "src", """
        import os, socket, sys
        from airflow_provider.core import Run
        rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
        text = open(os.path.join(sys.argv[1], "shard.txt")).read()
        assert text == "every rank reads this", text
        Run.get_context().log("read_ok", 1)
        print("rank", rank, "on", socket.gethostname(), "read", len(text))
    """)
    run = Experiment("data").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", arguments=["${{inputs.train}}"], compute_target=target,
        distributed_job_config=MpiConfiguration(process_count_per_node=1, node_count=2),
        inputs={"train": Input(str(data))}))
    run.wait_for_completion()
    metrics = MlflowClient().get_run(run.id).data.metrics
    assert metrics.get("read_ok") == 1 and metrics.get("rank_1/read_ok") == 1, metrics
