"""Job files (Azure ML v2 command and sweep YAML, MLflow MLproject) into ScriptRunConfig / HyperDriveConfig.

Every test builds the core objects and asserts their real values; the error tests assert each
problem's line and field in the one message.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from airflow_provider.core import (
    ConfigurationError,
    Environment,
    MpiConfiguration,
    PyTorchConfiguration,
    Resources,
    TensorflowConfiguration,
)
from airflow_provider.core.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    MedianStoppingPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    loguniform,
    normal,
    qlognormal,
    quniform,
    randint,
    trial_arguments,
    uniform,
)
from airflow_provider.core.job_spec import JobFileError, JobSpec, load_job

REPO = Path(__file__).resolve().parents[2]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    write(folder, "src/train.py", "print('train')\n")
    write(folder, "data/train.csv", "x,y\n1,2\n")
    return folder


def problems_of(path: Path, **kwargs: object) -> JobFileError:
    with pytest.raises(JobFileError) as caught:
        load_job(path, **kwargs)  # type: ignore[arg-type]
    return caught.value


def command_job(folder: Path, body: str, command: str = "python train.py") -> JobSpec:
    text = f"code: src\ncommand: {command}\n" + textwrap.dedent(body)
    return load_job(write(folder, "job.yml", text))


# --------------------------------------------------------------------------------------------- command jobs
def test_a_full_command_job_builds_the_script_run_config(job_dir: Path, tmp_path: Path) -> None:
    path = write(job_dir, "train.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        type: command
        name: train-1234
        display_name: nightly training
        experiment_name: churn
        description: Trains the churn model.
        tags: {team: search, attempt: 3, final: true}
        code: src
        command: >-
          python train.py --data ${{inputs.train}} --epochs ${{inputs.epochs}}
          --lr ${{inputs.lr}} --name "${{inputs.label}}" --out ${{outputs.model}}
        environment: training-minimal
        environment_variables: {OMP_NUM_THREADS: 2, MODE: fast}
        compute: azureml:cpu-cluster
        inputs:
          train: {type: uri_folder, path: ./data, mode: download}
          epochs: 10
          lr: 0.01
          label: two words
        outputs:
          model: {type: uri_folder, path: "../models/${{name}}/{output_name}", mode: rw_mount}
        resources: {gpus: 1, cpus: 2, memory_gb: 4.5, shm_size: 2g}
        limits: {timeout: 3600}
    """)
    job = load_job(path)
    assert (job.kind, job.experiment_name, job.run_name, job.compute) == ("command", "churn", "nightly training",
                                                                          "cpu-cluster")
    assert job.description == "Trains the churn model."
    assert job.tags == {"team": "search", "attempt": "3", "final": "true"}
    assert job.source_path == path.resolve()
    assert job.run_tags({"extra": "1"}) == {"team": "search", "attempt": "3", "final": "true",
                                            "mlflow.note.content": "Trains the churn model.", "extra": "1"}
    config = job.script_run_config()
    assert config.compute_target == "cpu-cluster"
    assert Path(config.source_directory) == (job_dir / "src").resolve()
    assert config.script == "train.py"
    assert config.command is None
    assert config.arguments == ["--data", "${{inputs.train}}", "--epochs", "10", "--lr", "0.01", "--name",
                                "two words", "--out", "${{outputs.model}}"]
    assert config.environment == "training-minimal"
    assert config.environment_variables == {"OMP_NUM_THREADS": "2", "MODE": "fast"}
    assert config.max_run_duration_seconds == 3600
    assert config.resources == Resources(gpus=1, cpus=2, memory_gb=4.5, shm_size_gb=2.0)
    assert config.distributed_job_config is None
    assert config.inputs is not None and config.outputs is not None
    assert set(config.inputs) == {"train"}
    train = config.inputs["train"]
    assert not isinstance(train, str)
    assert (train.uri, train.mode) == (str((job_dir / "data").resolve()), "download")
    model = config.outputs["model"]
    assert not isinstance(model, str)
    assert (model.uri, model.mode) == (str(tmp_path / "models" / "{run_id}" / "{name}"), "upload")
    resolved = config.validate()
    assert resolved.argv("python")[:3] == ["python", "train.py", "--data"]
    assert job.script_run_config("local").compute_target == "local"
    assert job.script_run_config() is not config  # a fresh object each time


def test_the_defaults_of_a_minimal_job(job_dir: Path) -> None:
    job = load_job(write(job_dir, "src/minimal.yml", "command: python train.py\n"))
    config = job.script_run_config()
    assert (job.experiment_name, job.run_name, job.compute, job.tags) == ("src", None, None, {})
    assert Path(config.source_directory) == (job_dir / "src").resolve()  # code: the job file's folder
    assert (config.compute_target, config.script, config.arguments, config.environment) == ("local", "train.py",
                                                                                            [], None)
    assert config.inputs is None and config.outputs is None and config.resources is None


@pytest.mark.parametrize(("command", "expected"), [
    ("python train.py && echo done", "python train.py && echo done"),
    ("python -u train.py --epochs ${{inputs.epochs}}", "python -u train.py --epochs 3"),
    ("bash run.sh ${{inputs.epochs}} > log.txt", "bash run.sh 3 > log.txt"),
    ("OMP_NUM_THREADS=1 python train.py", "OMP_NUM_THREADS=1 python train.py"),
])
def test_other_commands_run_through_the_shell_as_written(job_dir: Path, command: str, expected: str) -> None:
    config = command_job(job_dir, "inputs: {epochs: 3}\n", command=repr(command)).script_run_config()
    assert (config.script, config.command, config.arguments) == (None, expected, [])
    assert config.validate().command == ["/bin/sh", "-c", expected]


def test_an_optional_input_without_a_path_drops_its_bracketed_part(job_dir: Path) -> None:
    job = command_job(job_dir, """
        inputs:
          data: {type: uri_folder, path: data}
          extra: {type: uri_folder, optional: true}
    """, command="python train.py --data ${{inputs.data}} $[[--extra ${{inputs.extra}}]] $[[--also ${{inputs.data}}]]")
    config = job.script_run_config()
    assert config.arguments == ["--data", "${{inputs.data}}", "--also", "${{inputs.data}}"]
    assert config.inputs is not None and set(config.inputs) == {"data"}


def test_brackets_that_are_not_an_optional_part_are_kept(job_dir: Path) -> None:
    job = command_job(job_dir, """
        inputs:
          width: 64
    """, command="python train.py --layers [${{inputs.width}},${{inputs.width}}]")
    assert job.script_run_config().arguments == ["--layers", "[64,64]"]


@pytest.mark.parametrize(("distribution", "instances", "expected"), [
    ("{type: mpi, process_count_per_instance: 2}", 2, MpiConfiguration(process_count_per_node=2, node_count=2)),
    ("{type: mpi}", 1, MpiConfiguration(process_count_per_node=1, node_count=1)),
    ("{type: pytorch, process_count_per_instance: 2}", 2,
     PyTorchConfiguration(communication_backend="gloo", process_count=4, node_count=2)),
    ("{type: PyTorch, process_count_per_instance: 4, communication_backend: nccl}", 1,
     PyTorchConfiguration(communication_backend="nccl", process_count=4, node_count=1)),
    ("{type: tensorflow, worker_count: 3, parameter_server_count: 1}", 1,
     TensorflowConfiguration(worker_count=3, parameter_server_count=1)),
])
def test_every_distribution_type(job_dir: Path, distribution: str, instances: int, expected: object) -> None:
    job = command_job(job_dir, f"distribution: {distribution}\nresources: {{instance_count: {instances}}}\n")
    config = job.script_run_config()
    assert config.distributed_job_config == expected
    assert config.resources is None  # the nodes are the distribution's node_count
    config.validate()


def test_instance_count_without_a_distribution_asks_for_nodes(job_dir: Path) -> None:
    assert command_job(job_dir, "resources: {instance_count: 3, partition: gpu}\n").script_run_config().resources \
        == Resources(nodes=3, partition="gpu")
    assert command_job(job_dir, "resources: {instance_count: 1}\n").script_run_config().resources is None


def test_distribution_and_resource_problems_name_their_lines(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "job.yml", """
        command: python src/train.py
        distribution:
          type: tensorflow
          worker_count: 0
        resources:
          instance_count: 2
          instance_type: Standard_NC6
          gpu_type: a100
    """))
    text = str(error)
    assert "job.yml:4:17: distribution.worker_count: must be at least 1, got 0" in text
    assert "job.yml:7:3: resources.instance_type: has no equivalent here" in text
    assert "job.yml:3:3: distribution: TensorFlow runs on one node here" in text
    assert re.search(r"job.yml:8:\d+: resources.gpu_type: is 'a100' but no GPUs are asked for", text)
    ray = problems_of(write(job_dir, "ray.yml", "command: python src/train.py\ndistribution: {type: ray}\n"))
    assert "ray.yml:2:22: distribution.type: 'ray' has no equivalent here" in str(ray)


# --------------------------------------------------------------------------------------------- data
@pytest.mark.parametrize(("mode", "expected"), [
    (None, "download"), ("download", "download"), ("direct", "direct"), ("ro_mount", "mount"), ("mount", "mount"),
])
def test_input_modes(job_dir: Path, mode: str | None, expected: str) -> None:
    line = "" if mode is None else f", mode: {mode}"
    job = command_job(job_dir, f"inputs:\n  data: {{type: uri_folder, path: data{line}}}\n",
                      command="python train.py ${{inputs.data}}")
    config = job.script_run_config()
    assert config.inputs is not None
    data = config.inputs["data"]
    assert not isinstance(data, str) and data.mode == expected


@pytest.mark.parametrize(("mode", "expected"), [(None, "upload"), ("upload", "upload"), ("rw_mount", "upload"),
                                                ("direct", "direct")])
def test_output_modes(job_dir: Path, mode: str | None, expected: str) -> None:
    line = "" if mode is None else f", mode: {mode}"
    job = command_job(job_dir, f"outputs:\n  model: {{type: uri_folder, path: 's3://bucket/{{run_id}}/m'{line}}}\n")
    config = job.script_run_config()
    assert config.outputs is not None
    model = config.outputs["model"]
    assert not isinstance(model, str) and (model.uri, model.mode) == ("s3://bucket/{run_id}/m", expected)


def test_remote_inputs_and_the_default_output_folder(job_dir: Path, isolated_state: Path) -> None:
    job = command_job(job_dir, """
        inputs:
          remote: {type: uri_file, path: "s3://bucket/data.csv", mode: direct, connection: my_s3}
          model: {type: mlflow_model, path: "models:/churn@champion", max_size_mb: 100}
        outputs:
          trained: {type: mlflow_model}
    """)
    config = job.script_run_config()
    assert config.inputs is not None and config.outputs is not None
    remote, model = config.inputs["remote"], config.inputs["model"]
    assert not isinstance(remote, str) and not isinstance(model, str)
    assert (remote.uri, remote.mode, remote.connection) == ("s3://bucket/data.csv", "direct", "my_s3")
    assert (model.uri, model.mode, model.max_size_mb) == ("models:/churn@champion", "download", 100.0)
    output = config.outputs["trained"]
    assert not isinstance(output, str)
    assert output.uri == str(isolated_state / "outputs" / "{run_id}" / "trained")


def test_modes_without_an_equivalent_are_refused_with_the_fix(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "job.yml", """
        command: python src/train.py
        inputs:
          a: {path: "s3://bucket/a", mode: ro_mount}
          b: {path: data, mode: eval_mount}
          c: {path: data, mode: rw_mount}
          d: {path: azureml:my-data:1}
        outputs:
          e: {mode: download}
    """))
    text = str(error)
    assert "job.yml:3:36: inputs.a.mode: 'ro_mount' of a remote URI has no equivalent here" in text
    assert "use mode: download (copied to the target) or mode: direct" in text
    assert "job.yml:4:25: inputs.b.mode: 'eval_mount' has no equivalent here" in text
    assert "job.yml:5:25: inputs.c.mode: 'rw_mount' is an output mode" in text
    assert "job.yml:6:13: inputs.d.path: 'azureml:my-data:1' is an Azure ML data asset" in text
    assert "job.yml:8:13: outputs.e.mode: 'download' is an input mode; use one of upload, rw_mount, direct" in text
    assert len(error.problems) == 5


# --------------------------------------------------------------------------------------------- environments
def test_environment_names(job_dir: Path) -> None:
    def environment(value: str) -> object:
        return command_job(job_dir, f"environment: {value}\n").script_run_config().environment

    assert environment("training-sklearn") == "training-sklearn"
    assert environment("training-sklearn:1") == "training-sklearn:1"
    assert environment("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest") \
        == "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu"
    assert environment("azureml:AzureML-Minimal:33") == "AzureML-Minimal"  # Azure ML's version numbers are dropped
    registered = Environment("team-env")
    registered.add_pip_package("numpy")
    assert registered.register().version == "1"
    assert environment("azureml:team-env:1") == "team-env:1"
    config = command_job(job_dir, "environment: AzureML-sklearn-1.0-ubuntu20.04-py38-cpu\n").script_run_config()
    resolved = config.validate()
    assert resolved.azureml_compat and resolved.environment is not None
    assert any(line.startswith("scikit-learn==") for line in resolved.environment.python.pip_packages)


def test_unknown_environments_are_refused_at_their_line(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "job.yml", "command: python src/train.py\nenvironment: azureml:nope:2\n"))
    assert "job.yml:2:14: environment: no environment named 'nope' is registered or curated" in str(error)
    error = problems_of(write(job_dir, "gpu.yml", "command: python src/train.py\nenvironment: AzureML-pytorch-gpu\n"))
    assert "gpu.yml:2:14: environment: 'AzureML-pytorch-gpu' is an Azure ML GPU environment" in str(error)


def test_inline_environments(job_dir: Path) -> None:
    write(job_dir, "env/conda.yml", """
        name: train
        channels: [conda-forge]
        dependencies:
          - python=3.11
          - numpy=2.2
          - pip:
            - mlflow-skinny==3.5.0
    """)
    write(job_dir, "env/requirements.txt", "pandas==2.3.3\n# a comment\nscipy==1.15.3\n")
    write(job_dir, "docker/context/gpu.Dockerfile", "FROM python:3.11-slim\nCOPY . /opt\n")

    def environment(body: str) -> Environment:
        built = command_job(job_dir, body).script_run_config().environment
        assert isinstance(built, Environment)
        return built

    image = environment("environment: {image: 'python:3.11-slim'}\n")
    assert (image.name, image.docker.base_image, image.python.user_managed_dependencies) == (
        "job-environment", "python:3.11-slim", True)
    conda = environment("environment: {name: trainer, version: 3, image: 'python:3.11', conda_file: env/conda.yml}\n")
    assert (conda.name, conda.version, conda.docker.base_image, conda.kind) == ("trainer", "3", "python:3.11", "conda")
    assert conda.python.conda_dependencies is not None
    assert conda.python.conda_dependencies.conda_packages == ["numpy=2.2"]
    assert conda.python.conda_dependencies.pip_packages == ["mlflow-skinny==3.5.0"]
    assert conda.python.user_managed_dependencies is False
    assert environment("environment: {conda_file: env/conda.yml}\n").kind == "conda"
    pip = environment("environment: {pip_requirements: env/requirements.txt}\n")
    assert (pip.kind, pip.python.pip_packages) == ("pip", ["pandas==2.3.3", "scipy==1.15.3"])
    built = environment("environment:\n  build: {path: docker/context, dockerfile_path: gpu.Dockerfile}\n")
    assert built.docker.base_dockerfile == "FROM python:3.11-slim\nCOPY . /opt\n"
    assert built.docker.build_context == str((job_dir / "docker/context").resolve())
    assert built.docker.base_image is None and built.python.user_managed_dependencies is True
    inline_conda = environment("environment:\n  conda_file: {dependencies: [python=3.12, {pip: [rich]}]}\n")
    assert inline_conda.python.conda_dependencies is not None
    assert inline_conda.python.conda_dependencies.get_python_version() == "3.12"
    assert command_job(job_dir, "environment: {image: 'x:1'}\n").script_run_config().environment \
        is not command_job(job_dir, "environment: {image: 'x:1'}\n").script_run_config().environment


def test_inline_environment_problems(job_dir: Path) -> None:
    write(job_dir, "bad-conda.yml", "dependencies:\n  - numpy=1.2|1.3\n  - [nested]\n")
    error = problems_of(write(job_dir, "job.yml", """
        command: python src/train.py
        environment:
          image: python:3.11
          build: {path: nowhere}
          conda_file: missing.yml
          os_type: windows
    """))
    text = str(error)
    assert "job.yml:4:17: environment.build.path: " in text and "is not a folder" in text
    assert "job.yml:5:15: environment.conda_file: " in text and "missing.yml' does not exist" in text
    assert "job.yml:6:3: environment.os_type: has no equivalent here" in text
    assert "job.yml:4:10: environment.build: is given together with image" in text
    empty = problems_of(write(job_dir, "empty.yml", "command: python src/train.py\nenvironment: {name: x}\n"))
    assert "empty.yml:2:14: environment: names no image, build, conda_file or pip_requirements" in str(empty)
    conda = problems_of(write(job_dir, "conda.yml", "command: python src/train.py\n"
                                                    "environment: {conda_file: bad-conda.yml}\n"))
    assert "conda.yml:2:27: environment.conda_file: " in str(conda)


def test_limits_timeout(job_dir: Path) -> None:
    assert command_job(job_dir, "limits: {timeout: 90}\n").script_run_config().max_run_duration_seconds == 90.0
    error = problems_of(write(job_dir, "job.yml", """
        command: python src/train.py
        limits:
          timeout: ten minutes
          max_total_trials: 3
    """))
    assert "job.yml:3:12: limits.timeout: must be a number, got a string ('ten minutes')" in str(error)
    assert "job.yml:4:3: limits.max_total_trials: belongs to a sweep" in str(error)


def test_overrides_set_fields_like_az_ml_set(job_dir: Path) -> None:
    path = write(job_dir, "job.yml", """
        code: src
        command: python train.py --epochs ${{inputs.epochs}}
        inputs: {epochs: 10}
        compute: gpu-box
        environment: training-sklearn
    """)
    job = load_job(path, overrides={"inputs.epochs": 3, "compute": "local", "environment": None,
                                    "limits.timeout": 60})
    config = job.script_run_config()
    assert (config.arguments, job.compute, config.environment, config.max_run_duration_seconds) == (
        ["--epochs", "3"], "local", None, 60.0)
    error = problems_of(path, overrides={"limits.timeout": "soon", "command.x": 1})
    assert f"{path}: overrides['limits.timeout']: limits.timeout: must be a number" in str(error)
    assert "overrides['command.x']: command is not a mapping" in str(error)


# --------------------------------------------------------------------------------------------- errors
def test_every_problem_of_a_file_is_listed_at_once_with_its_line_and_field(job_dir: Path) -> None:
    path = write(job_dir, "broken.yml", """
        type: command
        code: missing-folder
        command: python train.py --data ${{inputs.dataa}} --out ${{outputs.model}}
        environment: {image: 'python:3.11', conda_file: nope.yml}
        environment_variables: {1BAD: x}
        inputs:
          data: {type: uri_folder, path: ./data, mode: eval_download}
        outputs:
          model: {type: uri_folder, mode: upload, path: "azureml://datastores/x"}
        distribution: {type: mpi, process_count_per_instance: 0}
        resources: {gpus: -1}
        limits: {timeout: 0}
        tags: {owner: [a, b]}
        descripton: {}
    """)
    error = problems_of(path)
    assert isinstance(error, ConfigurationError) and error.field == "job"
    expected = [
        (2, "code"), (4, "environment.conda_file"), (5, "environment_variables.1BAD"), (7, "inputs.data.mode"),
        (9, "outputs.model.path"), (10, "distribution.process_count_per_instance"), (11, "resources.gpus"),
        (12, "limits.timeout"), (13, "tags.owner"), (14, "descripton"),
    ]
    message = str(error)
    for line, field in expected:
        assert re.search(rf"broken\.yml:{line}:\d+: {re.escape(field)}: ", message), (line, field, message)
    assert [(p.position.line, p.field) for p in error.problems] == expected
    assert "did you mean 'description'?" in message
    assert all(p.fix for p in error.problems)


def test_a_yaml_syntax_error_names_its_line(job_dir: Path) -> None:
    path = write(job_dir, "job.yml", """
        command: python train.py
        inputs:
          epochs: 3
           lr: 0.1
    """)
    error = problems_of(path)
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert (problem.position.line, problem.position.column) == (4, 6)
    assert f"{path}:4:6: YAML syntax error: mapping values are not allowed here" in str(error)
    unclosed = problems_of(write(job_dir, "quote.yml", "command: 'python train.py\ncode: src\n"))
    assert re.search(r"quote\.yml:3:1: YAML syntax error: .*quoted scalar", str(unclosed))


def test_unknown_keys_get_a_suggestion(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "job.yml", """
        comand: python train.py
        code: src
        enviroment: training-minimal
        inputs:
          data: {path: data, mdoe: download}
        frobnicate: 1
    """))
    text = str(error)
    assert "job.yml:1:1: comand: unknown key; did you mean 'command'? Rename it" in text
    assert "job.yml:3:1: enviroment: unknown key; did you mean 'environment'? Rename it" in text
    assert "job.yml:5:22: inputs.data.mdoe: unknown key; did you mean 'mode'? Rename it" in text
    assert "job.yml:6:1: frobnicate: unknown key; remove it; the keys here are " in text
    assert "job.yml:1:1: command: is required but missing" in text


def test_duplicate_keys_types_and_placeholders(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "job.yml", """
        code: src
        command: python train.py ${{inputs.nope}} ${{outputs.gone}} ${{search_space.lr}} ${{job.name}}
        compute: 42
        code: src
        inputs: [a, b]
    """))
    text = str(error)
    assert "job.yml:4:1: the key 'code' is given twice (also on line 1)" in text
    assert "job.yml:2:10: command: ${{inputs.nope}} names no input (declared: none)" in text
    assert "job.yml:2:10: command: ${{outputs.gone}} names no output" in text
    assert "job.yml:2:10: command: ${{search_space.lr}} is only known in a sweep's trial" in text
    assert "job.yml:2:10: command: ${{job.name}} is not a placeholder this job knows" in text
    assert "job.yml:3:10: compute: must be a string, got a number (42)" in text
    assert "job.yml:5:9: inputs: must be a mapping of input names, got a list" in text


def test_a_script_outside_the_code_folder_is_refused(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "job.yml", "code: src\ncommand: python missing.py --x 1\n"))
    assert "job.yml:2:10: command: runs missing.py, which is not a file in the code folder" in str(error)
    write(job_dir, "outside.py", "print(1)\n")
    error = problems_of(write(job_dir, "up.yml", "code: src\ncommand: python ../outside.py\n"))
    assert "up.yml:2:10: command: runs ../outside.py, which is outside the code folder" in str(error)


def test_pipeline_jobs_and_missing_files(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "job.yml", "type: pipeline\njobs: {}\n"))
    assert "job.yml:1:7: type: 'pipeline' has no equivalent here" in str(error)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_job(job_dir / "nothing.yml")
    with pytest.raises(ConfigurationError, match="without an MLproject file"):
        load_job(job_dir)
    with pytest.raises(ConfigurationError, match="not a sweep"):
        command_job(job_dir, "").hyperdrive_config()


# --------------------------------------------------------------------------------------------- sweeps
SWEEP = """
    type: sweep
    experiment_name: tune
    compute: local
    trial:
      code: src
      command: >-
        python train.py --data ${{{{inputs.data}}}} --learning-rate ${{{{search_space.lr}}}}
        --batch=${{{{search_space.batch}}}} --layers ${{{{search_space.layers}}}}
      environment: training-minimal
    inputs:
      data: {{type: uri_folder, path: data}}
    search_space:
      lr: {{type: {lr_type}, min_value: 0.01, max_value: 0.1}}
      batch: {{type: choice, values: [16, 32, 64]}}
      layers: {{type: choice, values: [1, 2]}}
    sampling_algorithm: {sampling}
    objective: {{goal: Maximize, primary_metric: accuracy}}
    {policy}
    limits: {{max_total_trials: 12, max_concurrent_trials: 3, timeout: 5400, trial_timeout: 600}}
"""


def sweep_job(folder: Path, sampling: str = "random", policy: str = "", lr_type: str = "uniform") -> JobSpec:
    return load_job(write(folder, "sweep.yml", SWEEP.format(sampling=sampling, policy=policy, lr_type=lr_type)))


def test_a_search_space_entry_the_trial_command_does_not_use_is_refused(job_dir: Path) -> None:
    (job_dir / "sweep.yml").write_text(SWEEP.format(sampling="random", policy="", lr_type="uniform").replace(
        " --layers ${{search_space.layers}}", ""))
    with pytest.raises(ConfigurationError, match=r"search_space\.layers: is not used by trial\.command"):
        load_job(job_dir / "sweep.yml")


def test_a_sweep_builds_the_hyperdrive_config(job_dir: Path) -> None:
    job = sweep_job(job_dir, sampling="{type: random, seed: 42, rule: random}")
    assert (job.kind, job.experiment_name, job.compute) == ("sweep", "tune", "local")
    config = job.hyperdrive_config()
    sampling = config.hyperparameter_sampling
    assert isinstance(sampling, RandomParameterSampling) and sampling.seed == 42
    assert sampling.parameter_space == {"--learning-rate": uniform(0.01, 0.1), "--batch": choice(16, 32, 64),
                                        "--layers": choice(1, 2)}
    assert (config.primary_metric_name, config.primary_metric_goal) == ("accuracy", PrimaryMetricGoal.MAXIMIZE)
    assert (config.max_total_runs, config.max_concurrent_runs, config.max_duration_minutes) == (12, 3, 90.0)
    assert config.policy is None
    run = config.run_config
    assert (run.script, run.max_run_duration_seconds, run.environment, run.compute_target) == (
        "train.py", 600.0, "training-minimal", "local")
    assert run.inputs is not None and set(run.inputs) == {"data"}
    sampled = trial_arguments(run.arguments, {"--learning-rate": 0.05, "--batch": 32, "--layers": 2})
    assert sampled == ["--data", "${{inputs.data}}", "--learning-rate", 0.05, "--batch=32", "--layers", 2]
    settings = config.validate()
    assert (settings.max_total_runs, settings.max_concurrent_runs) == (12, 3)


@pytest.mark.parametrize(("sampling", "lr_type", "expected", "seed"), [
    ("random", "uniform", RandomParameterSampling, None),
    ("{type: random, seed: 3}", "quniform", RandomParameterSampling, 3),
    ("{type: bayesian, seed: 9}", "uniform", BayesianParameterSampling, 9),
    ("bayesian", "uniform", BayesianParameterSampling, None),
])
def test_random_and_bayesian_sampling(job_dir: Path, sampling: str, lr_type: str, expected: type, seed: int | None
                                      ) -> None:
    if lr_type == "quniform":
        path = write(job_dir, "sweep.yml", SWEEP.format(sampling=sampling, policy="", lr_type="quniform")
                     .replace("max_value: 0.1}", "max_value: 0.1, q: 0.01}"))
        job = load_job(path)
    else:
        job = sweep_job(job_dir, sampling=sampling, lr_type=lr_type)
    config = job.hyperdrive_config()
    assert type(config.hyperparameter_sampling) is expected
    assert config.hyperparameter_sampling.seed == seed
    lr = config.hyperparameter_sampling.parameter_space["--learning-rate"]
    assert lr == (quniform(0.01, 0.1, 0.01) if lr_type == "quniform" else uniform(0.01, 0.1))
    config.validate()


def test_grid_sampling(job_dir: Path) -> None:
    path = write(job_dir, "grid.yml", """
        type: sweep
        trial:
          code: src
          command: python train.py --batch ${{search_space.batch}} --optimizer ${{search_space.optimizer}}
        search_space:
          batch: {type: choice, values: [16, 32]}
          optimizer: {type: choice, values: [adam, sgd, rmsprop]}
        sampling_algorithm: grid
        objective: {goal: minimize, primary_metric: loss}
    """)
    config = load_job(path).hyperdrive_config()
    sampling = config.hyperparameter_sampling
    assert isinstance(sampling, GridParameterSampling)
    assert sampling.parameter_space == {"--batch": choice(16, 32), "--optimizer": choice("adam", "sgd", "rmsprop")}
    assert sampling.total() == 6
    assert config.primary_metric_goal == PrimaryMetricGoal.MINIMIZE
    assert config.validate().max_total_runs == 6  # the grid's size when no max_total_trials


@pytest.mark.parametrize(("policy", "expected"), [
    ("early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 2, delay_evaluation: 5}",
     BanditPolicy(slack_factor=0.1, evaluation_interval=2, delay_evaluation=5)),
    ("early_termination: {type: bandit, slack_amount: 0.05}", BanditPolicy(slack_amount=0.05)),
    ("early_termination: {type: bandit, slack_factor: 0.2, evaluation_interval: 0}",
     BanditPolicy(slack_factor=0.2, evaluation_interval=1)),
    ("early_termination: {type: median_stopping, evaluation_interval: 1, delay_evaluation: 3}",
     MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=3)),
    ("early_termination: {type: truncation_selection, truncation_percentage: 20, evaluation_interval: 1,"
     " delay_evaluation: 2, exclude_finished_jobs: false}",
     TruncationSelectionPolicy(truncation_percentage=20, evaluation_interval=1, delay_evaluation=2)),
])
def test_every_early_termination_policy(job_dir: Path, policy: str, expected: object) -> None:
    config = sweep_job(job_dir, policy=policy).hyperdrive_config()
    assert config.policy == expected
    assert config.validate().policy == expected


def test_every_search_space_expression(job_dir: Path) -> None:
    path = write(job_dir, "space.yml", """
        type: sweep
        trial:
          code: src
          command: >-
            python train.py --a ${{search_space.a}} --b ${{search_space.b}} --c ${{search_space.c}}
            --d ${{search_space.d}} --e ${{search_space.e}}
        search_space:
          a: {type: choice, values: [1, "two", true]}
          b: {type: randint, upper: 10}
          c: {type: loguniform, min_value: -7, max_value: 0}
          d: {type: normal, mu: 0, sigma: 1}
          e: {type: qlognormal, mu: 0, sigma: 0.5, q: 2}
        sampling_algorithm: random
        objective: {goal: maximize, primary_metric: acc}
        limits: {max_total_trials: 2}
    """)
    config = load_job(path).hyperdrive_config()
    assert config.hyperparameter_sampling.parameter_space == {
        "--a": choice(1, "two", True), "--b": randint(10), "--c": loguniform(-7, 0), "--d": normal(0, 1),
        "--e": qlognormal(0, 0.5, 2)}
    assert trial_arguments(config.run_config.arguments, {"--a": 1, "--b": 3, "--c": 0.5, "--d": 0.1, "--e": 2}) == [
        "--a", 1, "--b", 3, "--c", 0.5, "--d", 0.1, "--e", 2]


def test_a_trial_from_its_own_file(job_dir: Path) -> None:
    write(job_dir, "trials/trial.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        experiment_name: from-trial
        compute: trial-box
        tags: {source: trial, shared: trial}
        code: ../src
        command: python train.py --data ${{inputs.data}} --lr ${{search_space.lr}} --out ${{outputs.out}}
        environment_variables: {A: "1"}
        inputs:
          data: {type: uri_folder, path: ../data}
        outputs:
          out: {type: uri_folder, path: "../results/{run_id}"}
        limits: {timeout: 30}
    """)
    path = write(job_dir, "sweep.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json
        tags: {shared: sweep}
        trial: ./trials/trial.yml
        search_space:
          lr: {type: uniform, min_value: 0.1, max_value: 0.2}
        sampling_algorithm: random
        objective: {goal: maximize, primary_metric: acc}
        limits: {max_total_trials: 2}
    """)
    job = load_job(path)
    assert (job.kind, job.experiment_name, job.compute) == ("sweep", "from-trial", "trial-box")
    assert job.tags == {"source": "trial", "shared": "sweep"}
    run = job.hyperdrive_config().run_config
    assert (run.script, run.max_run_duration_seconds, run.environment_variables) == ("train.py", 30.0, {"A": "1"})
    assert Path(run.source_directory) == (job_dir / "src").resolve()
    assert run.inputs is not None and run.outputs is not None
    assert run.arguments == ["--data", "${{inputs.data}}", "--lr", "${{search_space.lr}}", "--out", "${{outputs.out}}"]
    assert job.hyperdrive_config().hyperparameter_sampling.parameter_space == {"--lr": uniform(0.1, 0.2)}


def test_a_trial_file_with_problems_names_its_own_lines(job_dir: Path) -> None:
    write(job_dir, "trial.yml", "code: src\ncommand: python train.py\nenvironment: {imag: x}\n")
    error = problems_of(write(job_dir, "sweep.yml", """
        type: sweep
        trial: trial.yml
        search_space: {lr: {type: uniform, min_value: 0, max_value: 1}}
        sampling_algorithm: random
        objective: {goal: up, primary_metric: acc}
    """))
    text = str(error)
    assert re.search(r"trial\.yml:3:15: environment.imag: unknown key; did you mean 'image'\?", text)
    assert "sweep.yml:5:19: objective.goal: 'up' is not one of maximize, minimize" in text
    assert text.index("sweep.yml:5") < text.index("trial.yml:3")  # the sweep's file first, each by line


def test_sweep_problems_name_their_lines(job_dir: Path) -> None:
    error = problems_of(write(job_dir, "sweep.yml", """
        type: sweep
        trial:
          code: src
          command: python train.py ${{search_space.lr}} --n ${{search_space.missing}}
          inputs: {x: 1}
        outputs:
          model: {type: uri_folder, path: ./models}
        search_space:
          lr: {type: uniform, min_value: 1, max_value: 0}
          n: {type: randint}
          m: {type: gaussian, mu: 0}
        sampling_algorithm: {type: grid, seed: 1}
        objective: {goal: maximize}
        early_termination: {type: bandit}
        limits: {max_total_trials: 0}
        command: python train.py
    """))
    text = str(error)
    for expected in [
        "sweep.yml:4:12: trial.command: ${{search_space.missing}} names no search-space parameter",
        "sweep.yml:5:3: trial.inputs: belongs at the sweep's top level",
        "sweep.yml:7:35: outputs.model.path: is written by every trial of the sweep",
        "sweep.yml:9:7: search_space.lr: low 1.0 is not below high 0.0",
        "sweep.yml:10:6: search_space.n.upper: is required but missing",
        "sweep.yml:11:13: search_space.m.type: 'gaussian' is not one of",
        "sweep.yml:12:40: sampling_algorithm.seed: grid sampling draws nothing at random",
        "sweep.yml:13:12: objective.primary_metric: is required but missing",
        "sweep.yml:14:20: early_termination: needs exactly one of slack_factor and slack_amount",
        "sweep.yml:15:28: limits.max_total_trials: must be at least 1, got 0",
        "sweep.yml:16:1: command: belongs under trial: in a sweep",
    ]:
        assert expected in text, (expected, text)
    placement = problems_of(write(job_dir, "flags.yml", """
        type: sweep
        trial: {code: src, command: "python train.py ${{search_space.lr}}"}
        search_space: {lr: {type: uniform, min_value: 0, max_value: 1}}
        sampling_algorithm: random
        objective: {goal: maximize, primary_metric: acc}
        limits: {max_total_trials: 2}
    """))
    assert "flags.yml:2:29: trial.command: ${{search_space.lr}} must be a whole argument after a flag" \
        in str(placement)


def test_sweep_settings_the_core_refuses_point_at_their_field(job_dir: Path) -> None:
    bayesian_with_policy = problems_of(write(job_dir, "sweep.yml", SWEEP.format(
        sampling="bayesian", lr_type="uniform", policy="early_termination: {type: median_stopping}")))
    assert re.search(r"sweep\.yml:18:20: early_termination: BayesianParameterSampling does not support early "
                     r"termination", str(bayesian_with_policy))
    grid_with_uniform = problems_of(write(job_dir, "grid.yml", SWEEP.format(sampling="grid", lr_type="uniform",
                                                                            policy="")))
    assert "grid.yml:13:7: search_space.lr: uniform is not supported by GridParameterSampling" \
        in str(grid_with_uniform)
    shell = problems_of(write(job_dir, "shell.yml", """
        type: sweep
        trial: {code: src, command: "python train.py --lr ${{search_space.lr}} && echo done"}
        search_space: {lr: {type: uniform, min_value: 0, max_value: 1}}
        sampling_algorithm: random
        objective: {goal: maximize, primary_metric: acc}
        limits: {max_total_trials: 2}
    """))
    assert "is only filled in a command of the form python <script>.py <arguments>" in str(shell)
    no_total = problems_of(write(job_dir, "total.yml", """
        type: sweep
        trial: {code: src, command: "python train.py --lr ${{search_space.lr}}"}
        search_space: {lr: {type: uniform, min_value: 0, max_value: 1}}
        sampling_algorithm: random
        objective: {goal: maximize, primary_metric: acc}
    """))
    assert "total.yml:1:1: limits.max_total_trials: is required for random and Bayesian sampling" in str(no_total)


# --------------------------------------------------------------------------------------------- MLproject
MLPROJECT = """
    name: My Project
    entry_points:
      main:
        parameters:
          data: {type: path, default: data}
          alpha: {type: float, default: 0.5}
          epochs: {type: int, default: 10}
          label: {type: string, default: "two words"}
          source: {type: uri, default: "s3://bucket/raw"}
          required: float
        command: "python train.py --data {data} --alpha {alpha} --epochs {epochs} -l {label} -s {source} -r {required}"
      other:
        command: python other.py
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    write(folder, "MLproject", MLPROJECT)
    write(folder, "train.py", "print('train')\n")
    write(folder, "data/part-0.csv", "x\n1\n")
    return folder


def test_an_mlproject_with_typed_parameters_and_overrides(project: Path) -> None:
    job = load_job(project / "MLproject", overrides={"alpha": "0.25", "required": 3, "extra": "x y"})
    assert (job.kind, job.entry_point, job.experiment_name) == ("command", "main", "My Project")
    assert job.tags == {"mlflow.project.entryPoint": "main"}
    data = str((project / "data").resolve())
    assert job.parameters == {"data": data, "alpha": "0.25", "epochs": "10", "label": "two words",
                              "source": "s3://bucket/raw", "required": "3", "extra": "x y"}
    config = job.script_run_config()
    assert (config.script, config.command) == ("train.py", None)
    assert config.arguments == ["--data", "${{inputs.data}}", "--alpha", "0.25", "--epochs", "10", "-l",
                                "two words", "-s", "s3://bucket/raw", "-r", "3", "--extra", "x y"]
    assert config.inputs is not None
    data_input = config.inputs["data"]
    assert not isinstance(data_input, str) and (data_input.uri, data_input.mode) == (data, "download")
    assert Path(config.source_directory) == project.resolve()
    config.validate()
    assert load_job(project, overrides={"required": 1.5}).parameters["required"] == "1.5"  # a folder works too


def test_mlproject_parameter_problems(project: Path) -> None:
    missing = problems_of(project / "MLproject")
    assert len(missing.problems) == 1
    assert "MLproject:10:17: entry_points.main.parameters.required: has no default and no value was given" \
        in str(missing)
    assert "overrides={'required': ...}" in str(missing)
    wrong = problems_of(project / "MLproject", overrides={"required": "lots", "epochs": "2.5", "alpha": True})
    text = str(wrong)
    assert "MLproject:10:17: entry_points.main.parameters.required: the value 'lots' given for it is not a float" \
        in text
    assert "MLproject:7:15: entry_points.main.parameters.epochs: the value '2.5' given for it is not an int" in text
    assert "MLproject:6:14: entry_points.main.parameters.alpha: the value True given for it is not a float" in text
    unknown = problems_of(project, entry_point="mian", overrides={"required": 1})
    assert "MLproject:3:3: entry_points: has no entry point 'mian' (did you mean 'main'?)" in str(unknown)


def test_mlproject_entry_points_and_scripts(project: Path) -> None:
    missing = problems_of(project, entry_point="other")
    assert "MLproject:13:14: entry_points.other.command: runs other.py, which is not a file in the code folder" \
        in str(missing)
    write(project, "other.py", "print(1)\n")
    other = load_job(project, entry_point="other")
    assert (other.entry_point, other.script_run_config().script, other.parameters) == ("other", "other.py", {})
    script = load_job(project, entry_point="train.py", overrides={"lr": 0.1})
    config = script.script_run_config()
    assert (config.script, config.arguments, script.parameters) == ("train.py", ["--lr", "0.1"], {"lr": "0.1"})


def test_mlproject_environments(tmp_path: Path) -> None:
    folder = tmp_path / "envs"
    write(folder, "train.py", "print(1)\n")
    write(folder, "conda.yaml", "dependencies:\n  - python=3.11\n  - pip:\n    - mlflow-skinny\n")
    write(folder, "requirements.txt", "numpy==2.2.6\n")
    write(folder, "python_env.yaml", """
        python: "3.11"
        build_dependencies: [pip, setuptools]
        dependencies: [mlflow-skinny==3.5.0, -r requirements.txt]
    """)

    def environment(line: str) -> tuple[Environment, dict[str, str]]:
        write(folder, "MLproject", f"name: envs\n{line}\nentry_points:\n  main:\n    command: python train.py\n")
        config = load_job(folder).script_run_config()
        assert isinstance(config.environment, Environment)
        return config.environment, config.environment_variables or {}

    conda, _ = environment("conda_env: conda.yaml")
    assert conda.kind == "conda" and conda.python.conda_dependencies is not None
    assert conda.python.conda_dependencies.get_python_version() == "3.11"
    python, _ = environment("python_env: python_env.yaml")
    assert (python.kind, python.python.pip_packages) == ("pip", ["mlflow-skinny==3.5.0", "numpy==2.2.6"])
    docker, variables = environment("docker_env: {image: 'python:3.11-slim', environment: [[MODE, fast]]}")
    assert (docker.docker.base_image, docker.python.user_managed_dependencies) == ("python:3.11-slim", True)
    assert variables == {"MODE": "fast"}
    write(folder, "MLproject", "entry_points: {main: {command: python train.py}}\nconda_env: x.yaml\n"
                               "docker_env: {image: a, volumes: [/data]}\n")
    text = str(problems_of(folder))
    assert "docker_env: is given together with conda_env" in text


def test_a_yaml_file_with_entry_points_is_an_mlproject(project: Path) -> None:
    renamed = project / "project.yaml"
    renamed.write_text((project / "MLproject").read_text())
    assert load_job(renamed, overrides={"required": 2}).entry_point == "main"


# --------------------------------------------------------------------------------------------- the examples
@pytest.mark.parametrize("name", ["train.yml", "sweep.yml", "mlproject"])
def test_the_example_job_files_load_and_validate(name: str) -> None:
    job = load_job(REPO / "examples" / "jobs" / name)
    config = job.script_run_config()
    resolved = config.validate()
    assert resolved.script in ("train.py", "fit.py")
    assert resolved.environment is None or resolved.environment.kind == "current"  # the worker's interpreter
    assert (config.compute_target, job.compute in (None, "local")) == ("local", True)
    if job.kind == "sweep":
        settings = job.hyperdrive_config().validate()
        assert (settings.max_total_runs, settings.primary_metric_name) == (4, "loss")
        assert set(job.hyperdrive_config().hyperparameter_sampling.parameter_space) == {"--learning-rate",
                                                                                       "--batch-size"}


def test_set_values_keep_their_text_unless_json_reads_them() -> None:
    from airflow_provider.cli.submit import overrides

    assert overrides(["inputs.version=010", "inputs.time=1:30", "inputs.lr=0.1", "inputs.on=true",
                      "inputs.sizes=[1, 2]", "inputs.name=yes"]) == {
        "inputs.version": "010", "inputs.time": "1:30", "inputs.lr": 0.1, "inputs.on": True,
        "inputs.sizes": [1, 2], "inputs.name": "yes"}
    assert overrides(["alpha=0.5", "flag=yes"], as_text=True) == {"alpha": "0.5", "flag": "yes"}
    with pytest.raises(ConfigurationError, match="KEY=VALUE"):
        overrides(["novalue"])


def test_an_mlproject_copies_docker_env_variables_as_secrets_when_submitted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "train.py").write_text("print('ok')\n")
    (tmp_path / "MLproject").write_text(
        "name: copies\ndocker_env:\n  image: python:3.11-slim\n  environment: [AWS_SECRET_ACCESS_KEY, [MODE, fast]]\n"
        "entry_points:\n  main:\n    command: python train.py\n")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    job = load_job(tmp_path)
    assert dict(job.run.environment_variables) == {"MODE": "fast"}, "a copied value is never in the spec"
    with pytest.raises(ConfigurationError, match="AWS_SECRET_ACCESS_KEY"):
        job.secret_variables()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalr")
    assert job.secret_variables() == {"AWS_SECRET_ACCESS_KEY": "wJalr"}
