"""Data bound to a run: :class:`Input` and :class:`Output` (see :mod:`.bindings`), staged with the
snapshot (:mod:`.inputs`), copied back when the run ends (:mod:`.outputs`), recorded as lineage
(:mod:`.run_data`).

==================  ===========================================================================
module              its one job
==================  ===========================================================================
``bindings``        ``Input`` / ``Output``: fields, validation, what may be recorded
``locations``       parse a URI; the fsspec filesystem that reads or writes it
``sftp``            fsspec's SFTP over the provider's strict-host-key SSH connection
``credentials``     connection ids to fsspec options (the Airflow layer registers a resolver)
``inputs``          list, size and copy inputs into the snapshot store (cached, never partial)
``outputs``         check outputs before the job, copy them to their URI when it ends
``run_data``        the lifecycle's view: plan, stage, bind into the command, record lineage
==================  ===========================================================================
"""

from airflow_provider.core.data.bindings import Input, Output

__all__ = ["Input", "Output"]
