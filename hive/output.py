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
_HIDDEN = {"type", "group"}  # derivable (group = uid) or constant


def emit(record_type: str, **fields: Any) -> None:
    click.echo(json.dumps({"type": record_type, **fields}, default=str))


def emit_version() -> None:
    emit("version", hive=__version__, format=JSON_FORMAT)


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def _key_summary(line: str) -> str:
    """The options part of a key line, which is what differs between keys."""
    options = line.split(" ssh-", 1)[0].split(" ecdsa-", 1)[0].split(" sk-", 1)[0]
    return options.removeprefix("restrict,")


def change_lines(change: Change) -> list[str]:
    head = click.style(f"  {change.symbol} {change.kind} {change.name}",
                       fg=_COLORS[change.action], bold=True)
    lines = [head]
    if change.action == "delete":
        if change.kind == "authorized_keys":
            lines.append("      (every key removed: access revoked)")
        return lines
    before, after = change.before or {}, change.after or {}
    if change.kind == "authorized_keys":
        old, new = before.get("keys", {}), after.get("keys", {})
        for name in sorted(set(old) | set(new)):
            if name not in old:
                lines.append(click.style(f"      + key {name}: ", fg="green")
                             + _key_summary(new[name]))
            elif name not in new:
                lines.append(click.style(f"      - key {name}", fg="red"))
            elif old[name] != new[name]:
                lines.append(click.style(f"      ~ key {name}: ", fg="yellow")
                             + f"{_key_summary(old[name])} -> {_key_summary(new[name])}")
        return lines
    if change.kind == "directory" and change.action == "create":
        lines.append(f"      owner: {after['uid']}:{after['gid']}  mode: {after['mode']}")
        return lines
    width = max((len(k) for k in after), default=0) + 1
    for key, value in after.items():
        if key in _HIDDEN and change.action == "create":
            continue
        label = f"{key}:".ljust(width)
        if change.action == "update":
            lines.append(f"      {label} {_value(before.get(key))} -> {_value(value)}")
        else:
            lines.append(f"      {label} {_value(value)}")
    if change.meta.get("repository") and change.kind == "account":
        dn = f", dn: {change.meta['dn']}" if change.meta.get("dn") else ""
        lines.append(f"      (repository {change.meta['repository']}{dn})")
    return lines


def summary_line(plan: Plan) -> str:
    s = plan.summary
    return f"Plan: {s['add']} to add, {s['change']} to change, {s['remove']} to remove."


def print_plan(plan: Plan, title: str) -> None:
    if plan.changes:
        click.echo(title)
        click.echo()
        for change in plan.changes:
            for line in change_lines(change):
                click.echo(line)
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
