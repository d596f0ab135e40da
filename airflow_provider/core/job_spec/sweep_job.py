"""A sweep job (Azure ML v2's ``type: sweep``) into the core's HyperDrive settings.

``trial`` is a mapping (``command``, ``code``, ``environment``, ``environment_variables``,
``distribution``, ``resources``) or the path of a command job file. ``${{search_space.<name>}}`` in
the trial's command follows a flag; that flag becomes the parameter's name in the core's search
space, so each trial's sampled value replaces the placeholder (a parameter the command does not
use is appended as ``--<name> <value>``, HyperDrive's rule).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider.core.hyperdrive import parameter_expressions as expressions
from airflow_provider.core.hyperdrive.parameter_expressions import ParameterExpression
from airflow_provider.core.hyperdrive.policies import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    TruncationSelectionPolicy,
)
from airflow_provider.core.hyperdrive.sampling import PrimaryMetricGoal, argument_name
from airflow_provider.core.hyperdrive.settings import validate_sweep_settings
from airflow_provider.core.job_spec.command_job import (
    COMMAND_KEYS,
    HEADER_KEYS,
    RUN_KEYS,
    Anchors,
    Header,
    read_header,
    read_run,
)
from airflow_provider.core.job_spec.data import Bindings, read_inputs, read_outputs
from airflow_provider.core.job_spec.nodes import Node
from airflow_provider.core.job_spec.problems import Checker, join
from airflow_provider.core.job_spec.spec import CommandSpec, SamplingKind, SweepSpec

__all__ = ["SWEEP_KEYS", "Sweep", "read_sweep"]

SWEEP_KEYS = (*HEADER_KEYS, "trial", "search_space", "sampling_algorithm", "objective", "early_termination",
              "limits", "inputs", "outputs")
_TRIAL_KEYS = ("type", *RUN_KEYS)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_AT_TOP = "belongs at the sweep's top level"
_TRIAL_ELSEWHERE = {"inputs": _AT_TOP, "outputs": _AT_TOP, "compute": _AT_TOP, "search_space": _AT_TOP,
                    "limits": f"{_AT_TOP} (limits.trial_timeout)"}
_SPACE: dict[str, tuple[tuple[str, ...], Callable[..., ParameterExpression]]] = {
    "choice": (("values",), expressions.choice),
    "randint": (("upper",), expressions.randint),
    "uniform": (("min_value", "max_value"), expressions.uniform),
    "quniform": (("min_value", "max_value", "q"), expressions.quniform),
    "loguniform": (("min_value", "max_value"), expressions.loguniform),
    "qloguniform": (("min_value", "max_value", "q"), expressions.qloguniform),
    "normal": (("mu", "sigma"), expressions.normal),
    "qnormal": (("mu", "sigma", "q"), expressions.qnormal),
    "lognormal": (("mu", "sigma"), expressions.lognormal),
    "qlognormal": (("mu", "sigma", "q"), expressions.qlognormal),
}
_POLICY_KEYS = {
    "bandit": ("type", "slack_factor", "slack_amount", "evaluation_interval", "delay_evaluation"),
    "median_stopping": ("type", "evaluation_interval", "delay_evaluation"),
    "truncation_selection": ("type", "truncation_percentage", "evaluation_interval", "delay_evaluation",
                             "exclude_finished_jobs"),
}
LoadFile = Callable[[Node, str], tuple[Node, Path] | None]
"""Reads the trial file a ``trial:`` value names: its root node and path, or None (problems recorded)."""


@dataclass
class Sweep:
    """A sweep as read.

    :param run: the trials' run.
    :param sweep: the sweep settings.
    :param trial_header: the header of a trial file (its compute, names and tags back the sweep's).
    """

    run: CommandSpec
    sweep: SweepSpec
    trial_header: Header | None


def read_sweep(check: Checker, keys: dict[str, Node], root: Node, job_file: Path, bindings: Bindings,
               anchors: Anchors, load_file: LoadFile) -> Sweep | None:
    """Read a ``type: sweep`` job (its header and top-level inputs and outputs are read by the caller).

    :param check: collects problems.
    :param keys: the file's top-level mapping.
    :param root: that mapping's node.
    :param job_file: the sweep file.
    :param bindings: the sweep's inputs and outputs (the trial file's are added).
    :param anchors: filled with where the core's fields came from.
    :param load_file: reads a trial file.
    """
    space_nodes: dict[str, Node] = {}
    if "search_space" not in keys:
        check.add(root, "search_space", "is required but missing", "add search_space: with the parameters to sweep")
    else:
        found = check.mapping(keys["search_space"], "search_space", known=list(keys["search_space"].value)
                              if keys["search_space"].is_mapping else (), what="a mapping of parameters") or {}
        for name, node in found.items():
            if _NAME.fullmatch(name):
                space_nodes[name] = node
            else:
                check.add(keys["search_space"].key_positions.get(name, node.position), join("search_space", name),
                          "is not a parameter name (used as ${{search_space.<name>}} and as the flag --<name>)",
                          "use letters, digits, '_', '.' and '-', starting with a letter or '_'")
        if keys["search_space"].is_mapping and not found:
            check.add(keys["search_space"], "search_space", "declares no parameter", "add at least one parameter")
    run, flags, trial_header = _trial(check, keys, root, job_file, bindings, anchors, set(space_nodes), load_file)
    space: dict[str, ParameterExpression] = {}
    children: Anchors = {}
    for name, node in space_nodes.items():
        if flags is not None and name not in flags:
            check.add(keys["search_space"].key_positions.get(name, node.position), join("search_space", name),
                      "is not used by trial.command (Azure ML passes a sampled value only where "
                      "${{search_space.<name>}} is written; sweeping it would multiply trials that all run alike)",
                      f"pass it: --{name} ${{{{search_space.{name}}}}} in trial.command, or remove it")
            continue
        flag = argument_name((flags or {}).get(name, name))
        expression = _expression(check, node, join("search_space", name))
        if expression is not None:
            space[flag] = expression
            children[flag] = (node, join("search_space", name))
    sampling, seed = _sampling(check, keys, root)
    metric, goal = _objective(check, keys, root)
    policy = None
    if "early_termination" in keys:
        policy = _policy(check, keys["early_termination"], "early_termination")
    limits = _limits(check, keys.get("limits"))
    if run is None or sampling is None or metric is None or goal is None or len(space) != len(space_nodes) \
            or limits is None or ("early_termination" in keys and policy is None):
        return None
    sweep = SweepSpec(sampling, space, metric, goal, seed, limits.get("max_total_trials"),
                      limits.get("max_concurrent_trials"), limits.get("timeout"), policy)
    where = {"hyperparameter_sampling": (keys.get("sampling_algorithm", root), "sampling_algorithm"),
             "primary_metric_name": (keys.get("objective", root), "objective.primary_metric"),
             "primary_metric_goal": (keys.get("objective", root), "objective.goal"),
             "max_total_runs": (keys.get("limits", root), "limits.max_total_trials"),
             "max_concurrent_runs": (keys.get("limits", root), "limits.max_concurrent_trials"),
             "max_duration_minutes": (keys.get("limits", root), "limits.timeout"),
             "policy": (keys.get("early_termination", root), "early_termination"), **children}
    settings = check.call(root, "", lambda: validate_sweep_settings(
        sweep.parameter_sampling(), metric, goal, sweep.max_total_trials, sweep.max_concurrent_trials,
        None if sweep.timeout_seconds is None else sweep.timeout_seconds / 60, policy, "sweep"), {**children, **where})
    if settings is None:
        return None
    if "trial_timeout" in limits:
        run = dataclasses.replace(run, timeout_seconds=limits["trial_timeout"])
    return Sweep(run, sweep, trial_header)


def _trial(check: Checker, keys: dict[str, Node], root: Node, job_file: Path, bindings: Bindings, anchors: Anchors,
           space: set[str], load_file: LoadFile) -> tuple[CommandSpec | None, dict[str, str] | None, Header | None]:
    if "trial" not in keys:
        check.add(root, "trial", "is required but missing", "add trial: with the command each trial runs")
        return None, None, None
    node, prefix, trial_file, header = keys["trial"], "trial", job_file, None
    if isinstance(node.value, str):
        loaded = load_file(node, "trial")
        if loaded is None:
            return None, None, None
        node, trial_file = loaded
        prefix = ""
        trial_keys = check.mapping(node, prefix, COMMAND_KEYS, what="a command job")
        if trial_keys is None:
            return None, None, None
        header = read_header(check, trial_keys)
        if header.kind != "command":
            check.add(trial_keys.get("type", node), "type", "a sweep's trial must be a command job",
                      "write type: command (or leave type out)")
        if "inputs" in trial_keys:
            read_inputs(check, trial_keys["inputs"], "inputs", trial_file.parent, bindings)
        if "outputs" in trial_keys:
            read_outputs(check, trial_keys["outputs"], "outputs", trial_file.parent, bindings, per_trial=True)
    else:
        found = check.mapping(node, prefix, _TRIAL_KEYS, elsewhere=_TRIAL_ELSEWHERE,
                              what="a mapping with command, code, environment... or the path of a command job file")
        if found is None:
            return None, None, None
        trial_keys = found
        if "type" in trial_keys:
            check.choice(trial_keys["type"], "trial.type", ("command",))
    run, prepared = read_run(check, trial_keys, node, prefix, trial_file, bindings, anchors, space)
    return run, None if prepared is None else dict(prepared.flags), header


def _expression(check: Checker, node: Node, path: str) -> ParameterExpression | None:
    if not node.is_mapping or "type" not in node.value:
        if isinstance(node.value, list):
            check.add(node, path, "is a list", "write type: choice and values: [...] under it")
        else:
            check.mapping(node, path, ("type",), required=("type",), what="a mapping with type and its parameters")
        return None
    kind = check.choice(node.value["type"], join(path, "type"), list(_SPACE))
    if kind is None:
        return None
    names, make = _SPACE[kind]
    keys = check.mapping(node, path, ("type", *names), required=names)
    if keys is None or any(name not in keys for name in names):
        return None
    arguments: list[Any] = []
    for name in names:
        child = keys[name]
        if kind == "choice":
            if not child.is_sequence or not child.value:
                check.add(child, join(path, name), f"must be a list of values, got {child.type_name()}",
                          "write values: [16, 32, 64]")
                return None
            nested = [item for item in child.value if item.is_mapping or item.is_sequence]
            if nested:
                check.add(nested[0], join(path, name), "nested search spaces have no equivalent here",
                          "list plain values (numbers, strings, booleans)")
                return None
            arguments.append(tuple(item.value for item in child.value))
        elif kind == "randint":
            arguments.append(check.integer(child, join(path, name), minimum=1))
        else:
            arguments.append(check.number(child, join(path, name), positive=name in ("q", "sigma")))
    if any(argument is None for argument in arguments):
        return None
    return check.call(node, path, lambda: make(*arguments))


def _sampling(check: Checker, keys: dict[str, Node], root: Node) -> tuple[SamplingKind | None, int | None]:
    if "sampling_algorithm" not in keys:
        check.add(root, "sampling_algorithm", "is required but missing", "add sampling_algorithm: random (or grid, "
                  "bayesian)")
        return None, None
    node = keys["sampling_algorithm"]
    kinds = ("random", "grid", "bayesian")
    if not node.is_mapping:
        kind = check.choice(node, "sampling_algorithm", kinds)
        return kind, None  # type: ignore[return-value]
    found = check.mapping(node, "sampling_algorithm", ("type", "seed", "rule", "logbase"), required=("type",))
    if not found or "type" not in found:
        return None, None
    kind = check.choice(found["type"], "sampling_algorithm.type", kinds)
    seed = None
    if "seed" in found:
        seed = check.integer(found["seed"], "sampling_algorithm.seed")
        if kind == "grid":
            check.add(found["seed"], "sampling_algorithm.seed", "grid sampling draws nothing at random",
                      "remove seed, or use type: random")
            return None, None
        if seed is None:
            return None, None
    if "rule" in found and check.choice(found["rule"], "sampling_algorithm.rule", ("random",), {
            "sobol": "has no equivalent here (random draws use Python's generator, seeded per trial)"}) is None:
        return None, None
    if "logbase" in found and str(found["logbase"].value) != "e":
        check.add(found["logbase"], "sampling_algorithm.logbase", "only e (natural logarithms) is supported here",
                  "write the log-uniform bounds as natural logarithms, and remove logbase")
        return None, None
    return kind, seed  # type: ignore[return-value]


def _objective(check: Checker, keys: dict[str, Node], root: Node) -> tuple[str | None, PrimaryMetricGoal | None]:
    if "objective" not in keys:
        check.add(root, "objective", "is required but missing",
                  "add objective: {goal: maximize, primary_metric: accuracy}")
        return None, None
    found = check.mapping(keys["objective"], "objective", ("goal", "primary_metric"),
                          required=("goal", "primary_metric"))
    if not found or "goal" not in found or "primary_metric" not in found:
        return None, None
    goal = check.choice(found["goal"], "objective.goal", ("maximize", "minimize"))
    metric = check.string(found["primary_metric"], "objective.primary_metric", "write the metric's name, e.g. accuracy")
    return metric, None if goal is None else PrimaryMetricGoal.parse(goal)


def _policy(check: Checker, node: Node, path: str) -> EarlyTerminationPolicy | None:
    if not node.is_mapping or "type" not in node.value:
        check.mapping(node, path, ("type",), required=("type",),
                      what="a mapping with type: bandit, median_stopping or truncation_selection")
        return None
    kind = check.choice(node.value["type"], join(path, "type"), list(_POLICY_KEYS))
    if kind is None:
        return None
    keys = check.mapping(node, path, _POLICY_KEYS[kind], required=("truncation_percentage",)
                         if kind == "truncation_selection" else ())
    if keys is None:
        return None
    values: dict[str, Any] = {}
    for key, child in keys.items():
        if key in ("evaluation_interval", "delay_evaluation", "truncation_percentage"):
            values[key] = check.integer(child, join(path, key), minimum=0)
        elif key in ("slack_factor", "slack_amount"):
            values[key] = check.number(child, join(path, key), minimum=0)
        elif key == "exclude_finished_jobs" and check.boolean(child, join(path, key)):
            check.add(child, join(path, key), "has no equivalent here: trials are compared with finished ones too",
                      "remove exclude_finished_jobs (or write false)")
            values[key] = None
    if any(value is None for value in values.values()) or (kind == "truncation_selection"
                                                           and "truncation_percentage" not in values):
        return None
    values.pop("type", None)
    values.pop("exclude_finished_jobs", None)
    if values.get("evaluation_interval") == 0:
        values["evaluation_interval"] = 1  # Azure ML's default 0: every report
    children = {key: (child, join(path, key)) for key, child in keys.items()}
    policy_class = {"bandit": BanditPolicy, "median_stopping": MedianStoppingPolicy,
                    "truncation_selection": TruncationSelectionPolicy}[kind]
    return check.call(node, path, lambda: policy_class(**values), children)


def _limits(check: Checker, node: Node | None) -> dict[str, Any] | None:
    if node is None:
        return {}
    keys = check.mapping(node, "limits", ("max_total_trials", "max_concurrent_trials", "timeout", "trial_timeout"))
    if keys is None:
        return None
    limits: dict[str, Any] = {}
    for key in ("max_total_trials", "max_concurrent_trials"):
        if key in keys:
            limits[key] = check.integer(keys[key], join("limits", key), minimum=1)
    for key in ("timeout", "trial_timeout"):
        if key in keys:
            value = check.number(keys[key], join("limits", key), positive=True)
            limits[key] = None if value is None else float(value)
    return None if any(value is None for value in limits.values()) else limits
