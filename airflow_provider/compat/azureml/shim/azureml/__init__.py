"""The ``azureml`` package of the Azure ML v1 compatibility layer of airflow-provider-training-runs.

This is *not* Microsoft's ``azureml``. It never shadows it: every real ``azureml`` folder on
``sys.path`` comes before this one in the package's ``__path__``, so ``import azureml.core``
finds a real ``azureml-core`` when the environment has one, and this layer's only when it has not.
"""

import os as _os
import sys as _sys

_here = _os.path.dirname(_os.path.abspath(__file__))
_real = []
for _entry in _sys.path:
    _candidate = _os.path.join(_os.path.abspath(_entry or _os.getcwd()), "azureml")
    if (_os.path.normcase(_candidate) != _os.path.normcase(_here) and _os.path.isdir(_candidate)
            and _candidate not in _real):
        _real.append(_candidate)
__path__ = [*_real, _here]
COMPATIBILITY_LAYER = True
"""Marks this package as the compatibility layer (a real ``azureml`` has no such attribute)."""
