"""Render authorized_keys lines: the one place that decides what a key may do.

Every line starts with `restrict` (no PTY, no forwarding, no agent, no X11, no user rc) and
carries a forced command; a repository whose mode grants nothing gets no lines at all.
The trailing comment is `hive:<key name>`, so plans and humans can tell lines apart.
Every line is checked against the strict grammar of schemas/keyoptions.py before it is
returned: a line sshd might read differently is never written (UnsafeKeyLine).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from schemas.keyoptions import UnsafeKeyLine, check_key_line, command_option, from_option
from schemas.models import HiveConfig, Key, Repository
from schemas.sshkeys import ACCEPTED_TYPES, BadKey, parse_public_key

COMMENT_PREFIX = "hive:"


def forced_command_words(config: HiveConfig, repo: Repository, path: Path | str,
                         append_only: bool) -> list[str]:
    """The command sshd runs instead of whatever the client asked for, word by word."""
    server = config.server
    if repo.mode == "borg":
        parts = [server.borg_command, "serve", "--restrict-to-repository", str(path)]
        if append_only:
            parts.append("--append-only")
        if repo.quota:
            parts += ["--storage-quota", repo.quota]
        return parts
    if repo.mode == "import":
        if append_only:  # validation refuses this; rsync's writes cannot be append-only
            raise UnsafeKeyLine("mode import gives rsync write access, which an append-only "
                                "key must not have")
        # -munge: an uploaded symlink is stored munged (rsync --munge-links), so a folder
        # moved in cannot point its data outside the repository for borg serve to follow
        # once the mode is borg (a borg repository holds no symlinks).
        return [server.rrsync_command, "-wo", "-munge", str(path)]
    if repo.mode == "export":
        return [server.rrsync_command, "-ro", str(path)]
    raise ValueError(f"mode {repo.mode!r} grants no access")


def forced_command(config: HiveConfig, repo: Repository, path: Path | str,
                   append_only: bool) -> str:
    """The forced command as sshd's command="..." holds it."""
    return " ".join(forced_command_words(config, repo, path, append_only))


def expiry_option(expires_at: dt.datetime) -> str:
    """sshd's expiry-time, in UTC (the trailing Z) so the server's time zone cannot shift it."""
    return expires_at.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ")


def key_line(config: HiveConfig, repo: Repository, path: Path, key_name: str, key: Key,
             append_only: bool) -> str:
    """One line, or UnsafeKeyLine if any part of it is outside sshd's strict grammar."""
    return LineMaker(config).line(repo, path, key_name, key, append_only)


class LineMaker:
    """Renders the lines of one run. What depends on the key alone (from=, expiry-time=,
    its type and data) is made once per key, the forced command once per repository and
    mode, so 100,000 keys cost 100,000 parses, not one per line; every whole line is
    still checked against the grammar before it is returned."""

    def __init__(self, config: HiveConfig) -> None:
        self.config = config
        self.repos_root = str(config.server.repos_root)
        # key name -> (the options between restrict and command=, "type data hive:name")
        self._keys: dict[str, tuple[str, str]] = {}

    def _key_parts(self, key_name: str, key: Key) -> tuple[str, str]:
        parts = self._keys.get(key_name)
        if parts is None:
            options = ""
            if key.from_:
                options += "," + from_option(list(key.from_))
            expires_at = key.expires_at()
            if expires_at is not None:
                options += f',expiry-time="{expiry_option(expires_at)}"'
            public = parse_public_key(key.public_key)
            parts = (options, f"{public.type} {public.blob} {COMMENT_PREFIX}{key_name}")
            self._keys[key_name] = parts
        return parts

    def line(self, repo: Repository, path: Path | str, key_name: str, key: Key,
             append_only: bool, command: str | None = None) -> str:
        """One line (`command` is the forced command's option when the caller has it)."""
        if command is None:
            command = self._command(key_name, repo, path, append_only)
        try:
            options, body = self._key_parts(key_name, key)
            return check_key_line(f"restrict{options},{command} {body}")
        except UnsafeKeyLine as exc:
            raise _refused(key_name, exc) from None

    def _command(self, key_name: str, repo: Repository, path: Path | str,
                 append_only: bool) -> str:
        try:
            return command_option(forced_command_words(self.config, repo, path, append_only))
        except UnsafeKeyLine as exc:
            raise _refused(key_name, exc) from None

    def repository_lines(self, repo: Repository, path: Path | str, now: dt.datetime
                         ) -> tuple[dict[str, str], dict[str, dt.datetime]]:
        """Key name -> line for one repository, and the keys left out because they
        expired."""
        lines: dict[str, str] = {}
        expired: dict[str, dt.datetime] = {}
        if repo.mode == "disabled":
            return lines, expired
        keys = self.config.keys
        for append_only, names in ((False, repo.keys), (True, repo.append_only_keys)):
            command = None
            for name in names:
                key = keys[name]
                if key.expires is not None:
                    expires_at = key.expires_at()
                    if expires_at is not None and expires_at <= now:
                        expired[name] = expires_at
                        continue
                command = command or self._command(name, repo, path, append_only)
                lines[name] = self.line(repo, path, name, key, append_only, command)
        return lines, expired


def _refused(key_name: str, exc: UnsafeKeyLine) -> UnsafeKeyLine:
    """The same refusal, naming the key whose line it is."""
    return UnsafeKeyLine(f"key {key_name}: refusing to write its authorized_keys line: {exc}")


def repository_lines(config: HiveConfig, repo: Repository, path: Path,
                     now: dt.datetime) -> tuple[dict[str, str], dict[str, dt.datetime]]:
    """Key name -> line for one repository, and the keys left out because they expired."""
    return LineMaker(config).repository_lines(repo, path, now)


def key_of(line: str) -> tuple[str, str] | None:
    """(type, base64) of a line Hive wrote (`... <type> <base64> hive:<name>`); None for
    any other line, and for a key not in the text sshd names it by (written by a Hive that
    did not insist on that form: schemas/sshkeys.py), so that its connections count as
    of an unknown key."""
    words = line.rsplit(" ", 3)
    if len(words) == 4 and words[1] in ACCEPTED_TYPES and words[3].startswith(COMMENT_PREFIX):
        try:
            parse_public_key(f"{words[1]} {words[2]}")
        except BadKey:
            return None
        return words[1], words[2]
    return None


def render_file(lines: dict[str, str]) -> str:
    return "".join(f"{line}\n" for line in lines.values())


def parse_file(text: str) -> dict[str, str]:
    """Key name -> line, from a cache file; a line Hive did not write gets a name that no
    desired key has, so the plan rewrites the file. Lines end where sshd ends them, at
    "\n" only: str.splitlines also splits at "\r", "\x1c", U+2028 and more, and would
    show two of Hive's lines where sshd reads one line (and only its first key)."""
    result: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        comment = line.rpartition(" ")[2]
        name = (comment.removeprefix(COMMENT_PREFIX) if comment.startswith(COMMENT_PREFIX)
                else f"(unmanaged line {number})")
        if name in result:  # sshd reads both lines: the second must show, not replace
            name = f"(unmanaged line {number})"
        result[name] = line
    return result
