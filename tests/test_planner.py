"""The planner is pure: tables of {file, inventory, facts} -> expected changes. No I/O."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest

import schemas
from reconciler import plan as planner
from reconciler.desired import Desired, Facts
from reconciler.inventory import Inventory
from reconciler.plan import Plan
from reconciler.resources import UNKNOWN

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9rRXaF a"
ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrsAxFVn9PPclOZg1k/6yW6CYdqDmWmp/VFQjW6VPXp b"
ED3 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINpeWremOJPK0IlRUEqlTur9mthisOGZDJegEjmXBREx c"
ROOT = "/srv/repos"

HEAD = f"""\
version: 1
server:
  name: t
  ssh_host: h
  repos_root: {ROOT}
  state_dir: /var/lib/hive
  users: {{prefix: "bh-", uid_range: [20000, 20009]}}
owners: {{alice: {{}}, bob: {{}}}}
keys:
  k1: {{owner: alice, public_key: {ED}}}
  k2: {{owner: alice, public_key: {ED2}, expires: 2026-01-01}}
  k3: {{owner: alice, public_key: {ED3}}}
"""


def config(repos: str) -> schemas.HiveConfig:
    return schemas.load_text(HEAD + "repositories:\n" + textwrap.indent(
        textwrap.dedent(repos), "  "), "hive.yaml", Path("/"))


def run(cfg: schemas.HiveConfig, facts: Facts | None = None,
        inventory: Inventory | None = None, prune: bool = False,
        force: bool = False) -> tuple[Plan, Desired]:
    return planner.compute(cfg, inventory or Inventory(), facts or Facts(), NOW, prune=prune,
                           force=force)


def converged(cfg: schemas.HiveConfig) -> tuple[Facts, Inventory]:
    """Facts and inventory of a server where cfg was applied: built from the plan itself."""
    _, desired = run(cfg)
    facts = Facts()
    for r in desired.resources.values():
        attrs: dict[str, Any] = dict(r.attrs)
        if r.kind == "directory":
            attrs["children"] = ()
        facts.of(r.kind)[r.name] = attrs
    facts.ids_in_use.update({attrs["uid"]: name for name, attrs in facts.accounts.items()})
    return facts, desired.inventory


def brief(plan: Plan) -> list[str]:
    return [f"{c.symbol} {c.kind} {c.name}" for c in plan.changes]


def test_fresh_server_creates_in_dependency_order() -> None:
    plan, _ = run(config("r1: {owner: alice, keys: [k1]}"))
    assert brief(plan) == [
        "+ account bh-r1",
        f"+ directory {ROOT}",
        f"+ directory {ROOT}/bh-r1",
        f"+ directory {ROOT}/bh-r1/r1",
        "+ authorized_keys bh-r1",
    ]
    assert plan.summary == {"add": 5, "change": 0, "remove": 0}
    account = plan.changes[0].after
    assert account == {"uid": 20000, "gid": 20000, "group": 20000, "locked": False,
                       "gecos": "Hive repository r1 (alice)", "home": f"{ROOT}/bh-r1",
                       "shell": "/bin/sh"}
    assert plan.changes[3].after == {"type": "directory", "uid": 20000, "gid": 20000,
                                     "mode": "0700"}
    assert plan.changes[2].after == {"type": "directory", "uid": 0, "gid": 20000,
                                     "mode": "0750"}


def test_converged_server_has_no_changes() -> None:
    cfg = config("r1: {owner: alice, keys: [k1]}\nr2: {owner: bob}")
    facts, inventory = converged(cfg)
    plan, _ = run(cfg, facts, inventory)
    assert plan.changes == [] and plan.errors == []


@pytest.mark.parametrize(("before", "after", "expected"), [
    ("r1: {owner: alice, keys: [k1]}", "r1: {owner: bob, keys: []}",
     ["- authorized_keys bh-r1", "~ account bh-r1"]),
    ("r1: {owner: alice, keys: [k1]}", "r1: {owner: alice, keys: [k1], mode: disabled}",
     ["- authorized_keys bh-r1"]),
    ("r1: {owner: alice, keys: [k1]}", "r1: {owner: alice, append_only_keys: [k1]}",
     ["~ authorized_keys bh-r1"]),
    ("r1: {owner: alice, keys: [k1]}", "r1: {owner: alice, keys: [k1], uid: 20005}",
     ["~ account bh-r1", f"~ directory {ROOT}/bh-r1", f"~ directory {ROOT}/bh-r1/r1"]),
])
def test_changes(before: str, after: str, expected: list[str]) -> None:
    facts, inventory = converged(config(before))
    plan, _ = run(config(after), facts, inventory)
    assert brief(plan) == expected
    assert plan.errors == []


def test_owner_change_shows_before_and_after() -> None:
    facts, inventory = converged(config("r1: {owner: alice}"))
    plan, _ = run(config("r1: {owner: bob}"), facts, inventory)
    (change,) = plan.changes
    assert change.before == {"gecos": "Hive repository r1 (alice)"}
    assert change.after == {"gecos": "Hive repository r1 (bob)"}


def test_append_only_and_quota_reach_the_forced_command() -> None:
    plan, _ = run(config("r1: {owner: alice, append_only_keys: [k1], quota: 1.5T}"))
    line = plan.changes[-1].after["keys"]["k1"]
    assert line.startswith('restrict,command="borg serve --restrict-to-repository '
                           f'{ROOT}/bh-r1/r1 --append-only --storage-quota 1.5T" ssh-ed25519 ')
    assert line.endswith(" hive:k1")


@pytest.mark.parametrize(("mode", "command"), [
    ("import", f"rrsync -wo -munge {ROOT}/bh-r1/r1"),
    ("export", f"rrsync -ro {ROOT}/bh-r1/r1"),
])
def test_rsync_modes(mode: str, command: str) -> None:
    plan, _ = run(config(f"r1: {{owner: alice, keys: [k1], mode: {mode}}}"))
    assert f'restrict,command="{command}" ' in plan.changes[-1].after["keys"]["k1"]


def test_expired_key_is_left_out_with_a_note() -> None:
    plan, _ = run(config("r1: {owner: alice, keys: [k1, k2]}"))
    assert list(plan.changes[-1].after["keys"]) == ["k1"]
    assert "1 expired key left out: k2 (2026-01-01); remove them from hive.yaml" in plan.notes


def test_removed_repository_is_locked_and_revoked_but_data_stays() -> None:
    facts, inventory = converged(config("r1: {owner: alice, keys: [k1]}\nr2: {owner: bob}"))
    plan, _ = run(config("r2: {owner: bob}"), facts, inventory)
    assert brief(plan) == ["- authorized_keys bh-r1", "~ account bh-r1"]
    assert plan.changes[1].after == {"gecos": "Hive repository r1 (removed)", "locked": True}


def test_prune_keeps_a_repository_that_holds_data() -> None:
    facts, inventory = converged(config("r1: {owner: alice}\nr2: {owner: bob}"))
    facts.directories[f"{ROOT}/bh-r1/r1"]["children"] = ("data", "config")
    plan, _ = run(config("r2: {owner: bob}"), facts, inventory, prune=True)
    assert brief(plan) == ["~ account bh-r1"]
    assert any("hive purge r1" in n for n in plan.notes)


def test_prune_removes_empty_folders_deepest_first_then_the_user() -> None:
    facts, inventory = converged(config("r1: {owner: alice}\nr2: {owner: bob}"))
    plan, _ = run(config("r2: {owner: bob}"), facts, inventory, prune=True)
    assert brief(plan) == [f"- directory {ROOT}/bh-r1/r1", f"- directory {ROOT}/bh-r1",
                           "- account bh-r1"]


def test_protected_repository_cannot_be_removed() -> None:
    facts, inventory = converged(config("r1: {owner: alice, protected: true}\nr2: {owner: bob}"))
    plan, _ = run(config("r2: {owner: bob}"), facts, inventory, prune=True)
    assert any("repository r1 is protected" in e for e in plan.errors)


def test_removing_every_repository_needs_force() -> None:
    facts, inventory = converged(config("r1: {owner: alice}"))
    cfg = schemas.load_text(HEAD, "hive.yaml", Path("/"))
    plan, _ = run(cfg, facts, inventory)
    assert any("revoke access to every repository" in e for e in plan.errors)
    forced, _ = run(cfg, facts, inventory, force=True)
    assert forced.errors == [] and brief(forced) == ["~ account bh-r1"]


def test_uids_skip_foreign_ids_and_existing_users_keep_theirs() -> None:
    facts, inventory = converged(config("r2: {owner: bob}"))  # r2 got 20000
    facts.ids_in_use.update({20001: "someone", 20002: "somegroup"})
    plan, desired = run(config("r1: {owner: alice}\nr2: {owner: bob}"), facts, inventory)
    assert desired.inventory.accounts["bh-r2"]["uid"] == 20000
    assert desired.inventory.accounts["bh-r1"]["uid"] == 20003
    assert brief(plan)[0] == "+ account bh-r1"


def test_uid_range_exhausted_is_an_error() -> None:
    repos = "\n".join(f"r{i}: {{owner: alice}}" for i in range(11))
    plan, _ = run(config(repos))
    assert any("no free uid left for 1 new repositories" in e for e in plan.errors)


def test_foreign_user_with_the_same_name_is_not_taken_over() -> None:
    facts = Facts(observed={"account": {"bh-r1": {"uid": 5000, "gid": 5000}}},
                  ids_in_use={5000: "bh-r1"})
    plan, _ = run(config("r1: {owner: alice}"), facts)
    assert any("user bh-r1 (repository r1) already exists and was not created by Hive" in e
               for e in plan.errors)


def test_pin_on_a_foreign_uid_is_an_error() -> None:
    facts = Facts(ids_in_use={25000: "postgres"})
    plan, _ = run(config("r1: {owner: alice, uid: 25000}"), facts)
    assert any("uid 25000 is already used by 'postgres'" in e for e in plan.errors)


def test_unreadable_state_is_never_changed() -> None:
    cfg = config("r1: {owner: alice}")
    facts, inventory = converged(cfg)
    facts.directories[f"{ROOT}/bh-r1/r1"] = UNKNOWN
    facts.accounts["bh-r1"]["locked"] = UNKNOWN
    plan, _ = run(cfg, facts, inventory)
    assert plan.changes == []


def test_a_symlink_where_a_folder_belongs_is_refused() -> None:
    cfg = config("r1: {owner: alice}")
    facts, inventory = converged(cfg)
    facts.directories[f"{ROOT}/bh-r1/r1"] = {"type": "symlink", "uid": 0, "gid": 0,
                                             "mode": "0777", "children": ()}
    plan, _ = run(cfg, facts, inventory)
    assert any("is a symlink, not a directory" in e for e in plan.errors)


def test_unknown_cache_files_are_removed_first() -> None:
    cfg = config("r1: {owner: alice, keys: [k1]}")
    facts, inventory = converged(cfg)
    facts.authorized_keys["bh-stray"] = {"keys": {"x": "..."}}
    facts.accounts["bh-r1"]["shell"] = "/bin/bash"
    plan, _ = run(cfg, facts, inventory)
    assert brief(plan) == ["- authorized_keys bh-stray", "~ account bh-r1"]


def test_a_remembered_uid_now_held_by_someone_else_is_an_error() -> None:
    """If bh-r1 vanished and 'eve' took its uid, re-creating bh-r1 with that uid would give
    eve the repository's backups."""
    cfg = config("r1: {owner: alice}")
    facts, inventory = converged(cfg)
    del facts.accounts["bh-r1"]
    facts.ids_in_use[20000] = "eve"
    plan, _ = run(cfg, facts, inventory)
    assert any("user bh-r1: uid 20000 is already used by 'eve'" in e for e in plan.errors)
    assert not any(c.kind == "account" for c in plan.changes)


def test_moving_repos_root_with_data_in_place_is_refused() -> None:
    facts, inventory = converged(config("r1: {owner: alice}"))
    facts.directories[f"{ROOT}/bh-r1/r1"]["children"] = ("config", "data")
    moved = schemas.load_text((HEAD + "repositories:\n  r1: {owner: alice}\n").replace(
        f"repos_root: {ROOT}", "repos_root: /srv/elsewhere"), "hive.yaml", Path("/"))
    plan, _ = run(moved, facts, inventory)
    assert any(f"repository r1 was at {ROOT}/bh-r1/r1 and would now be at "
               "/srv/elsewhere/bh-r1/r1" in e for e in plan.errors)


def test_prune_looks_for_data_where_the_repository_really_was() -> None:
    """After a repos_root change, a removed repository's data is still at its old path."""
    facts, inventory = converged(config("r1: {owner: alice}\nr2: {owner: bob}"))
    facts.directories[f"{ROOT}/bh-r2/r2"]["children"] = ("config", "data")
    moved = schemas.load_text((HEAD + "repositories:\n  r1: {owner: alice}\n").replace(
        f"repos_root: {ROOT}", "repos_root: /srv/elsewhere"), "hive.yaml", Path("/"))
    facts.directories[f"{ROOT}/bh-r1/r1"]["children"] = ()
    plan, _ = run(moved, facts, inventory, prune=True)
    assert not any(c.action == "delete" and c.name.endswith("r2") for c in plan.changes)
    assert any(f"its data at {ROOT}/bh-r2/r2 is kept" in n for n in plan.notes)


def test_key_revocations_run_before_anything_that_could_fail() -> None:
    """Removing one key from a repository that stays must not wait behind creates that
    might fail (a compromised key has to go even if a new folder cannot be made)."""
    facts, inventory = converged(config("r1: {owner: alice, keys: [k1, k3]}"))
    plan, _ = run(config("r1: {owner: alice, keys: [k3]}\nr4: {owner: alice, keys: [k1]}"),
                  facts, inventory)
    assert brief(plan)[:2] == ["~ authorized_keys bh-r1", "+ account bh-r4"]


def test_prune_names_what_else_keeps_a_users_folder() -> None:
    facts, inventory = converged(config("r1: {owner: alice}\nr2: {owner: bob}"))
    del facts.directories[f"{ROOT}/bh-r1/r1"]  # purged
    facts.directories[f"{ROOT}/bh-r1"]["children"] = ("r1.rollback-20261126-to-9",)
    plan, _ = run(config("r2: {owner: bob}"), facts, inventory, prune=True)
    assert brief(plan) == ["~ account bh-r1"]
    assert any(f"{ROOT}/bh-r1 still holds r1.rollback-20261126-to-9" in n for n in plan.notes)

