"""The training operator's OpenLineage methods, through the real OpenLineage provider's classes and its
default extractor (the provider is installed with the test extra; no transport is configured)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow_provider.core import Input, Output
from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator


def _operator(tmp_path: Path) -> SubmitTrainingRunOperator:
    from airflow.sdk import DAG

    with DAG("lineage", schedule=None, start_date=datetime(2026, 1, 1)):
        return SubmitTrainingRunOperator(
            task_id="train", source_directory=str(tmp_path), script="train.py",
            inputs={"train": Input("s3://raw/churn/2026-01-01/"), "base": Input("models:/clf@champion")},
            outputs={"model": Output("sftp://models.example:2222/srv/models/{run_id}/")})


def test_on_complete_names_the_datasets_the_run_read_and_wrote(tmp_path: Path) -> None:
    """After a run, the facets name the URIs recorded on it (outputs with the run id filled in), by
    OpenLineage's naming rules."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    operator = _operator(tmp_path)
    operator._data_uris = {"inputs": ["s3://raw/churn/2026-01-01/", "/data/local/x.csv"],
                           "outputs": ["sftp://models.example:2222/srv/models/abc123/"]}
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert isinstance(lineage, OperatorLineage)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("s3://raw", "churn/2026-01-01"),
                                                              ("file", "/data/local/x.csv")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file://models.example:2222", "/srv/models/abc123")]


def test_on_failure_before_the_run_names_the_configured_uris(tmp_path: Path) -> None:
    """A task that failed before its run recorded anything still reports what it was to read and write."""
    operator = _operator(tmp_path)
    lineage = operator.get_openlineage_facets_on_failure(None)
    assert {(d.namespace, d.name) for d in lineage.inputs} == {("s3://raw", "churn/2026-01-01"),
                                                              ("mlflow", "models:/clf@champion")}
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file://models.example:2222",
                                                                 "/srv/models/{run_id}")]


def test_the_providers_default_extractor_uses_the_methods(tmp_path: Path) -> None:
    """OpenLineage's own extractor finds the methods and turns them into its lineage (no network call)."""
    from airflow.providers.openlineage.extractors.base import DefaultExtractor

    operator = _operator(tmp_path)
    operator._data_uris = {"inputs": ["s3://raw/a/"], "outputs": ["gs://models/b/"]}
    extracted = DefaultExtractor(operator).extract_on_complete(None)  # type: ignore[arg-type]
    assert extracted is not None
    assert [(d.namespace, d.name) for d in extracted.inputs] == [("s3://raw", "a")]
    assert [(d.namespace, d.name) for d in extracted.outputs] == [("gs://models", "b")]
