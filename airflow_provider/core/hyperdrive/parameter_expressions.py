"""Parameter expressions of a hyperparameter search space (Azure ML v1's ``parameter_expressions``).

``choice(*options)`` is discrete; the others draw numbers:

- ``randint(upper)``: an integer in ``[0, upper)``.
- ``uniform(low, high)``: ``U(low, high)``; ``quniform(low, high, q)``: ``round(U(low, high) / q) * q``.
- ``loguniform(low, high)``: ``exp(U(low, high))``, so the value lies in ``[e**low, e**high]``
  (natural-log bounds: ``loguniform(math.log(1e-4), math.log(0.1))`` draws from 0.0001 to 0.1);
  ``qloguniform(low, high, q)``: ``round(exp(U(low, high)) / q) * q``.
- ``normal(mu, sigma)``: ``N(mu, sigma)``; ``qnormal(mu, sigma, q)``: ``round(N(mu, sigma) / q) * q``.
- ``lognormal(mu, sigma)``: ``exp(N(mu, sigma))``; ``qlognormal(mu, sigma, q)``: ``round(exp(N(mu, sigma)) / q) * q``.

Every expression is a frozen dataclass that serialises to JSON (``to_dict`` / :func:`expression_from_dict`),
so a sweep's search space can cross XCom and be stored on its parent run. Parameters whose draws
would not fit in a float (``loguniform(0, 1000)`` draws up to ``exp(1000)``) are refused when the
expression is made, and again when a sampling or ``HyperDriveConfig`` validates.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from typing import Any

from airflow_provider.core.errors import ConfigurationError

__all__ = [
    "Choice",
    "ParameterExpression",
    "Quantized",
    "Randint",
    "choice",
    "expression_from_dict",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]

ChoiceValue = str | int | float | bool


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of values.

    :param options: the values (strings, numbers or bools), at least one, no duplicates.
    """

    options: tuple[ChoiceValue, ...]

    def sample(self, rng: random.Random) -> ChoiceValue:
        """Draw one option, each equally likely.

        :param rng: the random source.
        """
        return self.options[rng.randrange(len(self.options))]

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {"type": "choice", "options": list(self.options)}


@dataclass(frozen=True)
class Randint:
    """An integer in ``[0, upper)``.

    :param upper: the exclusive upper bound (at least 1).
    """

    upper: int

    def sample(self, rng: random.Random) -> int:
        """Draw one integer.

        :param rng: the random source.
        """
        return rng.randrange(self.upper)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {"type": "randint", "upper": self.upper}


_DISTRIBUTIONS = ("uniform", "loguniform", "normal", "lognormal")
_MAX_EXPONENT = math.log(sys.float_info.max)
"""The largest ``x`` whose ``exp(x)`` is a finite float (about 709.78)."""
_GAUSS_REACH = 9.0
"""``random.gauss`` draws stay within 8.6 standard deviations of the mean (53-bit uniforms)."""


@dataclass(frozen=True)
class Quantized:
    """A continuous distribution, optionally rounded to a multiple of ``q``.

    :param distribution: ``uniform``, ``loguniform``, ``normal`` or ``lognormal``.
    :param a: ``low`` for the uniform kinds, ``mu`` for the normal kinds.
    :param b: ``high`` for the uniform kinds, ``sigma`` for the normal kinds.
    :param q: round to a multiple of this (None: no rounding).
    """

    distribution: str
    a: float
    b: float
    q: float | None = None

    @property
    def name(self) -> str:
        """The expression's name as users write it (``quniform``, ``lognormal``, ...)."""
        return f"q{self.distribution}" if self.q is not None else self.distribution

    def describe(self) -> str:
        """The expression as users write it, e.g. ``loguniform(low=0, high=1000)``."""
        first, second = ("low", "high") if self.distribution.endswith("uniform") else ("mu", "sigma")
        step = "" if self.q is None else f", q={self.q:g}"
        return f"{self.name}({first}={self.a:g}, {second}={self.b:g}{step})"

    def check_range(self, field: str | None = None) -> None:
        """Refuse parameters whose draws would not fit in a float (``exp(1000)`` overflows).

        :param field: how the caller names the expression; default :meth:`describe`.
        :raises ConfigurationError: naming the expression and the bounds to use instead.
        """
        field = field or self.describe()
        low, high = self._raw_reach(field)
        largest = max(abs(low), abs(high))
        if self.distribution.startswith("log"):
            if high > _MAX_EXPONENT:
                raise self._exponent_error(field, high)
            largest = math.exp(high)
        if self.q is not None and not math.isfinite(largest / self.q):
            raise ConfigurationError(field, f"draws values up to {largest:g}, which divided by q={self.q:g} are "
                                     "not finite.", "use a larger q or smaller bounds.")

    def _raw_reach(self, field: str) -> tuple[float, float]:
        """The lowest and highest value a draw can take before ``exp`` (a normal draw of ``random``
        stays within 9 standard deviations of its mean)."""
        if self.distribution.endswith("uniform"):
            low, high, spread = self.a, self.b, self.b - self.a
        else:
            low, high = self.a - _GAUSS_REACH * self.b, self.a + _GAUSS_REACH * self.b
            spread = abs(self.a) + _GAUSS_REACH * self.b
        if not math.isfinite(spread):
            raise ConfigurationError(field, "its draws would not stay finite: the parameters span more than a "
                                     "float holds.", "use parameters whose range stays below about 1e308.")
        return low, high

    def _exponent_error(self, field: str, high: float) -> ConfigurationError:
        if self.distribution == "loguniform":
            return ConfigurationError(
                field, f"draws exp(U({self.a:g}, {self.b:g})), and exp({self.b:g}) overflows a float (exponents "
                f"stop at {_MAX_EXPONENT:.2f}): {self.name} takes natural-log bounds, not the values themselves.",
                f"pass the natural logarithms of the bounds you want, e.g. {self.name}(math.log(1e-4), "
                "math.log(1e-1)" + ("" if self.q is None else f", {self.q:g}") + ") for values from 0.0001 to 0.1.")
        return ConfigurationError(
            field, f"draws exp(N({self.a:g}, {self.b:g})), which can reach exp({high:g}) and overflow a float "
            f"(exponents stop at {_MAX_EXPONENT:.2f}): {self.name} takes natural-log parameters (the mean and "
            "standard deviation of the value's logarithm).",
            f"pass mu and sigma of log(value), with mu + {_GAUSS_REACH:g} * sigma at most {_MAX_EXPONENT:.2f}, "
            f"e.g. {self.name}(math.log(0.01), 1.0" + ("" if self.q is None else f", {self.q:g}") + ").")

    def sample(self, rng: random.Random) -> float:
        """Draw one value.

        :param rng: the random source.
        """
        if self.distribution in ("uniform", "loguniform"):
            raw = rng.uniform(self.a, self.b)
        else:
            raw = rng.gauss(self.a, self.b)
        if self.distribution.startswith("log"):
            raw = math.exp(raw)
        return raw if self.q is None else quantize(raw, self.q)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {"type": "quantized", "distribution": self.distribution, "a": self.a, "b": self.b, "q": self.q}


ParameterExpression = Choice | Randint | Quantized
"""Any expression of a search space."""


def quantize(value: float, q: float) -> float:
    """``round(value / q) * q``, rounded again to ``q``'s decimals so 0.1 steps print as 0.3, not
    0.30000000000000004; an integer ``q`` gives an integer (``--batch 96``, not ``96.0``, which
    ``argparse`` ``type=int`` refuses).

    :param value: the raw value.
    :param q: the step.
    """
    if float(q).is_integer():
        return round(value / q) * int(q)
    decimals = max(0, -math.floor(math.log10(q))) + 6
    return round(round(value / q) * q, decimals)


def _number(expression: str, name: str, value: object, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{expression}({name}=...)", f"must be a finite number, got {value!r}.",
                                 f"pass a number, e.g. {expression}(0.01, 0.1).")
    if positive and value <= 0:
        raise ConfigurationError(f"{expression}({name}=...)", f"must be positive, got {value!r}.",
                                 "pass a number above 0.")
    return float(value)


def choice(*options: Any) -> Choice:
    """One of the given values: ``choice(16, 32, 64)`` or ``choice([16, 32, 64])`` or ``choice(range(1, 5))``.

    :param options: the values (strings, numbers or bools).
    """
    values = list(options[0]) if len(options) == 1 and isinstance(options[0], (list, tuple, range)) else list(options)
    if not values:
        raise ConfigurationError("choice()", "has no options.", "pass at least one value, e.g. choice(16, 32).")
    for value in values:
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigurationError("choice()", f"option {value!r} is a {type(value).__name__}.",
                                     "use strings, numbers or bools; they become command-line arguments.")
    if len(set(map(repr, values))) != len(values):
        raise ConfigurationError("choice()", f"lists a value twice: {values!r}.", "remove the duplicate.")
    return Choice(tuple(values))


def randint(upper: int) -> Randint:
    """An integer in ``[0, upper)``.

    :param upper: the exclusive upper bound.
    """
    if isinstance(upper, bool) or not isinstance(upper, int) or upper < 1:
        raise ConfigurationError("randint(upper=...)", f"must be an integer of at least 1, got {upper!r}.",
                                 "pass e.g. randint(10) for 0..9.")
    return Randint(upper)


def _bounded(name: str, low: object, high: object, q: object = None, log: bool = False) -> Quantized:
    lower = _number(name, "low", low)
    upper = _number(name, "high", high)
    if lower >= upper:
        raise ConfigurationError(f"{name}(low, high)", f"low {lower} is not below high {upper}.",
                                 "pass low < high" + (" (both are exponents: the value is exp(U(low, high)))"
                                                      if log else "") + ".")
    step = None if q is None else _number(name, "q", q, positive=True)
    return _checked(Quantized("loguniform" if log else "uniform", lower, upper, step))


def _gaussian(name: str, mu: object, sigma: object, q: object = None, log: bool = False) -> Quantized:
    step = None if q is None else _number(name, "q", q, positive=True)
    return _checked(Quantized("lognormal" if log else "normal", _number(name, "mu", mu),
                              _number(name, "sigma", sigma, positive=True), step))


def _checked(expression: Quantized) -> Quantized:
    expression.check_range()
    return expression


def uniform(low: float, high: float) -> Quantized:
    """A value drawn uniformly from ``[low, high]``.

    :param low: the lower bound.
    :param high: the upper bound.
    """
    return _bounded("uniform", low, high)


def quniform(low: float, high: float, q: float) -> Quantized:
    """``round(uniform(low, high) / q) * q``.

    :param low: the lower bound.
    :param high: the upper bound.
    :param q: the step.
    """
    return _bounded("quniform", low, high, q)


def loguniform(low: float, high: float) -> Quantized:
    """``exp(uniform(low, high))``: the logarithm of the value is uniform.

    :param low: the lower bound of the exponent.
    :param high: the upper bound of the exponent.
    """
    return _bounded("loguniform", low, high, log=True)


def qloguniform(low: float, high: float, q: float) -> Quantized:
    """``round(exp(uniform(low, high)) / q) * q``.

    :param low: the lower bound of the exponent.
    :param high: the upper bound of the exponent.
    :param q: the step.
    """
    return _bounded("qloguniform", low, high, q, log=True)


def normal(mu: float, sigma: float) -> Quantized:
    """A value drawn from the normal distribution ``N(mu, sigma)``.

    :param mu: the mean.
    :param sigma: the standard deviation.
    """
    return _gaussian("normal", mu, sigma)


def qnormal(mu: float, sigma: float, q: float) -> Quantized:
    """``round(normal(mu, sigma) / q) * q``.

    :param mu: the mean.
    :param sigma: the standard deviation.
    :param q: the step.
    """
    return _gaussian("qnormal", mu, sigma, q)


def lognormal(mu: float, sigma: float) -> Quantized:
    """``exp(normal(mu, sigma))``.

    :param mu: the mean of the logarithm.
    :param sigma: the standard deviation of the logarithm.
    """
    return _gaussian("lognormal", mu, sigma, log=True)


def qlognormal(mu: float, sigma: float, q: float) -> Quantized:
    """``round(exp(normal(mu, sigma)) / q) * q``.

    :param mu: the mean of the logarithm.
    :param sigma: the standard deviation of the logarithm.
    :param q: the step.
    """
    return _gaussian("qlognormal", mu, sigma, q, log=True)


def expression_from_dict(data: dict[str, Any]) -> ParameterExpression:
    """Rebuild an expression from its ``to_dict()`` form.

    :param data: the serialised expression.
    """
    kind = data.get("type")
    if kind == "choice":
        return choice(*data["options"])
    if kind == "randint":
        return randint(int(data["upper"]))
    if kind == "quantized" and data.get("distribution") in _DISTRIBUTIONS:
        return _checked(Quantized(str(data["distribution"]), float(data["a"]), float(data["b"]),
                                  None if data.get("q") is None else float(data["q"])))
    raise ConfigurationError("parameter_space", f"{data!r} is not a parameter expression.",
                             "build it with choice(), uniform(), ... from airflow_provider.core.hyperdrive.")
