"""One module per target. Each target is a class with this written interface:

    kind: str                       the resource kind it holds ("account", "directory", ...)
    observe(facts, inventory)       read the actual state into `facts.of(kind)` (no writes)
    apply(changes) -> results       carry out changes of its kind, in the order given, and
                                    return one (change, error or None) per change; stop at
                                    the first error so the journal shows exactly how far
                                    it got (a check after the batch may still fail an
                                    earlier change: ldap_identity's uid read-back; the
                                    engine stops after any batch with an error)

observe raises TargetError when it cannot see the target at all; the run stops there,
before anything is written (so sshd keeps working from the last good cache).

A target never decides *what* to change: that is plan.py's job. Each kind module also
declares a `KIND` (the `Kind` below): how its driver is made, where its changes go in the
apply order, how they read in a plan, what the inventory forgets when one is deleted.
A new kind is a new module here, one line in registry.py, and the resources it wants in
desired.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.inventory import Inventory
from reconciler.resources import Change, Facts
from schemas.models import HiveConfig

Result = tuple[Change, str | None]
# How a plan colours part of a line: style(text, colour) -> text. The command line passes
# click's; the kinds stay free of any terminal code.
Style = Callable[[str, str], str]


class TargetError(Exception):
    """A target cannot be observed or written (server down, bad credentials...): one line
    saying what and why. Raised before apply, nothing has changed."""


class Target(Protocol):
    kind: str

    def observe(self, facts: Facts, inventory: Inventory) -> None: ...

    def apply(self, changes: list[Change]) -> list[Result]: ...


def apply_each(changes: list[Change], apply_one: Callable[[Change], None],
               failure: type[Exception] | tuple[type[Exception], ...]) -> list[Result]:
    """Apply changes one by one, stopping at the first failure, as the interface asks."""
    results: list[Result] = []
    for change in changes:
        try:
            apply_one(change)
        except failure as exc:
            results.append((change, str(exc)))
            break
        results.append((change, None))
    return results


_HIDDEN = {"type", "group"}  # derivable (group = uid) or constant


def _value(value: Any) -> str:
    # (json.dumps of a str is exactly this C function: 50,000 times cheaper to call it)
    return json.encoder.encode_basestring_ascii(value) if isinstance(value, str) \
        else str(value).lower() if isinstance(value, bool) else str(value)


def attribute_lines(change: Change, style: Style | None = None) -> list[str]:
    """The plain rendering of a change below its head line: one line per attribute
    (before -> after for an update); nothing for a delete."""
    if change.action == "delete":
        return []
    before, after = change.before or {}, change.after or {}
    lines = []
    width = max((len(k) for k in after), default=0) + 1
    for key, value in after.items():
        if key in _HIDDEN and change.action == "create":
            continue
        label = f"{key}:".ljust(width)
        if change.action == "update":
            lines.append(f"      {label} {_value(before.get(key))} -> {_value(value)}")
        else:
            lines.append(f"      {label} {_value(value)}")
    return lines


@dataclass(frozen=True)
class Kind:
    """What the pipeline knows about one kind of resource, as data: the registry's entry.

    driver    makes the target that observes and applies this kind for a hive.yaml
    render    the lines below a change's head in a text plan
    nested    names are paths: parents are created first and deleted last
    revokes   changing or deleting an existing one is how access is revoked, so those
              changes run before anything else that could fail
    refuse    an error when an existing resource is not something Hive may manage
    forget    what the inventory drops once a delete of this kind is done
    """

    name: str
    driver: Callable[[HiveConfig], Target]
    render: Callable[[Change, Style], list[str]] = attribute_lines
    nested: bool = False
    revokes: bool = False
    refuse: Callable[[str, Any], str | None] | None = None
    forget: Callable[[Inventory, str], None] | None = None
