"""How a sweep picks each trial's hyperparameters: grid, random (seeded) or Bayesian (optuna's TPE).

A sampling is a search-space description; :meth:`ParameterSampling.sampler` makes the stateful
:class:`TrialSampler` one sweep uses. Grid and random samplers are pure functions of the trial's
index (and the seed), so a sweep resumed after a crash draws exactly what it drew before; the
Bayesian sampler learns from every finished trial, the resumed ones included (``observe``).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import random
from collections.abc import Mapping
from typing import Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive.parameter_expressions import (
    Choice,
    ParameterExpression,
    Quantized,
    Randint,
    expression_from_dict,
    quantize,
)

__all__ = [
    "BayesianParameterSampling",
    "GridParameterSampling",
    "ParameterSampling",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "TrialSampler",
    "sampling_from_dict",
]

Hyperparameters = dict[str, Any]


class PrimaryMetricGoal(str, enum.Enum):
    """Whether the primary metric is better when larger or smaller."""

    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"

    @classmethod
    def parse(cls, value: object, field: str = "primary_metric_goal") -> PrimaryMetricGoal:
        """Accept the enum or its name in any case.

        :param value: the goal as given.
        :param field: the field name for the error.
        """
        if isinstance(value, PrimaryMetricGoal):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise ConfigurationError(field, f"must be MAXIMIZE or MINIMIZE, got {value!r}.",
                                 "pass PrimaryMetricGoal.MAXIMIZE (accuracy) or PrimaryMetricGoal.MINIMIZE (loss).")

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``.

        :param a: one value.
        :param b: the other.
        """
        return a > b if self is PrimaryMetricGoal.MAXIMIZE else a < b

    @property
    def worst(self) -> float:
        """The worst possible value: where a NaN or infinite report of a diverged trial ranks."""
        return -math.inf if self is PrimaryMetricGoal.MAXIMIZE else math.inf

    def sanitize(self, values: list[float]) -> list[float]:
        """``values`` with every NaN or infinite value replaced by :attr:`worst`.

        :param values: metric values as reported.
        """
        return [v if math.isfinite(v) else self.worst for v in values]

    def best(self, values: list[float]) -> float:
        """The best of ``values`` (not empty); NaN and infinite values count as the worst.

        :param values: metric values.
        """
        clean = self.sanitize(values)
        return max(clean) if self is PrimaryMetricGoal.MAXIMIZE else min(clean)


class TrialSampler:
    """Draws the hyperparameters of trial ``index`` of one sweep (base: a pure function of the index)."""

    def suggest(self, index: int) -> Hyperparameters | None:
        """The hyperparameters of trial ``index`` (0-based), or None when the space is exhausted.

        :param index: the trial's index.
        """
        raise NotImplementedError

    def observe(self, index: int, hyperparameters: Hyperparameters, value: float | None) -> None:
        """Learn a finished trial's result (only adaptive samplers care).

        :param index: the trial's index.
        :param hyperparameters: what it ran with.
        :param value: its best primary metric value, or None when it failed or reported none.
        """


class ParameterSampling:
    """A search space and how to sample it.

    :param parameter_space: argument name (``"--lr"`` or ``"lr"``, which becomes ``--lr``) ->
        parameter expression.
    """

    kind = "base"
    supports_early_termination = True
    """Whether early termination policies may be combined with this sampling."""
    adaptive = False
    """True when later trials depend on earlier results (trials cannot be planned up front)."""
    allowed: tuple[type, ...] = (Choice, Randint, Quantized)

    def __init__(self, parameter_space: Mapping[str, ParameterExpression]) -> None:
        self.parameter_space = dict(parameter_space)
        self.seed: int | None = None
        self.validate()

    def validate(self) -> None:
        """Check the space: names are strings, expressions are allowed for this sampling, and their
        draws fit in a float.

        :raises ConfigurationError: naming the bad entry.
        """
        field = f"{type(self).__name__}.parameter_space"
        if not isinstance(self.parameter_space, dict) or not self.parameter_space:
            raise ConfigurationError(field, "is empty.", 'pass {"--learning_rate": uniform(0.01, 0.1), ...}.')
        for name, expression in self.parameter_space.items():
            if not isinstance(name, str) or not name.strip("-") or any(c.isspace() for c in name):
                raise ConfigurationError(field, f"{name!r} is not an argument name.",
                                         'use names like "--learning_rate" or "learning_rate".')
            if not isinstance(expression, self.allowed):
                names = ", ".join(_expression_names(self.allowed))
                raise ConfigurationError(f"{field}[{name!r}]",
                                         f"{_describe(expression)} is not supported by {type(self).__name__}.",
                                         f"use one of: {names}.")
            if isinstance(expression, Quantized):
                expression.check_range(f"{field}[{name!r}]")
        for name in self.parameter_space:
            if argument_name(name) in {argument_name(other) for other in self.parameter_space if other != name}:
                raise ConfigurationError(field, f"{name!r} names the same argument as another entry.",
                                         "keep one of them.")

    def total(self) -> int | None:
        """How many distinct trials the space holds (None: unbounded)."""
        return None

    def sampler(self, seed: int, goal: PrimaryMetricGoal) -> TrialSampler:
        """A fresh sampler for one sweep.

        :param seed: the sweep's seed (its own ``seed`` when set).
        :param goal: the primary metric's goal.
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {"kind": self.kind, "seed": self.seed,
                "parameter_space": {k: v.to_dict() for k, v in self.parameter_space.items()}}


def argument_name(name: str) -> str:
    """The command-line flag of a search-space entry: ``"lr"`` -> ``"--lr"``, ``"-x"`` stays.

    :param name: the entry's name.
    """
    return name if name.startswith("-") else f"--{name}"


def parameter_name(name: str) -> str:
    """The MLflow param name of a search-space entry: leading dashes removed.

    :param name: the entry's name.
    """
    return name.lstrip("-")


class GridParameterSampling(ParameterSampling):
    """Every combination of ``choice`` values, in order (the last entry varies fastest).

    :param parameter_space: argument name -> ``choice(...)``.
    """

    kind = "grid"
    allowed = (Choice,)

    def total(self) -> int:
        """The size of the full product."""
        return math.prod(len(expression.options) for expression in self._choices())

    def sampler(self, seed: int, goal: PrimaryMetricGoal) -> TrialSampler:
        return _GridSampler(list(self.parameter_space), [c.options for c in self._choices()])

    def _choices(self) -> list[Choice]:
        return [e for e in self.parameter_space.values() if isinstance(e, Choice)]


class _GridSampler(TrialSampler):
    def __init__(self, names: list[str], options: list[tuple[Any, ...]]) -> None:
        self._names = names
        self._combinations = list(itertools.product(*options))

    def suggest(self, index: int) -> Hyperparameters | None:
        if index >= len(self._combinations):
            return None
        return dict(zip(self._names, self._combinations[index], strict=True))


class RandomParameterSampling(ParameterSampling):
    """Each trial draws every expression at random; the same ``seed`` draws the same trials.

    Trial ``i`` draws from its own generator seeded with ``(seed, i)``, so a sweep resumed after a
    crash, or planned for mapped tasks, repeats its draws exactly.

    :param parameter_space: argument name -> any parameter expression.
    :param seed: the random seed; None picks one per sweep (recorded on the sweep's parent run).
    """

    kind = "random"

    def __init__(self, parameter_space: Mapping[str, ParameterExpression], seed: int | None = None) -> None:
        super().__init__(parameter_space)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigurationError("RandomParameterSampling.seed", f"must be an integer, got {seed!r}.",
                                     "pass seed=42, or None for a new seed per sweep.")
        self.seed = seed

    def sampler(self, seed: int, goal: PrimaryMetricGoal) -> TrialSampler:
        return _RandomSampler(self.parameter_space, seed)


class _RandomSampler(TrialSampler):
    def __init__(self, space: dict[str, ParameterExpression], seed: int) -> None:
        self._space = space
        self._seed = seed

    def suggest(self, index: int) -> Hyperparameters:
        rng = random.Random(f"{self._seed}:{index}")
        return {name: expression.sample(rng) for name, expression in self._space.items()}


class BayesianParameterSampling(ParameterSampling):
    """Bayesian optimisation (optuna's Tree-structured Parzen Estimator): each trial is drawn where
    the finished trials suggest the primary metric is best. Early termination is not supported,
    as in Azure ML; keep ``max_concurrent_runs`` small, since trials running at once learn
    nothing from each other.

    :param parameter_space: argument name -> ``choice``, ``uniform`` or ``quniform``.
    :param seed: the optimiser's seed (None: a new seed per sweep).
    """

    kind = "bayesian"
    supports_early_termination = False
    adaptive = True
    allowed = (Choice, Quantized)

    def __init__(self, parameter_space: Mapping[str, ParameterExpression], seed: int | None = None) -> None:
        super().__init__(parameter_space)
        for name, expression in self.parameter_space.items():
            if isinstance(expression, Quantized) and expression.distribution != "uniform":
                raise ConfigurationError(f"BayesianParameterSampling.parameter_space[{name!r}]",
                                         f"{expression.name} is not supported by Bayesian sampling.",
                                         "use choice, uniform or quniform, or RandomParameterSampling.")
        self.seed = seed

    def sampler(self, seed: int, goal: PrimaryMetricGoal) -> TrialSampler:
        return _BayesianSampler(self.parameter_space, seed, goal)


class _BayesianSampler(TrialSampler):
    def __init__(self, space: dict[str, ParameterExpression], seed: int, goal: PrimaryMetricGoal) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._space = space
        self._distributions = {name: _optuna_distribution(optuna, e) for name, e in space.items()}
        self._study = optuna.create_study(direction="maximize" if goal is PrimaryMetricGoal.MAXIMIZE else "minimize",
                                          sampler=optuna.samplers.TPESampler(seed=seed))
        self._asked: dict[int, Any] = {}
        self._seed = seed
        self._known = 0

    def suggest(self, index: int) -> Hyperparameters:
        trial = self._study.ask(self._distributions)
        self._asked[index] = trial
        values: Hyperparameters = {}
        for name, expression in self._space.items():
            value = trial.params[name]
            if isinstance(expression, Quantized) and expression.q is not None:
                value = quantize(value, expression.q)
            values[name] = value
        return values

    def observe(self, index: int, hyperparameters: Hyperparameters, value: float | None) -> None:
        state = self._optuna.trial.TrialState
        trial = self._asked.pop(index, None)
        if trial is not None:
            if value is None or not math.isfinite(value):
                self._study.tell(trial, state=state.FAIL)
            else:
                self._study.tell(trial, value)
            return
        # A trial of an earlier try of this sweep: teach the new study what it found (unless the
        # space changed since, and there is nothing to learn from it). A fresh sampler with the same
        # seed would draw the earlier tries' first trials again: its seed moves on with each one.
        with contextlib.suppress(ValueError, KeyError):
            self._study.add_trial(self._optuna.trial.create_trial(
                params={k: hyperparameters[k] for k in self._distributions},
                distributions=self._distributions,
                value=value if value is not None and math.isfinite(value) else None,
                state=state.COMPLETE if value is not None and math.isfinite(value) else state.FAIL,
            ))
        self._known += 1
        self._study.sampler = self._optuna.samplers.TPESampler(seed=self._seed + 1_000_003 * self._known)


def _optuna_distribution(optuna: Any, expression: ParameterExpression) -> Any:
    if isinstance(expression, Choice):
        return optuna.distributions.CategoricalDistribution(list(expression.options))
    assert isinstance(expression, Quantized)
    if expression.q is None:
        return optuna.distributions.FloatDistribution(expression.a, expression.b)
    # The multiples of q within [low, high], computed on integers: 0.3 / 0.1 is 2.9999999999999996.
    first = math.ceil(expression.a / expression.q - 1e-9)
    last = math.floor(expression.b / expression.q + 1e-9)
    return optuna.distributions.FloatDistribution(quantize(first * expression.q, expression.q),
                                                  quantize(last * expression.q, expression.q), step=expression.q)


_KINDS: dict[str, type[ParameterSampling]] = {
    "grid": GridParameterSampling,
    "random": RandomParameterSampling,
    "bayesian": BayesianParameterSampling,
}


def sampling_from_dict(data: dict[str, Any]) -> ParameterSampling:
    """Rebuild a sampling from its ``to_dict()`` form.

    :param data: the serialised sampling.
    """
    kind = _KINDS.get(str(data.get("kind")))
    if kind is None:
        raise ConfigurationError("hyperparameter_sampling", f"unknown kind {data.get('kind')!r}.",
                                 f"use one of {sorted(_KINDS)}.")
    space = {k: expression_from_dict(v) for k, v in data["parameter_space"].items()}
    sampling = kind(space)
    sampling.seed = data.get("seed")
    return sampling


def _describe(expression: object) -> str:
    if isinstance(expression, Quantized):
        return expression.name
    if isinstance(expression, (Choice, Randint)):
        return type(expression).__name__.lower()
    return f"{type(expression).__name__} {expression!r}"


def _expression_names(allowed: tuple[type, ...]) -> list[str]:
    names = []
    if Choice in allowed:
        names.append("choice")
    if Randint in allowed:
        names.append("randint")
    if Quantized in allowed:
        names += ["uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal", "lognormal", "qlognormal"]
    return names
