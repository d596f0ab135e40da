"""The ``training-runs`` command line: submit job files and find runs again from a terminal.

=================  ============================================================================
module             job
=================  ============================================================================
``main``           the parser, the dispatch and the exit statuses
``context``        the tracking store, targets (``local`` or Airflow connections), a run by id
``submit``         ``submit JOB`` (Azure ML v2 job YAML, sweep YAML, MLproject)
``runs``           ``list``, ``show``, ``logs``, ``cancel``, ``download``
``experiments``    ``experiments``, ``archive``
``environments``   ``environments list|show|build``
``tensorboard``    ``tensorboard RUN...``: TensorBoard on runs' ``./logs`` while they run
=================  ============================================================================

It uses the core API only (``airflow_provider.core``); Airflow is imported only to read a
connection named by ``--target`` or ``--tracking-conn``.
"""
