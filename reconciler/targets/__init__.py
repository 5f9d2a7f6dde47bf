"""One module per target. Each target is a class with this written interface:

    kind: str                       the resource kind it holds ("account", "directory", ...)
    observe(facts, inventory)       read the actual state into `facts` (no writes)
    apply(changes) -> results       carry out changes of its kind, in the order given, and
                                    return one (change, error or None) per change; stop at
                                    the first error so the journal shows exactly how far
                                    it got

observe raises TargetError when it cannot see the target at all; the run stops there,
before anything is written (so sshd keeps working from the last good cache).

A target never decides *what* to change: that is plan.py's job. A new target (an LDAP
directory, say) is a new module here plus its kind in resources.KINDS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from reconciler.desired import Facts
from reconciler.inventory import Inventory
from reconciler.resources import Change

Result = tuple[Change, str | None]


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
