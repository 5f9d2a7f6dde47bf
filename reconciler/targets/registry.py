"""Every kind of resource Hive manages, in the order their creates and updates are applied.

An account must exist before a directory is given to it, and both before a key lets anyone
in. Deletes run in the reverse order, so access is revoked before anything else goes. A new
kind is one line here (its module holds the rest, see targets/__init__.py).
"""

from __future__ import annotations

from reconciler.targets import Kind, Target
from reconciler.targets.accounts import KIND as ACCOUNT
from reconciler.targets.authorized_keys import KIND as AUTHORIZED_KEYS
from reconciler.targets.directories import KIND as DIRECTORY
from schemas.models import HiveConfig

KINDS: tuple[Kind, ...] = (ACCOUNT, DIRECTORY, AUTHORIZED_KEYS)
ORDER = {k.name: i for i, k in enumerate(KINDS)}
_BY_NAME = {k.name: k for k in KINDS}


def kind(name: str) -> Kind:
    return _BY_NAME[name]


def targets_for(config: HiveConfig) -> dict[str, Target]:
    """One target per kind, made by its kind's driver, in apply order."""
    return {k.name: k.driver(config) for k in KINDS}
