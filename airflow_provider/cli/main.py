"""The ``training-runs`` command line (also ``python -m airflow_provider``).

Exit status: 0 done (a submitted run that was waited for completed); 1 the run failed; 2 a
configuration error (fix the command, the job file or the connection: retrying will not help); 3 an
error a retry may fix (a tracking server or target that did not answer); 4 ``--stream`` was
interrupted (the run goes on, watched in the background); 130 the run was canceled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from airflow_provider.cli.context import Context

__all__ = ["EXIT_CANCELED", "EXIT_CONFIGURATION", "EXIT_FAILED", "EXIT_RETRYABLE", "main", "main_exit", "parser"]

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_RETRYABLE = 3
EXIT_CANCELED = 130

Command = Callable[["Context", argparse.Namespace, TextIO], int]


def parser() -> argparse.ArgumentParser:
    """The command line's parser (every command, with its help)."""
    from airflow_provider.cli import environments, experiments, runs, submit, tensorboard

    top = argparse.ArgumentParser(
        prog="training-runs",
        description="Submit training runs to local, Docker, SSH, MPI and Slurm targets, and find their history "
                    "in MLflow.")
    top.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the embedded "
                                            "store)")
    top.add_argument("--tracking-conn", help="an Airflow 'mlflow' connection id to take the tracking server from")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("submit", submit.submit, "submit a job file (Azure ML v2 command or sweep job YAML, or an "
                                           "MLproject)")
    sub.add_argument("job", metavar="JOB", help="the job file (job.yml, or an MLproject file or its folder)")
    sub.add_argument("--target", help="where it runs: 'local' or an Airflow connection id (default: the job's "
                                      "`compute`, else local)")
    sub.add_argument("--stream", action="store_true", help="show the run's output and wait for its end; the exit "
                                                           "status tells how it ended")
    sub.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                     help="override an input (inputs.lr=0.1) or an MLproject parameter (alpha=0.5); repeatable")
    sub.add_argument("--entry-point", help="the MLproject entry point (default: main)")
    sub.add_argument("--experiment", help="the experiment (default: the job's experiment_name, else the folder's "
                                          "name)")
    sub.add_argument("--validate", action="store_true", help="only check the job file: every problem at once")
    sub.add_argument("--run-key", help=argparse.SUPPRESS)  # a sweep's driver started again picks it up

    sub = command("list", runs.list_runs, "list runs, newest first")
    sub.add_argument("--experiment", "-e", help="only this experiment's runs (default: every active experiment)")
    sub.add_argument("--status", help="only runs in this state (Completed, Failed, Canceled, Running, ...)")
    sub.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only runs with this tag; repeatable")
    sub.add_argument("--all", action="store_true", help="also sweeps' trials and child runs")
    sub.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50; 0: all)")
    sub.add_argument("--json", action="store_true", help="JSON instead of a table")

    sub = command("show", runs.show, "show a run's details (Azure ML v1's get_details() keys) as JSON")
    sub.add_argument("run", metavar="RUN", help="the run id")
    sub.add_argument("--metrics", action="store_true", help="also its metrics")

    sub = command("logs", runs.logs, "print a run's output")
    sub.add_argument("run", metavar="RUN", help="the run id")
    sub.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    sub.add_argument("--target", help="read the output on this target (a connection id) rather than from MLflow")
    sub.add_argument("--interval", type=float, default=5.0, help=argparse.SUPPRESS)

    sub = command("cancel", runs.cancel, "cancel a run: its job is stopped and the run ends Canceled")
    sub.add_argument("run", metavar="RUN", help="the run id")
    sub.add_argument("--target", help="the target it runs on, a connection id (not needed for a local run)")

    sub = command("download", runs.download, "download a run's artifact (a file or a folder)")
    sub.add_argument("run", metavar="RUN", help="the run id")
    sub.add_argument("path", metavar="PATH", help="the artifact's path in the run, e.g. outputs/model.pkl")
    sub.add_argument("--to", help="the folder to write it into (default: the current folder)")

    sub = command("experiments", experiments.list_experiments, "list experiments")
    sub.add_argument("--archived", action="store_true", help="archived experiments only")
    sub.add_argument("--all", action="store_true", help="active and archived")
    sub.add_argument("--json", action="store_true", help="JSON instead of names")

    sub = command("archive", experiments.archive, "archive an experiment (hidden, nothing deleted)")
    sub.add_argument("experiment", metavar="EXPERIMENT", help="the experiment's name")
    sub.add_argument("--undo", action="store_true", help="bring an archived experiment back")
    sub.add_argument("--new-name", help="with --undo: the name it comes back under")

    sub = command("tensorboard", tensorboard.tensorboard, "TensorBoard on runs' ./logs while they run")
    sub.add_argument("runs", metavar="RUN", nargs="+", help="run ids")
    sub.add_argument("--logdir", help="where the runs' logs are kept (default: a new folder in the state folder)")
    sub.add_argument("--host", default="127.0.0.1", help="the address TensorBoard listens on (default 127.0.0.1)")
    sub.add_argument("--port", type=int, default=6006, help="its port (default 6006)")
    sub.add_argument("--interval", type=float, default=5.0, help="seconds between syncs (default 5)")
    sub.add_argument("--reload-interval", type=float, default=5.0, help="TensorBoard's own reload interval")
    sub.add_argument("--no-server", action="store_true", help="only keep --logdir up to date")
    sub.add_argument("--exit-when-done", action="store_true", help="stop TensorBoard when every run has ended")

    envs = command("environments", _usage, "registered and curated environments")
    actions = envs.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub = actions.add_parser("list", help="list them")
    sub.add_argument("--json", action="store_true", help="JSON instead of a table")
    sub.set_defaults(handler=environments.list_environments)
    sub = actions.add_parser("show", help="show one's definition as JSON")
    sub.add_argument("name", metavar="NAME", help="name[:version], a curated name, or a saved folder")
    sub.set_defaults(handler=environments.show)
    sub = actions.add_parser("build", help="build one on a target ahead of its runs")
    sub.add_argument("name", metavar="NAME", help="name[:version], a curated name, or a saved folder")
    sub.add_argument("--target", default="local", help="'local' (default) or an Airflow connection id")
    sub.set_defaults(handler=environments.build)
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command line; return its exit status.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :param out: where results go (default: standard output); errors go to standard error.
    """
    from airflow_provider.cli.context import Context
    from airflow_provider.core.errors import ConfigurationError, RunCanceledError, RunFailedError, is_retryable

    args = parser().parse_args(argv)
    stream = out or sys.stdout
    import logging
    import os

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (database set up) are noise here
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars between results
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout holds results only
    try:
        context = Context(args.tracking_uri, args.tracking_conn)
        handler: Command = args.handler
        return handler(context, args, stream)
    except BrokenPipeError:
        raise
    except RunCanceledError as exc:
        sys.stderr.write(f"training-runs: {exc}\n")
        return EXIT_CANCELED
    except RunFailedError as exc:
        sys.stderr.write(f"training-runs: {exc}\n")
        return EXIT_FAILED
    except ConfigurationError as exc:
        sys.stderr.write(f"training-runs: {exc}\n(a configuration error: retrying will not help)\n")
        return EXIT_CONFIGURATION
    except Exception as exc:
        from airflow_provider.core.errors import TrainingRunError

        if not isinstance(exc, TrainingRunError):
            raise
        retry = "a retry may help" if is_retryable(exc) else "retrying will not help"
        sys.stderr.write(f"training-runs: {exc}\n({retry})\n")
        return EXIT_RETRYABLE if is_retryable(exc) else EXIT_CONFIGURATION
    except KeyboardInterrupt:
        sys.stderr.write("training-runs: interrupted\n")
        return 4


def main_exit() -> None:
    """The console script: :func:`main`, its status as the process's exit status (a reader that
    stops reading, like ``| head``, ends it quietly)."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        status = 0
    sys.exit(status)


def _usage(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    raise AssertionError("argparse requires an action")  # pragma: no cover - subparsers are required


if __name__ == "__main__":
    sys.exit(main())
