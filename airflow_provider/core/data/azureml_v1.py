"""Azure ML v1's data API on the submitting side, mapped onto :class:`Input` and :class:`Output`.

A v1 submission passes datasets in ``arguments``::

    from airflow_provider.core.data.azureml_v1 import Dataset, OutputFileDatasetConfig

    data = Dataset.File.from_files("https://example.org/iris/")
    model = OutputFileDatasetConfig(destination="s3://bucket/models/{run-id}/")
    config = ScriptRunConfig(".", "train.py", arguments=[
        "--data", data.as_named_input("iris").as_download(),   # a local path on the target
        "--out", model.as_upload(),                              # a folder copied there at the end
    ])

:meth:`ScriptRunConfig.validate` turns each such argument into an input or output of the run and
the argument into its path; in the script ``Run.get_context().input_datasets["iris"]`` is the same
path, as in v1. Datastores (``(datastore, "path")``) have no equivalent here: give the storage URI
(``s3://``, ``abfs://``, ``sftp://``, a path) instead.
"""

from __future__ import annotations

import copy
import hashlib
import os
from typing import Any

from airflow_provider.core.data.bindings import Input, Output
from airflow_provider.core.errors import ConfigurationError

__all__ = ["Dataset", "DatasetConsumptionConfig", "FileDataset", "OutputFileDatasetConfig", "binding_of"]


def _uri(field: str, value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (str, os.PathLike)):
        value = os.fspath(value[0])
    if isinstance(value, tuple) or (isinstance(value, list) and value and isinstance(value[0], tuple)):
        raise ConfigurationError(field, "datastores ((datastore, 'path')) have no equivalent outside Azure ML.",
                                 "give the storage URI instead: s3://bucket/path, abfs://container/path, "
                                 "sftp://host/path or a local path.")
    if not isinstance(value, str) or not value:
        raise ConfigurationError(field, f"expected one URI or path, got {value!r}.",
                                 'give one folder or file, e.g. "https://example.org/data/".')
    return value


class FileDataset:
    """Files at one URI (v1's ``FileDataset``).

    :param uri: where the files are.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        """Bind the dataset to the run as the input ``name`` (``input_datasets[name]`` in the script).

        :param name: the input's name.
        """
        return DatasetConsumptionConfig(name, self)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Copy the files to the target before the script starts (an input named after the URI)."""
        return self.as_named_input(_generated_name(self.uri)).as_download(path_on_compute)

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Mount the files read-only where the target can (Docker, Slurm, local)."""
        return self.as_named_input(_generated_name(self.uri)).as_mount(path_on_compute)

    def __repr__(self) -> str:
        return f"FileDataset({self.uri!r})"


def _generated_name(uri: str) -> str:
    return f"input_{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


class _FileDatasetFactory:
    """``Dataset.File``."""

    @staticmethod
    def from_files(path: Any, validate: bool = True, partition_format: str | None = None,
                   is_file: bool = False) -> FileDataset:
        """The files at ``path``: a URL or local path (a one-element list too).

        :param path: the data's URI.
        :param validate: kept for v1 compatibility (the data is checked when the run is staged).
        :param partition_format: not supported (refused when given).
        :param is_file: kept for v1 compatibility.
        """
        if partition_format is not None:
            raise ConfigurationError("Dataset.File.from_files.partition_format", "is not supported.",
                                     "select the partition in the URI instead (a templated {{ ds }} in Airflow).")
        return FileDataset(_uri("Dataset.File.from_files.path", path))


class Dataset:
    """v1's ``Dataset`` entry point: ``Dataset.File.from_files(...)``."""

    File = _FileDatasetFactory()


class DatasetConsumptionConfig:
    """How a run reads a dataset (v1's ``DatasetConsumptionConfig``): its name and mode.

    :param name: the input's name.
    :param dataset: the dataset.
    :param mode: ``direct`` (default, as in v1), ``download`` or ``mount``.
    """

    def __init__(self, name: str, dataset: FileDataset, mode: str = "direct") -> None:
        self.name = name
        self.dataset = dataset
        self.mode = mode

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """This input, copied to the target before the script starts."""
        return self._with_mode("download", path_on_compute)

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """This input, mounted read-only where the target can."""
        return self._with_mode("mount", path_on_compute)

    def _with_mode(self, mode: str, path_on_compute: str | None) -> DatasetConsumptionConfig:
        if path_on_compute is not None:
            raise ConfigurationError(f"{self.name}.path_on_compute", "is not supported: the path is chosen per target.",
                                     "read the path from the argument or Run.get_context().input_datasets.")
        changed = copy.copy(self)
        changed.mode = mode
        return changed

    def binding(self) -> tuple[str, str, Input]:
        """``("inputs", name, Input)`` for the run."""
        return "inputs", self.name, Input(self.dataset.uri, mode=self.mode)

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig({self.name!r}, {self.dataset!r}, mode={self.mode!r})"


class OutputFileDatasetConfig:
    """A folder the run writes and where it goes (v1's ``OutputFileDatasetConfig``).

    :param name: the output's name (``output_datasets[name]``); default made from the destination.
    :param destination: where the folder goes: a URI or path; ``{run-id}`` and ``{output-name}`` are
        filled in. Required (v1's default, the workspace's blob store, has no equivalent).
    :param source: not supported (the folder is chosen per target).
    """

    def __init__(self, name: str | None = None, destination: Any = None, source: str | None = None,
                 partition_format: str | None = None) -> None:
        if destination is None:
            raise ConfigurationError("OutputFileDatasetConfig.destination", "is required here (v1's default is the "
                                     "workspace's blob store).", 'give a URI such as "s3://bucket/out/{run-id}/".')
        if source is not None or partition_format is not None:
            raise ConfigurationError("OutputFileDatasetConfig.source", "source and partition_format are not supported.",
                                     "write to the path the argument (or output_datasets[name]) gives.")
        self.destination = _uri("OutputFileDatasetConfig.destination", destination)
        self.name = name or f"output_{hashlib.sha256(self.destination.encode()).hexdigest()[:8]}"
        self.overwrite = False

    def as_upload(self, overwrite: bool = False, source_globs: Any = None) -> OutputFileDatasetConfig:
        """Copy the folder to the destination when the run ends (also when it fails or is canceled).

        :param overwrite: replace what another run wrote there.
        :param source_globs: not supported (refused when given).
        """
        if source_globs is not None:
            raise ConfigurationError("OutputFileDatasetConfig.as_upload.source_globs", "is not supported.",
                                     "write only what should be copied to the output folder.")
        changed = copy.copy(self)
        changed.overwrite = overwrite
        return changed

    def as_mount(self, disable_metadata_cache: bool = False) -> OutputFileDatasetConfig:
        """v1's default mode: here the folder is copied when the run ends, like :meth:`as_upload`."""
        return copy.copy(self)

    def binding(self) -> tuple[str, str, Output]:
        """``("outputs", name, Output)`` for the run."""
        return "outputs", self.name, Output(self.destination, overwrite=self.overwrite)

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig(name={self.name!r}, destination={self.destination!r})"


def binding_of(argument: object) -> tuple[str, str, Input | Output] | None:
    """The input or output an argument stands for (v1 dataset objects), or None for a plain argument.

    :param argument: one item of ``ScriptRunConfig.arguments``.
    """
    if isinstance(argument, FileDataset):
        argument = argument.as_named_input(_generated_name(argument.uri))
    if isinstance(argument, (DatasetConsumptionConfig, OutputFileDatasetConfig)):
        return argument.binding()
    return None
