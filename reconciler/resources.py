"""The plain data every stage passes on: resources, what was observed, changes.

A resource is (kind, name, attrs): an account `bh-alice` with uid, shell...; a directory
with owner and mode; an authorized_keys file with its key lines. Desired and observed
state are both maps of the same shape, keyed by kind, so one generic diff (plan.py) serves
every target. Which kinds exist, and in what order they are applied, is
reconciler/targets/registry.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

Action = Literal["create", "update", "delete"]
Key = tuple[str, str]  # (kind, name)


class Resource(NamedTuple):
    """One thing Hive wants to exist. `meta` is context (role, repository), not compared.
    A plan holds four per repository: a named tuple is as small as a slotted class and
    made three times faster than a frozen dataclass. Neither it nor its dicts are ever
    modified."""

    kind: str
    name: str
    attrs: dict[str, Any]
    meta: Mapping[str, Any] = MappingProxyType({})

    @property
    def key(self) -> Key:
        return (self.kind, self.name)


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a plan: create, update (only the attributes that differ) or delete.
    Its dicts may be shared with the Resource it came from: neither is ever modified."""

    action: Action
    kind: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    meta: Mapping[str, Any] = field(default_factory=dict)

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


@dataclass
class Facts:
    """Everything observed, in plain data. Produced by the targets' observe functions.

    `observed` holds each kind's resources as the target saw them (kind -> name -> attrs,
    or UNKNOWN; a missing name is absent), so a new kind needs no field here. The rest
    are facts about identity that several kinds and the uid rules share.
    """

    observed: dict[str, dict[str, Any]] = field(default_factory=dict)
    # every uid and gid in use anywhere (backend and system) -> a name holding it
    ids_in_use: dict[int, str] = field(default_factory=dict)
    # the ids more than one name holds -> all those names (few: most ids have one holder)
    shared_ids: dict[int, set[str]] = field(default_factory=dict)
    # names known to the system outside the identity backend (/etc/passwd, other NSS)
    system_names: set[str] = field(default_factory=set)
    # unix user -> repository, for accounts that carry Hive's own mark in the backend
    # (LDAP entries); they are Hive's even if this host's inventory was lost
    marked: dict[str, str] = field(default_factory=dict)
    # unix user -> server.name of ANOTHER Hive whose mark its entry carries (a directory
    # several Hive servers share): foreign here, named so refusals can say whose it is
    other_servers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def hold(self, number: int, name: str) -> None:
        """Record that `name` holds uid or gid `number`. Every holder is kept, not only
        the first one seen: a local account made later with a repository user's uid
        must show up as a conflict, whichever source was read first."""
        first = self.ids_in_use.setdefault(number, name)
        if first != name:
            self.shared_ids.setdefault(number, {first}).add(name)

    def others_holding(self, number: int, name: str) -> list[str]:
        """The names other than `name` that hold `number`, sorted."""
        holders = self.shared_ids.get(number)
        if holders is None:
            first = self.ids_in_use.get(number)
            return [] if first is None or first == name else [first]
        return sorted(holders - {name})

    def of(self, kind: str) -> dict[str, Any]:
        """The observed resources of one kind, to read or (for its target) to fill."""
        return self.observed.setdefault(kind, {})

    @property
    def accounts(self) -> dict[str, Any]:
        """unix user -> account attrs, for every entry in the identity backend (Hive's or
        not)."""
        return self.of("account")

    @property
    def directories(self) -> dict[str, Any]:
        """path -> {"type", "uid", "gid", "mode"[, "children"]} or UNKNOWN ("children" only
        for the folders whose content the plan reads)."""
        return self.of("directory")

    @property
    def authorized_keys(self) -> dict[str, Any]:
        """unix user -> {"keys": {key name: line}} for every file in the cache."""
        return self.of("authorized_keys")
