"""Identity backend `ldap`: repository users and groups in an OpenLDAP directory.

Several sshd hosts (and the storage behind them) resolve the same users through nslcd, so
Hive writes one `posixAccount` + `shadowAccount` entry and one private `posixGroup` per
repository. Observing is one paged subtree search (uids must be free across the whole
directory, not only under Hive's entries); applying writes only what differs, with
MODIFY_REPLACE of the changed attributes. Hive's entries carry a marker in `description`;
entries without it are never modified or deleted.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from reconciler.inventory import Inventory
from reconciler.resources import Change, Facts
from reconciler.targets import Result, TargetError, apply_each
from reconciler.targets.files_identity import observe_local_files
from reconciler.targets.ldapwire import (
    WireError,
    add_request,
    message_id,
    search_entry,
    spellings,
)
from schemas.models import HiveConfig, LdapSettings

MARKER = "hive-managed"
USER_CLASSES = ["account", "posixAccount", "shadowAccount"]
GROUP_CLASSES = ["posixGroup"]
LOCKED_EXPIRE = 1  # shadowExpire in days since 1970: expired long ago
# Entries per page of the observe search. slapd works out the whole candidate list again
# for every page, so at 100,000 entries pages of 1,000 cost it 5.5 s of CPU and pages of
# 10,000 about 1 s. A server may cap the page size (OpenLDAP's size.pr answers a larger
# request with adminLimitExceeded): then the search starts over with SMALL_PAGE_SIZE,
# what Hive always asked for before.
PAGE_SIZE = 10000
SMALL_PAGE_SIZE = 1000
PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
SEARCH_FILTER = "(|(objectClass=posixAccount)(objectClass=posixGroup))"
SEARCH_ATTRIBUTES = ["objectClass", "uid", "cn", "uidNumber", "gidNumber", "gecos",
                     "homeDirectory", "loginShell", "shadowExpire", "description"]
ATTRIBUTE_NAMES = spellings(SEARCH_ATTRIBUTES)


def bind_password(settings: LdapSettings) -> str:
    """The bind password from the environment or a file; never from hive.yaml."""
    if settings.bind_password_env:
        value = os.environ.get(settings.bind_password_env)
        if not value:
            raise TargetError(f"LDAP: the environment variable {settings.bind_password_env} "
                              "(server.identity.ldap.bind_password_env) is not set")
        return value
    assert settings.bind_password_file is not None
    try:
        with open(settings.bind_password_file, encoding="utf-8") as handle:
            return handle.readline().rstrip("\n")
    except OSError as exc:
        raise TargetError(f"LDAP: cannot read bind_password_file "
                          f"{settings.bind_password_file}: {exc.strerror}") from None


def security_notes(settings: LdapSettings) -> list[str]:
    """What a reviewer of the plan must know about how Hive talks to the directory."""
    notes = []
    if not settings.tls_verify:
        notes.append(f"LDAP: TLS certificate verification is OFF for {settings.url} "
                     "(server.identity.ldap.tls_verify: false)")
    if settings.url.startswith("ldap://") and not settings.start_tls:
        host = urlparse(settings.url).hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            notes.append(f"LDAP: {settings.url} without start_tls sends the bind password "
                         "unencrypted; use ldaps:// or start_tls: true")
    return notes


def _first(attrs: dict[str, Any], name: str) -> Any:
    value = attrs.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _all(attrs: dict[str, Any], name: str) -> list[Any]:
    """Every value of an attribute, as nslcd sees them (uid and cn are multi-valued)."""
    value = attrs.get(name)
    if isinstance(value, list):
        return [v for v in value if v]
    return [value] if value else []


def marker(server: str, repository: str) -> str:
    """What Hive writes into `description`: which Hive server made the entry, and why."""
    return f"{MARKER} server={server} repository={repository}"


def _marks(attrs: dict[str, Any]) -> Iterator[list[str]]:
    """The words of each Hive mark in an entry's `description` (what marker() writes)."""
    values = attrs.get("description") or []
    for value in values if isinstance(values, list) else [values]:
        if isinstance(value, str) and value.startswith(MARKER + " "):
            yield value.split()


def _fields(words: list[str]) -> dict[str, str]:
    return dict(word.split("=", 1) for word in words[1:] if "=" in word)


def _marked(attrs: dict[str, Any], server: str) -> str | None:
    """The repository name if this server's Hive made the entry, else None.

    Entries made by another server's Hive sharing the directory are foreign here: their
    ids are taken and their names blocked, but they are never changed or pruned.
    """
    for parts in _marks(attrs):
        if (len(parts) == 3 and parts[1] == "server=" + server
                and parts[2].startswith("repository=") and len(parts[2]) > 11):
            return parts[2][11:]  # what marker() writes; _fields reads any order
        fields = _fields(parts)
        if fields.get("server") == server and fields.get("repository"):
            return fields["repository"]
    return None


def _marking_server(attrs: dict[str, Any]) -> str | None:
    """The `server=` of a Hive mark on the entry, whichever server wrote it."""
    for parts in _marks(attrs):
        other = _fields(parts).get("server")
        if other:
            return other
    return None


def dn_key(dn: str) -> str:
    """A DN as slapd compares it, near enough for the DNs Hive writes: case and the spaces
    around `,` and `=` do not count (slapd answers `dc=example, dc=org` without them)."""
    return ",".join("=".join(part.strip() for part in rdn.split("=", 1))
                    for rdn in dn.lower().split(","))


def parse_entries(entries: list[dict[str, Any]], people: str, groups: str, server: str,
                  facts: Facts) -> None:
    """Fill facts from search results. Pure, so it is tested without a server.

    Only entries this server's Hive marked, at exactly the DN Hive writes to
    (`uid=NAME,<people>`, `cn=NAME,<groups>`), become accounts and their groups: Hive
    changes and deletes entries by that DN, so a marked copy anywhere else (a sub-OU
    someone else may write to) must not make the entry at that DN look like Hive's.
    Everything else (other people's entries, another Hive server's) only blocks its
    names and ids.
    """
    people_l, groups_l = dn_key(people), dn_key(groups)
    hold = facts.hold
    group_gids: dict[str, int] = {}
    users: dict[str, dict[str, Any]] = {}
    for entry in entries:
        dn = entry["dn"]
        attrs = entry["attributes"]
        classes = {c.lower() for c in attrs.get("objectClass", [])}
        uid_number, gid_number = _first(attrs, "uidNumber"), _first(attrs, "gidNumber")
        if "posixaccount" in classes:
            names = _all(attrs, "uid")  # nslcd answers getpwnam for every value
            name = names[0] if names else None
            if uid_number is not None:
                hold(int(uid_number), name or dn)
            repository = _marked(attrs, server)
            if name and repository is not None and dn_key(dn) == f"uid={name},{people_l}":
                users[name] = {"attrs": attrs, "marked": repository}
                facts.system_names.update(names[1:])
            elif name:
                facts.system_names.update(names)
                other = _marking_server(attrs)
                if other is not None and other != server:
                    facts.other_servers[name] = other
        if "posixgroup" in classes:
            names = _all(attrs, "cn")  # and getgrnam for every cn
            name = names[0] if names else None
            if gid_number is not None:
                hold(int(gid_number), name or dn)
            if name and _marked(attrs, server) and dn_key(dn) == f"cn={name},{groups_l}":
                group_gids[name] = int(gid_number)
                facts.system_names.update(names[1:])
            elif name:
                facts.system_names.update(names)  # a foreign group blocks these names
    for name, user in users.items():
        attrs = user["attrs"]
        expire = _first(attrs, "shadowExpire")
        facts.accounts[name] = {
            "uid": int(_first(attrs, "uidNumber")), "gid": int(_first(attrs, "gidNumber")),
            "group": group_gids.get(name), "gecos": _first(attrs, "gecos") or "",
            "home": _first(attrs, "homeDirectory"), "shell": _first(attrs, "loginShell"),
            "locked": expire is not None and int(expire) == LOCKED_EXPIRE,
        }
        facts.marked[name] = user["marked"]


class LdapIdentity:
    kind = "account"

    def __init__(self, config: HiveConfig) -> None:
        identity = config.server.identity
        assert identity.backend == "ldap"
        self.settings: LdapSettings = identity.ldap
        self.server = config.server.name
        self.people = self.settings.people
        self.groups = self.settings.groups
        self.connection: Any = None
        self.requests = 0

    # -- connection -------------------------------------------------------------------
    def connect(self) -> Any:
        """Open and bind once; every failure becomes one clear line."""
        if self.connection is not None:
            return self.connection
        import ldap3  # imported here: only the ldap backend pays for it
        from ldap3.core.exceptions import LDAPException

        s = self.settings
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if s.tls_verify else ssl.CERT_NONE,
                        ca_certs_file=str(s.ca_file) if s.ca_file else None,
                        version=ssl.PROTOCOL_TLS_CLIENT)
        password = bind_password(s)
        server = ldap3.Server(s.url, use_ssl=s.url.startswith("ldaps://"), tls=tls,
                              connect_timeout=s.timeout, get_info=ldap3.NONE)
        # SYNC, not SAFE_SYNC: SAFE_SYNC deep-copies every response so that threads
        # sharing a connection cannot see each other's results -- for a paged search of
        # 50,000 users most of the time of a converged plan. This connection belongs to
        # this object, used by one thread (plan and apply run sequentially), and each
        # result below is read right after its own request, before the next one.
        # check_names=False: values come back as the server's text, not run through
        # ldap3's formatters (without a schema, get_info=NONE, they only guess types, and
        # cost a third of a search); parse_entries converts what it reads itself. (The
        # observe search does not go through them at all: see _search_page.)
        # collect_usage=False: nothing reads ldap3's traffic statistics, and keeping them
        # cost 0.1 ms of CPU per write -- 10 s of a first apply of 50,000 repositories.
        conn = ldap3.Connection(server, user=s.bind_dn, password=password,
                                client_strategy=ldap3.SYNC, receive_timeout=s.timeout,
                                raise_exceptions=False, collect_usage=False,
                                check_names=False)
        try:
            conn.open()
            if s.start_tls:
                conn.start_tls()
            ok = conn.bind()
            result = conn.result or {}
        except LDAPException as exc:
            raise TargetError(f"LDAP: cannot connect to {s.url}: {_cause(exc)}") from None
        if not ok:
            raise TargetError(f"LDAP: bind as {s.bind_dn} to {s.url} failed: "
                              f"{result.get('description')} {result.get('message') or ''}"
                              .rstrip() + " (check the bind DN and password)")
        self.connection = conn
        return conn

    def _call(self, what: str, method: str, *args: Any, tolerate: str | None = None,
              **kwargs: Any) -> bool:
        """One write; False when the server answered `tolerate`, TargetError otherwise."""
        from ldap3.core.exceptions import LDAPException

        conn = self.connect()
        try:
            if method == "add":  # the bulk of a first apply: encoded by ldapwire
                result = self._add(conn, *args, **kwargs)
                ok = result.get("description") == "success"
            else:
                ok = getattr(conn, method)(*args, **kwargs)
                result = conn.result or {}
        except LDAPException as exc:
            raise TargetError(f"LDAP {method} {what}: {_cause(exc)}") from None
        finally:
            self.requests += 1
        if not ok and result.get("description") == tolerate:
            return False
        if not ok:
            raise TargetError(f"LDAP {method} {what} refused: {result.get('description')} "
                              f"{result.get('message') or ''}".rstrip())
        return True

    # -- the target interface ---------------------------------------------------------
    def observe(self, facts: Facts, inventory: Inventory) -> None:
        conn = self.connect()
        facts.warnings.extend(security_notes(self.settings))
        entries: list[dict[str, Any]] = []
        for base in self._bases():
            entries.extend(self._paged_search(conn, base))
        parse_entries(entries, self.people, self.groups, self.server, facts)
        observe_local_files(facts)  # /etc/passwd and /etc/group hold uids and names too

    def _bases(self) -> list[str]:
        """The subtrees read: base_dn, and ou=people / ou=groups where they lie outside."""
        bases = [self.settings.base_dn]
        for dn in (self.people, self.groups):
            if not dn.lower().endswith(self.settings.base_dn.lower()):
                bases.append(dn)
        return bases

    def _paged_search(self, conn: Any, base: str) -> list[dict[str, Any]]:
        """Every account and group below base, page by page.

        A truncated answer would make existing users look absent (and their uids free), so
        anything but a complete result is an error, with the server's limit named.
        """
        try:
            return self._pages(conn, base, PAGE_SIZE, PAGE_SIZE > SMALL_PAGE_SIZE)
        except _PageSizeRefused:
            return self._pages(conn, base, SMALL_PAGE_SIZE, False)

    def _pages(self, conn: Any, base: str, size: int,
               may_refuse: bool) -> list[dict[str, Any]]:
        """The paged search at this page size. may_refuse: a refusal of the first page
        (no entries read yet) raises _PageSizeRefused, to try again with smaller pages."""
        found: list[dict[str, Any]] = []
        cookie = None
        while True:
            entries, result = self._search_page(conn, base, cookie, size)
            self.requests += 1
            code = result.get("description")
            if code == "sizeLimitExceeded":
                raise TargetError(
                    f"LDAP: {self.settings.url} stopped the search of {base} at its size "
                    f"limit after {len(found) + len(entries)} entries; allow "
                    f"{self.settings.bind_dn} unlimited results (olcLimits, see "
                    "deploy/ldap/acl.ldif)")
            if code != "success" and may_refuse and cookie is None and not entries:
                raise _PageSizeRefused
            if code != "success":
                raise TargetError(f"LDAP: searching {base} failed: {code} "
                                  f"{result.get('message') or ''}".rstrip())
            found.extend(entries)
            control = (result.get("controls") or {}).get(PAGED_RESULTS_OID, {})
            cookie = control.get("value", {}).get("cookie")
            if not cookie:
                return found

    def _search_page(self, conn: Any, base: str, cookie: bytes | None,
                     size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One page: (its entries, ldap3's dict of the SearchResultDone).

        What `conn.search` does, except that entries are decoded by ldapwire (see there
        why): ldap3 encodes and sends the request and splits what arrives into messages;
        anything that is not an entry of this search is decoded by ldap3 as before.
        """
        import ldap3
        from ldap3.core.exceptions import LDAPException
        from ldap3.operation.search import search_operation
        from ldap3.protocol.rfc2696 import paged_search_control
        from ldap3.utils.asn1 import decode_message_fast

        strategy = conn.strategy
        entries: list[dict[str, Any]] = []
        try:
            # DEREF_NEVER, as nslcd (its `deref` default): Hive reads the entries logins
            # resolve to, not what an alias in the base would bring in from elsewhere
            request = search_operation(base, SEARCH_FILTER, ldap3.SUBTREE, ldap3.DEREF_NEVER,
                                       SEARCH_ATTRIBUTES, 0, 0, False, conn.auto_escape,
                                       conn.auto_encode, None, validator=None,
                                       check_names=False)
            sent = conn.send("searchRequest", request,
                             [paged_search_control(False, size, cookie)])
            try:
                while True:
                    messages = strategy.receiving()
                    if not messages:
                        raise TargetError(f"LDAP: {self.settings.url} closed the connection "
                                          f"during the search of {base}")
                    for raw in messages:
                        number, op = message_id(raw)
                        entry = search_entry(raw, op, ATTRIBUTE_NAMES) if number == sent else None
                        if entry is not None:
                            entries.append({"dn": entry[0], "attributes": entry[1]})
                            continue
                        answer = strategy.decode_response_fast(decode_message_fast(raw))
                        kind = answer.get("type")
                        if number != sent:
                            raise TargetError(
                                f"LDAP: {self.settings.url} sent an unexpected {kind} "
                                f"({answer.get('description') or answer.get('responseName')}) "
                                f"during the search of {base}")
                        if kind == "searchResDone":
                            return entries, answer
                        if kind != "searchResRef":  # a reference is outside; ignored as before
                            raise TargetError(f"LDAP: unexpected {kind} in the search of {base}")
            finally:
                strategy._outstanding.pop(sent, None)
        except WireError as exc:
            raise TargetError(f"LDAP: malformed answer from {self.settings.url} to the "
                              f"search of {base}: {exc}") from None
        except LDAPException as exc:
            raise TargetError(f"LDAP: searching {base} failed: {_cause(exc)}") from None

    def _add(self, conn: Any, dn: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """What conn.add(dn, attributes=attributes) sends and returns (its result dict),
        with the request encoded by ldapwire.add_request and the answer decoded by ldap3.
        """
        from ldap3.core.exceptions import LDAPSocketSendError
        from ldap3.utils.asn1 import decode_message_fast

        if conn.closed or conn.socket is None:
            raise TargetError(f"LDAP add {dn}: the connection to {self.settings.url} is "
                              "closed")
        number = conn.server.next_message_id()
        try:
            conn.socket.sendall(add_request(number, dn, attributes))
        except OSError as exc:
            raise LDAPSocketSendError(f"socket sending error {exc}") from None
        messages = conn.strategy.receiving()  # waits for whole messages; [] when closed
        if not messages:
            raise TargetError(f"LDAP add {dn}: {self.settings.url} closed the connection")
        try:
            answers = [(message_id(raw)[0],
                        conn.strategy.decode_response_fast(decode_message_fast(raw)))
                       for raw in messages]
        except WireError as exc:
            raise TargetError(f"LDAP add {dn}: malformed answer from {self.settings.url}: "
                              f"{exc}") from None
        got, answer = answers[0]
        if got != number or answer.get("type") != "addResponse" or len(answers) > 1:
            raise TargetError(f"LDAP add {dn}: {self.settings.url} sent an unexpected "
                              f"{answer.get('type')} "
                              f"({answer.get('description') or answer.get('responseName')})")
        conn.result = answer
        return answer

    def apply(self, changes: list[Change]) -> list[Result]:
        return self._keep_ids_unique(apply_each(changes, self._apply_one, TargetError))

    def _keep_ids_unique(self, results: list[Result]) -> list[Result]:
        """Undo each user this batch created whose uid another entry holds as well.

        The plan took the lowest uid free when it read the directory; another Hive
        applying into it at the same moment may have taken the same one. Two users of one
        uid would each reach the other's backups. slapo-unique (deploy/ldap/unique.ldif)
        refuses the second add outright; without it, each host reads the uids back after
        its adds, and a user that shares its uid is deleted again, before its folders
        and keys exist, with an error that asks for another apply (its plan takes a free
        uid). Whichever host reads last sees both entries, so at most one keeps the uid;
        when both read both, neither does, and both try again."""
        created = {change.name: change.after["uid"] for change, error in results
                   if error is None and change.action == "create" and change.after
                   and "uid" in change.after}
        if not created:
            return results
        try:
            holders = self._holders(set(created.values()))
        except TargetError as exc:  # not known: kept, and the apply stops before any keys
            return [(change, error or (f"{exc}; run 'hive apply' again"
                                       if change.name in created else None))
                    for change, error in results]
        checked: list[Result] = []
        for change, error in results:
            uid = created.get(change.name)
            own = {dn_key(self.user_dn(change.name)), dn_key(self.group_dn(change.name))}
            others = sorted(holders.get(uid, set()) - own, key=lambda dn: (
                not dn.startswith("uid="), dn)) if uid is not None else []
            if others:
                error = (f"uid {uid} was taken at the same moment by "
                         f"{' and '.join(others[:3])} (another Hive applying into this "
                         "directory?)")
                try:
                    for dn in (self.user_dn(change.name), self.group_dn(change.name)):
                        self._call(dn, "delete", dn, tolerate="noSuchObject")
                except TargetError as exc:  # kept: the apply stops before its keys
                    error += (f", and deleting {change.name} again failed ({exc}): delete "
                              "it by hand, then run 'hive apply' again")
                else:
                    error += (f"; {change.name} was deleted again, before anything of it "
                              "was made. Run 'hive apply' again: a new plan takes a free "
                              "uid (deploy/ldap/unique.ldif has slapd refuse such an add "
                              "outright)")
            checked.append((change, error))
        return checked

    def _holders(self, ids: set[int]) -> dict[int, set[str]]:
        """uid or gid -> the DNs (lowercase) of every posix entry holding it, for `ids`.
        The observe search again, whole: without an index on uidNumber (deploy/ldap sets
        none) slapd reads every entry for any filter on it anyway, and this read costs
        what one observe does (0.3 s of a first apply of 5,000 repositories)."""
        conn = self.connect()
        found: dict[int, set[str]] = {}
        for base in self._bases():
            for entry in self._paged_search(conn, base):
                attributes = entry["attributes"]
                classes = {c.lower() for c in attributes.get("objectClass", [])}
                # what parse_entries holds, and so what a plan takes as in use: an
                # account's uid, a group's gid (a user's primary gid alone holds nothing)
                held = [_first(attributes, "uidNumber") if "posixaccount" in classes else None,
                        _first(attributes, "gidNumber") if "posixgroup" in classes else None]
                for value in held:
                    if value is not None and value.isdigit() and int(value) in ids:
                        found.setdefault(int(value), set()).add(dn_key(entry["dn"]))
        return found

    def user_dn(self, name: str) -> str:
        return self.settings.user_dn(name)

    def group_dn(self, name: str) -> str:
        return self.settings.group_dn(name)

    def _apply_one(self, change: Change) -> None:
        import ldap3

        name = change.name
        mark = marker(self.server, str(change.meta.get("repository", "")))
        after, before = change.after or {}, change.before or {}
        if change.action == "delete":
            self._call(self.user_dn(name), "delete", self.user_dn(name))
            if before.get("group") is not None:  # only a group observed with Hive's mark
                self._call(self.group_dn(name), "delete", self.group_dn(name),
                           tolerate="noSuchObject")  # a crash may have taken it already
            return
        if change.action == "create":
            user = {"objectClass": USER_CLASSES, "uid": name, "cn": name,
                    "uidNumber": after["uid"], "gidNumber": after["gid"],
                    "homeDirectory": after["home"], "loginShell": after["shell"],
                    "gecos": after["gecos"], "description": mark}
            if after["locked"]:
                user["shadowExpire"] = LOCKED_EXPIRE
            self._call(self.user_dn(name), "add", self.user_dn(name), attributes=user)
            self._add_group(name, after["group"], mark)
            return
        replace = {}
        for key, attr in (("uid", "uidNumber"), ("gid", "gidNumber"), ("home", "homeDirectory"),
                          ("shell", "loginShell"), ("gecos", "gecos")):
            if key in after:
                replace[attr] = [(ldap3.MODIFY_REPLACE, [after[key]])]
        if "locked" in after:
            replace["shadowExpire"] = [(ldap3.MODIFY_REPLACE,
                                        [LOCKED_EXPIRE] if after["locked"] else [])]
        if replace:
            self._call(self.user_dn(name), "modify", self.user_dn(name), replace)
        if "group" in after:
            if before.get("group") is None:
                self._add_group(name, after["group"], mark)
            else:
                self._call(self.group_dn(name), "modify", self.group_dn(name),
                           {"gidNumber": [(ldap3.MODIFY_REPLACE, [after["group"]])]})

    def _add_group(self, name: str, gid: int, mark: str) -> None:
        import ldap3

        group = {"objectClass": GROUP_CLASSES, "cn": name, "gidNumber": gid,
                 "description": mark}
        if not self._call(self.group_dn(name), "add", self.group_dn(name), attributes=group,
                          tolerate="entryAlreadyExists"):
            # Our own group outlived its user (a foreign one would have stopped the plan).
            self._call(self.group_dn(name), "modify", self.group_dn(name),
                       {"gidNumber": [(ldap3.MODIFY_REPLACE, [gid])]})


class _PageSizeRefused(Exception):
    """The server refused the first page of a search at the larger page size."""


def _cause(exc: Exception) -> str:
    """ldap3 wraps socket and TLS errors several levels deep; show the innermost reason."""
    text = str(exc)
    for marker in ("certificate verify failed", "Connection refused", "timed out",
                   "Name or service not known", "No route to host"):
        if marker in text:
            return marker.lower() if marker != "Connection refused" else "connection refused"
    return text.split(" - ")[-1][:300] or type(exc).__name__
