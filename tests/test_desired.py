"""The phases of desired_state, one table each: pure functions, no I/O."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest

import schemas
from reconciler import desired
from reconciler.inventory import Inventory
from reconciler.resources import UNKNOWN, Facts, Resource

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9rRXaF a"
ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrsAxFVn9PPclOZg1k/6yW6CYdqDmWmp/VFQjW6VPXp b"
ROOT = "/srv/repos"
FILES = "{backend: files, files_dir: /var/lib/extrausers}"
LDAP = ("{backend: ldap, ldap: {url: 'ldap://127.0.0.1', base_dn: 'dc=example,dc=org', "
        "bind_dn: 'cn=hive,dc=example,dc=org', bind_password_env: HIVE_LDAP}}")


def config(repos: str = "", identity: str = FILES) -> schemas.HiveConfig:
    text = textwrap.dedent(f"""\
        version: 1
        server:
          name: t
          ssh_host: h
          repos_root: {ROOT}
          state_dir: /var/lib/hive
          users: {{prefix: "bh-", uid_range: [20000, 20002]}}
          identity: {identity}
        owners: {{alice: {{}}}}
        keys:
          k1: {{owner: alice, public_key: {ED}}}
          k2: {{owner: alice, public_key: {ED2}, expires: 2026-01-01}}
        """) + "repositories:" + ("\n" + textwrap.indent(textwrap.dedent(repos), "  ")
                                   if repos else " {}\n")
    return schemas.load_text(text, "hive.yaml", Path("/"))


def folder(*children: str) -> dict[str, Any]:
    return {"type": "directory", "uid": 0, "gid": 0, "mode": "0755", "children": children}


# -- 0. which accounts are Hive's ------------------------------------------------------

@pytest.mark.parametrize(("remembered", "marked", "accounts", "expected"), [
    ({}, {}, {}, {}),
    ({"bh-a": {"repository": "a", "uid": 1}}, {}, {},
     {"bh-a": {"repository": "a", "uid": 1}}),
    # a marked LDAP entry is Hive's even without the inventory
    ({}, {"bh-b": "b"}, {"bh-b": {"uid": 20001}},
     {"bh-b": {"repository": "b", "uid": 20001, "protected": False}}),
    # the inventory wins over the mark
    ({"bh-b": {"repository": "b", "uid": 1}}, {"bh-b": "b"}, {"bh-b": {"uid": 7}},
     {"bh-b": {"repository": "b", "uid": 1}}),
    # a mark on an entry that cannot be read is not enough
    ({}, {"bh-c": "c"}, {"bh-c": UNKNOWN}, {}),
    # nor one on an entry with a uid Hive would never have given: 0, a local user's...
    ({}, {"bh-b": "b"}, {"bh-b": {"uid": 0}}, {}),
    ({}, {"bh-b": "b"}, {"bh-b": {"uid": 65534}}, {}),
    ({}, {"bh-b": "b"}, {"bh-b": {"uid": 20003}}, {}),  # just past uid_range
    # ... unless the file pins that uid for the repository
    ({}, {"bh-a": "a"}, {"bh-a": {"uid": 25000}},
     {"bh-a": {"repository": "a", "uid": 25000, "protected": False}}),
    ({}, {"bh-a": "a"}, {"bh-a": {"uid": 25001}}, {}),
    # the inventory remembers what Hive gave, whatever the range says now
    ({"bh-b": {"repository": "b", "uid": 7}}, {"bh-b": "b"}, {"bh-b": {"uid": 7}},
     {"bh-b": {"repository": "b", "uid": 7}}),
    # a marked entry of a repository not in this file: no proof that this host made it
    # (another host with a copied server.name may have); left alone, not locked or pruned
    ({}, {"bh-z": "z"}, {"bh-z": {"uid": 20001}}, {}),
])
def test_known_accounts(remembered: dict[str, Any], marked: dict[str, str],
                        accounts: dict[str, Any], expected: dict[str, Any]) -> None:
    facts = Facts(observed={"account": accounts}, marked=marked)
    cfg = config("a: {owner: alice, uid: 25000}\nb: {owner: alice}")
    assert desired.known_accounts(cfg, Inventory(accounts=remembered), facts) == expected


# -- 1. uids ---------------------------------------------------------------------------

@pytest.mark.parametrize(("known", "accounts", "system", "expected"), [
    ({}, {}, set(), {}),
    ({}, {"bh-a": {"uid": 5}}, set(), {"bh-a": "already exists and was not created by Hive"}),
    ({}, {}, {"bh-a"}, {"bh-a": "already exists and was not created by Hive"}),
    ({"bh-a": {"uid": 5}}, {"bh-a": {"uid": 5}}, set(), {}),  # Hive's own, as expected
    ({"bh-a": {"uid": 5}}, {}, {"bh-a"}, {"bh-a": "someone else recreated it"}),
    ({"bh-a": {"uid": 5}}, {}, set(), {}),  # Hive's, gone: it is made again
    # Hive's, and a foreign entry of the same name beside it (a group, a local user)
    ({"bh-a": {"uid": 5}}, {"bh-a": {"uid": 5}}, {"bh-a"},
     {"bh-a": "besides Hive's own entry, another account or group of that name exists"}),
])
def test_taken_names(known: dict[str, Any], accounts: dict[str, Any], system: set[str],
                     expected: dict[str, str]) -> None:
    facts = Facts(observed={"account": accounts}, system_names=system)
    found = desired.taken_names({"bh-a": "a"}, known, facts)
    assert set(found) == set(expected)
    for user, words in expected.items():
        assert words in found[user] and "(repository a)" in found[user]


@pytest.mark.parametrize(("repos", "known", "refused", "uids", "pinned"), [
    ("a: {owner: alice}", {}, set(), {}, set()),
    ("a: {owner: alice, uid: 25000}", {}, set(), {"bh-a": 25000}, {"bh-a"}),
    ("a: {owner: alice}", {"bh-a": {"uid": 20001}}, set(), {"bh-a": 20001}, set()),
    # a pin wins over what was remembered
    ("a: {owner: alice, uid: 25000}", {"bh-a": {"uid": 20001}}, set(), {"bh-a": 25000},
     {"bh-a"}),
    # a repository gone from the file keeps its uid
    ("a: {owner: alice}", {"bh-z": {"uid": 20002}}, set(), {"bh-z": 20002}, set()),
    ("a: {owner: alice, uid: 25000}", {}, {"bh-a"}, {}, set()),
])
def test_kept_uids(repos: str, known: dict[str, Any], refused: set[str],
                   uids: dict[str, int], pinned: set[str]) -> None:
    cfg = config(repos)
    users = {cfg.user_name(n): n for n in cfg.repositories}
    assert desired.kept_uids(cfg, users, known, refused) == (uids, pinned)


@pytest.mark.parametrize(("uids", "pinned", "in_use", "expected"), [
    ({"bh-a": 20000}, set(), {}, {}),
    ({"bh-a": 20000}, set(), {20000: "bh-a"}, {}),  # held by itself
    ({"bh-a": 20000}, set(), {20000: "eve"},
     {"bh-a": "user bh-a: uid 20000 is already used by 'eve'; Hive keeps a repository's "
              "uid for ever, so remove or renumber that entry"}),
    ({"bh-a": 25000}, {"bh-a"}, {25000: "postgres"},
     {"bh-a": "repositories.a.uid: uid 25000 is already used by 'postgres'; pin a free uid"}),
])
def test_uid_conflicts(uids: dict[str, int], pinned: set[str], in_use: dict[int, str],
                       expected: dict[str, str]) -> None:
    facts = Facts(ids_in_use=in_use)
    assert desired.uid_conflicts(uids, pinned, {"bh-a": "a"}, facts) == expected


@pytest.mark.parametrize(("holders", "conflict"), [
    (["bh-a"], None),
    (["bh-a", "bh-a"], None),  # its user and its own group
    (["bh-a", "eve"], "eve"),  # seen first, it still conflicts with the one seen later
    (["eve", "bh-a"], "eve"),
    (["bh-a", "zed", "eve"], "eve"),
])
def test_uid_conflicts_see_every_holder(holders: list[str], conflict: str | None) -> None:
    facts = Facts()
    for name in holders:
        facts.hold(20000, name)
    got = desired.uid_conflicts({"bh-a": 20000}, set(), {"bh-a": "a"}, facts)
    assert got == ({} if conflict is None else {
        "bh-a": f"user bh-a: uid 20000 is already used by {conflict!r}; Hive keeps a "
                "repository's uid for ever, so remove or renumber that entry"})


@pytest.mark.parametrize(("taken", "wanted", "expected"), [
    (set(), ["a", "b"], {"a": 10, "b": 11}),
    ({10, 12}, ["a", "b"], {"a": 11}),  # 13 is outside the range
    ({11}, ["a", "b"], {"a": 10, "b": 12}),
    ({10, 11}, ["a", "b"], {"a": 12}),  # the range [10, 12] runs out
    ({10, 11, 12}, ["a"], {}),
])
def test_allocate(taken: set[int], wanted: list[str], expected: dict[str, int]) -> None:
    assert desired._allocate(wanted, set(taken), 10, 12) == expected


@pytest.mark.parametrize(("repos", "known", "in_use", "uids", "refused", "errors"), [
    ("a: {owner: alice}\nb: {owner: alice}", {}, {},
     {"bh-a": 20000, "bh-b": 20001}, set(), []),
    ("a: {owner: alice}\nb: {owner: alice}", {"bh-b": {"uid": 20000}}, {20000: "bh-b"},
     {"bh-a": 20001, "bh-b": 20000}, set(), []),
    ("a: {owner: alice}\nb: {owner: alice}\nc: {owner: alice}\nd: {owner: alice}", {}, {},
     {"bh-a": 20000, "bh-b": 20001, "bh-c": 20002}, set(),
     ["server.users.uid_range [20000, 20002] has no free uid left for 1 new repositories; "
      "widen it"]),
    ("a: {owner: alice, uid: 25000}", {}, {25000: "postgres"}, {"bh-a": 25000}, {"bh-a"},
     ["repositories.a.uid: uid 25000 is already used by 'postgres'; pin a free uid"]),
])
def test_assign_uids(repos: str, known: dict[str, Any], in_use: dict[int, str],
                     uids: dict[str, int], refused: set[str], errors: list[str]) -> None:
    cfg = config(repos)
    users = {cfg.user_name(n): n for n in cfg.repositories}
    got = desired.assign_uids(cfg, users, known, Facts(ids_in_use=in_use))
    assert (got.uids, got.refused, got.errors) == (uids, refused, errors)


# -- 2. repositories in the file -------------------------------------------------------

def test_wanted_repository_resources_and_claim() -> None:
    cfg = config("a: {owner: alice, keys: [k1, k2]}")
    got = desired.wanted_repository(cfg, "a", 20000, None, Facts(), NOW)
    assert got.error is None
    assert [(r.kind, r.name) for r in got.resources] == [
        ("account", "bh-a"), ("directory", f"{ROOT}/bh-a"), ("directory", f"{ROOT}/bh-a/a"),
        ("authorized_keys", "bh-a")]
    assert got.resources[0].meta == {"repository": "a"}
    assert got.claim == {"repository": "a", "uid": 20000, "protected": False,
                         "path": f"{ROOT}/bh-a/a", "owner": "alice"}
    assert got.paths == [ROOT, f"{ROOT}/bh-a", f"{ROOT}/bh-a/a"]
    assert list(got.expired) == ["k2"]


def test_an_append_only_key_in_import_mode_stops_its_repository() -> None:
    """Validation refuses append_only_keys in mode import (rsync's writes cannot be
    append-only); a file that got past it gets an error and no key lines, not rrsync -wo."""
    cfg = config("a: {owner: alice, keys: [k1], append_only_keys: [k2]}")
    repositories = {"a": cfg.repositories["a"].model_copy(update={"mode": "import"})}
    cfg = cfg.model_copy(update={"repositories": repositories})
    before_k2_expires = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    got = desired.wanted_repository(cfg, "a", 20000, None, Facts(), before_k2_expires)
    assert got.resources == [] and got.error is not None
    assert "key k2: refusing to write its authorized_keys line" in got.error
    assert "append-only" in got.error


def test_wanted_repository_without_keys_has_no_key_file() -> None:
    got = desired.wanted_repository(config("a: {owner: alice}"), "a", 20000, None, Facts(),
                                    NOW)
    assert [r.kind for r in got.resources] == ["account", "directory", "directory"]


@pytest.mark.parametrize(("old", "state", "refused"), [
    (f"{ROOT}/bh-a/a", folder("data"), False),  # where it belongs
    ("/old/bh-a/a", folder("data"), True),  # data at the old place: never moved
    ("/old/bh-a/a", UNKNOWN, True),  # unreadable counts as data
    ("/old/bh-a/a", folder(), False),  # empty: nothing to lose
    ("/old/bh-a/a", None, False),  # gone
])
def test_wanted_repository_refuses_to_leave_data_behind(old: str, state: Any,
                                                        refused: bool) -> None:
    facts = Facts(observed={"directory": {old: state} if state is not None else {}})
    got = desired.wanted_repository(config("a: {owner: alice}"), "a", 20000, {"path": old},
                                    facts, NOW)
    assert (got.error is not None) == refused
    assert (got.resources == []) == refused


def test_ldap_accounts_name_their_dn_built_by_the_settings() -> None:
    cfg = config("a: {owner: alice}", identity=LDAP)
    got = desired.wanted_repository(cfg, "a", 20000, None, Facts(), NOW)
    assert got.resources[0].meta == {"repository": "a",
                                     "dn": "uid=bh-a,ou=people,dc=example,dc=org"}
    assert cfg.server.identity.ldap.user_dn("bh-a") == "uid=bh-a,ou=people,dc=example,dc=org"


@pytest.mark.parametrize(("keys", "expected"), [
    ({}, None),
    ({"k": dt.datetime(2026, 1, 2)}, "1 expired key left out: k (2026-01-02); remove them "
                                     "from hive.yaml"),
    ({f"k{i:02}": dt.datetime(2026, 1, 1) for i in range(12)},
     "12 expired keys left out: " + ", ".join(f"k{i:02} (2026-01-01)" for i in range(10))
     + " and 2 more; remove them from hive.yaml"),
])
def test_expired_note(keys: dict[str, dt.datetime], expected: str | None) -> None:
    assert desired.expired_note(keys) == expected


# -- 3. repositories gone from the file ------------------------------------------------

PATH = f"{ROOT}/bh-a/a"
KNOWN = {"repository": "a", "uid": 20000, "protected": False, "path": PATH}


@pytest.mark.parametrize(("known", "dirs", "prune", "kept", "remove", "note", "error"), [
    # without --prune: locked and kept, silently
    (KNOWN, {PATH: folder(), f"{ROOT}/bh-a": folder("a")}, False, True, set(), None, None),
    # --prune, empty: user and the folders Hive made go
    (KNOWN, {PATH: folder(), f"{ROOT}/bh-a": folder("a")}, True, False,
     {("account", "bh-a"), ("directory", PATH), ("directory", f"{ROOT}/bh-a")},
     "--prune deletes its user", None),
    # --prune with data: kept, and told how to purge
    (KNOWN, {PATH: folder("data"), f"{ROOT}/bh-a": folder("a")}, True, True, set(),
     "run 'hive purge a'", None),
    # --prune, unreadable: counts as data
    (KNOWN, {PATH: UNKNOWN, f"{ROOT}/bh-a": folder("a")}, True, True, set(),
     "run 'hive purge a'", None),
    # --prune, data gone but a rollback copy beside it
    (KNOWN, {f"{ROOT}/bh-a": folder("a.rollback-1-to-2")}, True, True, set(),
     "still holds a.rollback-1-to-2", None),
    ({**KNOWN, "protected": True}, {}, True, False, set(), None, "is protected"),
    # an old inventory without the path: the folder is found by the remembered user
    ({"repository": "a", "uid": 20000}, {}, True, False, {("account", "bh-a")},
     "--prune deletes", None),
])
def test_removed_repository(known: dict[str, Any], dirs: dict[str, Any], prune: bool,
                            kept: bool, remove: set[Any], note: str | None,
                            error: str | None) -> None:
    made = {PATH, f"{ROOT}/bh-a"} if "path" in known else set()
    got = desired.removed_repository(config(), "bh-a", known,
                                     Facts(observed={"directory": dirs}), made, prune)
    assert (got.account is not None) == kept
    if kept:
        assert got.account is not None
        assert got.account.attrs["locked"] is True
        assert got.account.attrs["gecos"] == "Hive repository a (removed)"
    assert got.remove == remove
    assert (note is None and got.note is None) or (note and got.note and note in got.note)
    assert (error is None and got.error is None) or (error and got.error and error in got.error)


@pytest.mark.parametrize("prune", [False, True])
def test_a_removed_repository_beside_a_foreign_entry_of_its_name_is_left_alone(
        prune: bool) -> None:
    """Locking writes the group too, pruning deletes it: neither may reach the other's."""
    facts = Facts(observed={"directory": {PATH: folder()}}, system_names={"bh-a"})
    got = desired.removed_repository(config(), "bh-a", KNOWN, facts, {PATH}, prune)
    assert got.account is None and got.remove == set()
    assert got.error and "another account or group of that name exists" in got.error


# -- 4. the key cache ------------------------------------------------------------------

@pytest.mark.parametrize(("files", "wanted", "expected"), [
    ([], [], set()),
    (["bh-a"], ["bh-a"], set()),
    (["bh-a", "bh-x"], ["bh-a"], {("authorized_keys", "bh-x")}),
    (["bh-x"], [], {("authorized_keys", "bh-x")}),
])
def test_stray_key_files(files: list[str], wanted: list[str], expected: set[Any]) -> None:
    facts = Facts(observed={"authorized_keys": {u: {"keys": {}} for u in files}})
    resources = {("authorized_keys", u): Resource("authorized_keys", u, {"keys": {}})
                 for u in wanted}
    assert desired.stray_key_files(facts, resources) == expected


@pytest.mark.parametrize(("accounts", "more_paths", "contents"), [
    ({}, set(), set()),
    ({"bh-a": {"repository": "a", "uid": 1, "path": f"{ROOT}/bh-a/a"}}, set(), set()),
    ({"bh-a": {"repository": "a", "uid": 1}}, set(), set()),  # an older inventory
    ({"bh-a": {"repository": "a", "uid": 1, "path": "/old/bh-a/a"}},  # moved
     {"/old/bh-a/a", "/old/bh-a"}, {"/old/bh-a/a"}),
    ({"old-z": {"repository": "z", "uid": 1, "path": "/elsewhere/old-z/z"}},  # gone
     {f"{ROOT}/old-z", f"{ROOT}/old-z/z", "/elsewhere/old-z/z", "/elsewhere/old-z"},
     {"/elsewhere/old-z/z", "/elsewhere/old-z", f"{ROOT}/old-z", f"{ROOT}/old-z/z"}),
    ({"old-z": {"repository": "z", "uid": 1}}, {f"{ROOT}/old-z", f"{ROOT}/old-z/z"},
     {f"{ROOT}/old-z", f"{ROOT}/old-z/z"}),
])
def test_paths_to_observe_include_what_hive_made_and_where_it_was(
        accounts: dict[str, Any], more_paths: set[str], contents: set[str]) -> None:
    cfg = config("a: {owner: alice}")
    inventory = Inventory(accounts=accounts, directories={"/made/by/hive"})
    paths, read = desired.paths_to_observe(cfg, inventory)
    assert paths == {ROOT, f"{ROOT}/bh-a", f"{ROOT}/bh-a/a", "/made/by/hive", *more_paths}
    assert read == contents
