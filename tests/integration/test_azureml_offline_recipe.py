"""The offline recipe of ``docs/migrating-from-azureml-v1.md``, run as the page writes it.

``PYTHONPATH=$(python -m airflow_provider.compat.azureml) python train.py`` makes
``from azureml.core import Run`` work in a script run outside any submitted run. The folder printed
is a standalone copy (standard library only) in the provider's cache, so the script's Python may be
another one, without the provider: here a fresh virtual environment of another interpreter (the
oldest the runtime supports when there is one). In the provider's own environment the copy must
defer to the installed package, never shadow it.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "migrating-from-azureml-v1.md"
PROVIDER_PYTHON = "/path/to/provider-venv/bin/python"
"""The doc's placeholders for the two interpreters of the recipe."""
SCRIPT_PYTHON = "/path/to/script-venv/bin/python"
RECIPE_MODULE = "-m airflow_provider.compat.azureml)"

SCRIPT = """\
import json, sys
from azureml.core import Run

run = Run.get_context()
run.log("x", 1.0)
import airflow_provider
import airflow_provider.compat.azureml.run as v1_run
print(json.dumps({
    "id": run.id,
    "offline": run.is_offline,
    "experiment": run.experiment.name,
    "same_run_class": Run is v1_run.Run,
    "package": airflow_provider.__file__,
    "run_module": v1_run.__file__,
    "azureml": sys.modules["azureml"].__file__,
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & {"airflow", "mlflow", "numpy"}),
}))
"""


def recipe_lines() -> list[str]:
    """The recipe's command lines in the doc."""
    lines = [line.strip() for line in DOC.read_text().splitlines()
             if line.strip().startswith("PYTHONPATH=$(") and RECIPE_MODULE in line]
    assert len(lines) == 2, f"the doc's offline recipe changed: {lines}"
    return lines


def _base_python() -> str:
    """Another interpreter than this one: the oldest the runtime supports (3.9) where pyenv has it,
    else the system's, else the one this environment was made from."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [*sorted(glob.glob(os.path.join(pyenv, "versions", "3.9.*", "bin", "python3"))), "/usr/bin/python3",
                  getattr(sys, "_base_executable", sys.executable)]
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and subprocess.run(
                [candidate, "-c", "import sys, venv; assert sys.version_info >= (3, 9)"],
                capture_output=True).returncode == 0:
            return candidate
    pytest.fail(f"no Python >= 3.9 with venv among {candidates}")


@pytest.fixture(scope="module")
def script_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment without the provider (nor pip): the script's interpreter."""
    venv = tmp_path_factory.mktemp("script-venv")
    subprocess.run([_base_python(), "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True,
                   timeout=120)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import airflow_provider"], capture_output=True, text=True,
                           env=script_environment(), cwd=venv)  # not the work tree: -c puts the cwd on sys.path
    assert "No module named 'airflow_provider'" in probe.stderr, "the other environment must not have the provider"
    return python


def script_environment() -> dict[str, str]:
    """This process's environment without a run's variables or a path of its own, the provider's
    environment first on PATH (``python`` is its interpreter, as in a shell where it is active)."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("TRAINING_RUN_", "MLFLOW_", "AZUREML_"))
                   and key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    return environment


def run_recipe(line: str, folder: Path) -> dict[str, object]:
    (folder / "train.py").write_text(SCRIPT)
    result = subprocess.run(["bash", "-c", line], cwd=folder, capture_output=True, text=True, timeout=120,
                            env=script_environment())
    assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr[-3000:]}"
    assert "Attempted to log scalar metric x:\n1.0\n" in result.stdout, "the offline run prints what it logs"
    outcome: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def printed_folder() -> Path:
    result = subprocess.run([sys.executable, "-m", "airflow_provider.compat.azureml"], capture_output=True,
                            text=True, timeout=120, env=script_environment(), check=True)
    return Path(result.stdout.strip())


def test_the_recipe_runs_a_v1_script_in_another_python_without_the_provider(script_python: Path,
                                                                               tmp_path: Path) -> None:
    _, two_interpreters = recipe_lines()
    line = (two_interpreters.replace(PROVIDER_PYTHON, shlex.quote(sys.executable))
            .replace(SCRIPT_PYTHON, shlex.quote(str(script_python))))
    outcome = run_recipe(line, tmp_path)

    folder = printed_folder()
    assert folder.parent == Path(os.environ["TRAINING_RUNS_CACHE"]) / "azureml-offline"
    assert folder.name.startswith(f"{airflow_provider.__version__}-")
    assert str(outcome["id"]).startswith("OfflineRun_") and outcome["offline"] is True
    assert outcome["experiment"] == "OfflineExperiment" and outcome["same_run_class"] is True
    assert outcome["package"] == str(folder / "airflow_provider" / "__init__.py")
    assert outcome["azureml"] == str(folder / "azureml" / "__init__.py")
    assert outcome["heavy"] == []
    assert printed_folder() == folder, "made once per version and content"


def test_the_recipe_in_the_providers_environment_imports_the_real_package(tmp_path: Path) -> None:
    one_interpreter, _ = recipe_lines()
    outcome = run_recipe(one_interpreter, tmp_path)

    real = Path(airflow_provider.__file__).resolve().parent
    assert outcome["package"] == str(real / "__init__.py"), "the copy must not shadow the installed package"
    assert outcome["run_module"] == str(real / "compat" / "azureml" / "run.py")
    assert outcome["same_run_class"] is True and outcome["heavy"] == []
    assert outcome["azureml"] == str(printed_folder() / "azureml" / "__init__.py")


def test_a_changed_layer_gets_a_new_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_provider.runtime
    from airflow_provider.compat.azureml import offline_path

    first = Path(offline_path())
    shipped = airflow_provider.runtime.job_files(azureml_compat=True)
    changed = {**shipped, "runtime/airflow_provider/compat/azureml/run.py":
               shipped["runtime/airflow_provider/compat/azureml/run.py"] + b"\n# changed\n"}
    monkeypatch.setattr(airflow_provider.runtime, "job_files", lambda azureml_compat=False: changed)
    second = Path(offline_path())
    assert second != first and second.parent == first.parent
    assert (second / "airflow_provider" / "compat" / "azureml" / "run.py").read_bytes().endswith(b"# changed\n")
    assert (first / "airflow_provider" / "compat" / "azureml" / "run.py").read_bytes() == \
        shipped["runtime/airflow_provider/compat/azureml/run.py"]
    assert not [p.name for p in first.parent.iterdir() if p.name.startswith(".")], "no scratch folder left"
    shutil.rmtree(second)
