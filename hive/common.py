"""What every `hive` command shares: exit codes, the -f/--file and --output options,
loading hive.yaml, and the one way an error is printed.

Command modules (hive/cli.py, hive/rollback_cmd.py, watcher/commands.py) import from here
and never from each other, so the command line has no import circle. Nothing heavy at
module level: every `hive` call imports this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hive import output

if TYPE_CHECKING:
    from schemas.models import HiveConfig

# Exit codes are a contract with CI pipelines and monitoring: 0 success (no changes),
# 1 any error (usage errors included), 2 changes pending or made (with
# --detailed-exitcode) or, for `hive status`, repositories in trouble.
EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
EXIT_TROUBLE = EXIT_CHANGES

FILE_HELP = ("hive.yaml to use. Default: $HIVE_CONFIG, else ./hive.yaml if present (as "
             "root: only root's, in a folder only root may write), else /etc/hive/hive.yaml.")
OUTPUT = click.option("--output", "-o", "fmt", type=click.Choice(["text", "json"]),
                      default="text", show_default=True,
                      help="json: one JSON object per line, a 'version' record first and a "
                           "'summary' record last.")


class Seconds(click.ParamType):
    """A number of seconds between `low` and `high`. click's FloatRange lets `nan`
    through (every comparison with it is false) and a float option takes `inf`; a wait of
    either never ends or never starts, so both are usage errors here."""

    name = "seconds"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not self.low <= number <= self.high:   # False for nan
            self.fail(f"{value} is not a number of seconds from {self.low:g} to "
                      f"{self.high:g}", param, ctx)
        return number


def duration(_ctx: Any, param: Any, value: str) -> float:
    """click callback for options such as --lock-stale-after: '26h' -> seconds, with
    hive.yaml's one rule for durations (schemas.models.parse_duration)."""
    from schemas.models import parse_duration

    try:
        return float(parse_duration(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def default_config(fmt: str = "text") -> str:
    """-f's default (FILE_HELP). As root, ./hive.yaml counts only when only root may
    change it and its folder (fsutil.others_may_change): in /tmp, or in another user's
    folder, anyone could have left a hive.yaml for root to apply. Else SystemExit, asking
    for -f."""
    if os.environ.get("HIVE_CONFIG"):
        return os.environ["HIVE_CONFIG"]
    if not Path("hive.yaml").exists():
        return "/etc/hive/hive.yaml"
    from reconciler.fsutil import others_may_change

    if os.geteuid() == 0 and (others_may_change(os.stat("."))
                              or others_may_change(os.stat("hive.yaml"))):
        raise SystemExit(fail(
            f"{Path.cwd() / 'hive.yaml'} or its folder may be changed by users other than "
            "root; as root, Hive does not pick it up by itself. Give it with -f if you "
            "mean it", fmt, errors=1))
    return "hive.yaml"



def file_option(f: Any) -> Any:
    # readable=False: click would ask access(2), which judges by the real uid without
    # capabilities (hive-ci plans as nobody with CAP_DAC_READ_SEARCH); the loader opens
    # the file itself and says why it cannot
    return click.option("-f", "--file", "config_file", type=click.Path(readable=False),
                        default=None, help=FILE_HELP)(f)


def load(config_file: str | None, fmt: str,
         extra_checks: Any = None) -> tuple[HiveConfig, Path]:
    """hive.yaml, checked; on problems print every one (FILE:LINE:COL) and exit 1."""
    import schemas

    path = Path(config_file or default_config(fmt))
    try:
        return schemas.load(path, extra_checks=extra_checks), path
    except schemas.ConfigError as exc:
        if fmt == "json":
            for problem in exc.problems:
                output.emit("problem", **problem.data)
            # The same summary keys as every other command, so `.errors` always works.
            output.emit("summary", valid=False, problems=len(exc.problems), add=0, change=0,
                        remove=0, errors=len(exc.problems))
        else:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            n = len(exc.problems)
            click.echo(f"\n{path}: {n} problem{'s' if n != 1 else ''}; nothing was changed.",
                       err=True)
        raise SystemExit(EXIT_ERROR) from None


def fail(message: str, fmt: str = "text", **summary: Any) -> int:
    """Print an error; returns EXIT_ERROR for the command to return.

    For people `Error: MESSAGE` on stderr. For machines an `error` record, then the closing
    `summary` record with the fields given (a command whose stream ends here passes them,
    at least errors=1).
    """
    if fmt == "json":
        output.emit("error", message=message)
        if summary:
            output.emit("summary", **summary)
        return EXIT_ERROR
    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)
    return EXIT_ERROR
