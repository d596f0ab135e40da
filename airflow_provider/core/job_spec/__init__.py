"""Job files: Azure ML v2 command and sweep job YAML, and MLflow ``MLproject`` files, loaded into the
run descriptions the core takes (:class:`~airflow_provider.core.config.ScriptRunConfig`,
:class:`~airflow_provider.core.hyperdrive.config.HyperDriveConfig`)::

    from airflow_provider.core.job_spec import load_job

    job = load_job("examples/jobs/train.yml")
    run = Experiment(job.experiment_name).submit(job.script_run_config(), job.run_tags(),
                                                 run_name=job.run_name)   # or job.submit()

Every problem of a file is reported at once (:class:`JobFileError`), each with its file, line,
column, field and fix. ``docs/job-yaml.md`` describes every field and what it maps to.

==================  ===========================================================================
module              its one job
==================  ===========================================================================
``nodes``           YAML into located values (file, line, column); overrides
``problems``        collect every problem; typed field readers; :class:`JobFileError`
``spec``            :class:`JobSpec` and its parts; building the core's objects
``commands``        a command's placeholders, and the script or shell form the core runs
``data``            ``inputs`` and ``outputs``, Azure ML's modes mapped to the core's
``environments``    ``environment``: a registered or curated name, or an inline definition
``command_job``     the fields every job has; one run (code, command, distribution, resources)
``sweep_job``       ``type: sweep``: trial, search space, sampling, objective, early termination
``mlproject``       MLflow ``MLproject`` files: entry point, typed parameters, environment
``loader``          :func:`load_job`: which kind of file, then all of the above
==================  ===========================================================================
"""

from __future__ import annotations

from airflow_provider.core.job_spec.loader import load_job
from airflow_provider.core.job_spec.nodes import Position
from airflow_provider.core.job_spec.problems import JobFileError, JobProblem
from airflow_provider.core.job_spec.spec import CommandSpec, DataInput, DataOutput, JobSpec, SweepSpec

__all__ = [
    "CommandSpec",
    "DataInput",
    "DataOutput",
    "JobFileError",
    "JobProblem",
    "JobSpec",
    "Position",
    "SweepSpec",
    "load_job",
]
