"""``python -m airflow_provider``: the ``training-runs`` command line."""

import sys

from airflow_provider.cli.main import main

sys.exit(main())
