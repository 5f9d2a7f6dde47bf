"""Identity backend `files`: passwd, group and shadow in libnss-extrausers format.

Lines Hive does not manage are kept byte for byte and in place (other tools, snapd for
one, use extrausers too). Each file is rewritten atomically, group before passwd before
shadow, so an interrupted apply leaves at worst a group without its user, which the next
apply completes.
"""

from __future__ import annotations

import grp
import pwd
import time
from pathlib import Path
from typing import Any

from reconciler.fsutil import atomic_write, remove_stale_temporaries
from reconciler.inventory import Inventory
from reconciler.resources import UNKNOWN, Change, Facts
from reconciler.targets import Result
from schemas.models import HiveConfig

FILES = ("group", "passwd", "shadow")  # write order


def _read_lines(path: Path) -> list[str]:
    """The file's lines as glibc reads them, ending at "\n" only (str.splitlines would
    also split at "\r", U+0085 and more, and so rewrite other tools' lines)."""
    try:
        text = _read_text(path)
    except FileNotFoundError:
        return []
    return text.removesuffix("\n").split("\n") if text else []


def _read_text(path: Path) -> str:
    """The file's text exactly (no newline translation: a "\r\n" stays)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


_BLANKS = " \t\n\v\f\r"  # C's isspace(): glibc skips these at the start of a line
_LEADS = frozenset(_BLANKS + "#")  # what makes a line more than a split at ":"


def _fields(line: str) -> list[str]:
    """A line's fields as glibc's nss_files parser sees them: leading blanks skipped, a
    `#` line or an empty one no entry at all ([])."""
    if line[:1] not in _LEADS:  # the usual line (and ""), split at once
        return line.split(":") if line else []
    text = line.lstrip(_BLANKS)
    return [] if not text or text[0] == "#" else text.split(":")


def _is_id(text: str) -> bool:
    """A uid or gid glibc reads: ASCII digits (str.isdigit also takes '²' and '٣')."""
    return text.isascii() and text.isdigit()


def _keyed(lines: list[str]) -> dict[Any, str]:
    """Lines by entry name, in file order. Lines that are not entries (comments, blanks) and
    repeated names keep their place under a key no name can have, so they survive as-is;
    updating a name keeps its position, new names go to the end. A name's key is the line
    glibc returns for it: the first one, leading blanks skipped; a later one's is (i, name)."""
    keyed: dict[Any, str] = {}
    for i, line in enumerate(lines):
        fields = _fields(line)
        name = fields[0] if len(fields) > 1 else None
        keyed[name if name is not None and name not in keyed else (i, name)] = line
    return keyed


def _drop_repeats(lines: dict[Any, str], names: set[str]) -> None:
    """Remove the later lines of these names: glibc never returns them while the first is
    there, and would return one once Hive deletes the first."""
    for key in [k for k in lines if type(k) is tuple and k[1] in names]:
        del lines[key]


def parse_accounts(passwd: list[str], group: list[str],
                   shadow: list[str] | None) -> dict[str, dict[str, Any]]:
    """Account attrs per user name, as desired.py describes them. Pure. Where a name has
    several lines, the first counts: getpwnam, getgrnam and getspnam return that one."""
    groups: dict[str, int] = {}
    for fields in map(_fields, group):
        if len(fields) >= 3 and fields[0] not in groups and _is_id(fields[2]):
            groups[fields[0]] = int(fields[2])
    locked: dict[str, bool] = {}
    for fields in map(_fields, shadow or []):
        if len(fields) >= 2 and fields[0] not in locked:
            locked[fields[0]] = fields[1].startswith("!")
    accounts: dict[str, dict[str, Any]] = {}
    for fields in map(_fields, passwd):
        if len(fields) != 7 or fields[0] in accounts or not _is_id(fields[2]) \
                or not _is_id(fields[3]):
            continue  # glibc skips a line it cannot read and looks further
        name = fields[0]
        accounts[name] = {
            "uid": int(fields[2]), "gid": int(fields[3]), "group": groups.get(name),
            "gecos": fields[4], "home": fields[5], "shell": fields[6],
            "locked": UNKNOWN if shadow is None else locked.get(name),
        }
    return accounts


def passwd_line(name: str, a: dict[str, Any]) -> str:
    return f"{name}:x:{a['uid']}:{a['gid']}:{a['gecos']}:{a['home']}:{a['shell']}"


def group_line(name: str, a: dict[str, Any]) -> str:
    return f"{name}:x:{a['group']}:"


def shadow_line(name: str, locked: bool, last_change: str) -> str:
    # '*' allows no password but keeps the account usable for keys; '!*' plus an account
    # expiry in 1970 locks it for sshd with or without PAM.
    if locked:
        return f"{name}:!*:{last_change}:0:99999:7::1:"
    return f"{name}:*:{last_change}:0:99999:7:::"


def observe_local_files(facts: Facts, etc: Path = Path("/etc")) -> None:
    """Names and ids of this host's own accounts, read from its files (not through NSS,
    which could list the directory's users too): a repository must not take them."""
    for name, index in (("passwd", 2), ("group", 2)):
        for line in _read_lines(etc / name):
            fields = _fields(line)
            if len(fields) > index and _is_id(fields[index]):
                facts.hold(int(fields[index]), fields[0])
                facts.system_names.add(fields[0])


class FilesIdentity:
    kind = "account"

    def __init__(self, config: HiveConfig) -> None:
        identity = config.server.identity
        assert identity.backend == "files"
        self.dir = identity.files_dir

    def observe(self, facts: Facts, inventory: Inventory) -> None:
        passwd = _read_lines(self.dir / "passwd")
        group = _read_lines(self.dir / "group")
        try:
            shadow: list[str] | None = _read_lines(self.dir / "shadow")
        except PermissionError:
            shadow = None
            facts.warnings.append(f"cannot read {self.dir / 'shadow'} as this user: whether "
                                  "accounts are locked is not compared (run as root)")
        facts.accounts.update(parse_accounts(passwd, group, shadow))
        hold = facts.hold
        for name, attrs in facts.accounts.items():
            hold(attrs["uid"], name)
        group_names = set()
        for fields in map(_fields, group):
            if len(fields) > 1:
                group_names.add(fields[0])
            if len(fields) >= 3 and _is_id(fields[2]):
                hold(int(fields[2]), fields[0])
        # A group in this file for a user the inventory claims, without its passwd line, is
        # what an apply killed between writing group and passwd leaves: Hive's own, which
        # the next apply completes, not a foreign group blocking the name.
        half_made = {name for name in group_names & inventory.accounts.keys()
                     if name not in facts.accounts}
        # The rest of the system (/etc/passwd, LDAP, ...) holds uids and names too.
        for entry in pwd.getpwall():
            hold(entry.pw_uid, entry.pw_name)
            if entry.pw_name not in facts.accounts:
                facts.system_names.add(entry.pw_name)
        for group_entry in grp.getgrall():
            hold(group_entry.gr_gid, group_entry.gr_name)
            if group_entry.gr_name not in facts.accounts \
                    and group_entry.gr_name not in half_made:
                facts.system_names.add(group_entry.gr_name)  # a foreign group blocks this name
        for name in group_names:
            if name not in facts.accounts and name not in half_made:
                facts.system_names.add(name)

    def apply(self, changes: list[Change]) -> list[Result]:
        files = {name: _keyed(_read_lines(self.dir / name)) for name in FILES}
        today = str(int(time.time() // 86400))
        try:
            for change in changes:
                self._edit(files, change, today)
            edited = {change.name for change in changes}
            for lines in files.values():
                _drop_repeats(lines, edited)
            self.dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.dir, FILES)  # of an apply killed while writing
            try:
                shadow_gid = grp.getgrnam("shadow").gr_gid
            except KeyError:
                shadow_gid = 0
            for name in FILES:
                content = "".join(f"{line}\n" for line in files[name].values())
                path = self.dir / name
                try:
                    if _read_text(path) == content:
                        continue
                except FileNotFoundError:
                    pass
                if name == "shadow":
                    atomic_write(path, content, mode=0o640, gid=shadow_gid)
                else:
                    atomic_write(path, content, mode=0o644)
        except OSError as exc:
            return [(changes[0], f"writing {self.dir}: {exc}")]
        return [(change, None) for change in changes]

    @staticmethod
    def _edit(files: dict[str, dict[Any, str]], change: Change, today: str) -> None:
        name = change.name
        for file_name in FILES:
            lines = files[file_name]
            old = lines.get(name)
            if change.action == "delete":
                lines.pop(name, None)
                continue
            if file_name == "passwd":
                current = parse_accounts([old], [], []).get(name) if old else None
                attrs = {**(current or {}), **(change.after or {})}
                lines[name] = passwd_line(name, attrs)
            elif file_name == "group":
                gid = (change.after or {}).get("group")
                if gid is not None:
                    lines[name] = group_line(name, {"group": gid})
            else:
                locked = (change.after or {}).get("locked")
                if locked is not None:
                    fields = _fields(old) if old else []
                    last = fields[2] if len(fields) > 2 else today
                    lines[name] = shadow_line(name, locked, last or today)
