"""A real OpenLDAP slapd for tests: a plain process on a free loopback port, with a
temporary mdb database, the nis schema, Hive's bind DN, and cn=Monitor to count operations.

Mirrors deploy/ldap/: the same base entries and the same ACL idea (Hive may write users
and groups, everyone else may read).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import ldap3

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "admin-secret"
HIVE_DN = f"cn=hive,ou=services,{SUFFIX}"
HIVE_PW = "hive-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {root}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
{tls}
database mdb
suffix "{suffix}"
rootdn "{admin}"
rootpw {admin_pw}
directory {root}/db
maxsize 1073741824
limits dn.exact="{hive}" size={hive_size} time=unlimited
access to dn.subtree="{people}" by dn.exact="{hive}" {people_access} by * read
access to dn.subtree="{groups}" by dn.exact="{hive}" {groups_access} by * read
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read

database monitor
access to * by dn.exact="{admin}" read by * none
"""


def _simple(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


class Slapd:
    def __init__(self, root: Path, tls: bool = False, hive_size: str = "unlimited",
                 groups_writable: bool = True, people_access: str = "write") -> None:
        """hive_size: the size limit for Hive's bind DN (slapd's default for others: 500);
        groups_writable: False makes every write of Hive's below ou=groups fail;
        people_access: Hive's access level below ou=people ("add": it may add users, not
        delete them)."""
        self.root = root
        self.hive_size = hive_size
        self.groups_writable = groups_writable
        self.people_access = people_access
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.cert: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def start(self, fresh: bool = True) -> Slapd:
        if fresh:
            (self.root / "db").mkdir(parents=True)
        tls = ""
        urls = self.url + "/"
        if self.tls_port:
            self.cert, key = make_certificate(self.root)
            tls = f"TLSCertificateFile {self.cert}\nTLSCertificateKeyFile {key}"
            urls += f" {self.ldaps_url}/"
        conf = self.root / "slapd.conf"
        conf.write_text(CONFIG.format(root=self.root, suffix=SUFFIX, admin=ADMIN_DN,
                                      admin_pw=ADMIN_PW, people=PEOPLE, groups=GROUPS,
                                      hive=HIVE_DN, tls=tls, hive_size=self.hive_size,
                                      people_access=self.people_access,
                                      groups_access="write" if self.groups_writable
                                      else "read"))
        self.log = open(self.root / "slapd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(["slapd", "-f", str(conf), "-h", urls, "-d", "0"],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("slapd did not start:\n"
                                       + (self.root / "slapd.log").read_text()) from None
                time.sleep(0.05)
        if fresh:
            self._base_entries()
        return self

    def restart(self, groups_writable: bool) -> None:
        """The same database under a changed ACL (a sysadmin fixing permissions)."""
        self._terminate()
        self.log.close()
        self.groups_writable = groups_writable
        self.start(fresh=False)

    def stop(self) -> None:
        self._terminate()
        self.log.close()
        shutil.rmtree(self.root / "db", ignore_errors=True)

    def _terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def admin(self) -> Any:
        conn = ldap3.Connection(ldap3.Server(self.url, get_info=ldap3.NONE), ADMIN_DN,
                                ADMIN_PW, client_strategy=ldap3.SAFE_SYNC, auto_bind=True)
        return conn

    def add(self, dn: str, **attributes: Any) -> None:
        conn = self.admin()
        ok, result, _, _ = conn.add(dn, attributes=attributes)
        conn.unbind()
        assert ok, result

    def _base_entries(self) -> None:
        self.add(SUFFIX, objectClass=["dcObject", "organization"], dc="example", o="Example")
        for ou in ("people", "groups", "services"):
            self.add(f"ou={ou},{SUFFIX}", objectClass=["organizationalUnit"], ou=ou)
        self.add(HIVE_DN, objectClass=["organizationalRole", "simpleSecurityObject"],
                 cn="hive", userPassword=HIVE_PW)

    def entries(self, base: str, attributes: list[str] | None = None) -> dict[str, Any]:
        """DN -> attributes of every entry below base (not base itself); single values
        unwrapped and numbers as ints, to keep assertions short."""
        conn = self.admin()
        _, _, response, _ = conn.search(base, "(objectClass=*)", ldap3.LEVEL,
                                        attributes=attributes or ldap3.ALL_ATTRIBUTES)
        conn.unbind()
        return {e["dn"]: {k: _simple(v) for k, v in e["attributes"].items()} for e in response}

    def operations(self) -> dict[str, int]:
        """Completed operations by kind, from cn=Monitor: the server's own count."""
        conn = self.admin()
        _, _, response, _ = conn.search("cn=Operations,cn=Monitor", "(objectClass=*)",
                                        ldap3.LEVEL, attributes=["monitorOpCompleted"])
        conn.unbind()
        return {e["dn"].split(",")[0][3:].lower(): int(e["attributes"]["monitorOpCompleted"][0])
                for e in response}
