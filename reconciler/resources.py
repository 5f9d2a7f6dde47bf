"""The plain data every stage passes on: resources, what was observed, changes.

A resource is (kind, name, attrs): an account `bh-alice` with uid, shell...; a directory
with owner and mode; an authorized_keys file with its key lines. Desired and observed
state are both maps of the same shape, so one generic diff (plan.py) serves every target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# The kinds in the order their creates and updates are applied: an account must exist
# before a directory is given to it, and both before a key lets anyone in. Deletes run in
# the reverse order, so access is revoked before anything else goes.
KINDS = ("account", "directory", "authorized_keys")

Action = Literal["create", "update", "delete"]
Key = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class Resource:
    """One thing Hive wants to exist. `meta` is context (role, repository), not compared."""

    kind: str
    name: str
    attrs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.kind, self.name)


@dataclass(frozen=True)
class Change:
    """One step of a plan: create, update (only the attributes that differ) or delete."""

    action: Action
    kind: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        """The JSON form, for `--output json` and the journal."""
        return {"action": self.action, "kind": self.kind, "name": self.name,
                "before": self.before, "after": self.after, **self.meta}

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "delete": "-"}[self.action]


class Unknown:
    """Observed state that could not be read (e.g. shadow as non-root): never changed."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()
