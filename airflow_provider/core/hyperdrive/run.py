"""``HyperDriveRun``: the handle of a submitted sweep (Azure ML v1's ``HyperDriveRun``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_provider.core.errors import ConfigurationError, RunFailedError
from airflow_provider.core.hyperdrive.driver import SweepDriver, prefixed
from airflow_provider.core.hyperdrive.sweep import Sweep
from airflow_provider.core.tracking import RunState, Tags
from airflow_provider.core.watcher import OutputSink

if TYPE_CHECKING:
    from airflow_provider.core.hyperdrive.config import HyperDriveConfig
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.submit import Experiment

__all__ = ["HyperDriveRun", "submit_sweep"]


def submit_sweep(experiment: Experiment, config: HyperDriveConfig, tags: dict[str, str] | None = None,
                 run_key: str | None = None, run_name: str | None = None,
                 secret_variables: dict[str, str] | None = None, *, reattach: bool = True,
                 params: dict[str, str] | None = None) -> HyperDriveRun:
    """Validate ``config``, create (or pick up, by ``run_key``) the parent run and launch the first trials.

    :param experiment: where the sweep runs.
    :param config: the sweep.
    :param tags: extra tags for the parent and every trial.
    :param run_key: a stable key; a sweep with this key that has not ended Failed or Canceled is
        picked up: its finished trials are kept, its running ones reattached.
    :param run_name: the parent run's display name (trials are ``<name>_<index>``).
    :param secret_variables: variables for every trial's process, never written to MLflow.
    :param reattach: must be True: a sweep with ``run_key`` is always picked up (pass another
        ``run_key``, or none, for a new sweep).
    :param params: must be None: each trial's params are its sampled hyperparameters.
    :raises ConfigurationError: before the parent run exists, for a bad configuration (also for
        ``reattach=False`` or ``params``, which a sweep cannot honour).
    :raises TrackingUnavailableError: the tracking server did not answer (retryable).

    Any error once the parent run exists (a trial that cannot be sampled, staged or launched) stops
    the trials already started and ends the parent Failed (Canceled for an interrupt) before it is
    raised.
    """
    from airflow_provider.core.submit import validate_secret_variables

    _refuse_run_only_arguments(reattach, params)
    settings = config.validate()
    secrets = validate_secret_variables(secret_variables)
    experiment.tracker.check_reachable()
    sweep = Sweep.start(experiment, settings, run_key, run_name, tags)
    run = HyperDriveRun(sweep, config, tags, secrets)
    if not sweep.state().is_terminal:
        try:
            run.driver.launch_ready()
        except BaseException as exc:  # never leave the parent Running for an error while the sweep starts
            run.end_early(exc)
            raise
    return run


def _refuse_run_only_arguments(reattach: bool, params: dict[str, str] | None) -> None:
    """Refuse the arguments of ``Experiment.submit`` that only a single run can honour.

    :param reattach: ``Experiment.submit``'s ``reattach``.
    :param params: ``Experiment.submit``'s ``params``.
    """
    if reattach is not True:
        raise ConfigurationError(
            "Experiment.submit.reattach", "is False, but a sweep is always picked up by its run_key: a retry "
            "keeps its finished trials.", "leave reattach=True; pass another run_key (or none) to start a new sweep.")
    if params is not None:
        raise ConfigurationError(
            "Experiment.submit.params", "is set, but each trial of a sweep records its sampled hyperparameters "
            "as its params.", "leave params unset; add fixed values to the run config's arguments or as tags.")


class HyperDriveRun:
    """A sweep: its parent run, its trials and their best.

    Trials are launched and watched while :meth:`wait_for_completion` runs (the Airflow operator
    calls it); a trial already running goes on by itself, and a later ``wait_for_completion``, in
    this or another process, reattaches to it.

    :param sweep: the sweep's MLflow side.
    :param config: its configuration (None: only results can be read).
    :param tags: extra tags for the trials.
    :param secret_variables: variables for every trial's process.
    """

    def __init__(self, sweep: Sweep, config: HyperDriveConfig | None = None, tags: dict[str, str] | None = None,
                 secret_variables: dict[str, str] | None = None) -> None:
        self.sweep = sweep
        self.config = config
        self._tags = tags
        self._secret_variables = secret_variables
        self._driver: SweepDriver | None = None

    def __repr__(self) -> str:
        return f"HyperDriveRun(id={self.id!r}, experiment={self.experiment.name!r})"

    @property
    def id(self) -> str:
        """The parent run's id."""
        return self.sweep.parent_run_id

    @property
    def experiment(self) -> Experiment:
        """The experiment the sweep runs in."""
        return self.sweep.experiment

    @property
    def driver(self) -> SweepDriver:
        """The driver that launches and watches trials (created on first use)."""
        if self._driver is None:
            if self.config is None:
                raise ConfigurationError(
                    "HyperDriveRun", f"sweep {self.id} was loaded by its id, without its HyperDriveConfig: this "
                    "handle cannot launch or watch its trials.",
                    "wait for it where it was submitted (its Airflow task, or `training-runs submit` in the "
                    "background), or read its results with get_details() / get_children().")
            self._driver = SweepDriver(self.sweep, self.config.run_config, tags=self._tags,
                                       secret_variables=self._secret_variables)
        return self._driver

    # ------------------------------------------------------------------ control
    def get_status(self) -> str:
        """The parent run's detailed state (``Running``, ``Completed``, ...)."""
        return self.sweep.state().value

    def wait_for_completion(self, show_output: bool = False, raise_on_error: bool = True,
                            output: OutputSink | None = None, poll_interval: float = 0.02) -> dict[str, Any]:
        """Run the sweep to its end: launch, watch and finalize trials; record the best on the parent.

        :param show_output: print every trial's output, prefixed ``[trial N]``.
        :param raise_on_error: raise :class:`RunFailedError` when no trial completed.
        :param output: a callable receiving each output line (instead of printing).
        :param poll_interval: seconds between two rounds of polling the running trials.
        :return: the parent's status, the best trial and every trial's result.
        """
        if not self.sweep.state().is_terminal:
            driver = self.driver
            driver.output = output or (print if show_output else None)
            driver.poll_interval = poll_interval
            for trial in driver.active.values():  # launched by submit(), before an output was known
                if driver.output is not None and trial.watcher.output is None:
                    trial.watcher.output = prefixed(driver.output, f"[trial {trial.index}] ")
            try:
                driver.run()
            except ConfigurationError as exc:  # a trial no retry can sample or configure: the sweep fails
                self.end_early(exc)
                raise
        details = self.get_details()
        if raise_on_error and details["status"] != RunState.COMPLETED.value:
            raise RunFailedError.for_status(self.id, details["status"], details.get("error") or "no trial completed")
        return details

    def end_early(self, error: BaseException) -> None:
        """End the sweep because of ``error``: stop its trials (see :meth:`SweepDriver.wind_down`) and
        end the parent Failed with the error (Canceled for an interrupt such as a task kill). Never
        raises: the caller raises ``error``.

        :param error: what ended the sweep.
        """
        if self._driver is not None:
            self._driver.wind_down(error)
        self.sweep.end_early(error)

    def running_trials(self) -> list[ScriptRun]:
        """The trials whose jobs run now (a task kill starts their detached finalizers first)."""
        return [] if self._driver is None else [trial.run for trial in list(self._driver.active.values())]

    def abort(self, reason: str) -> list[ScriptRun]:
        """Stop at once, from a signal handler or another thread (a task kill): ask every running
        trial's job to stop, discard staged trials, end the sweep Canceled; collect nothing.

        :param reason: why.
        :return: the trials that were running (finalize them elsewhere, e.g. in the background).
        """
        running: list[ScriptRun] = []
        if self._driver is not None:
            running = [trial.run for trial in self._driver.active.values()]
            self._driver.abort(reason)
        if not self.sweep.state().is_terminal:
            self.sweep.finish(RunState.CANCELED, stopped=reason)
        return running

    def cancel(self, reason: str = "the sweep was canceled") -> None:
        """Stop the trials this handle is running (each ends Canceled) and end the sweep Canceled.

        :param reason: recorded on each stopped trial.
        """
        if self._driver is not None:
            self._driver.stop(reason)
            while self._driver.active:
                self._driver.step()
                time.sleep(self._driver.poll_interval)
        if not self.sweep.state().is_terminal:
            self.sweep.finish(RunState.CANCELED, stopped=reason)
        if self._driver is None:  # a handle loaded by id: the sweep's driver (elsewhere) stops its trials when
            for result in self.sweep.results():  # it sees the parent ended; trials of this machine stop now too
                trial = self.experiment.handle_for(self.experiment.tracker.get_run(result.run_id))
                if not isinstance(trial, HyperDriveRun) and trial.handle is not None:
                    trial.cancel(wait=False)

    # ------------------------------------------------------------------ results
    def get_details(self) -> dict[str, Any]:
        """The parent's status, the best trial, every trial's result."""
        parent = self.sweep.parent()
        tags = parent.data.tags
        best = self.sweep.best()
        return {
            "runId": self.id,
            "experimentId": parent.info.experiment_id,
            "status": tags.get(Tags.STATE, RunState.QUEUED.value),
            "error": tags.get(Tags.ERROR),
            "stopped": tags.get(Tags.SWEEP_STOPPED),
            "primaryMetricName": self.sweep.settings.primary_metric_name,
            "primaryMetricGoal": self.sweep.settings.primary_metric_goal.value,
            "bestRun": None if best is None else best.to_dict(),
            "trials": [r.to_dict() for r in self.sweep.results()],
        }

    def get_children(self) -> list[ScriptRun]:
        """Every trial's run, by trial index."""
        from airflow_provider.core.script_run import ScriptRun

        return [ScriptRun(self.experiment, r.run_id, None, None) for r in self.sweep.results()]

    def get_metrics(self) -> dict[str, dict[str, float | list[float]]]:
        """Trial run id -> its metrics (one value, or the series)."""
        return {child.id: child.get_metrics() for child in self.get_children()}

    def get_children_sorted_by_primary_metric(self, top: int = 0, reverse: bool = False,
                                              discard_no_metric: bool = False) -> list[dict[str, Any]]:
        """Trials best first by their best primary metric value (as Azure ML v1's method).

        :param top: keep only this many (0: all).
        :param reverse: worst first instead.
        :param discard_no_metric: leave out trials that reported no primary metric.
        :return: dicts with ``run_id``, ``trial_index``, ``hyperparameters``, ``status`` and
            ``best_primary_metric``.
        """
        return [r.to_dict() for r in self.sweep.sorted_results(top, reverse, discard_no_metric)]

    def get_best_run_by_primary_metric(self, include_failed: bool = True,
                                       include_canceled: bool = True) -> ScriptRun | None:
        """The trial with the best primary metric value, or None when no trial reported it.

        :param include_failed: consider trials that ended Failed.
        :param include_canceled: consider trials that ended Canceled (early-terminated ones did).
        """
        from airflow_provider.core.script_run import ScriptRun

        best = self.sweep.best(include_failed, include_canceled)
        return None if best is None else ScriptRun(self.experiment, best.run_id, None, None)

