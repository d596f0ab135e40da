"""Conda specifications: CondaDependencies (Azure ML v1 API), environment.yml parsing, match specs
and their translation into pip requirements for hosts without conda."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider.core.environments.conda_spec import (
    CONDA_ONLY,
    PYPI_NAMES,
    CondaDependencies,
    CondaMatchSpec,
    PipTranslation,
    is_conda_only,
    translate_to_pip,
)
from airflow_provider.core.errors import ConfigurationError

FILE_FIELD = "Environment.from_conda_specification.file_path"
DEPS_FIELD = "environment.python.conda_dependencies.dependencies"

AZURE_EXAMPLE = """\
# Conda environment specification. The dependencies defined in this file will
# be automatically provisioned for runs with userManagedDependencies=False.

# Details about the Conda environment file format:
# https://conda.io/docs/user-guide/tasks/manage-environments.html#create-env-file-manually

name: project_environment
dependencies:
  # The python interpreter version.
  # Currently Azure ML only supports 3.5.2 and later.
- python=3.8

- scikit-learn
- pip:
    # Required packages for AzureML execution, history, and data preparation.
  - azureml-defaults
  - mlflow
channels:
- anaconda
- conda-forge
"""


def write(tmp_path: Path, text: str, name: str = "environment.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(call: object, *args: object) -> ConfigurationError:
    assert callable(call)
    with pytest.raises(ConfigurationError) as info:
        call(*args)
    return info.value


# --------------------------------------------------------------------------------------------- match specs
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("numpy", ("numpy", None, None, None)),
        ("numpy=1.2", ("numpy", "1.2.*", None, None)),
        ("numpy==1.2", ("numpy", "1.2", None, None)),
        ("numpy>=1.2,<2", ("numpy", ">=1.2,<2", None, None)),
        ("numpy >= 1.2, < 2", ("numpy", ">=1.2,<2", None, None)),
        ("numpy 1.2.*", ("numpy", "1.2.*", None, None)),
        ("numpy 1.2*", ("numpy", "1.2.*", None, None)),
        ("numpy 1.2", ("numpy", "1.2", None, None)),
        ("numpy=1.2=py311_0", ("numpy", "1.2", "py311_0", None)),
        ("numpy==1.2=py311_0", ("numpy", "==1.2", "py311_0", None)),
        ("numpy 1.2 py311_0", ("numpy", "1.2", "py311_0", None)),
        ("numpy=1.2.*=*cuda*", ("numpy", "1.2.*", "*cuda*", None)),
        ("conda-forge::numpy=1.2", ("numpy", "1.2.*", None, "conda-forge")),
        (
            "conda-forge/linux-64::numpy 1.26.4 py311h64a7726_0",
            ("numpy", "1.26.4", "py311h64a7726_0", "conda-forge/linux-64"),
        ),
        (
            "https://conda.anaconda.org/conda-forge::numpy",
            ("numpy", None, None, "https://conda.anaconda.org/conda-forge"),
        ),
        ("numpy[version='>=1.2']", ("numpy", ">=1.2", None, None)),
        ('numpy[version=">=1.2", build=py311_0, channel=conda-forge]', ("numpy", ">=1.2", "py311_0", "conda-forge")),
        ("numpy=1.2|1.3", ("numpy", "=1.2|1.3", None, None)),
        ("NumPy", ("numpy", None, None, None)),
        ("_libgcc_mutex=0.1=main", ("_libgcc_mutex", "0.1", "main", None)),
        (
            "pytorch::pytorch==2.1.0=py3.11_cuda12.1_cudnn8.9.2_0",
            ("pytorch", "==2.1.0", "py3.11_cuda12.1_cudnn8.9.2_0", "pytorch"),
        ),
    ],
)
def test_match_spec_parsing(text: str, expected: tuple[str, str | None, str | None, str | None]) -> None:
    spec = CondaMatchSpec.parse(text)
    assert (spec.name, spec.version, spec.build, spec.channel) == expected
    assert spec.source == text
    assert CondaMatchSpec.parse(str(spec)) == spec  # the canonical form reads back the same


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "'' is not a conda package spec."),
        ("=1.2", "it has no package name"),
        ("numpy=>1.2", "cannot read the version '=>1.2'"),
        ("numpy>=1.2,", "cannot read the version '>=1.2,'"),
        ("numpy>=1.2 <2", "cannot read the version '>=1.2<2'"),
        ("numpy[foo=1]", "[foo=...] is not supported (use version, build, channel)"),
        ("numpy(>=1)", "'(' cannot follow the package name"),
        ("numpy[version='(>=1|<0)']", "(parentheses are not supported)"),
        ("numpy~=1.*", "~= takes no wildcard"),
        ("numpy=1.2=py-1", "'py-1' is not a build string"),
        ("conda forge::numpy", "'conda forge' is not a channel"),
    ],
)
def test_match_spec_errors_name_the_entry(text: str, problem: str) -> None:
    error = error_of(CondaMatchSpec.parse, text)
    assert error.field == "environment.python.conda_dependencies"
    assert problem in error.problem
    assert repr(text) in error.problem
    assert 'such as "numpy", "numpy=1.26"' in error.fix


@pytest.mark.parametrize(
    ("text", "requirement"),
    [
        ("pytorch=2.1", "torch==2.1.*"),
        ("numpy==1.2", "numpy==1.2"),
        ("numpy 1.2", "numpy==1.2"),
        ("numpy 1.2.*", "numpy==1.2.*"),
        ("numpy>=1.2,<2", "numpy>=1.2,<2"),
        ("numpy=1.2,<2", "numpy==1.2.*,<2"),
        ("numpy=1.26.4=py311h64a7726_0", "numpy==1.26.4"),
        ("numpy==1.2=py311_0", "numpy==1.2"),
        ("numpy>=1.2.*", "numpy>=1.2"),
        ("numpy!=1.3.*", "numpy!=1.3.*"),
        ("numpy~=1.2", "numpy~=1.2"),
        ("numpy *", "numpy"),
        ("conda-forge::numpy", "numpy"),
        ("numpy[version='>=1.24']", "numpy>=1.24"),
        ("py-xgboost", "xgboost"),
        ("py-xgboost-cpu=2.0", "xgboost==2.0.*"),
        ("pytorch-cpu", "torch"),
        ("matplotlib-base>=3.8", "matplotlib>=3.8"),
        ("pytables", "tables"),
        ("py-opencv=4.8", "opencv-python==4.8.*"),
        ("msgpack-python", "msgpack"),
        ("pyqt=5.15", "PyQt5==5.15.*"),
        ("python-graphviz", "graphviz"),
        ("tensorflow-gpu=2.15", "tensorflow==2.15.*"),
        ("scikit-learn=1.3", "scikit-learn==1.3.*"),
        ("mkl=2024.0", "mkl==2024.0.*"),
        ("cmake>=3.26", "cmake>=3.26"),
        ("ninja", "ninja"),
        ("cuda-python=12.3", "cuda-python==12.3.*"),
    ],
)
def test_to_pip(text: str, requirement: str) -> None:
    assert CondaMatchSpec.parse(text).to_pip() == requirement


def test_to_pip_refuses_alternatives_naming_the_entry() -> None:
    error = error_of(CondaMatchSpec.parse("numpy=1.2|1.3").to_pip, "environment.python.conda_dependencies.x")
    assert str(error) == (
        "environment.python.conda_dependencies.x: 'numpy=1.2|1.3' allows alternative versions (=1.2|1.3), which one "
        "pip requirement cannot express. Fix: keep one version or one range (e.g. numpy=1.3 or numpy>=1.2,<1.4), or "
        "install micromamba, mamba or conda on the target so the specification builds as a conda environment."
    )


@pytest.mark.parametrize("text", ["openssl=1.1.1w", "foo=1.1.1w", "foo~=1"])
def test_to_pip_refuses_what_pip_cannot_install(text: str) -> None:
    error = error_of(CondaMatchSpec.parse(text).to_pip)
    assert repr(text) in error.problem
    assert "install micromamba, mamba or conda on the target" in error.fix


def test_conda_only_names() -> None:
    for name in [
        "cudatoolkit",
        "cudnn",
        "nccl",
        "graphviz",
        "make",
        "openssl",
        "_openmp_mutex",
        "cuda-nvcc",
        "cuda-runtime",
        "cuda-toolkit",
        "libcublas",
        "libnvjitlink",
        "pytorch-cuda",
        "CUDNN",
    ]:
        assert is_conda_only(name), name
    for name in [
        "cmake",
        "ninja",
        "mkl",
        "mkl-service",
        "mkl_fft",
        "mkl_random",
        "intel-openmp",
        "numpy",
        "pytorch",
        "cuda-python",
        "cuda-bindings",
        "cuda-core",
        "cuda-pathfinder",
        "python-graphviz",
        "tzdata",
    ]:
        assert not is_conda_only(name), name
    assert not set(PYPI_NAMES) & CONDA_ONLY  # a renamed package is installable
    assert PYPI_NAMES["python-graphviz"] == "graphviz"
    assert "graphviz" not in PYPI_NAMES


# --------------------------------------------------------------------------------------------- CondaDependencies API
def test_empty_specification_defaults() -> None:
    deps = CondaDependencies()
    assert deps.name == "project_environment"
    assert deps.channels == ["conda-forge"]
    assert deps.conda_packages == [] and deps.pip_packages == [] and deps.pip_options == []
    assert deps.get_python_version() is None
    assert deps.serialize_to_string() == "name: project_environment\nchannels:\n- conda-forge\ndependencies: []\n"


def test_create_serialize_and_read_back() -> None:
    deps = CondaDependencies.create(
        pip_packages=["mlflow>=2", "azureml-defaults"],
        conda_packages=["scikit-learn=1.3", "numpy>=1.24,<2"],
        python_version="3.11",
        pin_sdk_version=False,
        pip_indexurl="https://pypi.example.org/simple",
        channels=["pytorch"],
    )
    text = deps.serialize_to_string()
    assert text == (
        "name: project_environment\n"
        "channels:\n"
        "- conda-forge\n"
        "- pytorch\n"
        "dependencies:\n"
        "- python=3.11\n"
        "- scikit-learn=1.3\n"
        "- numpy>=1.24,<2\n"
        "- pip:\n"
        "  - --index-url https://pypi.example.org/simple\n"
        "  - mlflow>=2\n"
        "  - azureml-defaults\n"
    )
    again = CondaDependencies.from_string(text)
    assert again == deps
    assert again.to_dict() == {
        "name": "project_environment",
        "channels": ["conda-forge", "pytorch"],
        "python": "python=3.11",
        "conda_packages": ["scikit-learn=1.3", "numpy>=1.24,<2"],
        "pip": ["--index-url https://pypi.example.org/simple", "mlflow>=2", "azureml-defaults"],
        "variables": {},
    }
    assert again.pip_packages == ["mlflow>=2", "azureml-defaults"]
    assert again.pip_options == ["--index-url https://pypi.example.org/simple"]
    assert again.get_python_version() == "3.11"


def test_add_replaces_same_package_and_remove() -> None:
    deps = CondaDependencies()
    deps.add_conda_package("numpy=1.24")
    deps.add_conda_package("pandas")
    deps.add_conda_package("conda-forge::NumPy>=1.26")  # same package: the old entry goes, the new one ends the list
    assert deps.conda_packages == ["pandas", "conda-forge::NumPy>=1.26"]
    deps.add_conda_package("python=3.10")
    assert deps.conda_packages == ["pandas", "conda-forge::NumPy>=1.26"]
    assert deps.get_python_version() == "3.10"
    deps.remove_conda_package("numpy")
    assert deps.conda_packages == ["pandas"]
    deps.remove_conda_package("python")
    assert deps.get_python_version() is None

    deps.add_pip_package("Scikit_Learn==1.2")
    deps.add_pip_package("mlflow")
    deps.add_pip_package("scikit-learn>=1.3")
    deps.add_pip_package("https://example.org/pkg-1.0-py3-none-any.whl")
    assert deps.pip_packages == ["mlflow", "scikit-learn>=1.3", "https://example.org/pkg-1.0-py3-none-any.whl"]
    deps.remove_pip_package("scikit.learn")
    deps.remove_pip_package("https://example.org/pkg-1.0-py3-none-any.whl")
    assert deps.pip_packages == ["mlflow"]


def test_pip_options() -> None:
    deps = CondaDependencies.create(pip_packages=["mlflow"], pip_indexurl="https://a.example/simple")
    deps.set_pip_option("--index-url https://b.example/simple")  # pip has one index: it replaces the first
    deps.set_pip_option("--extra-index-url https://c.example/simple")
    deps.set_pip_option("--extra-index-url https://d.example/simple")
    deps.set_pip_option("--extra-index-url https://d.example/simple")
    deps.set_pip_option("--pre")
    assert deps.pip_options == [
        "--index-url https://b.example/simple",
        "--extra-index-url https://c.example/simple",
        "--extra-index-url https://d.example/simple",
        "--pre",
    ]
    assert deps.pip_packages == ["mlflow"]
    error = error_of(deps.add_pip_package, "--find-links /wheels")
    assert str(error) == (
        "CondaDependencies.add_pip_package: '--find-links /wheels' is a pip option, not a package. "
        'Fix: use set_pip_option("--find-links /wheels").'
    )


@pytest.mark.parametrize(
    ("entry", "version"),
    [
        ("python=3.11", "3.11"),
        ("python==3.11.4", "3.11.4"),
        ("python 3.11.*", "3.11"),
        ("python>=3.10,<3.12", ">=3.10,<3.12"),
        ("python=3.11.5=h955ad1f_0", "3.11.5"),
        ("python[version='>=3.10']", ">=3.10"),
        ("python", None),
    ],
)
def test_python_version(entry: str, version: str | None) -> None:
    deps = CondaDependencies.create(conda_packages=[entry])
    assert deps.get_python_version() == version


def test_set_python_version_with_operator() -> None:
    deps = CondaDependencies()
    deps.set_python_version(">=3.10")
    assert deps.to_dict()["python"] == "python>=3.10"
    assert deps.get_python_version() == ">=3.10"


def test_channels() -> None:
    deps = CondaDependencies()
    deps.add_channel("pytorch")
    deps.add_channel("conda-forge")
    deps.add_channel("https://conda.anaconda.org/nvidia")
    assert deps.channels == ["conda-forge", "pytorch", "https://conda.anaconda.org/nvidia"]
    deps.remove_channel("conda-forge")
    deps.remove_channel("not-listed")
    assert deps.channels == ["pytorch", "https://conda.anaconda.org/nvidia"]
    error = error_of(deps.add_channel, "conda forge")
    assert error.field == "CondaDependencies.add_channel"
    assert error.problem == "'conda forge' is not a channel."
    assert "file:///path" in error.fix


def test_save_and_save_to_file(tmp_path: Path) -> None:
    deps = CondaDependencies.create(conda_packages=["numpy=1.26"], python_version="3.11")
    written = deps.save_to_file(tmp_path / "config")
    assert written == str(tmp_path / "config" / "conda_dependencies.yml")
    assert Path(written).read_text(encoding="utf-8") == deps.serialize_to_string()
    named = deps.save_to_file(tmp_path, "envs/train.yml")
    assert named == str(tmp_path / "envs" / "train.yml")
    loaded = CondaDependencies(named)
    assert loaded == deps
    loaded.add_pip_package("mlflow")
    assert loaded.save() == named  # without a path: the file it was read from
    assert CondaDependencies(named).pip_packages == ["mlflow"]
    error = error_of(CondaDependencies().save)
    assert error.field == "CondaDependencies.save.path"


def test_to_dict_from_dict_and_fingerprint() -> None:
    deps = CondaDependencies.create(conda_packages=["b", "a=1"], pip_packages=["z", "y"], python_version="3.11")
    assert CondaDependencies.from_dict(deps.to_dict()) == deps
    reordered = CondaDependencies.create(conda_packages=["a=1", "b"], pip_packages=["y", "z"], python_version="3.11")
    assert reordered != deps  # the specifications list their packages in another order...
    assert reordered.fingerprint_payload() == deps.fingerprint_payload()  # ...which installs the same
    assert deps.fingerprint_payload() == {
        "python": "python=3.11",
        "conda_packages": ["a=1", "b"],
        "channels": ["conda-forge"],
        "pip": ["y", "z"],
        "variables": {},
    }
    other_channels = CondaDependencies.create(
        conda_packages=["a=1", "b"], pip_packages=["y", "z"], python_version="3.11", channels=["pytorch"]
    )
    assert other_channels.fingerprint_payload() != deps.fingerprint_payload()
    error = error_of(CondaDependencies.from_dict, {"name": "x", "packages": []})
    assert str(error) == (
        "environment.python.conda_dependencies: unknown keys ['packages']. Fix: use only "
        "['name', 'channels', 'python', 'conda_packages', 'pip', 'variables']."
    )
    error = error_of(CondaDependencies.from_dict, {"conda_packages": ["numpy=>1"]})
    assert error.field == "environment.python.conda_dependencies.conda_packages"


# --------------------------------------------------------------------------------------------- environment.yml files
def test_azure_example_file(tmp_path: Path) -> None:
    deps = CondaDependencies(write(tmp_path, AZURE_EXAMPLE))
    assert deps.name == "project_environment"
    assert deps.channels == ["anaconda", "conda-forge"]
    assert deps.get_python_version() == "3.8"
    assert deps.conda_packages == ["scikit-learn"]
    assert deps.pip_packages == ["azureml-defaults", "mlflow"]
    assert deps.variables == {}
    deps.validate()
    assert translate_to_pip(deps) == PipTranslation(
        python_version="3.8",
        requirements=["scikit-learn", "azureml-defaults", "mlflow"],
        notes=[
            "python=3.8 selects the interpreter (Python 3.8); it is not a package to install",
            "channels anaconda, conda-forge not used: pip installs from PyPI or the index the pip section names",
        ],
    )


def test_exported_file_with_prefix_and_variables(tmp_path: Path) -> None:
    text = (
        "name: train\n"
        "channels:\n  - conda-forge\n"
        "dependencies:\n  - python=3.11.5=hab00c5b_0_cpython\n  - numpy=1.26.4=py311h64a7726_0\n  - pip=23.3.1\n"
        "  - pip:\n    - mlflow==2.9.2\n"
        "variables:\n  OMP_NUM_THREADS: 4\n  MODE: fast\n"
        "prefix: /opt/conda/envs/train\n"
    )
    deps = CondaDependencies.from_file(write(tmp_path, text))
    assert deps.variables == {"OMP_NUM_THREADS": "4", "MODE": "fast"}
    assert "prefix" not in deps.serialize_to_string()  # where the env was on the exporting machine
    assert CondaDependencies.from_string(deps.serialize_to_string()) == deps
    translation = translate_to_pip(deps)
    assert translation.python_version == "3.11.5"
    assert translation.requirements == ["numpy==1.26.4", "mlflow==2.9.2"]
    assert translation.notes == [
        "python=3.11.5=hab00c5b_0_cpython selects the interpreter (Python 3.11.5); it is not a package to install",
        "build string hab00c5b_0_cpython of python ignored",
        "build string py311h64a7726_0 of numpy ignored (pip has no build strings)",
        "pip=23.3.1 not installed: pip is the installer the environment builder provides",
        "channels conda-forge not used: pip installs from PyPI or the index the pip section names",
    ]


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndependencies:\n  - numpy\n  - pip: [mlflow\n")
    error = error_of(CondaDependencies.from_file, path)
    assert error.field == FILE_FIELD
    assert error.problem.startswith(f"{str(path)!r} is not valid YAML: ")
    assert "at line 5, column 1." in error.problem
    assert str(error).startswith(f"{FILE_FIELD}: ")
    assert "Fix: correct the YAML there" in str(error)


def test_unknown_top_level_key_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nchannels: [conda-forge]\npackages:\n  - numpy\n")
    error = error_of(CondaDependencies.from_file, path)
    assert str(error) == (
        f"{FILE_FIELD}: {str(path)!r}, line 3: unknown top-level key 'packages'. Fix: use only name, channels, "
        "dependencies, prefix, variables (the keys of a conda environment file)."
    )


def test_dependency_entry_that_is_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndependencies:\n  - numpy\n  - 3.8\n")
    error = error_of(CondaDependencies.from_file, path)
    assert error.field == FILE_FIELD
    assert error.problem == f"{str(path)!r}, line 4: dependency entry 3.8 is a number, not a package spec."
    assert 'such as "numpy=1.26" or "python=3.11"' in error.fix


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "dependencies:\n  - conda: [numpy]\n",
            "line 2: dependency entry {'conda': ['numpy']} is a mapping with keys ['conda']; only a pip section "
            "{pip: [...]} may be a mapping.",
        ),
        ("dependencies:\n  - pip: [a]\n  - pip: [b]\n", "line 3: a second pip section."),
        ("dependencies:\n  - pip:\n    - mlflow\n    - 2\n", "line 4: pip entry 2 is not a requirement string."),
        (
            "dependencies:\n  - numpy\n  - numpy=>1\n",
            "line 3: 'numpy=>1' is not a conda package spec: cannot read the version '=>1'.",
        ),
        (
            "dependencies:\n  - python=3.10\n  - python=3.11\n",
            "line 3: python is listed twice ('python=3.10' and 'python=3.11').",
        ),
        ("dependencies: numpy\n", "line 1: dependencies must be a list, got str."),
        ("channels: conda-forge\n", "line 1: channels must be a list of channel names, got 'conda-forge'."),
        ("name: 12\n", "line 1: name 12 is not a string."),
        ("variables:\n  A: [1]\n", "line 1: variable 'A' has the value [1], not a string."),
        ("variables:\n  1BAD: x\n", "line 1: '1BAD' is not a valid variable name."),
        ("- numpy\n- pandas\n", "is not a conda environment specification: its top level is a list, not a mapping."),
        ("numpy\npandas\n", "is not a conda environment specification: its top level is a str, not a mapping."),
        ("", "is empty."),
    ],
)
def test_bad_file_contents(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    error = error_of(CondaDependencies.from_file, path)
    assert error.field == FILE_FIELD
    assert error.problem.startswith(repr(str(path)))
    assert error.problem.endswith(problem)
    assert error.fix


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yml"
    error = error_of(CondaDependencies, path)
    assert str(error) == (
        f"CondaDependencies.conda_dependencies_file_path: cannot read conda specification file {str(path)!r}: "
        "No such file or directory. Fix: pass the path of an existing, readable conda environment file "
        "(environment.yml)."
    )


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "environment.yml"
    path.write_bytes(b"name: caf\xe9\ndependencies:\n  - numpy\n")
    error = error_of(CondaDependencies.from_file, path)
    assert str(error) == (
        f"{FILE_FIELD}: conda specification file {str(path)!r} is not UTF-8 text: byte 0xe9 on line 1 cannot be "
        "decoded. Fix: save the file as UTF-8 (conda reads environment files as UTF-8), e.g. iconv -f latin1 -t utf-8."
    )


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "environment.yml"
    path.write_bytes("\ufeffname: café\ndependencies:\n  - numpy\n".encode())
    assert CondaDependencies.from_file(path).name == "café"


# --------------------------------------------------------------------------------------------- validation
def test_local_channels(tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    channel.mkdir()
    deps = CondaDependencies.from_string(f"channels:\n  - {channel}\n  - file://{channel}\n  - conda-forge\n")
    deps.validate()
    missing = tmp_path / "nowhere"
    deps = CondaDependencies.from_string(f"channels:\n  - file://{missing}\ndependencies:\n  - numpy\n")
    error = error_of(deps.validate, "environment.python.conda_dependencies")
    assert str(error) == (
        f"environment.python.conda_dependencies.channels: unknown channel 'file://{missing}': the local folder "
        f"{str(missing)!r} does not exist. Fix: correct the path or create the channel there (conda index {missing}), "
        f"or remove 'file://{missing}' and use a named channel such as conda-forge."
    )


@pytest.mark.parametrize("channel", ["conda forge", "http//x", ""])
def test_validate_bad_channel_syntax(channel: str) -> None:
    deps = CondaDependencies.from_string(f"channels:\n  - '{channel}'\n")
    error = error_of(deps.validate, "environment.python.conda_dependencies")
    assert error.field == "environment.python.conda_dependencies.channels"
    assert error.problem == f"{channel!r} is not a channel."


def test_validate_conda_entries_and_variables() -> None:
    deps = CondaDependencies.from_dict({"conda_packages": ["numpy"], "variables": {"OK": "1"}})
    deps.validate("env")
    deps._conda.append("numpy==")  # as a registry file edited by hand could hold
    error = error_of(deps.validate, "env")
    assert error.field == "env.dependencies"
    assert error.problem == "'numpy==' is not a conda package spec: cannot read the version ''."
    deps._conda.pop()
    deps._variables["1BAD"] = "x"
    error = error_of(deps.validate, "env")
    assert str(error) == (
        "env.variables: '1BAD' is not a valid variable name. Fix: use letters, digits and '_', "
        "not starting with a digit."
    )


# --------------------------------------------------------------------------------------------- translation
def test_translation_table() -> None:
    deps = CondaDependencies.create(
        conda_packages=[
            "python=3.11",
            "pip",
            "pytorch=2.1",
            "py-xgboost",
            "numpy=1.26=py311_0",
            "conda-forge::pandas",
            "setuptools<70",
        ],
        pip_packages=["mlflow"],
        pip_indexurl="https://pypi.example.org/simple",
    )
    translation = translate_to_pip(deps, "env")
    assert translation.python_version == "3.11"
    assert translation.requirements == [
        "torch==2.1.*",
        "xgboost",
        "numpy==1.26",
        "pandas",
        "setuptools<70",
        "--index-url https://pypi.example.org/simple",
        "mlflow",
    ]
    assert translation.notes == [
        "python=3.11 selects the interpreter (Python 3.11); it is not a package to install",
        "pip not installed: pip is the installer the environment builder provides",
        "pytorch=2.1 installed from PyPI as torch==2.1.*",
        "py-xgboost installed from PyPI as xgboost",
        "build string py311_0 of numpy ignored (pip has no build strings)",
        "channel conda-forge of pandas ignored (pip installs from the package index)",
        "setuptools<70 installed as setuptools<70: a virtual environment built by uv or for Python 3.12+ has no "
        "setuptools of its own",
        "channels conda-forge not used: pip installs from PyPI or the index the pip section names",
    ]


def test_translation_without_python_or_channels() -> None:
    deps = CondaDependencies.create(conda_packages=["numpy"])
    deps.remove_channel("conda-forge")
    assert translate_to_pip(deps) == PipTranslation(python_version=None, requirements=["numpy"], notes=[])


def test_translation_refuses_every_conda_only_package_at_once() -> None:
    deps = CondaDependencies.from_string(
        "dependencies:\n- python=3.10\n- cudatoolkit=11.8\n- numpy\n- openblas\n- libcublas\n- cudatoolkit\n- mkl\n"
    )
    error = error_of(translate_to_pip, deps)
    assert str(error) == (
        f"{DEPS_FIELD}: cudatoolkit, openblas, libcublas have no PyPI equivalent, so this specification cannot be "
        "installed with pip on a host without conda. Fix: install micromamba, mamba or conda on the target (or name "
        "it on the connection) so the specification builds as a conda environment, or remove cudatoolkit, openblas, "
        "libcublas from the specification."
    )
    single = CondaDependencies.create(conda_packages=["graphviz"])
    assert error_of(translate_to_pip, single).problem.startswith("graphviz has no PyPI equivalent,")


def test_translation_refuses_alternatives() -> None:
    deps = CondaDependencies.create(conda_packages=["numpy=1.2|1.3"])
    error = error_of(translate_to_pip, deps)
    assert error.field == DEPS_FIELD
    assert (
        error.problem == "'numpy=1.2|1.3' allows alternative versions (=1.2|1.3), which one pip requirement "
        "cannot express."
    )


def test_virtual_packages_of_another_machine_come_from_what_it_reports() -> None:
    from airflow_provider.core.environments.conda_builder import virtual_packages_for

    assert virtual_packages_for("x86_64", "glibc 2.36", "6.1.0-18-amd64", "12.4") == [
        "__archspec=1=x86_64", "__cuda=12.4=0", "__glibc=2.36=0", "__linux=6.1.0=0", "__unix=0=0"]
    # musl, an unreadable kernel release, no GPU driver: only what is known.
    assert virtual_packages_for("aarch64", None, "", None) == ["__archspec=1=aarch64", "__unix=0=0"]


def test_targets_keep_their_conda_mode_in_their_spec_and_refuse_unknown_ones() -> None:
    from airflow_provider.core import ConfigurationError
    from airflow_provider.core.targets.docker import DockerTarget
    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings

    ssh = SSHTarget(SSHSettings("h"), conda="translate", build_timeout_seconds=60)
    again = SSHTarget.from_spec(ssh.to_spec(), secrets={})
    assert again.conda == "translate" and again.build_timeout_seconds == 60
    assert DockerTarget.from_spec(DockerTarget(conda="rattler").to_spec()).conda == "rattler"
    with pytest.raises(ConfigurationError, match='"auto", "rattler" or "translate"'):
        SSHTarget(SSHSettings("h"), conda="mamba")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match='"auto", "rattler" or "translate"'):
        DockerTarget(conda="mamba")  # type: ignore[arg-type]


def test_a_docker_connection_names_its_conda_mode() -> None:
    from airflow_provider.hooks.docker_options import docker_target_settings

    assert docker_target_settings("d", None, None, None, {})["conda"] == "auto"
    assert docker_target_settings("d", None, None, None, {"conda": "translate"})["conda"] == "translate"
    with pytest.raises(ConfigurationError) as caught:
        docker_target_settings("d", None, None, None, {"conda": "mamba"})
    assert "extra" in caught.value.field and "conda" in caught.value.field and "translate" in str(caught.value)


def test_the_input_cache_volume_field_defaults_turns_off_and_refuses_a_bad_name() -> None:
    from airflow_provider.core.targets.docker import DockerTarget
    from airflow_provider.hooks.docker_options import docker_target_settings

    assert docker_target_settings("d", None, None, None, {})["input_cache_volume"] == "training-runs-inputs"
    assert docker_target_settings("d", None, None, None, {"input_cache_volume": "none"})["input_cache_volume"] is None
    assert docker_target_settings("d", None, None, None, {"input_cache_volume": "data.cache"})[
        "input_cache_volume"] == "data.cache"
    with pytest.raises(ConfigurationError) as caught:
        docker_target_settings("d", None, None, None, {"input_cache_volume": "my cache"})
    assert caught.value.field == "connection 'd' extra.input_cache_volume" and '"none"' in str(caught.value)
    with pytest.raises(ConfigurationError, match="input_cache_volume"):
        DockerTarget(input_cache_volume="/var/lib/cache")
    for volume in ("data.cache", None):  # the finalizer rebuilds the target from its spec
        assert DockerTarget.from_spec(DockerTarget(input_cache_volume=volume).to_spec()).input_cache_volume == volume
