"""The account kind: a repository's unix user and private group, in whichever backend.

What the identity backends (files_identity.py, ldap_identity.py) share lives here: which
one hive.yaml names, how an account change reads in a plan, and that a deleted account is
forgotten by the inventory.
"""

from __future__ import annotations

from reconciler.inventory import Inventory
from reconciler.resources import Change
from reconciler.targets import Kind, Style, Target, attribute_lines
from reconciler.targets.files_identity import FilesIdentity
from schemas.models import HiveConfig


def driver(config: HiveConfig) -> Target:
    """The identity backend hive.yaml names."""
    if config.server.identity.backend == "ldap":
        from reconciler.targets.ldap_identity import LdapIdentity  # only ldap pays for it

        return LdapIdentity(config)
    return FilesIdentity(config)


def render(change: Change, style: Style) -> list[str]:
    """Its attributes, then which repository it serves (and its LDAP entry, if any)."""
    if change.action == "delete":
        return []
    lines = attribute_lines(change)
    if change.meta.get("repository"):
        dn = f", dn: {change.meta['dn']}" if change.meta.get("dn") else ""
        lines.append(f"      (repository {change.meta['repository']}{dn})")
    return lines


def forget(inventory: Inventory, name: str) -> None:
    inventory.accounts.pop(name, None)


KIND = Kind("account", driver, render=render, forget=forget)
