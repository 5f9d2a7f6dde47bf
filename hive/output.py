"""How plans, results and problems look: text for people, JSON lines for machines.

Text reads like `terraform plan`; JSON is one object per line with a `type` field, a
`version` record first and a `summary` record last, so CI tooling can stream it.
"""

from __future__ import annotations

import json
from typing import Any

import click

from hive import __version__
from reconciler.plan import Plan
from reconciler.resources import Change

JSON_FORMAT = 1
_COLORS = {"create": "green", "update": "yellow", "delete": "red"}


def emit(record_type: str, **fields: Any) -> None:
    click.echo(json.dumps({"type": record_type, **fields}, default=str))


def emit_version() -> None:
    emit("version", hive=__version__, format=JSON_FORMAT)


def _style(text: str, colour: str) -> str:
    return click.style(text, fg=colour)


def change_lines(change: Change) -> list[str]:
    """The head line, then what the change's kind shows below it (targets/registry.py)."""
    from reconciler.targets.registry import kind

    head = click.style(f"  {change.symbol} {change.kind} {change.name}",
                       fg=_COLORS[change.action], bold=True)
    return [head, *kind(change.kind).render(change, _style)]


def summary_line(plan: Plan) -> str:
    s = plan.summary
    return f"Plan: {s['add']} to add, {s['change']} to change, {s['remove']} to remove."


def print_plan(plan: Plan, title: str) -> None:
    if plan.changes:
        click.echo(title)
        click.echo()
        # A few thousand lines per write: one echo per line costs more than the plan.
        batch: list[str] = []
        for change in plan.changes:
            batch.extend(change_lines(change))
            if len(batch) >= 4096:
                click.echo("\n".join(batch))
                batch.clear()
        if batch:
            click.echo("\n".join(batch))
        click.echo()
    for note in plan.notes:
        click.echo(click.style("Note: ", fg="cyan") + note)
    for error in plan.errors:
        click.echo(click.style("Error: ", fg="red", bold=True) + error, err=True)
    if plan.notes or plan.errors:
        click.echo()
    if plan.changes:
        click.echo(click.style(summary_line(plan), bold=True))
    else:
        click.echo(click.style("No changes.", bold=True)
                   + " The server matches hive.yaml.")


def emit_plan(plan: Plan) -> None:
    for change in plan.changes:
        emit("change", **change.data)
    for note in plan.notes:
        emit("note", message=note)
    for error in plan.errors:
        emit("error", message=error)
