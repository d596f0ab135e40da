"""Azure ML v1 compatibility, script side: ``from azureml.core import Run`` on our run context.

Shipped into a job's ``runtime/`` folder when its run has ``azureml_compat=True``; the ``azureml``
package under ``shim/`` is what the script imports (see
:mod:`airflow_provider.core.azureml_compat`). Like the run context, it imports only the standard
library: never MLflow, never Airflow.

To run a v1 script offline with it (``python train.py`` prints what it logs)::

    PYTHONPATH=$(python -m airflow_provider.compat.azureml) python train.py
"""

from __future__ import annotations

import os

__all__ = ["shim_path"]


def shim_path() -> str:
    """The folder to put on ``PYTHONPATH`` so that ``import azureml.core`` finds this layer."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
