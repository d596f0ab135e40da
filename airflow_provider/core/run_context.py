"""``Run``'s public home: ``from airflow_provider.core import Run`` (or this module, as before the
runtime package existed). It is defined in :mod:`airflow_provider.runtime.run_context`, which is
shipped into every job; this alias is shipped too, so scripts importing either path run anywhere."""

from airflow_provider.runtime.run_context import Run

__all__ = ["Run"]
