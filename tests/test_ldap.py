"""The LDAP identity backend against a real slapd (see tests/slapd.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import alice_config, hive, requires_root, write_config
from slapd import GROUPS, HIVE_DN, HIVE_PW, PEOPLE, SUFFIX, Slapd

from reconciler.desired import Facts
from reconciler.targets.ldap_identity import marker, parse_entries

pytestmark = requires_root
ENV = {"HIVE_TEST_LDAP_PW": HIVE_PW}


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = Slapd(tmp_path / "slapd", tls=True)
    (tmp_path / "slapd").mkdir()
    server.start()
    yield server
    server.stop()


def identity(url: str, extra: str = "") -> str:
    return (f"{{backend: ldap, ldap: {{url: '{url}', base_dn: '{SUFFIX}', bind_dn: "
            f"'{HIVE_DN}', bind_password_env: HIVE_TEST_LDAP_PW{extra}}}}}")


def body(pubkeys: dict[str, str], repos: str) -> str:
    return f"""\
        owners: {{alice: {{}}, bob: {{}}}}
        keys:
          ka: {{owner: alice, public_key: {pubkeys['a']}}}
        repositories:
        {repos}
        """


REPOS = """  r1: {owner: alice, keys: [ka]}
          r2: {owner: bob}"""


def config(tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str], repos: str = REPOS,
           extra: str = "", url: str | None = None) -> Path:
    return write_config(tmp_path, body(pubkeys, repos),
                        identity=identity(url or slapd.url, extra))


def users(slapd: Slapd) -> dict[str, dict]:
    return {dn.split(",")[0][4:]: attrs for dn, attrs in slapd.entries(PEOPLE).items()}


def test_apply_creates_marked_users_and_private_groups(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    cfg = config(tmp_path, slapd, pubkeys)
    plan = hive("plan", "-f", str(cfg), env=ENV)
    assert f"(repository r1, dn: uid=bh-r1,{PEOPLE})" in plan.stdout, plan.stdout + plan.stderr
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    r1 = users(slapd)["bh-r1"]
    assert r1["uidNumber"] == 20000 and r1["gidNumber"] == 20000
    assert r1["homeDirectory"] == f"{tmp_path}/repos/bh-r1"
    assert r1["loginShell"] == "/bin/sh"
    assert r1["gecos"] == "Hive repository r1 (alice)"
    assert r1["description"] == marker("test1", "r1")
    assert set(r1["objectClass"]) >= {"posixAccount", "shadowAccount"}
    assert "shadowExpire" not in r1 or r1["shadowExpire"] in ([], None)
    group = slapd.entries(GROUPS)[f"cn=bh-r1,{GROUPS}"]
    assert group["gidNumber"] == 20000 and group["description"] == marker("test1", "r1")
    assert (tmp_path / "state" / "authorized_keys" / "bh-r1").exists()


def test_a_users_primary_gid_alone_does_not_stop_a_new_uid(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    """Someone's primary gid is 20000, with no group entry: the plan takes 20000 for the
    first repository (only account uids and group gids are in use), and the uid read-back
    after the adds must count the same, or every apply would make bh-r1 and delete it."""
    slapd.add(f"uid=alice,{PEOPLE}", objectClass=["account", "posixAccount"], uid="alice",
              cn="alice", uidNumber=5000, gidNumber=20000, homeDirectory="/home/alice")
    cfg = config(tmp_path, slapd, pubkeys)
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert users(slapd)["bh-r1"]["uidNumber"] == 20000


def test_a_base_dn_written_with_spaces_converges(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    """slapd answers with the DN without the spaces: Hive must still know its entries as
    its own (parse_entries), and as its own after the adds (the uid read-back)."""
    spaced = SUFFIX.replace(",", " ,")  # (the file format refuses a space after the comma)
    assert spaced != SUFFIX
    cfg = write_config(tmp_path, body(pubkeys, REPOS), identity=identity(slapd.url).replace(
        f"base_dn: '{SUFFIX}'", f"base_dn: '{spaced}'"))
    first = hive("apply", "-f", str(cfg), env=ENV)
    assert first.returncode == 0, first.stdout + first.stderr
    again = hive("plan", "-f", str(cfg), "--detailed-exitcode", env=ENV)
    assert again.returncode == 0, again.stdout + again.stderr


def test_second_apply_makes_no_writes_and_few_searches(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    cfg = config(tmp_path, slapd, pubkeys)
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    before = slapd.operations()
    again = hive("apply", "-f", str(cfg), "--detailed-exitcode", env=ENV)
    after = slapd.operations()
    assert again.returncode == 0 and "No changes." in again.stdout
    for op in ("add", "modify", "delete", "modrdn"):
        assert after[op] == before[op], op
    # operations() itself costs one bind and one search per call; the apply needs 1 search
    assert after["search"] - before["search"] <= 3


def test_change_lock_and_prune(tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    cfg = config(tmp_path, slapd, pubkeys)
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    # change: owner (gecos) and shell
    changed = body(pubkeys, REPOS.replace("r2: {owner: bob}", "r2: {owner: alice}"))
    write_config(tmp_path, changed.replace("ka: {owner: alice", "ka: {owner: alice"),
                 identity=identity(slapd.url))
    text = cfg.read_text().replace("shell: /bin/sh", "shell: /bin/bash")
    cfg.write_text(text)
    plan = hive("plan", "-f", str(cfg), env=ENV)
    assert '~ account bh-r2' in plan.stdout
    assert 'gecos: "Hive repository r2 (bob)" -> "Hive repository r2 (alice)"' in plan.stdout
    assert 'shell: "/bin/sh" -> "/bin/bash"' in plan.stdout
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    assert users(slapd)["bh-r2"]["loginShell"] == "/bin/bash"
    assert users(slapd)["bh-r2"]["gecos"] == "Hive repository r2 (alice)"
    # lock: removed from the file
    cfg.write_text(text.replace("r2: {owner: bob}\n", "").replace(
        "          r2: {owner: alice}\n", "").replace("  r2: {owner: alice}\n", ""))
    assert "bh-r2" not in cfg.read_text().split("repositories:")[1]
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    assert users(slapd)["bh-r2"]["shadowExpire"] == 1
    # prune: the repository folder is empty, so the user and group go
    result = hive("apply", "-f", str(cfg), "--prune", env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bh-r2" not in users(slapd)
    assert f"cn=bh-r2,{GROUPS}" not in slapd.entries(GROUPS)
    assert "bh-r1" in users(slapd)


def test_foreign_entries_are_left_alone_and_their_uids_skipped(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    slapd.add(f"uid=carol,{PEOPLE}", objectClass=["account", "posixAccount"], uid="carol",
              cn="carol", uidNumber=20000, gidNumber=20000, homeDirectory="/home/carol")
    slapd.add(f"cn=staff,ou=services,{SUFFIX}", objectClass=["posixGroup"], cn="staff",
              gidNumber=20001)
    cfg = config(tmp_path, slapd, pubkeys)
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    found = users(slapd)
    assert found["bh-r1"]["uidNumber"] == 20002 and found["bh-r2"]["uidNumber"] == 20003
    assert found["carol"]["homeDirectory"] == "/home/carol"
    assert "description" not in found["carol"] or not found["carol"]["description"]
    # a foreign entry with the name a repository needs is a plan error, not a takeover
    slapd.add(f"uid=bh-r3,{PEOPLE}", objectClass=["account", "posixAccount"], uid="bh-r3",
              cn="bh-r3", uidNumber=30000, gidNumber=30000, homeDirectory="/x")
    config(tmp_path, slapd, pubkeys, REPOS + "\n          r3: {owner: bob}")
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 1
    assert "user bh-r3 (repository r3) already exists and was not created by Hive" in \
        result.stderr
    assert users(slapd)["bh-r3"]["homeDirectory"] == "/x"
    # pruning never touches foreign entries
    config(tmp_path, slapd, pubkeys, "  r1: {owner: alice, keys: [ka]}")
    assert hive("apply", "-f", str(cfg), "--prune", env=ENV).returncode == 0
    assert {"carol", "bh-r3", "bh-r1"} == set(users(slapd))


def test_marked_entries_are_recognised_without_the_local_inventory(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    """Another host (or a lost state_dir) still sees Hive's entries as Hive's."""
    cfg = config(tmp_path, slapd, pubkeys)
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    (tmp_path / "state" / "inventory.json").unlink()
    result = hive("plan", "-f", str(cfg), "--detailed-exitcode", env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("case", "message"), [
    ("unreachable", "cannot connect to ldap://127.0.0.1:1: connection refused"),
    ("password", "bind as cn=hive,ou=services,dc=example,dc=org to"),
    ("tls", "certificate verify failed"),
    ("no-env", "the environment variable HIVE_TEST_LDAP_PW"),
])
def test_failures_are_one_clear_line_and_leave_the_cache_alone(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str], case: str,
        message: str) -> None:
    cfg = config(tmp_path, slapd, pubkeys)
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    cache = tmp_path / "state" / "authorized_keys" / "bh-r1"
    before = cache.read_text(), cache.stat().st_mtime_ns
    config(tmp_path, slapd, pubkeys, REPOS.replace("keys: [ka]", "keys: []"),
           url={"unreachable": "ldap://127.0.0.1:1", "tls": slapd.ldaps_url}.get(case))
    env = {"password": {"HIVE_TEST_LDAP_PW": "wrong"}, "no-env": {"HIVE_TEST_LDAP_PW": ""}}
    result = hive("apply", "-f", str(cfg), env=env.get(case, ENV))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "wrong" not in result.stderr
    assert (cache.read_text(), cache.stat().st_mtime_ns) == before


def test_a_truncated_search_is_an_error_not_missing_users(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    """slapd's size limit must never make existing users look absent."""
    (tmp_path / "small").mkdir()
    small = Slapd(tmp_path / "small", hive_size="3").start()
    try:
        cfg = config(tmp_path, small, pubkeys)
        # the apply makes 4 entries, then reads the uids back (_keep_ids_unique): not all
        applied = hive("apply", "-f", str(cfg), env=ENV)
        assert applied.returncode == 1
        assert "stopped the search of dc=example,dc=org at its size limit" in applied.stderr
        assert not (tmp_path / "state" / "authorized_keys").exists()  # stopped before keys
        result = hive("plan", "-f", str(cfg), env=ENV)
        assert result.returncode == 1
        assert "stopped the search of dc=example,dc=org at its size limit" in result.stderr
    finally:
        small.stop()


def test_a_write_refused_half_way_is_one_line_and_the_next_apply_converges(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    """Hive may write users but not groups: the user entry is written, its group refused."""
    (tmp_path / "acl").mkdir()
    server = Slapd(tmp_path / "acl", groups_writable=False).start()
    try:
        cfg = config(tmp_path, server, pubkeys)
        result = hive("apply", "-f", str(cfg), env=ENV)
        assert result.returncode == 1
        assert "LDAP add cn=bh-r1,ou=groups,dc=example,dc=org refused: " \
               "insufficientAccessRights" in result.stderr
        assert "Traceback" not in result.stderr
        assert set(users(server)) == {"bh-r1"}  # half-way: the user, not its group
        assert not (tmp_path / "state" / "authorized_keys" / "bh-r1").exists()  # no access
        server.restart(groups_writable=True)
        again = hive("apply", "-f", str(cfg), env=ENV)
        assert again.returncode == 0, again.stdout + again.stderr
        assert set(users(server)) == {"bh-r1", "bh-r2"}
        assert len(server.entries(GROUPS)) == 2
        assert (tmp_path / "state" / "authorized_keys" / "bh-r1").exists()
        assert hive("plan", "-f", str(cfg), "--detailed-exitcode", env=ENV).returncode == 0
    finally:
        server.stop()


def test_tls_with_the_servers_ca_works_and_unverified_tls_is_announced(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    cfg = config(tmp_path, slapd, pubkeys, url=slapd.ldaps_url,
                 extra=f", ca_file: '{slapd.cert}'")
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 0, result.stderr
    assert "bh-r1" in users(slapd)
    config(tmp_path, slapd, pubkeys, url=slapd.ldaps_url, extra=", tls_verify: false")
    plan = hive("plan", "-f", str(cfg), env=ENV)
    assert "TLS certificate verification is OFF" in plan.stdout


def test_inline_bind_password_is_refused(tmp_path: Path, slapd: Slapd,
                                         pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys, REPOS), identity=(
        f"{{backend: ldap, ldap: {{url: '{slapd.url}', base_dn: '{SUFFIX}', "
        f"bind_dn: '{HIVE_DN}', bind_password: '{HIVE_PW}'}}}}"))
    result = hive("validate", "-f", str(cfg))
    assert result.returncode == 1
    assert "server.identity.ldap.bind_password: 'bind_password' looks like a secret" in \
        result.stderr
    assert HIVE_PW not in result.stderr


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> bool:
    """Poll `condition` until it holds (True) or `proc` has ended (False)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("the apply neither got there nor ended within 60 s")


def test_interrupted_apply_converges(tmp_path: Path, slapd: Slapd,
                                     pubkeys: dict[str, str]) -> None:
    """SIGKILL lands mid-apply: after the journal's start record and the first LDAP entry,
    observed rather than guessed from a delay (apply speed changes; the kill must not)."""
    cfg = alice_config(tmp_path, pubkeys["a"], [f"r{i}" for i in range(200)],
                       identity=identity(slapd.url), uid_range="[20000, 29999]")
    journal = tmp_path / "state" / "journal.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "hive", "apply", "-f", str(cfg)],
                            env={**ENV, "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = wait_for(lambda: journal.exists() and '"start"' in journal.read_text(), proc)
    reached = started and wait_for(lambda: len(users(slapd)) > 0, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached and proc.returncode == -signal.SIGKILL, "the apply ended before the kill"
    history = hive("history", "-f", str(cfg), env=ENV)
    assert "interrupted" in history.stdout, history.stdout
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert hive("plan", "-f", str(cfg), "--detailed-exitcode", env=ENV).returncode == 0
    found = users(slapd)
    assert len(found) == 200 and len({u["uidNumber"] for u in found.values()}) == 200
    assert len(slapd.entries(GROUPS)) == 200


def test_parse_entries_is_pure() -> None:
    facts = Facts()
    parse_entries([
        {"dn": f"uid=bh-a,{PEOPLE}", "attributes": {
            "objectClass": ["account", "posixAccount"], "uid": ["bh-a"], "uidNumber": 20000,
            "gidNumber": 20000, "gecos": "g", "homeDirectory": "/h", "loginShell": "/bin/sh",
            "description": [marker("s1", "a")], "shadowExpire": 1}},
        {"dn": f"cn=bh-a,{GROUPS}", "attributes": {
            "objectClass": ["posixGroup"], "cn": ["bh-a"], "gidNumber": 20000,
            "description": [marker("s1", "a")]}},
        {"dn": f"uid=bh-b,{PEOPLE}", "attributes": {
            "objectClass": ["account", "posixAccount"], "uid": ["bh-b"], "uidNumber": 20001,
            "gidNumber": 20001, "homeDirectory": "/h", "description": [marker("s2", "b")]}},
        {"dn": f"cn=x,ou=services,{SUFFIX}", "attributes": {
            "objectClass": ["posixGroup"], "cn": ["x"], "gidNumber": 31000}},
    ], PEOPLE, GROUPS, "s1", facts)
    assert facts.accounts["bh-a"]["locked"] is True and facts.accounts["bh-a"]["group"] == 20000
    assert facts.marked == {"bh-a": "a"}
    assert "bh-b" not in facts.accounts and "bh-b" in facts.system_names  # another server's
    assert facts.ids_in_use[20001] == "bh-b"
    assert facts.ids_in_use[31000] == "x" and "x" in facts.system_names


def test_marked_copies_elsewhere_in_the_directory_are_not_hives() -> None:
    """Hive writes and deletes by the DN uid=NAME,<people>: an entry with its mark at any
    other DN (below a sub-OU someone else may write to) must not make that DN look
    Hive's; it only blocks its name and id."""
    facts = Facts()
    sub = f"ou=contractors,{PEOPLE}"
    parse_entries([
        {"dn": f"uid=bh-a,{sub}", "attributes": {
            "objectClass": ["account", "posixAccount"], "uid": ["bh-a"], "uidNumber": 0,
            "gidNumber": 0, "homeDirectory": "/x", "description": [marker("s1", "a")]}},
        {"dn": f"cn=bh-a,ou=x,{GROUPS}", "attributes": {
            "objectClass": ["posixGroup"], "cn": ["bh-a"], "gidNumber": 20000,
            "description": [marker("s1", "a")]}},
    ], PEOPLE, GROUPS, "s1", facts)
    assert facts.accounts == {} and facts.marked == {}
    assert facts.system_names == {"bh-a"} and facts.ids_in_use == {0: "bh-a", 20000: "bh-a"}


def test_a_local_account_with_the_uid_of_hives_entry_is_seen(tmp_path: Path) -> None:
    """The directory is read first, /etc after it: a local user made later with a
    repository user's uid must still be a holder of that uid."""
    from reconciler.targets.files_identity import observe_local_files

    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\neve:x:20000:100::/:/bin/sh\n")
    (tmp_path / "group").write_text("root:x:0:\n")
    facts = Facts()
    parse_entries([{"dn": f"uid=bh-a,{PEOPLE}", "attributes": {
        "objectClass": ["account", "posixAccount"], "uid": ["bh-a"], "uidNumber": 20000,
        "gidNumber": 20000, "homeDirectory": "/h", "description": [marker("s1", "a")]}}],
        PEOPLE, GROUPS, "s1", facts)
    observe_local_files(facts, tmp_path)
    assert facts.others_holding(20000, "bh-a") == ["eve"]
    assert facts.others_holding(0, "root") == []


def test_a_planted_entry_gets_neither_a_folder_nor_keys(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    """Someone who may write below ou=people (a sub-OU), or who copies Hive's mark onto an
    entry with a uid Hive would never give, cannot have a new repository adopt it."""
    sub = f"ou=contractors,{PEOPLE}"
    slapd.add(sub, objectClass=["organizationalUnit"], ou="contractors")
    planted = {"objectClass": ["account", "posixAccount"], "uidNumber": 65534,
               "gidNumber": 65534, "homeDirectory": "/x", "loginShell": "/bin/sh",
               "description": marker("test1", "r3")}
    slapd.add(f"uid=bh-r3,{sub}", uid="bh-r3", cn="bh-r3", **planted)
    slapd.add(f"uid=bh-r4,{PEOPLE}", uid="bh-r4", cn="bh-r4", **planted)
    cfg = config(tmp_path, slapd, pubkeys,
                 "  r3: {owner: alice, keys: [ka]}\n          r4: {owner: alice, keys: [ka]}")
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 1
    for user, repository in (("bh-r3", "r3"), ("bh-r4", "r4")):
        assert (f"user {user} (repository {repository}) already exists and was not created "
                "by Hive") in result.stderr
    assert not (tmp_path / "repos" / "bh-r3").exists()
    assert not (tmp_path / "state" / "authorized_keys" / "bh-r4").exists()


def test_a_foreign_entry_beside_hives_own_stops_the_plan_and_is_never_written(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    cfg = config(tmp_path, slapd, pubkeys)
    assert hive("apply", "-f", str(cfg), env=ENV).returncode == 0
    # someone replaces Hive's group of bh-r1 by their own; a decoy with Hive's mark for
    # bh-r2 sits in a sub-OU
    conn = slapd.admin()
    conn.delete(f"cn=bh-r1,{GROUPS}")
    conn.unbind()
    slapd.add(f"cn=bh-r1,{GROUPS}", objectClass=["posixGroup"], cn="bh-r1", gidNumber=31000,
              memberUid=["carol"], description="owned by the IdM team")
    sub = f"ou=contractors,{PEOPLE}"
    slapd.add(sub, objectClass=["organizationalUnit"], ou="contractors")
    slapd.add(f"uid=bh-r2,{sub}", objectClass=["account", "posixAccount"], uid="bh-r2",
              cn="bh-r2", uidNumber=30001, gidNumber=30001, homeDirectory="/x",
              description=marker("test1", "r2"))
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 1
    for user in ("bh-r1", "bh-r2"):
        assert f"user {user} (repository r{user[-1]}): besides Hive's own entry" in \
            result.stderr
    # with both repositories gone from the file, neither a lock nor a prune touches them
    config(tmp_path, slapd, pubkeys, "  r9: {owner: alice, keys: [ka]}")
    for user in ("bh-r1", "bh-r2"):
        (tmp_path / "repos" / user / user.removeprefix("bh-")).rmdir()
    result = hive("apply", "-f", str(cfg), "--prune", "--force", env=ENV)
    assert result.returncode == 1
    assert "repository r1 removed from the file: besides Hive's user bh-r1" in result.stderr
    assert slapd.entries(GROUPS)[f"cn=bh-r1,{GROUPS}"]["gidNumber"] == 31000
    assert f"uid=bh-r2,{PEOPLE}" in slapd.entries(PEOPLE)
    assert f"uid=bh-r2,{sub}" in slapd.entries(sub)


def test_two_hive_servers_sharing_a_directory_leave_each_other_alone(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    cfg_a = config(a, slapd, pubkeys, "  ra: {owner: alice, keys: [ka]}")
    cfg_b = config(b, slapd, pubkeys, "  rb: {owner: bob}")
    cfg_b.write_text(cfg_b.read_text().replace("name: test1", "name: test2"))
    assert hive("apply", "-f", str(cfg_a), env=ENV).returncode == 0
    result = hive("apply", "-f", str(cfg_b), env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bh-ra" not in result.stdout  # B neither locks nor changes A's user
    found = users(slapd)
    assert found["bh-ra"]["uidNumber"] == 20000 and found["bh-rb"]["uidNumber"] == 20001
    assert "shadowExpire" not in found["bh-ra"] or not found["bh-ra"]["shadowExpire"]
    pruned = hive("apply", "-f", str(cfg_a), "--prune", "--detailed-exitcode", env=ENV)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert set(users(slapd)) == {"bh-ra", "bh-rb"}
    # B may not take a name A holds
    config(b, slapd, pubkeys, "  rb: {owner: bob}\n          ra: {owner: bob}")
    cfg_b.write_text(cfg_b.read_text().replace("name: test1", "name: test2"))
    clash = hive("plan", "-f", str(cfg_b), env=ENV)
    assert clash.returncode == 1 and "user bh-ra (repository ra) already exists" in clash.stderr


def test_every_uid_value_of_a_foreign_entry_blocks_its_name(
        tmp_path: Path, slapd: Slapd, pubkeys: dict[str, str]) -> None:
    """uid is multi-valued, and nslcd answers getpwnam for each value (the search is
    (uid=NAME)): an entry with uid carol and bh-r3 is user bh-r3 to sshd, with carol's
    uidNumber. Hive must see the name as taken, as it does a first value; the same for
    a group's cn values."""
    slapd.add(f"uid=carol,{PEOPLE}", objectClass=["account", "posixAccount"],
              uid=["carol", "bh-r3"], cn="carol", uidNumber=30000, gidNumber=30000,
              homeDirectory="/home/carol")
    slapd.add(f"cn=staff,{GROUPS}", objectClass=["posixGroup"], cn=["staff", "bh-r4"],
              gidNumber=30001)
    cfg = config(tmp_path, slapd, pubkeys, REPOS + "\n          r3: {owner: bob}"
                                                   "\n          r4: {owner: bob}")
    result = hive("apply", "-f", str(cfg), env=ENV)
    assert result.returncode == 1, result.stdout + result.stderr
    for user in ("bh-r3", "bh-r4"):
        assert f"user {user} (repository r{user[-1]}) already exists and was not created " \
               "by Hive" in result.stderr, result.stderr
    assert set(users(slapd)) == {"carol"}
