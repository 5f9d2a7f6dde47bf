"""deploy/ldap/ is what a sysadmin loads: prove it on a real slapd configured the Debian way
(cn=config), then let Hive apply through the account it creates."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from conftest import ROOT, hive, requires_root, write_config
from slapd import free_port

pytestmark = requires_root
SUFFIX = "dc=example,dc=org"
ADMIN, ADMIN_PW = f"cn=admin,{SUFFIX}", "admin-pw"
CONFIG_ADMIN, CONFIG_PW = "cn=admin,cn=config", "config-pw"
HIVE, NSLCD = f"cn=hive,ou=services,{SUFFIX}", f"cn=nslcd,ou=services,{SUFFIX}"
PASSWORDS = {HIVE: "hive-pw", NSLCD: "nslcd-pw"}

CONFIG_LDIF = """\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {root}/slapd.pid

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/nis.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcRootDN: {config_admin}
olcRootPW: {config_pw}

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {suffix}
olcRootDN: {admin}
olcRootPW: {admin_pw}
olcDbDirectory: {root}/db
"""


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[str]:
    """A cn=config slapd with deploy/ldap/acl.ldif and base.ldif loaded; yields its URL."""
    (tmp_path / "db").mkdir()
    (tmp_path / "slapd.d").mkdir()
    (tmp_path / "config.ldif").write_text(CONFIG_LDIF.format(
        root=tmp_path, config_admin=CONFIG_ADMIN, config_pw=CONFIG_PW, suffix=SUFFIX,
        admin=ADMIN, admin_pw=ADMIN_PW))
    subprocess.run(["slapadd", "-n", "0", "-F", str(tmp_path / "slapd.d"), "-l",
                    str(tmp_path / "config.ldif")], check=True, capture_output=True)
    port = free_port()
    url = f"ldap://127.0.0.1:{port}"
    proc = subprocess.Popen(["slapd", "-F", str(tmp_path / "slapd.d"), "-h", url + "/",
                             "-d", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        ldapmodify = ["ldapmodify", "-x", "-H", url, "-D", CONFIG_ADMIN, "-w", CONFIG_PW,
                      "-f", str(ROOT / "deploy" / "ldap" / "acl.ldif")]
        subprocess.run(ldapmodify, check=True, capture_output=True)
        base = (ROOT / "deploy" / "ldap" / "base.ldif").read_text()
        for dn, password in PASSWORDS.items():
            hashed = subprocess.run(["slappasswd", "-s", password], capture_output=True,
                                    text=True, check=True).stdout.strip()
            name = dn.split(",")[0][3:].upper()
            base = base.replace(f"{{SSHA}}REPLACE-WITH-SLAPPASSWD-OUTPUT-FOR-{name}", hashed)
        (tmp_path / "base.ldif").write_text(
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
            f"o: Example\n\n{base}")
        subprocess.run(["ldapadd", "-x", "-H", url, "-D", ADMIN, "-w", ADMIN_PW, "-f",
                        str(tmp_path / "base.ldif")], check=True, capture_output=True)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def connect(url: str, dn: str | None) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(url, get_info=ldap3.NONE), dn,
                            ADMIN_PW if dn == ADMIN else PASSWORDS.get(dn or ""),
                            client_strategy=ldap3.SAFE_SYNC,
                            auto_bind=True)


def user(name: str) -> dict[str, object]:
    return {"objectClass": ["account", "posixAccount"], "uid": name, "cn": name,
            "uidNumber": 31000, "gidNumber": 31000, "homeDirectory": "/nonexistent"}


REFUSED = "insufficientAccessRights"


def test_acl_gives_hive_write_and_nslcd_read_only(deployed: str) -> None:
    hive_conn, nslcd_conn = connect(deployed, HIVE), connect(deployed, NSLCD)
    ok, _, _, _ = hive_conn.add(f"uid=bh-probe,ou=people,{SUFFIX}",
                                attributes=user("bh-probe"))
    assert ok
    ok, result, _, _ = hive_conn.add(f"uid=evil,ou=services,{SUFFIX}", attributes=user("evil"))
    assert not ok and result["description"] == REFUSED
    ok, _, found, _ = nslcd_conn.search(f"ou=people,{SUFFIX}", "(uid=bh-probe)",
                                        attributes=["uidNumber"])
    assert ok and found[0]["attributes"]["uidNumber"] == ["31000"]
    ok, result, _, _ = nslcd_conn.modify(f"uid=bh-probe,ou=people,{SUFFIX}", {
        "loginShell": [(ldap3.MODIFY_REPLACE, ["/bin/bash"])]})
    assert not ok and result["description"] == REFUSED
    anonymous = ldap3.Connection(ldap3.Server(deployed, get_info=ldap3.NONE),
                                 client_strategy=ldap3.SAFE_SYNC, auto_bind=True)
    _, _, found, _ = anonymous.search(f"ou=people,{SUFFIX}", "(uid=bh-probe)")
    assert [e for e in found if e.get("type") == "searchResEntry"] == []
    _, _, found, _ = nslcd_conn.search(f"ou=services,{SUFFIX}", "(cn=hive)",
                                       attributes=["userPassword"])
    assert "userPassword" not in found[0]["attributes"] or \
        not found[0]["attributes"]["userPassword"]


def test_hive_writes_only_entries_of_its_own_names(deployed: str) -> None:
    """Hive's password is on every backup host: with it, nobody may add a user or group
    of another name, nor rewrite an account someone else made (uid, shell)."""
    admin, hive_conn = connect(deployed, ADMIN), connect(deployed, HIVE)
    ok, result, _, _ = admin.add(f"uid=alice,ou=people,{SUFFIX}", attributes=user("alice"))
    assert ok, result
    for dn, attributes in ((f"uid=toor,ou=people,{SUFFIX}", user("toor")),
                           (f"cn=sudo2,ou=groups,{SUFFIX}", {
                               "objectClass": ["posixGroup"], "cn": "sudo2",
                               "gidNumber": 27, "memberUid": "bh-probe"})):
        ok, result, _, _ = hive_conn.add(dn, attributes=attributes)
        assert not ok and result["description"] == REFUSED, (dn, result)
    for change in ({"uidNumber": [(ldap3.MODIFY_REPLACE, [20001])]},
                   {"loginShell": [(ldap3.MODIFY_REPLACE, ["/tmp/x"])]}):
        ok, result, _, _ = hive_conn.modify(f"uid=alice,ou=people,{SUFFIX}", change)
        assert not ok and result["description"] == REFUSED, result
    ok, result, _, _ = hive_conn.delete(f"uid=alice,ou=people,{SUFFIX}")
    assert not ok and result["description"] == REFUSED, result
    # in its own entries: no group members, and no name of another kind ("root2", "admins")
    ok, result, _, _ = hive_conn.add(f"uid=bh-probe,ou=people,{SUFFIX}",
                                     attributes=user("bh-probe"))
    assert ok, result
    for dn, attributes in ((f"cn=bh-g,ou=groups,{SUFFIX}", {
                               "objectClass": ["posixGroup"], "cn": "bh-g",
                               "gidNumber": 1500, "memberUid": "alice"}),
                           (f"cn=bh-h,ou=groups,{SUFFIX}", {
                               "objectClass": ["posixGroup"], "cn": ["bh-h", "admins"],
                               "gidNumber": 1501}),
                           (f"uid=bh-q,ou=people,{SUFFIX}", {
                               **user("bh-q"), "uid": ["bh-q", "root2"]})):
        ok, result, _, _ = hive_conn.add(dn, attributes=attributes)
        assert not ok and result["description"] == REFUSED, (dn, result)
    for change in ({"uid": [(ldap3.MODIFY_ADD, ["root2"])]},
                   {"cn": [(ldap3.MODIFY_ADD, ["admins"])]}):
        ok, result, _, _ = hive_conn.modify(f"uid=bh-probe,ou=people,{SUFFIX}", change)
        assert not ok and result["description"] == REFUSED, (change, result)
    ok, result, _, _ = hive_conn.add(f"cn=bh-probe,ou=groups,{SUFFIX}", attributes={
        "objectClass": ["posixGroup"], "cn": "bh-probe", "gidNumber": 31000})
    assert ok, result  # what Hive itself writes still goes
    ok, _, found, _ = hive_conn.search(f"ou=people,{SUFFIX}", "(uid=alice)",
                                       attributes=["uidNumber"])
    assert ok and found[0]["attributes"]["uidNumber"] == ["31000"]  # and still reads it


@pytest.mark.parametrize("account", [NSLCD, HIVE])
def test_a_service_account_cannot_change_its_password(deployed: str, account: str) -> None:
    """nslcd's password is on every sshd host: whoever read it there must not be able to
    change it and so stop every host's user lookups."""
    ok, result, _, _ = connect(deployed, account).modify(account, {
        "userPassword": [(ldap3.MODIFY_REPLACE, ["taken-over"])]})
    assert not ok and result["description"] == REFUSED, result
    assert connect(deployed, account).bound  # the old password still works


def test_hive_applies_through_the_deployed_account(
        tmp_path: Path, deployed: str, pubkeys: dict[str, str]) -> None:
    (tmp_path / "ldap-password").write_text(PASSWORDS[HIVE] + "\n")
    cfg = write_config(tmp_path, f"""\
        owners: {{alice: {{}}}}
        keys: {{ka: {{owner: alice, public_key: {pubkeys['a']}}}}}
        repositories: {{photos: {{owner: alice, keys: [ka]}}}}
        """, identity=(
        f"{{backend: ldap, ldap: {{url: '{deployed}', base_dn: '{SUFFIX}', bind_dn: "
        f"'{HIVE}', bind_password_file: ./ldap-password}}}}"))
    # more entries than slapd's default size limit (500): Hive must still see them all
    (tmp_path / "many.ldif").write_text("".join(
        f"dn: cn=team{i},ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: team{i}\n"
        f"gidNumber: {20000 + i if i < 50 else 40000 + i}\n\n" for i in range(600)))
    subprocess.run(["ldapadd", "-x", "-H", deployed, "-D", ADMIN, "-w", ADMIN_PW, "-f",
                    str(tmp_path / "many.ldif")], check=True, capture_output=True)
    result = hive("apply", "-f", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    _, _, found, _ = connect(deployed, NSLCD).search(
        f"ou=people,{SUFFIX}", "(uid=bh-photos)", attributes=["uidNumber", "description"])
    assert found[0]["attributes"]["uidNumber"] == ["20050"]  # 20000-20049 are taken



def _race(tmp_path: Path, deployed: str, monkeypatch: pytest.MonkeyPatch) -> tuple[
        dict[str, Path], str | None]:
    """deploy/ldap/unique.ldif loaded; west plans, east applies meanwhile and takes the
    lowest free uid, then west applies its plan. Returns the configs and west's error."""
    from reconciler import engine
    from schemas.loader import load

    subprocess.run(["ldapmodify", "-x", "-H", deployed, "-D", CONFIG_ADMIN, "-w", CONFIG_PW,
                    "-f", str(ROOT / "deploy" / "ldap" / "unique.ldif")], check=True,
                   capture_output=True)
    monkeypatch.setenv("HIVE_TEST_LDAP_PW", PASSWORDS[HIVE])
    configs = {}
    for host, repo in (("east", "ra"), ("west", "rb")):
        (tmp_path / host).mkdir()
        cfg = write_config(tmp_path / host, f"""\
            owners: {{alice: {{}}}}
            repositories: {{{repo}: {{owner: alice}}}}
            """, identity=(
            f"{{backend: ldap, ldap: {{url: '{deployed}', base_dn: '{SUFFIX}', bind_dn: "
            f"'{HIVE}', bind_password_env: HIVE_TEST_LDAP_PW}}}}"))
        cfg.write_text(cfg.read_text().replace("name: test1", f"name: {host}"))
        configs[host] = cfg
    meanwhile = []
    raced = engine.apply(load(configs["west"]), configs["west"], on_plan=lambda _: meanwhile
                         .append(hive("apply", "-f", str(configs["east"])).returncode))
    assert meanwhile == [0]
    return configs, raced.error


def _uids(url: str) -> dict[str, str]:
    _, _, found, _ = connect(url, NSLCD).search(
        f"ou=people,{SUFFIX}", "(objectClass=posixAccount)", attributes=["uid", "uidNumber"])
    return {e["attributes"]["uid"][0]: e["attributes"]["uidNumber"][0] for e in found}


def test_unique_ldif_refuses_the_uid_two_hive_servers_both_picked(
        tmp_path: Path, deployed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, error = _race(tmp_path, deployed, monkeypatch)
    assert error is not None and "constraintViolation" in error, error
    assert _uids(deployed) == {"bh-ra": "20000"}  # not a second holder of 20000


def test_the_host_that_lost_the_uid_race_converges_on_its_next_apply(
        tmp_path: Path, deployed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    configs, _ = _race(tmp_path, deployed, monkeypatch)
    again = hive("apply", "-f", str(configs["west"]))
    assert again.returncode == 0, again.stdout + again.stderr
    assert _uids(deployed) == {"bh-ra": "20000", "bh-rb": "20001"}
