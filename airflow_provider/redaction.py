"""Masking the values a DAG declared secret, wherever the run's output reaches Airflow.

A run's output lines go to the task log from the worker and, while a task is deferred, from the
triggerer. Airflow's secrets masker hides a value registered *with a name* only when the name
looks sensitive (``password``, ``token``...), so a secret called ``DB_CONN_STR`` would be printed
in clear. Every value declared secret is therefore registered without a name (always masked), and
lines are also redacted here before they are logged, so the trigger, which runs in a process
shared with other tasks and registers nothing, masks them too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "Redactor", "minimum_masked_length", "register_with_airflow"]

REDACTED = "***"


def minimum_masked_length() -> int:
    """Airflow's ``[logging] min_length_masked_secret`` (shorter values are not masked anywhere)."""
    try:
        from airflow.configuration import conf

        return conf.getint("logging", "min_length_masked_secret", fallback=5)
    except Exception:  # no Airflow configuration here: Airflow's own default
        return 5


class Redactor:
    """Replaces every occurrence of the secret values in a text by ``***``.

    :param secrets: the values to hide (shorter ones than Airflow masks are left as they are,
        like Airflow's masker does: masking "abc" everywhere would garble the log).
    :param min_length: the shortest value hidden; default Airflow's setting.
    """

    def __init__(self, secrets: Iterable[str], min_length: int | None = None) -> None:
        shortest = minimum_masked_length() if min_length is None else min_length
        values = sorted({s for s in secrets if isinstance(s, str) and len(s) >= max(1, shortest)},
                        key=len, reverse=True)  # longest first: a secret inside another is hidden whole
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        """The text with every secret value replaced.

        :param text: a log line, an error message.
        """
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text


def register_with_airflow(secrets: Iterable[str]) -> None:
    """Register each value with Airflow's masker, without a name, so it is masked in the task log
    (the task process and its supervisor, which writes the log file) whatever its variable is called.

    :param secrets: the values.
    """
    from airflow.sdk.log import mask_secret

    for value in secrets:
        if isinstance(value, str) and value:
            mask_secret(value)
