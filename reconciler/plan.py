"""The diff: desired resources vs observed facts -> an ordered list of changes. Pure.

One generic rule serves every target: a wanted resource that is absent is created; one
whose attributes differ is updated (the change carries only the differing attributes,
before and after); a resource in `remove` that exists is deleted. What could not be
observed (UNKNOWN) is never changed. Safety checks refuse plans that look like accidents.
`compute` is the whole pure step, file and facts in, plan out: the engine and the tests
both call it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from reconciler.desired import Desired, desired_state
from reconciler.inventory import Inventory
from reconciler.resources import UNKNOWN, Change, Facts
from reconciler.targets import registry
from schemas.models import HiveConfig


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the plan must not be applied
    notes: list[str] = field(default_factory=list)  # worth reading, changes nothing

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def summary(self) -> dict[str, int]:
        return {"add": self.count("create"), "change": self.count("update"),
                "remove": self.count("delete")}

    @property
    def checksum(self) -> str:
        """sha256 of what this plan would do, for `hive apply --checksum`.

        WHY: a reviewed plan (a pull request's) and the one an apply computes later can
        differ (main moved on, the server drifted); the checksum lets apply refuse then.
        It covers the changes (in their order) and the errors, as the canonical JSON of
        their `--output json` data (sorted keys, no spaces); not the notes, which change
        nothing and may say what a non-root plan could not read. Plans hold no timestamps,
        so the same file on the same server state gives the same checksum.
        """
        data = {"changes": [c.data for c in self.changes], "errors": self.errors}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def observed_of(facts: Facts, kind: str, name: str) -> Any:
    """The observed attrs of one resource; None when it does not exist."""
    return facts.observed.get(kind, {}).get(name)


def _order(change: Change) -> tuple[int, int, int, str]:
    """Key files that already exist first: deleting or rewriting them is how access is
    revoked, and a failure later (a folder that cannot be made) must not leave a removed
    key working. Their users exist already, so nothing they need comes later. Then creates
    and updates in the registry's order, parents before children, then other deletes in
    reverse order, deepest folders first."""
    spec = registry.kind(change.kind)
    rank = registry.ORDER[change.kind]
    depth = _depth(change.name) if spec.nested else 0
    if spec.revokes and change.action != "create":
        return (0, 0, 0, change.name)
    if change.action == "delete":
        return (2, -rank, -depth, change.name)
    return (1, rank, depth, change.name)


def _depth(name: str) -> int:
    """len(PurePosixPath(name).parts), without building a path for each of 100,000
    folders when the name is already in normal form."""
    if "//" in name or "/." in name or name.endswith("/") or name.startswith(".") \
            or name == "" or name == "/":
        return len(PurePosixPath(name).parts)
    return name.count("/") + 1


def diff(desired: Desired, facts: Facts) -> Plan:
    plan = Plan(errors=list(desired.errors), notes=list(desired.notes) + facts.warnings)
    for resource in desired.resources.values():
        seen = observed_of(facts, resource.kind, resource.name)
        if seen is resource.attrs:  # desired.py hands over what it saw when it matches
            continue
        if seen is UNKNOWN:
            continue
        if seen is None:
            plan.changes.append(Change("create", resource.kind, resource.name, None,
                                       resource.attrs, resource.meta))
            continue
        refuse = registry.kind(resource.kind).refuse
        refusal = refuse(resource.name, seen) if refuse else None
        if refusal:
            plan.errors.append(refusal)
            continue
        before = {k: seen[k] for k, v in resource.attrs.items()
                  if k in seen and seen[k] is not UNKNOWN and seen[k] != v}
        if before:
            after = {k: resource.attrs[k] for k in before}
            plan.changes.append(Change("update", resource.kind, resource.name, before, after,
                                       resource.meta))
    for kind, name in desired.remove:
        seen = observed_of(facts, kind, name)
        if seen is not None and seen is not UNKNOWN:
            plan.changes.append(Change("delete", kind, name, _public(seen), None))
    plan.changes.sort(key=_order)
    return plan


def _public(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k != "children"}


def safety_errors(plan: Plan, facts: Facts, desired: Desired, force: bool) -> list[str]:
    """Refuse plans that look like an accident (octoDNS's too-much-change check).

    A plan that locks or removes every repository that currently has access almost always
    means a truncated or wrong hive.yaml; it needs --force.
    """
    if force:
        return []
    active_now = [name for name, attrs in facts.accounts.items()
                  if name in desired.inventory.accounts and attrs is not UNKNOWN
                  and attrs.get("locked") is False]
    active_after = [r for r in desired.resources.values()
                    if r.kind == "account" and not r.attrs["locked"]]
    if active_now and not active_after:
        return [f"this plan would revoke access to every repository ({len(active_now)} now "
                "active); if hive.yaml really is meant to hold none, run again with --force"]
    return []


def compute(config: HiveConfig, inventory: Inventory, facts: Facts, now: dt.datetime, *,
            prune: bool = False, force: bool = False) -> tuple[Plan, Desired]:
    """File, inventory and facts -> the plan (and the desired state it came from). Pure."""
    desired = desired_state(config, inventory, facts, now, prune=prune)
    plan = diff(desired, facts)
    plan.errors.extend(safety_errors(plan, facts, desired, force))
    return plan, desired
