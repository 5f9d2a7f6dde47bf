"""End to end with the LDAP identity backend: Hive writes users to a real slapd, nslcd
resolves them for a real sshd, and a real borg client backs up as that LDAP user.

Why: with `identity.backend: ldap`, no local file names the repository users; sshd finds
them only through glibc -> libnss-ldapd -> nslcd -> slapd. Whether the entries Hive writes
(posixAccount + shadowAccount, private posixGroup, shadowExpire for locking) are what that
chain needs can only be shown with the real programs.

How the host is kept clean: nslcd's config (/etc/nslcd.conf) and socket (/run/nslcd) are
compiled in, so the shipped deploy/ldap/nslcd.conf (test URI, CA and password swapped in)
and a private socket folder are mounted over them, and Debian 12's nsswitch.conf with the
edit deploy/ldap/nsswitch.conf ships over
/etc/nsswitch.conf, inside ONE private mount namespace, where nslcd runs in the foreground
and then sshd starts (tests/sshd_harness.py). The fixture's teardown checks that the host's
files, mounts and processes are as they were.
"""

from __future__ import annotations

import glob
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nsswitch_edit
import pytest
from slapd import GROUPS, PEOPLE, SUFFIX, Slapd
from sshd_harness import (
    BASE_OPTIONS,
    NSENTER,
    REPO_ROOT,
    SHIPPED_SNIPPET,
    BindMount,
    NamespaceDaemon,
    SshdServer,
    describe,
    e2e_marks,
    generate_ed25519_key,
    host_state,
    missing_prerequisites,
    namespace_pids,
    pids_named,
    render_shipped,
    root_owned_test_root,
)
from sshd_harness import (
    Deployment as BaseDeployment,
)

SHIPPED_NSLCD_CONF = REPO_ROOT / "deploy" / "ldap" / "nslcd.conf"
SHIPPED_NSSWITCH = REPO_ROOT / "deploy" / "ldap" / "nsswitch.conf"
NSLCD = "/usr/sbin/nslcd"
NSLCD_CONF = Path("/etc/nslcd.conf")
NSLCD_RUN = Path("/run/nslcd")
NSS_LDAP = "lib*/*/libnss_ldap.so.2"  # under / or /usr, in the multiarch folder
PW_ENV = "HIVE_E2E_LDAP_PW"
UID_RANGE = (23000, 23999)


def _missing() -> list[str]:
    reasons = missing_prerequisites(("ssh", "ssh-keygen", "borg", "slapd", "getent"))
    if not os.access(NSLCD, os.X_OK):
        reasons.append(f"{NSLCD} is missing (package nslcd)")
    if not (glob.glob("/" + NSS_LDAP) or glob.glob("/usr/" + NSS_LDAP)):
        reasons.append("libnss_ldap.so.2 is missing (package libnss-ldapd)")
    if not NSLCD_CONF.exists():
        reasons.append(f"{NSLCD_CONF} (the mount point for the test's copy) is missing")
    if not os.access(NSENTER, os.X_OK):
        reasons.append(f"{NSENTER} is missing")
    try:
        pwd.getpwnam("nslcd")
    except KeyError:
        reasons.append("no nslcd user (package nslcd)")
    return reasons


_MISSING = _missing()
pytestmark = e2e_marks("LDAP e2e", _MISSING)
Result = subprocess.CompletedProcess[str]
NSLCD_PW = "nslcd-e2e-secret"
HIVE_PW = "hive-secret"  # tests/slapd.py's password for cn=hive


@dataclass(kw_only=True)
class LdapDeployment(BaseDeployment):
    """The test's slapd, Hive's files, the namespace with nslcd + sshd, and client keys."""

    slapd: Slapd
    config: Path

    def cache(self, repo: str) -> Path:
        return self.state_dir / "authorized_keys" / self.user(repo)

    def ldap_user(self, repo: str) -> dict:
        return self.slapd.entries(PEOPLE)[f"uid={self.user(repo)},{PEOPLE}"]

    def explain(self, result: Result) -> str:
        """describe() plus nslcd's log: a refusal may come from a user nslcd did not find."""
        assert self.server is not None
        return (describe(result, self.server) + "\n--- nslcd log (tail)\n"
                + self.server.daemon_log_tail("nslcd"))


def hive_yaml(d: LdapDeployment) -> str:
    return f"""\
version: 1
server:
  name: ldap-e2e
  ssh_host: 127.0.0.1
  repos_root: {d.repos_root}
  state_dir: {d.state_dir}
  users: {{prefix: "bh-", uid_range: [{UID_RANGE[0]}, {UID_RANGE[1]}], shell: /bin/sh}}
  identity:
    backend: ldap
    ldap: {{url: "{d.slapd.url}", base_dn: "{SUFFIX}",
            bind_dn: "cn=hive,ou=services,{SUFFIX}", bind_password_env: {PW_ENV}}}
owners:
  alice: {{}}
  bob: {{}}
keys:
  alice-key: {{owner: alice, public_key: "{d.keys['alice-key'].public_key}"}}
  bob-key: {{owner: bob, public_key: "{d.keys['bob-key'].public_key}"}}
repositories:
  repoa: {{owner: alice, keys: [alice-key]}}
  repob: {{owner: bob, keys: [bob-key]}}
"""


def hive_apply(config: Path) -> Result:
    """`python -m hive apply -f FILE` with the LDAP password in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "hive", "apply", "-f", str(config)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
        env={**os.environ, PW_ENV: HIVE_PW})


def nslcd_conf(d: LdapDeployment) -> Path:
    """deploy/ldap/nslcd.conf as shipped, pointed at the test's slapd over verified TLS,
    0640 root:nslcd as deploy/ldap/README.md asks."""
    assert d.slapd.cert is not None
    path = render_shipped(SHIPPED_NSLCD_CONF, [
        ("uri ldaps://ldap.example.org/", f"uri {d.slapd.ldaps_url}/"),
        ("bindpw REPLACE-WITH-THE-NSLCD-PASSWORD", f"bindpw {NSLCD_PW}"),
        ("tls_cacertfile /etc/ssl/certs/ca-certificates.crt", f"tls_cacertfile {d.slapd.cert}"),
        ("base dc=example,dc=org\n", f"base {SUFFIX}\n"),
    ], d.root / "nslcd.conf", mode=0o640)
    os.chown(path, 0, pwd.getpwnam("nslcd").pw_gid)
    return path


def make_server(d: LdapDeployment) -> SshdServer:
    """sshd as deployed (deploy/sshd/hive.conf, test state dir), seeing LDAP users only."""
    snippet = render_shipped(SHIPPED_SNIPPET, [
        ("/var/lib/hive/authorized_keys/", f"{d.state_dir}/authorized_keys/"),
    ], d.root / "sshd_config.d-hive.conf")
    nslcd = pwd.getpwnam("nslcd")
    socket_dir = d.root / "nslcd-run"
    socket_dir.mkdir(mode=0o755)
    os.chown(socket_dir, nslcd.pw_uid, nslcd.pw_gid)  # nslcd binds its socket after setuid
    return SshdServer(
        workdir=d.root / "sshd", files_dir=None, keys=None, include=snippet,
        hardening=BASE_OPTIONS, nsswitch=nsswitch_edit.edited(SHIPPED_NSSWITCH),
        mounts=[BindMount(nslcd_conf(d), NSLCD_CONF),
                BindMount(socket_dir, NSLCD_RUN, create_target=True)],
        daemons=[NamespaceDaemon("nslcd", [NSLCD, "-d"], log=d.root / "nslcd.log",
                                 ready_path=NSLCD_RUN / "socket")])


@pytest.fixture(scope="module")
def ldap_deployment() -> Iterator[LdapDeployment]:
    before, nslcd_before = host_state(), pids_named("nslcd")
    namespace = None
    with root_owned_test_root(prefix="hive-e2e-ldap-") as root:
        slapd = Slapd(root / "slapd", tls=True).start()
        try:
            # The read-only account deploy/ldap/base.ldif defines for nslcd.
            slapd.add(f"cn=nslcd,ou=services,{SUFFIX}",
                      objectClass=["organizationalRole", "simpleSecurityObject"],
                      cn="nslcd", userPassword=NSLCD_PW)
            # Someone else's user holding the first uid of Hive's range: Hive must skip it,
            # so the uid sshd sees can only have come from Hive's allocation in LDAP.
            slapd.add(f"uid=carol,{PEOPLE}", objectClass=["account", "posixAccount"],
                      uid="carol", cn="carol", uidNumber=UID_RANGE[0], gidNumber=UID_RANGE[0],
                      homeDirectory="/home/carol")
            keys_dir = root / "client-keys"
            d = LdapDeployment(
                root=root, slapd=slapd, config=root / "hive.yaml", repos_root=root / "repos",
                state_dir=root / "state",
                keys={name: generate_ed25519_key(keys_dir, name, f"{name}@e2e")
                      for name in ("alice-key", "bob-key")})
            d.config.write_text(hive_yaml(d))
            result = hive_apply(d.config)
            assert result.returncode == 0, "hive apply failed:\n" + describe(result)
            with make_server(d) as server:
                d.server = server
                namespace = server.namespace
                yield d
        finally:
            slapd.stop()
    # The host as found: no file, mount or process of the namespace outlives it.
    assert namespace is not None and namespace_pids(namespace) == []
    assert pids_named("nslcd") <= nslcd_before, "an nslcd outlived its namespace"
    assert host_state() == before


# --------------------------------------------------------------------------- resolution


def _getent(d: LdapDeployment, database: str, key: str) -> list[str]:
    assert d.server is not None
    result = d.server.run_in_namespace("getent", database, key)
    assert result.returncode == 0, d.explain(result)
    return result.stdout.strip().split(":")


def test_nslcd_resolves_the_users_hive_wrote(ldap_deployment: LdapDeployment) -> None:
    d = ldap_deployment
    uids = set()
    for repo, owner in (("repoa", "alice"), ("repob", "bob")):
        entry = d.ldap_user(repo)
        uid = entry["uidNumber"]
        assert UID_RANGE[0] < uid <= UID_RANGE[1], entry  # carol holds the first one
        uids.add(uid)
        home = str(d.repos_root / d.user(repo))
        assert _getent(d, "passwd", d.user(repo)) == [
            d.user(repo), "x", str(uid), str(uid), f"Hive repository {repo} ({owner})", home,
            "/bin/sh"]
        group = _getent(d, "group", d.user(repo))
        assert (group[0], group[2], group[3]) == (d.user(repo), str(uid), ""), group
        shadow = _getent(d, "shadow", d.user(repo))
        assert shadow[1] == "*" and shadow[7] == "", shadow  # no password, not expired
    assert len(uids) == 2
    # Outside the namespace the host knows nothing of them.
    outside = subprocess.run(["getent", "passwd", d.user("repoa")], capture_output=True)
    assert outside.returncode == 2, outside


def test_nslcd_answers_for_every_uid_value_of_an_entry(ldap_deployment: LdapDeployment
                                                       ) -> None:
    """Why Hive blocks every uid and cn value of a foreign entry (parse_entries): nslcd
    gives the entry, with its uidNumber, to a lookup of any of them."""
    d = ldap_deployment
    d.slapd.add(f"uid=dave,{PEOPLE}", objectClass=["account", "posixAccount"],
                uid=["dave", "bh-second-name"], cn="dave", uidNumber=UID_RANGE[1] + 7,
                gidNumber=UID_RANGE[1] + 7, homeDirectory="/home/dave")
    found = _getent(d, "passwd", "bh-second-name")
    assert (found[0], found[2], found[5]) == (
        "bh-second-name", str(UID_RANGE[1] + 7), "/home/dave"), found


def test_nslcd_serves_no_system_id_from_the_directory(ldap_deployment: LdapDeployment
                                                      ) -> None:
    """What the shipped nslcd.conf stops: entries made with Hive's bind password (a root
    on one backup host holds it) giving uid 0, or root's and sudo's gids to a repository
    user, on every host that reads the directory."""
    d = ldap_deployment
    assert d.server is not None
    rogue = {}
    for name, uid, gid in (("bh-rogue", 0, 0), ("bh-root0", 0, 20999), ("bh-wheel0", 2099, 0)):
        rogue[f"uid={name},{PEOPLE}"] = dict(
            objectClass=["account", "posixAccount"], uid=name, cn=name, uidNumber=uid,
            gidNumber=gid, homeDirectory="/root", loginShell="/bin/bash")
    for name, gid in (("bh-wheel", 0), ("bh-sudo", 27)):
        rogue[f"cn={name},{GROUPS}"] = dict(objectClass=["posixGroup"], cn=name,
                                             gidNumber=gid, memberUid=d.user("repoa"))
    # the directory administrators' own entries keep their low gids
    rogue[f"uid=dora,{PEOPLE}"] = dict(objectClass=["account", "posixAccount"], uid="dora",
                                       cn="dora", uidNumber=2001, gidNumber=100,
                                       homeDirectory="/home/dora")
    rogue[f"cn=staff100,{GROUPS}"] = dict(objectClass=["posixGroup"], cn="staff100",
                                          gidNumber=100, memberUid="dora")
    for dn, attributes in rogue.items():
        d.slapd.add(dn, **attributes)
    try:
        for name in ("bh-rogue", "bh-root0", "bh-wheel0"):
            found = d.server.run_in_namespace("getent", "passwd", name)
            assert found.returncode == 2, d.explain(found)
        for name in ("bh-wheel", "bh-sudo"):
            found = d.server.run_in_namespace("getent", "group", name)
            assert found.returncode == 2, d.explain(found)
        groups = d.server.run_in_namespace("id", "-G", d.user("repoa"))
        assert groups.returncode == 0, d.explain(groups)
        assert groups.stdout.split() == [str(d.ldap_user("repoa")["uidNumber"])], groups.stdout
        assert _getent(d, "passwd", "dora")[2:4] == ["2001", "100"]
        assert _getent(d, "group", "staff100")[2:4] == ["100", "dora"]
    finally:
        admin = d.slapd.admin()
        for dn in rogue:
            admin.delete(dn)
        admin.unbind()


def test_nslcd_and_sshd_share_the_namespace(ldap_deployment: LdapDeployment) -> None:
    """The daemon is really inside sshd's namespace, and the host does not see the mounts."""
    d = ldap_deployment
    assert d.server is not None and d.server.namespace is not None
    assert d.server.process is not None
    inside = set(namespace_pids(d.server.namespace))
    nslcd = pids_named("nslcd")
    assert nslcd and nslcd <= inside, (nslcd, inside)
    # sshd's child is nslcd proper, which has dropped to the nslcd user; a second one, its
    # child, is the root "invalidator" that reconnect_invalidate (shipped) starts.
    main = [pid for pid in nslcd if _ppid(pid) == d.server.process.pid]
    assert len(main) == 1, (nslcd, d.server.process.pid)
    assert os.stat(f"/proc/{main[0]}").st_uid == pwd.getpwnam("nslcd").pw_uid
    mounts = Path("/proc/self/mountinfo").read_text()
    for path in ("/etc/nslcd.conf", "/run/nslcd", "/etc/nsswitch.conf"):
        assert f" {path} " not in mounts



# --------------------------------------------------------------------------- borg over sshd


def test_borg_backs_up_as_the_ldap_user(ldap_deployment: LdapDeployment) -> None:
    d = ldap_deployment
    assert d.server is not None
    alice = d.client("alice-key")
    url = d.url(alice, "repoa")
    mark = d.server.log_mark()
    result = alice.borg("init", "-e", "repokey", url)
    assert result.returncode == 0, d.explain(result)
    data = alice.workdir / "data.txt"
    data.write_text("hello from an LDAP user\n")
    result = alice.borg("create", f"{url}::first", str(data))
    assert result.returncode == 0, d.explain(result)
    listing = alice.borg("list", "--short", url)
    assert listing.returncode == 0, d.explain(listing)
    assert listing.stdout.split() == ["first"], d.explain(listing)
    assert "Accepted publickey for bh-repoa " in d.server.log_since(mark)
    # borg serve ran as the LDAP uid: every file it wrote carries it.
    uid = d.ldap_user("repoa")["uidNumber"]
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in d.repo_path("repoa").rglob("*")}
    assert owners == {(uid, uid)}, owners


def test_another_repositorys_key_is_refused(ldap_deployment: LdapDeployment) -> None:
    d = ldap_deployment
    assert d.server is not None
    alice = d.client("alice-key")
    mark = d.server.log_mark()
    result = alice.borg("init", "-e", "repokey", d.url(alice, "repob"))
    assert result.returncode != 0, d.explain(result)
    assert d.server.wait_for_log("Failed publickey for bh-repob ", since=mark), d.explain(result)
    assert "Accepted publickey" not in d.server.log_since(mark)
    assert not (d.repo_path("repob") / "config").exists()


# --------------------------------------------------------------------------- removal


def test_removed_repository_is_locked_in_ldap_and_refused(
        ldap_deployment: LdapDeployment) -> None:
    """Runs late: it changes the deployment."""
    d = ldap_deployment
    assert d.server is not None
    stale_key_lines = d.cache("repoa").read_text()
    assert stale_key_lines.strip(), "the cache held no key for repoa before removal"
    text = d.config.read_text()
    line = "  repoa: {owner: alice, keys: [alice-key]}\n"
    assert line in text
    d.config.write_text(text.replace(line, ""))
    result = hive_apply(d.config)
    assert result.returncode == 0, describe(result)

    assert d.ldap_user("repoa")["shadowExpire"] == 1
    assert _getent(d, "shadow", d.user("repoa"))[7] == "1"  # nslcd passes the lock on
    assert not d.cache("repoa").exists(), "a user with no access keeps no cache file"
    alice = d.client("alice-key")
    mark = d.server.log_mark()
    refused = alice.borg("list", d.url(alice, "repoa"))
    assert refused.returncode != 0, d.explain(refused)
    assert "Accepted publickey" not in d.server.log_since(mark), d.explain(refused)
    assert (d.repo_path("repoa") / "config").exists(), "locking must keep the data"
    # The other repository still works.
    bob = d.client("bob-key")
    result = bob.borg("init", "-e", "repokey", d.url(bob, "repob"))
    assert result.returncode == 0, d.explain(result)

    # The lock alone, with the key still in the cache (as if the cache write had failed):
    # sshd (UsePAM no here) reads shadowExpire through nslcd and refuses the account.
    d.cache("repoa").write_text(stale_key_lines)
    d.cache("repoa").chmod(0o644)
    mark = d.server.log_mark()
    started = time.monotonic()
    locked = alice.borg("list", d.url(alice, "repoa"))
    elapsed = time.monotonic() - started
    log = d.server.log_since(mark)
    print(f"\nlocked account, key still present: borg exit {locked.returncode} after "
          f"{elapsed:.2f}s; borg said: {locked.stderr.strip()!r}; sshd said: "
          + repr([ln for ln in log.splitlines() if "bh-repoa" in ln][:4]))
    assert locked.returncode != 0, d.explain(locked)
    assert "Accepted publickey" not in log, d.explain(locked)
    assert "Account bh-repoa has expired" in log, d.explain(locked)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
