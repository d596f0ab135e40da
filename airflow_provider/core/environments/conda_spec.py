"""Conda specifications as Azure ML v1 users wrote them, and their translation for hosts without conda.

* :class:`CondaDependencies`: Azure ML v1's ``azureml.core.conda_dependencies.CondaDependencies``
  (``create``, ``add_conda_package``, ``add_pip_package``, ``serialize_to_string``, ``save_to_file``, ...),
  read from and written to conda environment files (``environment.yml``).
* :class:`CondaMatchSpec`: one conda package entry (a *match spec*) such as ``numpy=1.26``,
  ``numpy>=1.24,<2``, ``numpy 1.26.* py311_0``, ``conda-forge::numpy`` or ``numpy[version='>=1.24']``.
* :func:`translate_to_pip`: the pip requirements that stand in for a conda specification on a host
  that has no conda, micromamba or mamba, with notes on everything that was renamed or left out.

Version translation (conda's own rules, from its ``MatchSpec`` and ``VersionSpec``):

=========================  ===================  ==================================================
conda entry                pip requirement      why
=========================  ===================  ==================================================
``numpy=1.2``              ``numpy==1.2.*``     ``=`` is conda's fuzzy match: any 1.2.x
``numpy==1.2``             ``numpy==1.2``       exact (conda and pip both read 1.2 as 1.2.0)
``numpy 1.2``              ``numpy==1.2``       a bare version is exact in conda, not fuzzy
``numpy 1.2.*``            ``numpy==1.2.*``     wildcard (``1.2*`` is the same in conda)
``numpy>=1.2,<2``          ``numpy>=1.2,<2``    ranges are the same in both
``numpy=1.2=py311_0``      ``numpy==1.2``       with a build string conda reads ``=1.2`` as exact;
                                                the build string is dropped, with a note
``conda-forge::numpy``     ``numpy``            the channel is dropped, with a note
``numpy=1.2|1.3``          refused              pip has no "or" between versions
=========================  ===================  ==================================================

Conda names differ from PyPI names for some packages (:data:`PYPI_NAMES`), and some conda packages
have no PyPI equivalent at all (:data:`CONDA_ONLY`, :func:`is_conda_only`): a specification that
needs one of those is refused on a host without conda, naming every such package at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.variables import validate_variables

__all__ = [
    "CONDA_ONLY",
    "DEFAULT_CHANNELS",
    "DEFAULT_CONDA_FILE_NAME",
    "DEFAULT_ENVIRONMENT_NAME",
    "PYPI_NAMES",
    "CondaDependencies",
    "CondaMatchSpec",
    "PipTranslation",
    "is_conda_only",
    "translate_to_pip",
]

DEFAULT_FIELD = "environment.python.conda_dependencies"
DEFAULT_ENVIRONMENT_NAME = "project_environment"
"""The name of a specification that names none (Azure ML v1's default too)."""
DEFAULT_CHANNELS: tuple[str, ...] = ("conda-forge",)
"""Channels of a new, empty :class:`CondaDependencies` (Azure ML v1 had ``anaconda`` and
``conda-forge``; ``anaconda`` is left out: Anaconda's terms of service require a paid licence for
larger organisations)."""
DEFAULT_CONDA_FILE_NAME = "conda_dependencies.yml"
"""The file :meth:`CondaDependencies.save_to_file` writes when given no file name."""

PYPI_NAMES: dict[str, str] = {
    # PyTorch: the conda packages are "pytorch" (and CPU / GPU metapackages), the wheel is "torch".
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    # XGBoost and LightGBM: conda-forge splits the Python package ("py-...") from the C++ library.
    "py-xgboost": "xgboost",
    "py-xgboost-cpu": "xgboost",
    "py-xgboost-gpu": "xgboost",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "py-lightgbm": "lightgbm",
    # TensorFlow: "tensorflow-gpu" on PyPI is an empty package that refuses to install since 2.12;
    # the "tensorflow" wheel has the GPU support.
    "tensorflow": "tensorflow",
    "tensorflow-cpu": "tensorflow-cpu",
    "tensorflow-gpu": "tensorflow",
    # Python packages named differently on conda.
    "matplotlib-base": "matplotlib",
    "pytables": "tables",
    "opencv": "opencv-python",
    "py-opencv": "opencv-python",
    "msgpack-python": "msgpack",  # "msgpack-python" on PyPI is the old name, frozen at 0.5.6 (2018)
    "pyqt": "PyQt5",
    "python-graphviz": "graphviz",  # conda's "graphviz" is the C tool, in CONDA_ONLY
    "typing_extensions": "typing-extensions",
}
"""Conda package name -> PyPI project name, where they differ (a few identical names are listed to
show they were checked). Names not listed are the same on PyPI, which is the common case
(``numpy``, ``pandas``, ``scipy``, ``scikit-learn``, ``mlflow``, ...)."""

CONDA_ONLY: frozenset[str] = frozenset(
    {
        # NVIDIA CUDA as conda packages; pip-installed frameworks bring CUDA as nvidia-*-cu12 wheels.
        "cudatoolkit",
        "cudatoolkit-dev",
        "cudnn",
        "nccl",
        "magma",
        # PyTorch channel metapackages that select a build of pytorch.
        "pytorch-cuda",
        "cpuonly",
        # BLAS / LAPACK selection and libraries.
        "blas",
        "libblas",
        "libcblas",
        "liblapack",
        "liblapacke",
        "openblas",
        "libopenblas",
        # Compilers and build tools (cmake and ninja are on PyPI and are not listed; PyPI's "make" is
        # an unrelated project).
        "gcc_linux-64",
        "gxx_linux-64",
        "gfortran_linux-64",
        "binutils_linux-64",
        "ld_impl_linux-64",
        "c-compiler",
        "cxx-compiler",
        "fortran-compiler",
        "compilers",
        "make",
        # C and C++ runtimes.
        "libgcc-ng",
        "libstdcxx-ng",
        "libgcc",
        "libstdcxx",
        "libgomp",
        "libgfortran-ng",
        "libgfortran5",
        "_libgcc_mutex",
        "_openmp_mutex",
        "llvm-openmp",
        # C libraries conda's Python is linked against (PyPI's "readline" and "tk" are other projects).
        "ca-certificates",
        "openssl",
        "libffi",
        "zlib",
        "libzlib",
        "readline",
        "ncurses",
        "tk",
        "xz",
        "sqlite",
        "libsqlite",
        "bzip2",
        "libuuid",
        "libnsl",
        "libxcrypt",
        "libexpat",
        "liblzma",
        "libmpdec",
        # Graphviz the C tool (the Python bindings are "python-graphviz", PyPI "graphviz").
        "graphviz",
    }
)
"""Conda packages with no PyPI equivalent: pip cannot install what they provide. Besides these,
names starting with ``cuda-``, ``libcu`` or ``libnv`` (NVIDIA runtime pieces) are conda-only, except
NVIDIA's Python packages ``cuda-python``, ``cuda-bindings``, ``cuda-core`` and ``cuda-pathfinder``.
Intel's ``mkl``, ``mkl-service``, ``mkl_fft``, ``mkl_random`` and ``intel-openmp`` are on PyPI
under the same names and are translated like any package."""

_CONDA_ONLY_PREFIXES = ("cuda-", "libcu", "libnv")
_PYPI_CUDA_PACKAGES = frozenset({"cuda-python", "cuda-bindings", "cuda-core", "cuda-pathfinder"})
_NOT_INSTALLED = frozenset({"pip"})
_KEPT_FOR_UV = frozenset({"setuptools", "wheel"})
_TOP_LEVEL_KEYS = ("name", "channels", "dependencies", "prefix", "variables")

_PACKAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_VERSION_TERM = re.compile(r"(?P<op>==|!=|<=|>=|~=|<|>|=)?(?P<version>\*|[A-Za-z0-9][A-Za-z0-9_.+!]*(?:\.\*|\*)?)")
_BUILD = re.compile(r"[A-Za-z0-9_.*+]+")
_BRACKET_ITEM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:'([^']*)'|\"([^\"]*)\"|([^,\s'\"]+))\s*(?:,|\Z)")
_BRACKET_KEYS = ("version", "build", "channel")
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_.\-]+)*")
_CHANNEL_URL = re.compile(r"(?:https?|s3|ftp)://[^\s/]+\S*")
_PIP_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?=\Z|[\[;@<>=!~ (])")
_SINGLE_VALUED_PIP_OPTIONS = ("-i", "--index-url")

_SPEC_FIX = (
    'write a conda package spec such as "numpy", "numpy=1.26", "numpy>=1.24,<2", "numpy 1.26.*", '
    '"numpy=1.26.4=py311_0" or "conda-forge::numpy=1.26".'
)


def is_conda_only(name: str) -> bool:
    """Whether the conda package ``name`` has no PyPI equivalent (see :data:`CONDA_ONLY`).

    :param name: a conda package name.
    """
    name = name.lower()
    return name in CONDA_ONLY or (name.startswith(_CONDA_ONLY_PREFIXES) and name not in _PYPI_CUDA_PACKAGES)


def _conda_only_fix(names: list[str]) -> str:
    return (
        "install micromamba, mamba or conda on the target (or name it on the connection) so the specification "
        f"builds as a conda environment, or remove {', '.join(names)} from the specification."
    )


# --------------------------------------------------------------------------------------------- match specs
@dataclass(frozen=True)
class CondaMatchSpec:
    """One conda package entry, parsed as conda parses it (:meth:`parse`).

    :param name: the package name, lower case as conda compares it.
    :param version: conda's version spec after conda's own translation of the ``=`` forms: ``=1.2``
        becomes ``1.2.*`` (fuzzy), ``==1.2`` becomes ``1.2``; a bare version such as ``1.2`` is an
        exact match, as in conda. ``None``: any version.
    :param build: the build string (may hold ``*``), or ``None``.
    :param channel: the channel named with ``channel::`` or ``[channel=...]``, or ``None``.
    :param source: the text it was parsed from, for messages (not compared).
    """

    name: str
    version: str | None = None
    build: str | None = None
    channel: str | None = None
    source: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, field: str = DEFAULT_FIELD) -> CondaMatchSpec:
        """Parse a conda match spec: ``name``, ``name=1.2``, ``name==1.2``, ``name>=1.2,<2``,
        ``name 1.2.*``, ``name=1.2=py311_0``, ``name 1.2 py311_0``, ``channel::name=1.2``,
        ``name[version='>=1.2', build=py311_0, channel=conda-forge]``, ``name=1.2|1.3``.

        :param text: the entry.
        :param field: how the caller names the field in messages.
        :raises ConfigurationError: naming the entry when it cannot be read.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(field, f"{text!r} is not a conda package spec.", _SPEC_FIX)
        source = text.strip()

        def bad(problem: str) -> ConfigurationError:
            return ConfigurationError(field, f"{source!r} is not a conda package spec: {problem}.", _SPEC_FIX)

        head, brackets = _split_brackets(source, bad)
        channel: str | None = None
        if "::" in head:
            channel, _, head = head.rpartition("::")
            if not _is_channel_syntax(channel):
                raise bad(f"{channel!r} is not a channel")
        head = head.strip()
        match = _PACKAGE_NAME.match(head)
        if match is None:
            raise bad("it has no package name")
        name, rest = match.group(), head[match.end() :]
        if rest and rest[0] not in " =<>!~":
            raise bad(f"{rest[0]!r} cannot follow the package name")
        version, build = _version_and_build(rest.strip())
        if "version" in brackets:
            version = brackets["version"].replace(" ", "")
        if "build" in brackets:
            build = brackets["build"]
        if "channel" in brackets:
            channel = brackets["channel"]
            if not _is_channel_syntax(channel):
                raise bad(f"{channel!r} is not a channel")
        if version is not None:
            _check_version(version, bad)
        if build is not None and not _BUILD.fullmatch(build):
            raise bad(f"{build!r} is not a build string")
        return cls(name.lower(), version, build, channel, source=source)

    def __str__(self) -> str:
        """The spec in conda's space-separated form (``channel::name version build``), which
        :meth:`parse` reads back to an equal spec."""
        text = f"{self.channel}::{self.name}" if self.channel else self.name
        if self.version is not None or self.build is not None:
            text += f" {self.version if self.version is not None else '*'}"
        if self.build is not None:
            text += f" {self.build}"
        return text

    @property
    def pypi_name(self) -> str:
        """The PyPI project that stands in for this package (:data:`PYPI_NAMES`, else the same name)."""
        return PYPI_NAMES.get(self.name, self.name)

    def to_pip(self, field: str = DEFAULT_FIELD) -> str:
        """The pip requirement for this package: the PyPI name and the version translated (see the
        module's table). The build string and the channel are dropped.

        :param field: how the caller names the field in messages.
        :raises ConfigurationError: for a conda-only package (:func:`is_conda_only`), alternatives
            (``1.2|1.3``), or a version that is not a PEP 440 version pip understands.
        """
        entry = self.source or str(self)
        if is_conda_only(self.name):
            raise ConfigurationError(
                field,
                f"{entry!r}: {self.name} is a conda package with no PyPI equivalent.",
                _conda_only_fix([self.name]),
            )
        return self.pypi_name + _pip_specifier(self.version, entry, field)


def _split_brackets(source: str, bad: Callable[[str], ConfigurationError]) -> tuple[str, dict[str, str]]:
    """Split ``name[key=value, ...]`` into ``name`` and the bracket's keys."""
    if "[" not in source and "]" not in source:
        return source, {}
    start = source.find("[")
    if start < 0 or not source.endswith("]") or source.count("[") != 1 or source.count("]") != 1:
        raise bad("its [...] part must come once, at the end")
    content = source[start + 1 : -1]
    items: dict[str, str] = {}
    position = 0
    while position < len(content):
        match = _BRACKET_ITEM.match(content, position)
        if match is None or match.end() == position:
            raise bad(f"cannot read {content[position:]!r} in its [...] part")
        key = match.group(1)
        value = next((g for g in match.group(2, 3, 4) if g is not None), "")
        if key not in _BRACKET_KEYS:
            raise bad(f"[{key}=...] is not supported (use {', '.join(_BRACKET_KEYS)})")
        if not value.strip():
            raise bad(f"[{key}=...] is empty")
        items[key] = value.strip()
        position = match.end()
    return source[:start], items


def _version_and_build(rest: str) -> tuple[str | None, str | None]:
    """Split what follows the name into conda's version spec and build string, translating the
    ``=`` forms as conda does: ``=1.2`` -> ``1.2.*``, ``==1.2`` -> ``1.2`` (both without a build),
    ``=1.2`` with a build -> ``1.2``."""
    if not rest:
        return None, None
    tokens = rest.split()
    build: str | None = None
    if len(tokens) > 1 and not tokens[-2].endswith(tuple("=<>!~,|")) and not tokens[-1].startswith(tuple("<>!~,|")):
        last = tokens.pop()
        build = last[1:] if last.startswith("=") and not last.startswith("==") else last
    version = "".join(tokens)
    if build is None:  # "1.2=py311_0", "=1.2=py311_0", "==1.2=py311_0"
        cut = version.rfind("=")
        if cut > 0 and version[cut - 1] not in "=<>!~,|":
            candidate = version[cut + 1 :]
            if candidate and not any(c in candidate for c in ",|<>=!~"):
                version, build = version[:cut], candidate
    if version.startswith("="):
        after = version[1:]
        if version.startswith("==") and build is None:
            version = version[2:]
        elif after and after[0] not in "<>!~" and not any(c in after for c in "=,|"):
            version = after if build is not None or after.endswith("*") else after + ".*"
    single = bool(version) and version[0] not in "=<>!~" and not any(c in version for c in ",|")
    if single and version.endswith("*") and not version.endswith(".*") and version != "*":
        version = version[:-1] + ".*"  # conda reads 1.2* as 1.2.*
    return version, build


def _check_version(version: str, bad: Callable[[str], ConfigurationError]) -> None:
    for alternative in version.split("|"):
        for term in alternative.split(","):
            match = _VERSION_TERM.fullmatch(term)
            extra = " (parentheses are not supported)" if "(" in version else ""
            if match is None:
                raise bad(f"cannot read the version {version!r}{extra}")
            op, number = match.group("op") or "", match.group("version")
            starred = number.endswith("*") and number != "*"
            if op in ("<", ">", "<=", ">=", "~=") and starred and (op == "~=" or not number.endswith(".*")):
                raise bad(f"cannot read the version {version!r}: {op} takes no wildcard")
            if number == "*" and op not in ("", "=", "=="):
                raise bad(f"cannot read the version {version!r}: {op} needs a version")


def _pip_specifier(version: str | None, entry: str, field: str) -> str:
    """Translate a conda version spec (as :class:`CondaMatchSpec` holds it) into a pip specifier."""
    if version is None:
        return ""
    if "|" in version:
        raise ConfigurationError(
            field,
            f"{entry!r} allows alternative versions ({version}), which one pip requirement cannot express.",
            "keep one version or one range (e.g. numpy=1.3 or numpy>=1.2,<1.4), or install micromamba, mamba or "
            "conda on the target so the specification builds as a conda environment.",
        )
    parts: list[str] = []
    for term in version.split(","):
        match = _VERSION_TERM.fullmatch(term)
        if match is None:
            raise ConfigurationError(field, f"{entry!r}: cannot read the version {version!r}.", _SPEC_FIX)
        op, number = match.group("op") or "", match.group("version")
        if number == "*":
            continue  # any version
        wildcard = number.endswith("*")
        base = number[:-2] if number.endswith(".*") else number.rstrip("*")
        if op in ("", "=="):
            parts.append(f"=={base}.*" if wildcard else f"=={base}")
        elif op == "=":
            parts.append(f"=={base}.*")
        elif op == "!=":
            parts.append(f"!={base}.*" if wildcard else f"!={base}")
        else:  # <, >, <=, >=, ~=; conda ignores a ".*" after them, and so does this
            parts.append(f"{op}{base}")
    specifier = ",".join(parts)
    try:
        SpecifierSet(specifier)
    except InvalidSpecifier:
        raise ConfigurationError(
            field,
            f"{entry!r}: the version {version!r} becomes {specifier!r}, which is not a PEP 440 version "
            "range pip understands.",
            "write the version as pip would (e.g. 1.2.3, 1.2.*, >=1.2,<2), move the package to the pip section "
            "with its PyPI version, or install micromamba, mamba or conda on the target.",
        ) from None
    return specifier


# --------------------------------------------------------------------------------------------- channels
def _is_channel_syntax(channel: str) -> bool:
    return (
        bool(_CHANNEL_NAME.fullmatch(channel) or _CHANNEL_URL.fullmatch(channel)) or _local_channel(channel) is not None
    )


def _local_channel(channel: str) -> Path | None:
    """The folder a local channel names (``file:///path``, ``/path``, ``~/path``, ``./path``), else None."""
    if channel.startswith("file://"):
        path = unquote(urlparse(channel).path)
        return Path(path) if path else None
    if channel.startswith(("/", "~", "./", "../")):
        return Path(channel).expanduser()
    return None


def _check_channel(channel: object, field: str) -> None:
    if not isinstance(channel, str) or not _is_channel_syntax(channel):
        raise ConfigurationError(
            field,
            f"{channel!r} is not a channel.",
            "name a channel such as conda-forge, defaults, pytorch or nvidia, a URL such as "
            "https://conda.anaconda.org/conda-forge, or a local channel folder as file:///path or /path.",
        )


# --------------------------------------------------------------------------------------------- pip lines
def _pip_name(line: str) -> str | None:
    """The normalized project name of a pip requirement line; None for options, URLs and paths."""
    if line.startswith("-"):
        return None
    match = _PIP_NAME.match(line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else None


# --------------------------------------------------------------------------------------------- YAML positions
@dataclass
class _Lines:
    """Line numbers (1-based) of a conda environment file's parts, for messages."""

    top: dict[str, int] = field(default_factory=dict)
    dependencies: list[int] = field(default_factory=list)
    pip: list[int] = field(default_factory=list)

    @staticmethod
    def of(text: str) -> _Lines:
        lines = _Lines()
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return lines
        if not isinstance(root, yaml.MappingNode):
            return lines
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode):
                lines.top[str(key.value)] = key.start_mark.line + 1
            if getattr(key, "value", None) == "dependencies" and isinstance(value, yaml.SequenceNode):
                for item in value.value:
                    lines.dependencies.append(item.start_mark.line + 1)
                    if isinstance(item, yaml.MappingNode):
                        for pip_key, pip_value in item.value:
                            if getattr(pip_key, "value", None) == "pip" and isinstance(pip_value, yaml.SequenceNode):
                                lines.pip = [entry.start_mark.line + 1 for entry in pip_value.value]
        return lines


def _at(where: str, line: int | None) -> str:
    return f"{where}, line {line}" if line else where


def _line(lines: list[int], index: int) -> int | None:
    return lines[index] if index < len(lines) else None


# --------------------------------------------------------------------------------------------- CondaDependencies
class CondaDependencies:
    """A conda environment specification, as Azure ML v1's ``CondaDependencies``.

    Without a file, the specification is empty: named ``project_environment``, with the channels of
    :data:`DEFAULT_CHANNELS`, no Python version (the target's default interpreter version is used)
    and no packages. Azure ML v1 also listed ``python=3.x`` and ``azureml-defaults``; neither is
    added here: ``from azureml.core import Run`` works through the provider's compatibility layer.

    The Python entry (``python=3.11``) is held apart from the other conda packages: see
    :meth:`get_python_version`; :attr:`conda_packages` does not list it.

    :param conda_dependencies_file_path: a conda environment file (``environment.yml``) to read now.
    """

    def __init__(self, conda_dependencies_file_path: str | os.PathLike[str] | None = None) -> None:
        self._name = DEFAULT_ENVIRONMENT_NAME
        self._channels: list[str] = list(DEFAULT_CHANNELS)
        self._python: str | None = None
        self._conda: list[str] = []
        self._pip: list[str] = []
        self._variables: dict[str, str] = {}
        self._file_path: str | None = None
        if conda_dependencies_file_path is not None:
            loaded = CondaDependencies.from_file(
                conda_dependencies_file_path, "CondaDependencies.conda_dependencies_file_path"
            )
            self._take(loaded)

    def _take(self, other: CondaDependencies) -> None:
        self._name, self._channels, self._python = other._name, list(other._channels), other._python
        self._conda, self._pip, self._variables = list(other._conda), list(other._pip), dict(other._variables)
        self._file_path = other._file_path

    # ----------------------------------------------------------------- constructors
    @staticmethod
    def create(
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
        pip_indexurl: str | None = None,
        channels: list[str] | None = None,
    ) -> CondaDependencies:
        """Create a specification, as Azure ML v1's ``CondaDependencies.create``.

        :param pip_packages: pip requirements, e.g. ``["mlflow", "scikit-learn>=1.3"]``.
        :param conda_packages: conda package specs, e.g. ``["numpy=1.26"]``.
        :param python_version: the Python version, e.g. ``"3.11"`` (becomes ``python=3.11``).
        :param pin_sdk_version: accepted and ignored: Azure ML pinned its own SDK packages; there is
            no Azure SDK to pin here.
        :param pip_indexurl: a package index, written as ``--index-url URL`` in the pip section.
        :param channels: channels added after :data:`DEFAULT_CHANNELS`, as Azure ML added them after its own.
        """
        del pin_sdk_version
        deps = CondaDependencies()
        for channel in channels or []:
            deps.add_channel(channel)
        for spec in conda_packages or []:
            deps.add_conda_package(spec)
        if python_version is not None:
            deps.set_python_version(python_version)
        if pip_indexurl:
            deps.set_pip_option(f"--index-url {pip_indexurl}")
        for requirement in pip_packages or []:
            deps.add_pip_package(requirement)
        return deps

    @classmethod
    def from_file(
        cls, file_path: str | os.PathLike[str], field: str = "Environment.from_conda_specification.file_path"
    ) -> CondaDependencies:
        """Read a conda environment file (``environment.yml``).

        :param file_path: the file.
        :param field: how the caller names the path in messages.
        :raises ConfigurationError: the file cannot be read, is not UTF-8, is not valid YAML (with its
            line and column) or is not a conda environment specification (with the line at fault).
        """
        path = Path(file_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                field,
                f"cannot read conda specification file {str(path)!r}: {exc.strerror or exc}.",
                "pass the path of an existing, readable conda environment file (environment.yml).",
            ) from exc
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ConfigurationError(
                field,
                f"conda specification file {str(path)!r} is not UTF-8 text: byte {data[exc.start]:#04x} on "
                f"line {line} cannot be decoded.",
                "save the file as UTF-8 (conda reads environment files as UTF-8), e.g. iconv -f latin1 -t utf-8.",
            ) from None
        deps = cls._from_text(text, field, repr(str(path)))
        deps._file_path = str(path)
        return deps

    @staticmethod
    def from_string(text: str) -> CondaDependencies:
        """Read a specification from conda environment YAML (what :meth:`serialize_to_string` writes).

        :param text: the YAML text.
        """
        return CondaDependencies._from_text(text, "CondaDependencies.from_string", "the conda specification")

    @staticmethod
    def _from_text(text: str, field: str, where: str) -> CondaDependencies:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigurationError(
                field,
                f"{where} is not valid YAML: {problem}{position}.",
                "correct the YAML there; a conda environment file is a mapping with name, channels and "
                "dependencies, each dependency a '- ' list item.",
            ) from None
        return CondaDependencies._from_dict(data, field, where, _Lines.of(text))

    @staticmethod
    def _from_dict(
        data: object,
        field: str = "CondaDependencies._from_dict",
        where: str = "the conda specification",
        lines: _Lines | None = None,
    ) -> CondaDependencies:
        """Build a specification from a conda environment document as YAML loads it.

        :param data: the document (``name``, ``channels``, ``dependencies``, ``prefix``, ``variables``).
        :param field: how the caller names the input in messages.
        :param where: how messages name the document, e.g. the file's path.
        :param lines: where the document's parts are, for messages.
        """
        lines = lines or _Lines()
        if data is None:
            raise ConfigurationError(
                field, f"{where} is empty.", "write a conda environment file with at least a dependencies list."
            )
        if not isinstance(data, dict):
            raise ConfigurationError(
                field,
                f"{where} is not a conda environment specification: its top level is a "
                f"{type(data).__name__}, not a mapping.",
                "write name:, channels: and dependencies: keys; for a pip requirements file use "
                "Environment.from_pip_requirements instead.",
            )
        for key in data:
            if key not in _TOP_LEVEL_KEYS:
                raise ConfigurationError(
                    field,
                    f"{_at(where, lines.top.get(str(key)))}: unknown top-level key {key!r}.",
                    f"use only {', '.join(_TOP_LEVEL_KEYS)} (the keys of a conda environment file).",
                )
        deps = CondaDependencies()
        name = data.get("name")
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise ConfigurationError(
                    field,
                    f"{_at(where, lines.top.get('name'))}: name {name!r} is not a string.",
                    'quote it, e.g. name: "my-environment".',
                )
            deps._name = name.strip()
        channels = data.get("channels")
        if channels is not None:
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise ConfigurationError(
                    field,
                    f"{_at(where, lines.top.get('channels'))}: channels must be a list of channel names, "
                    f"got {channels!r}.",
                    "write each channel as a '- ' list item, e.g. '- conda-forge'.",
                )
            deps._channels = [c.strip() for c in channels]
        deps._read_dependencies(data.get("dependencies"), field, where, lines)
        variables = data.get("variables")
        if variables is not None:
            deps._variables = _read_variables(variables, field, _at(where, lines.top.get("variables")))
        return deps

    def _read_dependencies(self, entries: object, field: str, where: str, lines: _Lines) -> None:
        if entries is None:
            return
        if not isinstance(entries, list):
            raise ConfigurationError(
                field,
                f"{_at(where, lines.top.get('dependencies'))}: dependencies must be a list, "
                f"got {type(entries).__name__}.",
                "write each package as a '- ' list item, e.g. '- numpy=1.26'.",
            )
        seen_pip = False
        for index, entry in enumerate(entries):
            here = _at(where, _line(lines.dependencies, index))
            if isinstance(entry, str):
                try:
                    spec = CondaMatchSpec.parse(entry, field)
                except ConfigurationError as exc:
                    raise ConfigurationError(field, f"{here}: {exc.problem}", exc.fix) from None
                if spec.name == "python":
                    if self._python is not None:
                        raise ConfigurationError(
                            field,
                            f"{here}: python is listed twice ({self._python!r} and {entry.strip()!r}).",
                            "keep one python entry.",
                        )
                    self._python = spec.source
                else:
                    self._conda.append(spec.source)
            elif isinstance(entry, dict) and list(entry) == ["pip"]:
                if seen_pip:
                    raise ConfigurationError(
                        field, f"{here}: a second pip section.", "merge the pip sections into one '- pip:' list."
                    )
                seen_pip = True
                self._pip = _read_pip_section(entry["pip"], field, where, here, lines.pip)
            elif isinstance(entry, dict):
                raise ConfigurationError(
                    field,
                    f"{here}: dependency entry {entry!r} is a mapping with keys {sorted(map(str, entry))}; "
                    "only a pip section {pip: [...]} may be a mapping.",
                    "write conda packages as strings, and pip requirements under '- pip:'.",
                )
            else:
                kind = (
                    "a number"
                    if isinstance(entry, (int, float)) and not isinstance(entry, bool)
                    else f"a {type(entry).__name__}"
                )
                raise ConfigurationError(
                    field,
                    f"{here}: dependency entry {entry!r} is {kind}, not a package spec.",
                    'write a conda package spec as a string, such as "numpy=1.26" or "python=3.11" (quote '
                    "versions: - \"3.8\" is a number), or a pip section '- pip: [...]'.",
                )

    # ----------------------------------------------------------------- conda packages
    def add_conda_package(self, conda_package: str) -> None:
        """Add a conda package. An entry for the same package is removed first, so the new one ends
        the list (as Azure ML v1 did). ``python`` entries set the Python version instead.

        :param conda_package: a conda package spec, e.g. ``"numpy=1.26"``.
        """
        spec = CondaMatchSpec.parse(conda_package, "CondaDependencies.add_conda_package")
        if spec.name == "python":
            self._python = spec.source
            return
        self.remove_conda_package(spec.name)
        self._conda.append(spec.source)

    def remove_conda_package(self, conda_package: str) -> None:
        """Remove every entry of a conda package (``python`` removes the Python version).

        :param conda_package: the package's name (a spec such as ``"numpy=1.26"`` names it too).
        """
        name = CondaMatchSpec.parse(conda_package, "CondaDependencies.remove_conda_package").name
        if name == "python":
            self._python = None
        self._conda = [e for e in self._conda if CondaMatchSpec.parse(e).name != name]

    @property
    def conda_packages(self) -> list[str]:
        """The conda package specs, without the Python entry (a copy)."""
        return list(self._conda)

    # ----------------------------------------------------------------- pip packages
    def add_pip_package(self, pip_package: str) -> None:
        """Add a pip requirement. A requirement for the same project is removed first, so the new one
        ends the list (as Azure ML v1 did).

        :param pip_package: a pip requirement, e.g. ``"mlflow>=2"``.
        """
        requirement = _check_pip_line(pip_package, "CondaDependencies.add_pip_package")
        if requirement.startswith("-"):
            raise ConfigurationError(
                "CondaDependencies.add_pip_package",
                f"{requirement!r} is a pip option, not a package.",
                f'use set_pip_option("{requirement}").',
            )
        name = _pip_name(requirement)
        self._pip = [line for line in self._pip if line != requirement and (name is None or _pip_name(line) != name)]
        self._pip.append(requirement)

    def remove_pip_package(self, pip_package: str) -> None:
        """Remove every requirement of a pip project (names compare as pip compares them).

        :param pip_package: the project's name (a requirement such as ``"mlflow>=2"`` names it too).
        """
        name = _pip_name(pip_package.strip())
        self._pip = [
            line for line in self._pip if line != pip_package.strip() and (name is None or _pip_name(line) != name)
        ]

    def set_pip_option(self, pip_option: str) -> None:
        """Add a pip option line such as ``--extra-index-url URL``, ``--find-links DIR`` or ``--pre``
        (``--index-url`` / ``-i`` replace an earlier one: pip has one index).

        :param pip_option: the option line, starting with ``-``.
        """
        option = _check_pip_line(pip_option, "CondaDependencies.set_pip_option")
        if not option.startswith("-"):
            raise ConfigurationError(
                "CondaDependencies.set_pip_option",
                f"{option!r} is not a pip option.",
                f'use add_pip_package("{option}") for a package.',
            )
        key = re.split(r"[\s=]", option, maxsplit=1)[0]
        if key in _SINGLE_VALUED_PIP_OPTIONS:
            self._pip = [
                line for line in self._pip if re.split(r"[\s=]", line, maxsplit=1)[0] not in _SINGLE_VALUED_PIP_OPTIONS
            ]
        if option not in self._pip:
            self._pip.append(option)

    @property
    def pip_packages(self) -> list[str]:
        """The pip requirements, without option lines (a copy)."""
        return [line for line in self._pip if not line.startswith("-")]

    @property
    def pip_options(self) -> list[str]:
        """The pip section's option lines (``--index-url``, ``--extra-index-url``, ``--find-links``, ...)."""
        return [line for line in self._pip if line.startswith("-")]

    # ----------------------------------------------------------------- channels, python, name, variables
    def add_channel(self, channel: str) -> None:
        """Add a channel after the others, unless it is listed already.

        :param channel: a name (``conda-forge``), a URL, or a local channel (``file:///path``, ``/path``).
        """
        _check_channel(channel, "CondaDependencies.add_channel")
        if channel.strip() not in self._channels:
            self._channels.append(channel.strip())

    def remove_channel(self, channel: str) -> None:
        """Remove a channel (nothing happens when it is not listed).

        :param channel: the channel as listed.
        """
        self._channels = [c for c in self._channels if c != channel.strip()]

    @property
    def channels(self) -> list[str]:
        """The channels, highest priority first (a copy)."""
        return list(self._channels)

    def set_python_version(self, version: str) -> None:
        """Set the Python version: ``"3.11"`` becomes ``python=3.11`` (any 3.11.x); a version with an
        operator, e.g. ``">=3.10"``, becomes ``python>=3.10``.

        :param version: the version.
        """
        if not isinstance(version, str) or not version.strip():
            raise ConfigurationError(
                "CondaDependencies.set_python_version",
                f"{version!r} is not a Python version.",
                'pass a version such as "3.11".',
            )
        version = version.strip()
        entry = f"python{version}" if version[0] in "=<>!~" else f"python={version}"
        self._python = CondaMatchSpec.parse(entry, "CondaDependencies.set_python_version").source

    def get_python_version(self) -> str | None:
        """The Python version the specification asks for, without conda's fuzzy ``=``:
        ``python=3.11`` -> ``"3.11"`` (any 3.11.x), ``python==3.11.4`` -> ``"3.11.4"``,
        ``python>=3.10,<3.12`` -> ``">=3.10,<3.12"``, ``python=3.11=h955ad1f_0`` -> ``"3.11"``
        (build strings are not versions); ``None`` when it names no version."""
        if self._python is None:
            return None
        version = CondaMatchSpec.parse(self._python).version
        if version is None or version == "*":
            return None
        if version.endswith(".*") and _VERSION_TERM.fullmatch(version) and version[0] not in "=<>!~":
            return version[:-2]
        return version

    def match_specs(self) -> list[str]:
        """Every conda entry as written, the Python entry (``python=3.11``) first: what a conda
        solver is given."""
        return ([self._python] if self._python is not None else []) + list(self._conda)

    @property
    def name(self) -> str:
        """The environment's name (``name:`` in the file)."""
        return self._name

    @property
    def variables(self) -> dict[str, str]:
        """Environment variables of the specification (``variables:`` in the file; a copy)."""
        return dict(self._variables)

    # ----------------------------------------------------------------- validation
    def validate(self, field_prefix: str = DEFAULT_FIELD) -> None:
        """Raise :class:`ConfigurationError` naming the first bad part: a channel that is not a name,
        URL or existing local folder, a conda entry that is not a match spec, an empty pip line, a bad
        variable.

        :param field_prefix: how the caller names this specification in messages.
        """
        if not isinstance(self._name, str) or not self._name.strip():
            raise ConfigurationError(
                f"{field_prefix}.name",
                f"{self._name!r} is not an environment name.",
                'name it, e.g. "project_environment".',
            )
        for channel in self._channels:
            _check_channel(channel, f"{field_prefix}.channels")
            local = _local_channel(channel)
            if local is not None and not local.is_dir():
                raise ConfigurationError(
                    f"{field_prefix}.channels",
                    f"unknown channel {channel!r}: the local folder {str(local)!r} does not exist.",
                    f"correct the path or create the channel there (conda index {local}), or remove {channel!r} "
                    "and use a named channel such as conda-forge.",
                )
        for entry in ([self._python] if self._python is not None else []) + self._conda:
            CondaMatchSpec.parse(entry, f"{field_prefix}.dependencies")
        for line in self._pip:
            _check_pip_line(line, f"{field_prefix}.dependencies.pip")
        validate_variables(self._variables, f"{field_prefix}.variables")

    # ----------------------------------------------------------------- serialisation
    def serialize_to_string(self) -> str:
        """The specification as a conda environment file: ``name``, ``channels``, ``dependencies``
        (Python first, the conda packages, then the ``pip`` section) and ``variables`` when set."""
        dependencies: list[Any] = ([self._python] if self._python else []) + list(self._conda)
        if self._pip:
            dependencies.append({"pip": list(self._pip)})
        document: dict[str, Any] = {"name": self._name, "channels": list(self._channels), "dependencies": dependencies}
        if self._variables:
            document["variables"] = dict(self._variables)
        text: str = yaml.safe_dump(
            document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16
        )
        return text

    def save(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the specification (:meth:`serialize_to_string`) to a file.

        :param path: the file; by default the file it was read from.
        :return: the path written.
        """
        if path is None:
            if self._file_path is None:
                raise ConfigurationError(
                    "CondaDependencies.save.path",
                    "no path given, and the specification was not read from a file.",
                    "pass the path to write to.",
                )
            path = self._file_path
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.serialize_to_string(), encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                "CondaDependencies.save.path",
                f"cannot write {str(target)!r}: {exc.strerror or exc}.",
                "pass a path in a writable folder.",
            ) from exc
        return str(target)

    def save_to_file(self, base_directory: str | os.PathLike[str], conda_file_path: str | None = None) -> str:
        """Write the specification to ``base_directory/conda_file_path``, as Azure ML v1 did.

        :param base_directory: the folder (created when missing).
        :param conda_file_path: the file's name or path under the folder; default
            :data:`DEFAULT_CONDA_FILE_NAME`.
        :return: the path written (``base_directory`` joined with the file's name).
        """
        return self.save(Path(base_directory) / (conda_file_path or DEFAULT_CONDA_FILE_NAME))

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types (registry files, XCom): ``name``, ``channels``, ``python``
        (the entry, e.g. ``"python=3.11"``, or None), ``conda_packages``, ``pip`` (requirements and
        option lines, in order) and ``variables``."""
        return {
            "name": self._name,
            "channels": list(self._channels),
            "python": self._python,
            "conda_packages": list(self._conda),
            "pip": list(self._pip),
            "variables": dict(self._variables),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], field: str = DEFAULT_FIELD) -> CondaDependencies:
        """Rebuild a specification from :meth:`to_dict` output (unknown keys are an error).

        :param data: the serialised specification.
        :param field: how the caller names it in messages.
        """
        known = ("name", "channels", "python", "conda_packages", "pip", "variables")
        unknown = sorted(str(k) for k in data if k not in known) if isinstance(data, dict) else []
        if not isinstance(data, dict) or unknown:
            raise ConfigurationError(
                field,
                f"unknown keys {unknown}." if unknown else f"must be a dict, got {data!r}.",
                f"use only {list(known)}.",
            )
        deps = cls()
        name = data.get("name", DEFAULT_ENVIRONMENT_NAME)
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"{field}.name",
                f"{name!r} is not an environment name.",
                'use a non-empty string, e.g. "project_environment".',
            )
        deps._name = name
        deps._channels = _string_list(data.get("channels", list(DEFAULT_CHANNELS)), f"{field}.channels")
        python = data.get("python")
        if python is not None and (not isinstance(python, str) or CondaMatchSpec.parse(python, field).name != "python"):
            raise ConfigurationError(
                f"{field}.python", f"{python!r} is not a python entry.", 'use e.g. "python=3.11", or None.'
            )
        deps._python = python
        deps._conda = _string_list(data.get("conda_packages", []), f"{field}.conda_packages")
        for entry in deps._conda:
            CondaMatchSpec.parse(entry, f"{field}.conda_packages")
        deps._pip = [
            _check_pip_line(line, f"{field}.pip") for line in _string_list(data.get("pip", []), f"{field}.pip")
        ]
        deps._variables = validate_variables(data.get("variables"), f"{field}.variables")
        return deps

    def fingerprint_payload(self) -> dict[str, Any]:
        """What identifies the specification for hashing, in plain types: the Python entry, the conda
        packages and pip lines sorted (their order does not change what is installed), the channels
        in order (it is their priority) and the variables; the name does not count."""
        return {
            "python": self._python,
            "conda_packages": sorted(self._conda),
            "channels": list(self._channels),
            "pip": sorted(self._pip),
            "variables": dict(sorted(self._variables.items())),
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CondaDependencies) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        python = f", {self._python}" if self._python else ""
        return (
            f"CondaDependencies({self._name}{python}, {len(self._conda)} conda packages, "
            f"{len(self.pip_packages)} pip packages)"
        )


def _check_pip_line(line: object, field: str) -> str:
    if not isinstance(line, str) or not line.strip() or "\n" in line:
        raise ConfigurationError(
            field,
            f"{line!r} is not a pip requirement line.",
            'pass one non-empty line, e.g. "mlflow>=2" or "--extra-index-url URL".',
        )
    return line.strip()


def _string_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(field, f"must be a list of strings, got {value!r}.", 'e.g. ["numpy=1.26"].')
    return list(value)


def _read_pip_section(entries: object, field: str, where: str, here: str, lines: list[int]) -> list[str]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigurationError(
            field,
            f"{here}: the pip section must be a list, got {entries!r}.",
            "write each requirement as a '- ' item under '- pip:'.",
        )
    requirements = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigurationError(
                field,
                f"{_at(where, _line(lines, index))}: pip entry {entry!r} is not a requirement string.",
                'write a pip requirement such as "mlflow>=2" (quote versions: - "1.0" is a number).',
            )
        requirements.append(entry.strip())
    return requirements


def _read_variables(variables: object, field: str, where: str) -> dict[str, str]:
    if not isinstance(variables, dict):
        raise ConfigurationError(
            field,
            f"{where}: variables must be a mapping of names to values, got {variables!r}.",
            "write NAME: value pairs under variables:.",
        )
    values: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigurationError(
                field,
                f"{where}: variable {name!r} has the value {value!r}, not a string.",
                f'quote the value, e.g. {name}: "value".',
            )
        values[name] = str(value)
    try:
        return validate_variables(values, field)
    except ConfigurationError as exc:
        raise ConfigurationError(field, f"{where}: {exc.problem}", exc.fix) from None


# --------------------------------------------------------------------------------------------- pip translation
@dataclass(frozen=True)
class PipTranslation:
    """What stands in for a conda specification on a host without conda.

    :param python_version: the Python version the specification asks for, as it writes it (``"3.11"``,
        ``">=3.10"``), or None when it names none.
    :param requirements: pip requirement lines: the translated conda packages first, then the pip
        section as it is (options included).
    :param notes: what was renamed, dropped or ignored, one human-readable sentence each.
    """

    python_version: str | None
    requirements: list[str]
    notes: list[str]


def translate_to_pip(deps: CondaDependencies, field_prefix: str = DEFAULT_FIELD) -> PipTranslation:
    """Translate a conda specification into pip requirements for a host that has no conda.

    ``python`` selects the interpreter and ``pip`` is the installer (both noted, not installed);
    ``setuptools`` and ``wheel`` are installed like any package, since a virtual environment built by
    uv (or for Python 3.12+) has neither. Names are mapped by :data:`PYPI_NAMES`, versions as the
    module's table says; build strings and channels are dropped with a note.

    :param deps: the specification.
    :param field_prefix: how the caller names the specification in messages.
    :raises ConfigurationError: one error naming every conda-only package (:func:`is_conda_only`);
        an entry that cannot be read, or whose version pip cannot express (``1.2|1.3``).
    """
    field = f"{field_prefix}.dependencies"
    notes: list[str] = []
    python_version = deps.get_python_version()
    if deps._python is not None:
        python = CondaMatchSpec.parse(deps._python, field)
        wanted = f"Python {python_version}" if python_version else "any Python version"
        notes.append(f"{python.source} selects the interpreter ({wanted}); it is not a package to install")
        if python.build is not None:
            notes.append(f"build string {python.build} of python ignored")
    specs = [CondaMatchSpec.parse(entry, field) for entry in deps.conda_packages]
    refused = list(dict.fromkeys(spec.name for spec in specs if is_conda_only(spec.name)))
    if refused:
        verb = "has" if len(refused) == 1 else "have"
        raise ConfigurationError(
            field,
            f"{', '.join(refused)} {verb} no PyPI equivalent, so this specification cannot be installed with "
            "pip on a host without conda.",
            _conda_only_fix(refused),
        )
    requirements: list[str] = []
    for spec in specs:
        if spec.name in _NOT_INSTALLED:
            notes.append(f"{spec.source} not installed: pip is the installer the environment builder provides")
            continue
        requirement = spec.to_pip(field)
        if spec.pypi_name != spec.name:
            notes.append(f"{spec.source} installed from PyPI as {requirement}")
        elif spec.name in _KEPT_FOR_UV:
            notes.append(
                f"{spec.source} installed as {requirement}: a virtual environment built by uv or for "
                f"Python 3.12+ has no {spec.name} of its own"
            )
        if spec.build is not None:
            notes.append(f"build string {spec.build} of {spec.name} ignored (pip has no build strings)")
        if spec.channel is not None:
            notes.append(f"channel {spec.channel} of {spec.name} ignored (pip installs from the package index)")
        requirements.append(requirement)
    if deps.channels:
        notes.append(
            f"channels {', '.join(deps.channels)} not used: pip installs from PyPI or the index the pip section names"
        )
    requirements.extend(deps._pip)
    return PipTranslation(python_version, requirements, notes)
