"""Parameter expressions, grid / random / Bayesian sampling, sweep settings and trial arguments.

Checked against the documented semantics of airflow_provider/core/hyperdrive/{parameter_expressions,
sampling,config}.py (which follow Azure ML v1's HyperDrive).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import warnings
from pathlib import Path
from typing import Any

import pytest

from airflow_provider.core import ScriptRunConfig
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    trial_arguments,
    uniform,
)
from airflow_provider.core.hyperdrive.config import validate_sweep_settings
from airflow_provider.core.hyperdrive.parameter_expressions import expression_from_dict
from airflow_provider.core.hyperdrive.sampling import sampling_from_dict

MAX = PrimaryMetricGoal.MAXIMIZE
MIN = PrimaryMetricGoal.MINIMIZE
DRAWS = 5000


def draws(expression: Any, count: int = DRAWS, seed: int = 1234) -> list[Any]:
    rng = random.Random(seed)
    return [expression.sample(rng) for _ in range(count)]


def is_multiple(value: float, q: float) -> bool:
    return abs(value / q - round(value / q)) < 1e-6


def error_of(build: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        build()
    return caught.value


# ------------------------------------------------------------------------------------- expressions


def test_uniform_stays_within_and_covers_its_bounds() -> None:
    values = draws(uniform(-2, 3))
    assert all(-2 <= v <= 3 for v in values)
    assert min(values) < -1.9 and max(values) > 2.9
    assert statistics.fmean(values) == pytest.approx(0.5, abs=0.1)


def test_quniform_draws_multiples_of_q() -> None:
    values = draws(quniform(0, 10, 0.5))
    assert all(is_multiple(v, 0.5) for v in values)
    assert all(0 <= v <= 10 for v in values)
    assert set(values) == {i * 0.5 for i in range(21)}  # round(U/q)*q reaches both ends


def test_quniform_with_decimal_steps_prints_cleanly() -> None:
    values = set(draws(quniform(0, 1, 0.1)))
    assert values == {i / 10 for i in range(11)}  # 0.3, not 0.30000000000000004
    assert all(len(repr(v)) <= 3 for v in values)


def test_quniform_rounds_the_uniform_draw() -> None:
    # round(U(0.6, 1.4) / 1) * 1 is 1.0 for every draw in [0.6, 1.4].
    assert set(draws(quniform(0.6, 1.4, 1), count=500)) == {1.0}


def test_loguniform_lies_between_e_to_low_and_e_to_high() -> None:
    values = draws(loguniform(-3, 1))
    assert all(math.exp(-3) <= v <= math.exp(1) for v in values)
    logs = [math.log(v) for v in values]
    assert min(logs) < -2.9 and max(logs) > 0.9
    assert statistics.fmean(logs) == pytest.approx(-1, abs=0.1)  # the exponent is uniform


def test_qloguniform_draws_multiples_of_q() -> None:
    values = draws(qloguniform(0, 5, 2))
    assert all(is_multiple(v, 2) for v in values)
    assert all(0 <= v <= math.exp(5) + 1 for v in values)
    assert len(set(values)) > 30


def test_randint_is_an_integer_in_zero_to_upper_exclusive() -> None:
    values = draws(randint(7))
    assert all(type(v) is int for v in values)
    assert set(values) == set(range(7))
    assert set(draws(randint(1), count=50)) == {0}


def test_normal_mean_and_stdev() -> None:
    values = draws(normal(10, 2), count=20000)
    assert statistics.fmean(values) == pytest.approx(10, abs=0.1)
    assert statistics.stdev(values) == pytest.approx(2, abs=0.1)
    assert min(values) < 4 and max(values) > 16  # not clipped


def test_qnormal_draws_multiples_of_q_around_mu() -> None:
    values = draws(qnormal(-3, 1, 0.5), count=20000)
    assert all(is_multiple(v, 0.5) for v in values)
    assert statistics.fmean(values) == pytest.approx(-3, abs=0.1)


def test_lognormal_is_positive_and_its_log_is_normal() -> None:
    values = draws(lognormal(0.5, 0.4), count=20000)
    assert all(v > 0 for v in values)
    logs = [math.log(v) for v in values]
    assert statistics.fmean(logs) == pytest.approx(0.5, abs=0.05)
    assert statistics.stdev(logs) == pytest.approx(0.4, abs=0.05)


def test_qlognormal_draws_non_negative_multiples_of_q() -> None:
    values = draws(qlognormal(1, 0.5, 0.1))
    assert all(v >= 0 and is_multiple(v, 0.1) for v in values)
    assert statistics.median(values) == pytest.approx(math.e, abs=0.15)


def test_choice_draws_every_option_about_equally() -> None:
    values = draws(choice("adam", "sgd", "rmsprop"), count=3000)
    counts = {option: values.count(option) for option in ("adam", "sgd", "rmsprop")}
    assert sum(counts.values()) == 3000
    assert all(850 < count < 1150 for count in counts.values()), counts


def test_choice_spellings() -> None:
    assert choice(16, 32, 64).options == (16, 32, 64)
    assert choice([16, 32, 64]).options == (16, 32, 64)
    assert choice((16, 32)).options == (16, 32)
    assert choice(range(1, 5)).options == (1, 2, 3, 4)
    assert choice("a").options == ("a",)
    assert choice(True, False).options == (True, False)


def test_the_same_seed_draws_the_same_values() -> None:
    for expression in (uniform(0, 1), normal(0, 1), randint(100), choice(1, 2, 3), qlognormal(0, 1, 0.1)):
        assert draws(expression, 200, seed=7) == draws(expression, 200, seed=7)
        assert draws(expression, 200, seed=7) != draws(expression, 200, seed=8)


def test_expression_names() -> None:
    assert [e.name for e in (uniform(0, 1), quniform(0, 1, 0.1), loguniform(0, 1), qloguniform(0, 1, 1),
                             normal(0, 1), qnormal(0, 1, 1), lognormal(0, 1), qlognormal(0, 1, 1))] == [
        "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal", "lognormal", "qlognormal"]


ALL_EXPRESSIONS = [
    choice(1, "two", 3.5, True), randint(5), uniform(0, 1), quniform(0, 1, 0.1), loguniform(-2, 2),
    qloguniform(0, 3, 1), normal(1, 2), qnormal(1, 2, 0.5), lognormal(0, 1), qlognormal(0, 1, 0.25),
]


@pytest.mark.parametrize("expression", ALL_EXPRESSIONS, ids=repr)
def test_expression_round_trips_through_json(expression: Any) -> None:
    rebuilt = expression_from_dict(json.loads(json.dumps(expression.to_dict())))
    assert rebuilt == expression
    assert draws(rebuilt, 20) == draws(expression, 20)


@pytest.mark.parametrize("data", [{"type": "gamma"}, {}, {"type": "quantized", "distribution": "beta",
                                                          "a": 0, "b": 1, "q": None}])
def test_expression_from_dict_refuses_unknown_types(data: dict[str, Any]) -> None:
    assert error_of(lambda: expression_from_dict(data)).field == "parameter_space"


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: uniform(1, 1), "uniform"),
        (lambda: uniform(2, 1), "uniform"),
        (lambda: uniform("0", 1), "uniform"),
        (lambda: uniform(0, None), "uniform"),
        (lambda: uniform(math.nan, 1), "uniform"),
        (lambda: uniform(0, math.inf), "uniform"),
        (lambda: uniform(True, 2), "uniform"),
        (lambda: quniform(0, 1, 0), "quniform"),
        (lambda: quniform(0, 1, -0.1), "quniform"),
        (lambda: quniform(1, 0, 0.1), "quniform"),
        (lambda: loguniform(1, 1), "loguniform"),
        (lambda: qloguniform(0, 1, 0), "qloguniform"),
        (lambda: normal(0, 0), "normal"),
        (lambda: normal(0, -1), "normal"),
        (lambda: normal("0", 1), "normal"),
        (lambda: qnormal(0, 1, 0), "qnormal"),
        (lambda: lognormal(0, math.nan), "lognormal"),
        (lambda: lognormal(0, 0), "lognormal"),
        (lambda: qlognormal(0, 1, -1), "qlognormal"),
        (lambda: randint(0), "randint"),
        (lambda: randint(-3), "randint"),
        (lambda: randint(2.5), "randint"),
        (lambda: randint(True), "randint"),
        (lambda: randint("3"), "randint"),
        (lambda: choice(), "choice"),
        (lambda: choice([]), "choice"),
        (lambda: choice(1, 1), "choice"),
        (lambda: choice(["a", "b", "a"]), "choice"),
        (lambda: choice(None), "choice"),
        (lambda: choice(1, [2, 3]), "choice"),
        (lambda: choice({"a": 1}), "choice"),
    ],
)
def test_invalid_expressions_are_refused(build: Any, name: str) -> None:
    error = error_of(build)
    assert error.field.startswith(f"{name}(")


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: uniform("x", 1), "low"),
        (lambda: uniform(0, "x"), "high"),
        (lambda: quniform(0, 1, 0), "q"),
        (lambda: normal(0, -1), "sigma"),
        (lambda: normal(math.inf, 1), "mu"),
        (lambda: randint(0), "upper"),
    ],
)
def test_expression_errors_name_the_argument(build: Any, argument: str) -> None:
    assert f"{argument}=" in error_of(build).field


# -------------------------------------------------------------------------------------- search space


@pytest.mark.parametrize(
    "space",
    [
        {},
        {"": choice(1)},
        {"--": choice(1)},
        {"learning rate": choice(1)},
        {3: choice(1)},
        {"lr": 0.1},
        {"lr": choice(1), "--lr": choice(2)},
    ],
    ids=["empty", "blank", "dashes", "space", "non-str", "not-an-expression", "same-flag-twice"],
)
@pytest.mark.parametrize("kind", [GridParameterSampling, RandomParameterSampling, BayesianParameterSampling])
def test_bad_search_spaces_are_refused(kind: type, space: dict[Any, Any]) -> None:
    error = error_of(lambda: kind(space))
    assert error.field.startswith(f"{kind.__name__}.parameter_space")


# --------------------------------------------------------------------------------------------- grid


def test_grid_covers_the_product_once_with_the_last_entry_fastest() -> None:
    sampling = GridParameterSampling({"--batch": choice(16, 32), "optimizer": choice("adam", "sgd", "rms")})
    assert sampling.total() == 6
    sampler = sampling.sampler(0, MAX)
    trials = [sampler.suggest(i) for i in range(6)]
    assert trials == [
        {"--batch": 16, "optimizer": "adam"},
        {"--batch": 16, "optimizer": "sgd"},
        {"--batch": 16, "optimizer": "rms"},
        {"--batch": 32, "optimizer": "adam"},
        {"--batch": 32, "optimizer": "sgd"},
        {"--batch": 32, "optimizer": "rms"},
    ]
    assert sampler.suggest(6) is None
    assert sampler.suggest(100) is None


def test_grid_of_three_entries() -> None:
    sampling = GridParameterSampling({"a": choice(1, 2), "b": choice(1, 2, 3), "c": choice(True, False)})
    assert sampling.total() == 12
    sampler = sampling.sampler(5, MIN)
    trials = [sampler.suggest(i) for i in range(12)]
    assert len({tuple(t.items()) for t in trials}) == 12  # type: ignore[union-attr]
    assert trials[0] == {"a": 1, "b": 1, "c": True}
    assert trials[1] == {"a": 1, "b": 1, "c": False}
    assert trials[2] == {"a": 1, "b": 2, "c": True}
    assert trials[6] == {"a": 2, "b": 1, "c": True}
    assert trials[11] == {"a": 2, "b": 3, "c": False}
    assert sampler.suggest(12) is None


def test_grid_ignores_the_seed_and_call_order() -> None:
    sampling = GridParameterSampling({"a": choice(1, 2, 3), "b": choice("x", "y")})
    first, second = sampling.sampler(1, MAX), sampling.sampler(999, MIN)
    assert [first.suggest(i) for i in range(6)] == [second.suggest(i) for i in reversed(range(6))][::-1]


def test_grid_of_one_choice() -> None:
    sampling = GridParameterSampling({"lr": choice(0.1)})
    assert sampling.total() == 1
    assert sampling.sampler(0, MAX).suggest(0) == {"lr": 0.1}
    assert sampling.sampler(0, MAX).suggest(1) is None


@pytest.mark.parametrize("expression", [randint(3), uniform(0, 1), quniform(0, 1, 0.5), loguniform(0, 1),
                                        normal(0, 1), lognormal(0, 1)], ids=repr)
def test_grid_refuses_non_choice_expressions(expression: Any) -> None:
    error = error_of(lambda: GridParameterSampling({"a": choice(1, 2), "b": expression}))
    assert error.field == "GridParameterSampling.parameter_space['b']"
    assert "choice" in str(error)


# ------------------------------------------------------------------------------------------- random

SPACE = {"--lr": loguniform(-6, -1), "batch": choice(16, 32, 64), "--layers": randint(5),
         "dropout": quniform(0, 0.5, 0.05), "momentum": normal(0.9, 0.02)}


def test_random_repeats_exactly_for_the_same_seed() -> None:
    sampling = RandomParameterSampling(SPACE, seed=42)
    first = [sampling.sampler(42, MAX).suggest(i) for i in range(50)]
    again = RandomParameterSampling(SPACE, seed=42).sampler(42, MIN)
    assert [again.suggest(i) for i in range(50)] == first
    assert len({json.dumps(t, sort_keys=True) for t in first}) == 50


def test_random_suggest_does_not_depend_on_call_order() -> None:
    sampler = RandomParameterSampling(SPACE).sampler(7, MAX)
    forward = [sampler.suggest(i) for i in range(20)]
    other = RandomParameterSampling(SPACE).sampler(7, MAX)
    backward = {i: other.suggest(i) for i in reversed(range(20))}
    assert forward == [backward[i] for i in range(20)]
    assert other.suggest(13) == forward[13]
    assert other.suggest(13) == forward[13]
    # Trial 13 alone, from a fresh sampler (a resumed sweep planning one trial).
    assert RandomParameterSampling(SPACE).sampler(7, MAX).suggest(13) == forward[13]


def test_random_different_seeds_and_indices_differ() -> None:
    sampling = RandomParameterSampling({"x": uniform(0, 1)})
    a = [sampling.sampler(1, MAX).suggest(i)["x"] for i in range(20)]  # type: ignore[index]
    b = [sampling.sampler(2, MAX).suggest(i)["x"] for i in range(20)]  # type: ignore[index]
    assert all(x != y for x, y in zip(a, b, strict=True))
    assert len(set(a)) == 20


def test_random_values_follow_their_expressions() -> None:
    sampler = RandomParameterSampling(SPACE).sampler(3, MAX)
    trials = [sampler.suggest(i) for i in range(300)]
    assert all(math.exp(-6) <= t["--lr"] <= math.exp(-1) for t in trials)
    assert {t["batch"] for t in trials} == {16, 32, 64}
    assert {t["--layers"] for t in trials} == set(range(5))
    assert all(is_multiple(t["dropout"], 0.05) and 0 <= t["dropout"] <= 0.5 for t in trials)
    assert statistics.fmean(t["momentum"] for t in trials) == pytest.approx(0.9, abs=0.01)
    assert all(list(t) == list(SPACE) for t in trials)


def test_random_seed_is_kept_and_validated() -> None:
    assert RandomParameterSampling(SPACE, seed=42).seed == 42
    assert RandomParameterSampling(SPACE).seed is None
    assert RandomParameterSampling(SPACE).total() is None
    for seed in ("42", 1.5, True):
        assert error_of(lambda seed=seed: RandomParameterSampling(SPACE, seed=seed)).field == \
            "RandomParameterSampling.seed"


# ----------------------------------------------------------------------------------------- bayesian


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_bayesian_accepts_choice_uniform_and_quniform() -> None:
    sampling = BayesianParameterSampling({"a": choice(1, 2), "b": uniform(0, 1), "c": quniform(0, 10, 1)}, seed=3)
    assert sampling.seed == 3
    assert sampling.adaptive is True
    assert sampling.supports_early_termination is False
    assert sampling.total() is None


@pytest.mark.parametrize("expression", [randint(3), loguniform(0, 1), qloguniform(0, 1, 1), normal(0, 1),
                                        qnormal(0, 1, 1), lognormal(0, 1), qlognormal(0, 1, 1)], ids=repr)
def test_bayesian_refuses_other_expressions(expression: Any) -> None:
    error = error_of(lambda: BayesianParameterSampling({"a": uniform(0, 1), "b": expression}))
    assert error.field == "BayesianParameterSampling.parameter_space['b']"


def optimise(goal: PrimaryMetricGoal, objective: Any, seed: int = 0, trials: int = 30,
             space: dict[str, Any] | None = None) -> list[tuple[dict[str, Any], float]]:
    sampler = BayesianParameterSampling(space or {"x": uniform(0, 1)}).sampler(seed, goal)
    history = []
    for index in range(trials):
        hyperparameters = sampler.suggest(index)
        value = objective(hyperparameters)
        sampler.observe(index, hyperparameters, value)
        history.append((hyperparameters, value))
    return history


@pytest.mark.parametrize(
    ("goal", "objective"),
    [(MAX, lambda h: -((h["x"] - 0.3) ** 2)), (MIN, lambda h: (h["x"] - 0.3) ** 2)],
    ids=["maximize", "minimize"],
)
def test_bayesian_finds_the_optimum_of_a_known_objective(goal: PrimaryMetricGoal, objective: Any) -> None:
    history = optimise(goal, objective)
    best = (max if goal is MAX else min)(history, key=lambda item: item[1])
    assert best[0]["x"] == pytest.approx(0.3, abs=0.05)
    # Once it has learned (the first 10 trials are random start-up draws, whose median distance to 0.3
    # is about 0.25), the optimiser concentrates near the optimum; a reversed goal would drive it away (~0.6).
    assert statistics.median(abs(h["x"] - 0.3) for h, _ in history[10:]) < 0.15


def test_bayesian_is_repeatable_for_the_same_seed() -> None:
    def objective(h: dict[str, Any]) -> float:
        return -((h["x"] - 0.7) ** 2)

    first = [h for h, _ in optimise(MAX, objective, seed=5, trials=15)]
    assert [h for h, _ in optimise(MAX, objective, seed=5, trials=15)] == first
    assert [h for h, _ in optimise(MAX, objective, seed=6, trials=15)] != first


@pytest.mark.parametrize(("low", "high", "q"), [(0, 1, 0.1), (1, 10, 1), (0, 1, 0.25), (-2, 2, 0.5)])
def test_bayesian_quniform_values_are_multiples_of_q_within_bounds(low: float, high: float, q: float) -> None:
    history = optimise(MAX, lambda h: -abs(h["x"] - (low + high) / 2), trials=25,
                       space={"x": quniform(low, high, q), "opt": choice("a", "b")})
    for hyperparameters, _ in history:
        assert low <= hyperparameters["x"] <= high
        assert is_multiple(hyperparameters["x"], q)
        assert hyperparameters["opt"] in ("a", "b")


def test_bayesian_quniform_reaches_its_upper_bound() -> None:
    # round(U(0.3, 1.0) / 0.1) * 0.1 includes 1.0; maximizing x, the optimiser should find it.
    history = optimise(MAX, lambda h: h["x"], trials=40, space={"x": quniform(0.3, 1.0, 0.1)})
    assert max(h["x"] for h, _ in history) == 1.0


def test_bayesian_learns_from_resumed_trials() -> None:
    # Trials of an earlier try of the sweep, never suggested by this sampler, are observed first.
    def objective(x: float) -> float:
        return -((x - 0.3) ** 2)

    taught = BayesianParameterSampling({"x": uniform(0, 1)}).sampler(0, MAX)
    for j in range(20):
        taught.observe(100 + j, {"x": j / 20}, objective(j / 20))
    taught.observe(200, {"x": 0.9}, None)  # a resumed trial that failed
    taught_xs = [taught.suggest(i)["x"] for i in range(10)]
    fresh = BayesianParameterSampling({"x": uniform(0, 1)}).sampler(0, MAX)
    fresh_xs = [fresh.suggest(i)["x"] for i in range(10)]
    assert statistics.median(abs(x - 0.3) for x in taught_xs) < 0.15
    assert statistics.median(abs(x - 0.3) for x in fresh_xs) > 0.15  # the control: random start-up draws


def test_bayesian_observe_of_a_resumed_trial_is_recorded() -> None:
    sampler = BayesianParameterSampling({"x": quniform(0, 1, 0.1), "o": choice("a", "b")}).sampler(0, MAX)
    sampler.observe(7, {"x": 0.3, "o": "b"}, 0.5)
    sampler.observe(8, {"x": 1.0, "o": "a"}, None)
    sampler.observe(9, {"y": 1.0}, 0.5)  # the space changed since: nothing to learn, no error
    trials = sampler._study.trials  # type: ignore[attr-defined]
    assert [(t.params, t.value) for t in trials] == [({"x": 0.3, "o": "b"}, 0.5), ({"x": 1.0, "o": "a"}, None)]


def test_bayesian_observe_of_a_resumed_trial_at_the_quniform_bounds_is_recorded() -> None:
    sampler = BayesianParameterSampling({"x": quniform(0.3, 1.0, 0.1)}).sampler(0, MAX)
    sampler.observe(1, {"x": 0.3}, 0.5)
    sampler.observe(2, {"x": 1.0}, 0.7)
    assert len(sampler._study.trials) == 2  # type: ignore[attr-defined]


def test_bayesian_failed_trials_are_accepted() -> None:
    sampler = BayesianParameterSampling({"x": uniform(0, 1)}).sampler(0, MIN)
    for index in range(12):
        hyperparameters = sampler.suggest(index)
        sampler.observe(index, hyperparameters, None if index % 2 else hyperparameters["x"])
    assert 0 <= sampler.suggest(12)["x"] <= 1


@pytest.mark.parametrize("policy", [BanditPolicy(slack_factor=0.1), MedianStoppingPolicy(),
                                    TruncationSelectionPolicy(20)], ids=repr)
def test_bayesian_with_an_early_termination_policy_is_refused(policy: Any) -> None:
    sampling = BayesianParameterSampling({"x": uniform(0, 1)})
    error = error_of(lambda: validate_sweep_settings(sampling, "accuracy", MAX, 10, 2, None, policy, "Sweep"))
    assert error.field == "Sweep.policy"
    assert "BayesianParameterSampling" in str(error)
    assert "early termination" in str(error)


@pytest.mark.parametrize("policy", [None, NoTerminationPolicy()])
def test_bayesian_without_a_policy_is_accepted(policy: Any) -> None:
    sampling = BayesianParameterSampling({"x": uniform(0, 1)})
    settings = validate_sweep_settings(sampling, "accuracy", MAX, 10, 2, None, policy, "Sweep")
    assert isinstance(settings.policy, NoTerminationPolicy)
    assert settings.terminates_early is False


# ----------------------------------------------------------------------------------- serialisation


@pytest.mark.parametrize(
    "sampling",
    [
        GridParameterSampling({"a": choice(1, 2), "--b": choice("x", "y", "z")}),
        RandomParameterSampling(SPACE, seed=7),
        RandomParameterSampling({"x": uniform(0, 1)}),
        BayesianParameterSampling({"x": uniform(0, 1), "y": quniform(0, 1, 0.1), "z": choice(1, 2)}, seed=3),
    ],
    ids=lambda s: s.kind,
)
def test_sampling_round_trips_through_json(sampling: Any) -> None:
    data = json.loads(json.dumps(sampling.to_dict()))
    assert data["kind"] == sampling.kind
    rebuilt = sampling_from_dict(data)
    assert type(rebuilt) is type(sampling)
    assert rebuilt.seed == sampling.seed
    assert rebuilt.parameter_space == sampling.parameter_space
    assert rebuilt.to_dict() == sampling.to_dict()
    assert rebuilt.total() == sampling.total()
    if not sampling.adaptive:
        assert [rebuilt.sampler(11, MAX).suggest(i) for i in range(5)] == \
            [sampling.sampler(11, MAX).suggest(i) for i in range(5)]


@pytest.mark.parametrize("kind", ["sobol", None, "base"])
def test_sampling_from_dict_refuses_unknown_kinds(kind: Any) -> None:
    error = error_of(lambda: sampling_from_dict({"kind": kind, "parameter_space": {"a": {"type": "randint",
                                                                                           "upper": 2}}}))
    assert error.field == "hyperparameter_sampling"


# -------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("base", "hyperparameters", "expected"),
    [
        (None, {"--lr": 0.1, "epochs": 3}, ["--lr", 0.1, "--epochs", 3]),
        ([], {"lr": 0.1}, ["--lr", 0.1]),
        (["--lr", "0.5", "--epochs", "10"], {"lr": 0.1}, ["--lr", 0.1, "--epochs", "10"]),
        (["--data", "d", "--lr=0.5", "x"], {"--lr": 0.1}, ["--data", "d", "--lr=0.1", "x"]),
        (["--epochs", "10"], {"--lr": 0.1, "epochs": 20, "b": "x"}, ["--epochs", 20, "--lr", 0.1, "--b", "x"]),
        (["--lr_decay", "3", "--lr-x=1", "--lrs=2"], {"lr": 0.1},
         ["--lr_decay", "3", "--lr-x=1", "--lrs=2", "--lr", 0.1]),
        (None, {"-x": 1}, ["-x", 1]),
        (["-x", 5, "--x", 6], {"-x": 1}, ["-x", 1, "--x", 6]),
        (["positional", 3], {"opt": True}, ["positional", 3, "--opt", True]),
        (["--a=1", "--b", "2"], {"b": "new", "a": "old"}, ["--a=old", "--b", "new"]),
    ],
)
def test_trial_arguments(base: list[Any] | None, hyperparameters: dict[str, Any], expected: list[Any]) -> None:
    copy = None if base is None else list(base)
    assert trial_arguments(base, hyperparameters) == expected
    assert base == copy  # the base is not modified


# ------------------------------------------------------------------------------- sweep settings

GRID6 = GridParameterSampling({"a": choice(1, 2), "b": choice(1, 2, 3)})
RANDOM = RandomParameterSampling({"x": uniform(0, 1)})


def settings(sampling: Any = RANDOM, metric: Any = "accuracy", goal: Any = "maximize", total: Any = 10,
             concurrent: Any = None, duration: Any = None, policy: Any = None) -> Any:
    return validate_sweep_settings(sampling, metric, goal, total, concurrent, duration, policy, "Owner")


@pytest.mark.parametrize(
    ("total", "concurrent", "expected"),
    [
        (None, None, (6, 6)),
        (100, None, (6, 6)),
        (4, None, (4, 4)),
        (4, 10, (4, 4)),
        (4, 2, (4, 2)),
        (None, 3, (6, 3)),
        (None, 50, (6, 6)),
        (6, 6, (6, 6)),
    ],
)
def test_grid_max_total_runs_defaults_to_and_is_capped_by_the_grid(total: Any, concurrent: Any,
                                                                   expected: tuple[int, int]) -> None:
    result = settings(GRID6, total=total, concurrent=concurrent)
    assert (result.max_total_runs, result.max_concurrent_runs) == expected


@pytest.mark.parametrize(
    ("total", "concurrent", "expected"),
    [(20, None, (20, 20)), (20, 5, (20, 5)), (20, 50, (20, 20)), (1, 1, (1, 1)), (1000, 1, (1000, 1))],
)
def test_random_max_concurrent_runs_defaults_to_and_is_capped_by_total(total: int, concurrent: Any,
                                                                       expected: tuple[int, int]) -> None:
    result = settings(RANDOM, total=total, concurrent=concurrent)
    assert (result.max_total_runs, result.max_concurrent_runs) == expected


@pytest.mark.parametrize("sampling", [RANDOM, BayesianParameterSampling({"x": uniform(0, 1)})], ids=["random",
                                                                                                    "bayesian"])
def test_max_total_runs_is_required_without_a_grid(sampling: Any) -> None:
    error = error_of(lambda: settings(sampling, total=None))
    assert error.field == "Owner.max_total_runs"


def test_valid_settings_are_normalised() -> None:
    policy = BanditPolicy(slack_factor=0.1)
    result = settings(RANDOM, metric="val/accuracy", goal="MINIMIZE", total=8, concurrent=2, duration=90,
                      policy=policy)
    assert result.sampling is RANDOM
    assert result.primary_metric_name == "val/accuracy"
    assert result.primary_metric_goal is MIN
    assert result.max_duration_minutes == 90.0 and isinstance(result.max_duration_minutes, float)
    assert result.policy is policy
    assert result.terminates_early is True
    assert settings().max_duration_minutes is None
    assert isinstance(settings().policy, NoTerminationPolicy)
    assert settings().terminates_early is False
    assert settings(duration=0.5).max_duration_minutes == 0.5


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sampling": "random"}, "hyperparameter_sampling"),
        ({"sampling": None}, "hyperparameter_sampling"),
        ({"metric": ""}, "primary_metric_name"),
        ({"metric": 5}, "primary_metric_name"),
        ({"metric": "../x"}, "primary_metric_name"),
        ({"metric": "bad\nname"}, "primary_metric_name"),
        ({"goal": "up"}, "primary_metric_goal"),
        ({"goal": None}, "primary_metric_goal"),
        ({"total": 0}, "max_total_runs"),
        ({"total": -3}, "max_total_runs"),
        ({"total": 2.5}, "max_total_runs"),
        ({"total": True}, "max_total_runs"),
        ({"total": "10"}, "max_total_runs"),
        ({"concurrent": 0}, "max_concurrent_runs"),
        ({"concurrent": -1}, "max_concurrent_runs"),
        ({"concurrent": 1.5}, "max_concurrent_runs"),
        ({"concurrent": True}, "max_concurrent_runs"),
        ({"duration": 0}, "max_duration_minutes"),
        ({"duration": -5}, "max_duration_minutes"),
        ({"duration": math.nan}, "max_duration_minutes"),
        ({"duration": math.inf}, "max_duration_minutes"),
        ({"duration": True}, "max_duration_minutes"),
        ({"duration": "60"}, "max_duration_minutes"),
        ({"policy": "bandit"}, "policy"),
        ({"policy": {"kind": "BanditPolicy"}}, "policy"),
    ],
)
def test_bad_sweep_settings_name_their_field(overrides: dict[str, Any], field: str) -> None:
    error = error_of(lambda: settings(**overrides))
    assert error.field == f"Owner.{field}"
    assert field in str(error)


def test_grid_max_total_runs_is_validated_before_capping() -> None:
    assert error_of(lambda: settings(GRID6, total=0)).field == "Owner.max_total_runs"


def test_hyperdrive_config_validate(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    run_config = ScriptRunConfig(str(tmp_path), "train.py", arguments=["--lr", 0.5])
    config = HyperDriveConfig(run_config, GRID6, "accuracy", "maximize", max_concurrent_runs=2)
    result = config.validate()
    assert (result.max_total_runs, result.max_concurrent_runs, result.primary_metric_goal) == (6, 2, MAX)
    error = error_of(HyperDriveConfig(run_config, RANDOM, "accuracy", MAX).validate)
    assert error.field == "HyperDriveConfig.max_total_runs"
    error = error_of(HyperDriveConfig("train.py", GRID6, "accuracy", MAX).validate)  # type: ignore[arg-type]
    assert error.field == "HyperDriveConfig.run_config"
    bayesian = BayesianParameterSampling({"x": uniform(0, 1)})
    error = error_of(HyperDriveConfig(run_config, bayesian, "accuracy", MAX, 10,
                                      policy=MedianStoppingPolicy()).validate)
    assert error.field == "HyperDriveConfig.policy"


# ------------------------------------------------------------------------------------------- goal


@pytest.mark.parametrize(
    ("value", "expected"),
    [("maximize", MAX), ("MAXIMIZE", MAX), ("Maximize", MAX), ("MINIMIZE", MIN), ("minimize", MIN),
     (MAX, MAX), (MIN, MIN)],
)
def test_primary_metric_goal_parse_accepts(value: Any, expected: PrimaryMetricGoal) -> None:
    assert PrimaryMetricGoal.parse(value) is expected


@pytest.mark.parametrize("value", ["max", "min", "", " maximize", "MAXIMISE", None, 1, True, ["MAXIMIZE"]])
def test_primary_metric_goal_parse_refuses(value: Any) -> None:
    assert error_of(lambda: PrimaryMetricGoal.parse(value)).field == "primary_metric_goal"
    assert error_of(lambda: PrimaryMetricGoal.parse(value, "Op.goal")).field == "Op.goal"


def test_primary_metric_goal_better_and_best() -> None:
    assert MAX.better(2, 1) and not MAX.better(1, 2) and not MAX.better(1, 1)
    assert MIN.better(1, 2) and not MIN.better(2, 1) and not MIN.better(1, 1)
    assert MAX.best([3.0, 5.0, 1.0]) == 5.0
    assert MIN.best([3.0, 5.0, 1.0]) == 1.0


# ---------------------------------------------------------------------- review follow-ups
def test_an_integer_step_gives_integer_values() -> None:
    rng = random.Random(5)
    values = [quniform(16, 128, 16).sample(rng) for _ in range(200)]
    assert all(type(v) is int and v % 16 == 0 and 16 <= v <= 128 for v in values)
    assert trial_arguments(["--batch", 32], {"--batch": values[0]}) == ["--batch", values[0]]
    assert str(values[0]).isdigit(), "argparse type=int accepts it"
    assert all(type(qloguniform(0, 3, 1).sample(rng)) is int for _ in range(20))
    assert all(type(quniform(0, 1, 0.25).sample(rng)) is float for _ in range(20))


def test_a_resumed_bayesian_sampler_does_not_repeat_the_earlier_trials() -> None:
    space = {"x": uniform(0.0, 1.0), "k": choice("a", "b", "c")}
    first = BayesianParameterSampling(space, seed=9).sampler(9, PrimaryMetricGoal.MAXIMIZE)
    earlier = [first.suggest(i) for i in range(3)]
    for index, values in enumerate(earlier):
        first.observe(index, values, float(values["x"]))
    resumed = BayesianParameterSampling(space, seed=9).sampler(9, PrimaryMetricGoal.MAXIMIZE)
    for index, values in enumerate(earlier):
        resumed.observe(index, values, float(values["x"]))
    following = [resumed.suggest(i) for i in range(3, 6)]
    assert not any(values in earlier for values in following), (earlier, following)
    assert len(resumed._study.trials) == 6  # type: ignore[attr-defined]


def test_a_nan_result_teaches_the_bayesian_sampler_a_failure() -> None:
    sampler = BayesianParameterSampling({"x": uniform(0.0, 1.0)}, seed=1).sampler(1, PrimaryMetricGoal.MINIMIZE)
    values = sampler.suggest(0)
    sampler.observe(0, values, float("nan"))
    sampler.observe(1, {"x": 0.5}, float("inf"))
    states = [t.state.name for t in sampler._study.trials]  # type: ignore[attr-defined]
    assert states == ["FAIL", "FAIL"]
