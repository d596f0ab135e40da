"""Azure ML v1 compatibility, script side: ``from azureml.core import Run`` on our run context.

Shipped into a job's ``runtime/`` folder when its run has ``azureml_compat=True``; the ``azureml``
package under ``shim/`` is what the script imports (see
:mod:`airflow_provider.core.azureml_compat`). Like the run context, it imports only the standard
library: never MLflow, never Airflow.

To run a v1 script offline with it (``python train.py`` prints what it logs)::

    PYTHONPATH=$(python -m airflow_provider.compat.azureml) python train.py

The folder printed (:func:`offline_path`) is a standalone copy of the layer and of what it imports
of this package, all standard library, in the provider's cache folder: the script may run in any
Python >= 3.9, another virtual environment without the provider included. Where the real package
is importable too (the provider's own environment), the copy defers to it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["offline_path", "shim_path"]


def shim_path() -> str:
    """The folder to put on ``PYTHONPATH`` so that ``import azureml.core`` finds this layer."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")


OFFLINE_FOLDER = "azureml-offline"
"""Folder of the cache (:func:`airflow_provider.core.paths.cache_dir`) that holds the standalone
copies made by :func:`offline_path`, one per version and content: ``<version>-<hash>``."""

_STANDALONE_INIT = b'''"""A standalone copy of what ``azureml.core`` needs of airflow-provider-training-runs.

Made by ``python -m airflow_provider.compat.azureml`` (which prints the folder to put on
``PYTHONPATH``): the run context and the Azure ML v1 layer, standard library only, so that a v1
script runs offline in a Python that does not have the provider. Where the real package is
importable too (a later entry of ``sys.path``, e.g. the provider's own environment), importing
this package imports the real one instead: the copy never shadows it.
"""

import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys

STANDALONE_COPY = True
"""Marks the copy (the real package has no such attribute)."""


def _real_spec():
    copy_root = _os.path.normcase(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))
    others = [entry for entry in _sys.path
              if _os.path.normcase(_os.path.abspath(entry or _os.getcwd())) != copy_root]
    for finder in list(_sys.meta_path):
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(__name__, others) if finder is _machinery.PathFinder else find_spec(__name__, None)
        except Exception:  # a third-party finder that cannot answer: ask the next one
            continue
        if spec is None or spec.loader is None or not spec.origin:
            continue
        if _os.path.normcase(_os.path.abspath(spec.origin)).startswith(copy_root + _os.sep):
            continue
        # the provider, not another package of the same name: it has what this copy has
        for folder in spec.submodule_search_locations or ():
            if (_os.path.isfile(_os.path.join(folder, "runtime", "run_context.py"))
                    and _os.path.isfile(_os.path.join(folder, "compat", "azureml", "run.py"))):
                return spec
    return None


_spec = _real_spec()
if _spec is not None:
    _real = _util.module_from_spec(_spec)
    _sys.modules[__name__] = _real  # what ``import airflow_provider`` returns
    _spec.loader.exec_module(_real)
'''


def offline_path() -> str:
    """The folder to put on ``PYTHONPATH`` so that ``import azureml.core`` works in any Python >= 3.9.

    It holds the ``azureml`` package of :func:`shim_path` and the part of ``airflow_provider`` it
    imports (the run context, the v1 ``Run``; the files a job gets with ``azureml_compat``, see
    :func:`airflow_provider.runtime.job_files`), standard library only, under a minimal
    ``airflow_provider/__init__.py`` that defers to the real package wherever that is importable.
    Made once per version and content in the cache folder (``<cache>/azureml-offline/<version>-<hash>``),
    atomically, so concurrent callers and a script already running from it are safe. Inside such a
    copy it returns the copy's own folder.
    """
    import hashlib
    import shutil
    import sys
    import tempfile

    package = sys.modules["airflow_provider"]
    if getattr(package, "STANDALONE_COPY", False):  # python -m run with the copy itself on the path
        return os.path.dirname(os.path.dirname(os.path.abspath(package.__file__ or "")))

    from airflow_provider import __version__
    from airflow_provider.core.paths import cache_dir
    from airflow_provider.runtime import COMPAT_PATH_DIR, LAUNCHER_MODULE, RUNTIME_DIR, job_files

    files: dict[str, bytes] = {}
    for path, content in job_files(azureml_compat=True).items():
        relative = path[len(RUNTIME_DIR) + 1:]
        if relative == f"{LAUNCHER_MODULE}.py":
            continue
        if relative.startswith(f"{COMPAT_PATH_DIR}/"):
            relative = relative[len(COMPAT_PATH_DIR) + 1:]
        files[relative] = _STANDALONE_INIT if relative == "airflow_provider/__init__.py" else content
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(f"{relative}\0{len(files[relative])}\0".encode())
        digest.update(files[relative])
    parent = cache_dir() / OFFLINE_FOLDER
    parent.mkdir(exist_ok=True)
    folder = parent / f"{__version__}-{digest.hexdigest()[:16]}"
    if folder.is_dir():
        if _made_as(folder, files):
            return str(folder)
        shutil.rmtree(folder, ignore_errors=True)  # changed since, or not ours: made again
    scratch = tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent)
    try:
        for relative, content in files.items():
            target = os.path.join(scratch, *relative.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(content)
        try:
            os.rename(scratch, folder)
        except OSError:
            if not folder.is_dir() or not _made_as(folder, files):  # another process made it first, or not
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return str(folder)


def _made_as(folder: Path, files: dict[str, bytes]) -> bool:
    """Whether ``folder`` is this user's, writable by nobody else, and holds exactly ``files`` (a
    folder of a shared cache that someone else made or changed is never put on a script's path)."""
    import stat

    try:
        info = folder.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        for relative, content in files.items():
            path = folder.joinpath(*relative.split("/"))
            if path.is_symlink() or path.read_bytes() != content:
                return False
    except OSError:
        return False
    return True
