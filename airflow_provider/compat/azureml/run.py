"""Azure ML v1's ``Run`` (script side) on the provider's run context.

The surface real v1 training scripts use is mapped as follows; anything else raises
:class:`NotImplementedError` naming the v1 API and what to use instead, never a silent no-op.

===============================  ===============================================================
v1                               here
===============================  ===============================================================
``Run.get_context()``            the submitted run; outside one an offline run that prints
``log`` / ``log_list``           MLflow metrics (a series per name); a **string** value becomes
                                 the run tag of that name, as MLflow metrics are numeric
``log_row`` / ``log_table``      the artifact ``tables/<name>.json``
``log_image``                    the artifact ``images/<name>.png`` (a file or a matplotlib plot)
``tag`` / ``set_tags``           MLflow tags
``add_properties``               MLflow tags (MLflow has no separate properties)
``upload_file/upload_folder``    artifacts under ``name``
``complete()`` / ``fail()``      a child run ends; the run itself ends when its script does, Failed
                                 if it called ``fail()``
``create_children/child_run``    nested MLflow runs (tag ``mlflow.parentRunId``)
``id`` / ``parent``              v1-style ids: the MLflow run id; a child's is ``<parent id>_<n>``
``experiment.name``              the MLflow experiment's name
``get_secret(s)``                the run's secret environment variables
``register_model``               a version in the MLflow model registry, from the run's artifact
===============================  ===============================================================

Only the standard library is imported (numpy scalars and matplotlib figures work because the script
passes them in).
"""

from __future__ import annotations

import os
import posixpath
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from itertools import count
from typing import IO, Any

from airflow_provider.runtime.events import ChildRunEvent, EndRunEvent, ModelEvent, encode_event
from airflow_provider.runtime.run_context import Run as _ContextRun

__all__ = ["Experiment", "Model", "Run", "UnsupportedV1API", "unsupported_name"]

SECRET_NAMES_VARIABLE = "TRAINING_RUN_SECRET_NAMES"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}\Z")
_CHILD_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}\Z")

_INSTEAD = {
    # azureml.core names a training script may import
    "Workspace": "a training script needs no workspace: pass data paths as arguments and log with "
                 "Run.get_context()",
    "Experiment": "submit runs from outside the script with airflow_provider.core.Experiment",
    "ScriptRunConfig": "use airflow_provider.core.ScriptRunConfig outside the script",
    "Environment": "use airflow_provider.core.Environment outside the script",
    "Dataset": "bind the data to the run (ScriptRunConfig inputs=..., or Dataset.File.from_files(...)"
               ".as_named_input(name).as_download() from airflow_provider.core.data.azureml_v1 in the arguments) "
               "and read Run.get_context().input_datasets[name] or the path argument",
    "Datastore": "pass the data's path or URL as an argument (arguments=[...]) and read it directly",
    "Model": "register models with run.register_model(name, path); load them with mlflow outside the script",
    "ComputeTarget": "choose the target with compute_target= on ScriptRunConfig / SubmitTrainingRunOperator",
    # Run methods and properties
    "workspace": "a training script needs no workspace: pass data paths as arguments",
    "get_metrics": "read metrics outside the script with ScriptRun.get_metrics() or mlflow",
    "get_details": "read details outside the script with ScriptRun.get_details()",
    "get_status": "the script's run is running while the script runs",
    "wait_for_completion": "wait outside the script with ScriptRun.wait_for_completion()",
    "cancel": "cancel outside the script with ScriptRun.cancel() (or mark the Airflow task failed)",
    "download_file": "read the file from the job's working folder, or download it outside the script",
    "download_files": "read the files from the job's working folder, or download them outside the script",
    "get_file_names": "list artifacts outside the script with ScriptRun.get_file_names()",
    "log_accuracy_table": "log the table with run.log_table(name, {...}) or run.upload_file",
    "log_confusion_matrix": "log the matrix with run.log_table(name, {...}) or run.upload_file",
    "log_predictions": "log the values with run.log_table(name, {...})",
    "log_residuals": "log the values with run.log_table(name, {...})",
    "get_environment": "the environment is set outside the script (ScriptRunConfig.environment)",
    "submit_child": "create child runs with run.child_run() / run.create_children() and run their work here",
}


class UnsupportedV1API(NotImplementedError, AttributeError):
    """An Azure ML v1 method or property outside the compatibility layer's surface.

    A :class:`NotImplementedError` whose message names the v1 API and what to use instead; also an
    :class:`AttributeError`, so ``hasattr(run, "get_metrics")`` is False for code that probes.
    """


def unsupported_name(where: str, name: str, attribute: bool = False) -> Exception:
    """The error for a v1 name outside the supported surface (AttributeError for private names).

    :param where: the v1 module or class, e.g. ``"azureml.core"`` or ``"azureml.core.Run"``.
    :param name: the attribute asked for.
    :param attribute: an attribute of an object (:class:`UnsupportedV1API`), not a module's name
        (a plain :class:`NotImplementedError`: ``from azureml.core import Workspace`` would turn an
        AttributeError into an ImportError without the message).
    """
    if name.startswith("_"):
        return AttributeError(f"{where} has no attribute {name!r}")
    instead = _INSTEAD.get(name, "see docs/migrating-from-azureml-v1.md for what is supported and the alternatives")
    error = UnsupportedV1API if attribute else NotImplementedError
    return error(
        f"{where}.{name} (Azure ML v1) is not supported by the azureml_compat layer of airflow-provider-training-runs;"
        f" instead: {instead}."
    )


class Experiment:
    """The experiment of a run (``run.experiment``): its ``name`` and MLflow ``id``.

    :param name: the MLflow experiment's name.
    :param experiment_id: the MLflow experiment id (None offline).
    """

    def __init__(self, name: str, experiment_id: str | None) -> None:
        self.name = name
        self.id = experiment_id

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, id={self.id!r})"

    def __getattr__(self, name: str) -> Any:
        raise unsupported_name("azureml.core.Experiment", name, attribute=True)


class Model:
    """What ``run.register_model`` returns: the model version is assigned when the watcher registers
    it in MLflow (at once when the artifact exists, else once ``./outputs`` is uploaded).

    :param name: the registered model's name.
    :param path: the artifact path it was registered from.
    :param run_id: the run whose artifact it is.
    """

    def __init__(self, name: str, path: str, run_id: str) -> None:
        self.name = name
        self.path = path
        self.run_id = run_id
        self.version: int | None = None

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, path={self.path!r}, run_id={self.run_id!r})"


class Run(_ContextRun):
    """Azure ML v1's ``azureml.core.Run`` inside a training script. Get it with :meth:`get_context`."""

    _compat_context: Run | None = None
    _compat_lock = threading.Lock()

    def __init__(self, events_file: str | None, uploads_dir: str | None, run_id: str | None) -> None:
        super().__init__(events_file, uploads_dir, run_id)
        self._parent: Run | None = None
        self._child_counter = count()
        self._uploaded: set[str] = set()
        self._offline_id = f"OfflineRun_{uuid.uuid4()}"

    @classmethod
    def get_context(cls, allow_offline: bool = True, used_for_context_manager: bool = False,
                    **kwargs: Any) -> Run:
        """The run this script is part of; outside a submitted run an offline run that prints.

        :param allow_offline: when False, raise outside a submitted run (as v1 did).
        :param used_for_context_manager: accepted for v1 compatibility; no effect.
        :param kwargs: accepted for v1 compatibility; no effect.
        """
        with cls._compat_lock:
            if cls._compat_context is None:
                base = _ContextRun.get_context(allow_offline=allow_offline)
                cls._compat_context = cls(None, None, None)
                cls._compat_context.__dict__.update(
                    {k: v for k, v in base.__dict__.items() if k.startswith("_") and k != "_steps"})
                cls._compat_context._steps = base._steps  # one series per name, whichever Run logs it
            return cls._compat_context

    # ------------------------------------------------------------------ identity
    @property
    def id(self) -> str:
        """The run's id: the MLflow run id; a child's ``<parent id>_<n>``; ``OfflineRun_<uuid>`` offline."""
        if self._child:
            return self._child
        return self._run_id or self._offline_id

    @property
    def parent(self) -> Run | None:
        """The parent run of a child run; None for the submitted run itself."""
        return self._parent

    @property
    def experiment(self) -> Experiment:
        """The run's experiment (``name``, ``id``)."""
        name = os.environ.get("AZUREML_ARM_PROJECT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        return Experiment(name or "OfflineExperiment", os.environ.get("MLFLOW_EXPERIMENT_ID"))

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.experiment.name!r})"

    def __getattr__(self, name: str) -> Any:
        raise unsupported_name("azureml.core.Run", name, attribute=True)

    # ------------------------------------------------------------------ properties and files
    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Add properties: they become MLflow tags of the same names (MLflow has no properties).

        :param properties: property name -> value.
        """
        self.set_tags(properties)

    def upload_file(self, name: str, path_or_stream: str | os.PathLike[str] | IO[bytes],
                    datastore_name: str | None = None) -> None:
        """Upload a file as the artifact ``name``.

        :param name: artifact path inside the run, e.g. ``"outputs/model.pkl"``.
        :param path_or_stream: a file path or a binary stream.
        :param datastore_name: not supported (v1 deprecated it); must be None.
        """
        if datastore_name is not None:
            raise NotImplementedError("Run.upload_file(datastore_name=...) (Azure ML v1) is not supported by "
                                      "the azureml_compat layer; instead: leave it out (artifacts go to MLflow).")
        super().upload_file(name, path_or_stream)
        self._uploaded.add(name)

    def upload_folder(self, name: str, path: str | os.PathLike[str], datastore_name: str | None = None) -> None:
        """Upload every file of the folder ``path`` as artifacts under ``name``.

        :param name: artifact folder inside the run.
        :param path: a local folder.
        :param datastore_name: not supported; must be None.
        """
        folder = os.fspath(path)
        if not os.path.isdir(folder):
            raise ValueError(f"run.upload_folder({name!r}, {folder!r}): {folder!r} is not a folder")
        for root, _dirs, files in os.walk(folder):
            for file_name in sorted(files):
                local = os.path.join(root, file_name)
                relative = os.path.relpath(local, folder).replace(os.sep, "/")
                self.upload_file(posixpath.join(name, relative), local, datastore_name)
        self._uploaded.add(name.rstrip("/"))

    # ------------------------------------------------------------------ ending
    def complete(self, _set_status: bool = True) -> None:
        """Complete a child run. The submitted run itself ends when its script ends (as in v1)."""
        if self._child:
            self._emit(EndRunEvent("Completed"), f"Attempted to complete run {self.id}")

    def fail(self, error_details: Any = None, error_code: Any = None, _set_status: bool = True) -> None:
        """Mark the run failed: a child ends Failed now; the submitted run ends Failed when its script
        ends, even with exit code 0.

        :param error_details: why (recorded in the tag ``training.error`` / ``training.fail_requested``).
        :param error_code: kept with the details.
        """
        details = "" if error_details is None else str(error_details)
        if error_code is not None:
            details = f"{details} (error code {error_code})".strip()
        self._emit(EndRunEvent("Failed", details), f"Attempted to fail run {self.id}: {details}")

    # ------------------------------------------------------------------ children
    def child_run(self, name: str | None = None, run_id: str | None = None, outputs: str | None = None) -> Run:
        """Create a child run (a nested MLflow run) whose ``log``, ``tag``, ``complete`` ... work.

        :param name: its display name (default: its id).
        :param run_id: its id (default ``<parent id>_<n>``): letters, digits, ``_ . -``.
        :param outputs: not supported; must be None.
        """
        if outputs is not None:
            raise NotImplementedError("Run.child_run(outputs=...) (Azure ML v1) is not supported by the "
                                      "azureml_compat layer; instead: upload files with child.upload_file().")
        rank = f"rank{self._rank_prefix[len('rank_'):-1]}_" if self._rank_prefix else ""
        key = run_id if run_id is not None else f"{self.id}_{rank}{next(self._child_counter)}"
        if not isinstance(key, str) or not _CHILD_ID.match(key):
            raise ValueError(f"run.child_run(run_id={key!r}): use 1-200 letters, digits, '_', '.' or '-'")
        child = Run(None, None, self._run_id)
        child.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k in ("_events_fd", "_uploads_dir", "_upload_counter", "_rank_prefix",
                                        "_offline_id")})
        child._child = key
        child._parent = self
        if self.is_offline:
            print(f"Attempted to create child run {key}")
        else:
            self._write_lines(encode_event(ChildRunEvent(key, name or key, self._child)), 1)
        return child

    def create_children(self, count: int | None = None, tag_key: str | None = None,
                        tag_values: Iterable[str] | None = None) -> list[Run]:
        """Create ``count`` child runs, or one per value of ``tag_values`` tagged ``tag_key=value``.

        :param count: how many children.
        :param tag_key: a tag set on each child.
        :param tag_values: one child per value.
        """
        values = list(tag_values) if tag_values is not None else None
        if values is not None:
            if not tag_key:
                raise ValueError("run.create_children(tag_values=...) needs tag_key= too")
            number = len(values)
        elif isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            number = count
        else:
            raise ValueError(f"run.create_children needs count= (a whole number, got {count!r}) or tag_key= "
                             "with tag_values=")
        children = [self.child_run() for _ in range(number)]
        for index, value in enumerate(values or []):  # (no zip(strict=): SSH hosts may run Python 3.9)
            children[index].tag(str(tag_key), value)
        return children

    # ------------------------------------------------------------------ secrets and models
    def get_secret(self, name: str) -> str:
        """A secret of the run: one of its secret environment variables.

        Key Vault names may hold ``-``, environment variables not: ``my-key`` also matches
        ``my_key`` and ``MY_KEY``.

        :param name: the secret's name.
        """
        secrets = [s for s in os.environ.get(SECRET_NAMES_VARIABLE, "").split(",") if s]
        candidates = list(dict.fromkeys([name, name.replace("-", "_"), name.replace("-", "_").upper()]))
        for candidate in candidates:
            if (candidate in secrets or self.is_offline) and candidate in os.environ:
                return os.environ[candidate]
        raise LookupError(
            f"run.get_secret({name!r}): the run has no secret variable {' or '.join(candidates)}; pass it in "
            "secret_environment_variables (SubmitTrainingRunOperator) or Experiment.submit(secret_variables=...)"
        )

    def get_secrets(self, secrets: Iterable[str]) -> dict[str, str]:
        """Several secrets at once (see :meth:`get_secret`).

        :param secrets: their names.
        """
        return {name: self.get_secret(name) for name in secrets}

    def register_model(self, model_name: str, model_path: str | None = None, tags: Mapping[str, Any] | None = None,
                       properties: Mapping[str, Any] | None = None, model_framework: str | None = None,
                       model_framework_version: str | None = None, description: str | None = None,
                       datasets: Any = None, sample_input_dataset: Any = None, sample_output_dataset: Any = None,
                       resource_configuration: Any = None, **kwargs: Any) -> Model:
        """Register the run's artifact ``model_path`` as a new version of ``model_name`` (MLflow's
        model registry). Files under ``./outputs`` are registered once they are uploaded at the end.

        :param model_name: the model's name.
        :param model_path: the artifact path, e.g. ``"outputs/model.pkl"`` or an uploaded name.
        :param tags: tags of the model version.
        :param properties: more tags of the model version.
        :param model_framework: recorded as the tag ``model_framework``.
        :param model_framework_version: recorded as the tag ``model_framework_version``.
        :param description: the version's description.
        """
        unsupported = {"datasets": datasets, "sample_input_dataset": sample_input_dataset,
                       "sample_output_dataset": sample_output_dataset,
                       "resource_configuration": resource_configuration, **kwargs}
        for parameter, value in unsupported.items():
            if value is not None:
                raise NotImplementedError(f"Run.register_model({parameter}=...) (Azure ML v1) is not supported by "
                                          "the azureml_compat layer; instead: leave it out.")
        if not isinstance(model_name, str) or not _MODEL_NAME.match(model_name):
            raise ValueError(f"run.register_model({model_name!r}): a model name is 1-255 letters, digits, "
                             "'_', '.' or '-', starting with a letter or digit")
        if not isinstance(model_path, (str, os.PathLike)) or not os.fspath(model_path):
            raise ValueError(f"run.register_model({model_name!r}): pass model_path, the artifact to register, "
                             "e.g. 'outputs/model.pkl'")
        path = posixpath.normpath(os.fspath(model_path).replace(os.sep, "/"))
        if path == "." or path.startswith(("/", "../")) or not self._has_artifact(path):
            raise ValueError(
                f"run.register_model({model_name!r}, {os.fspath(model_path)!r}): the run has no such artifact; "
                "write it under ./outputs, or upload it first with run.upload_file(name, path)"
            )
        all_tags = {str(k): str(v) for k, v in {**(properties or {}), **(tags or {})}.items()}
        if model_framework:
            all_tags["model_framework"] = model_framework
        if model_framework_version:
            all_tags["model_framework_version"] = model_framework_version
        self._emit(ModelEvent(model_name, path, all_tags, description or ""),
                   f"Attempted to register model {model_name} from {path}")
        return Model(model_name, path, self.id)

    def _has_artifact(self, path: str) -> bool:
        if any(path == name or name.startswith(path + "/") or path.startswith(name + "/")
               for name in self._uploaded):
            return True
        # ./outputs of the submitted run is uploaded when it ends; offline, any local file will do
        return (self.is_offline or (not self._child and (path == "outputs" or path.startswith("outputs/")))) \
            and os.path.exists(path)
