"""A borg 1.x repository's key in repokey mode: read from its `config`, written back out
the way `borg key export` writes it.

Why Hive reads it at all: borg 1.2's `borg serve --append-only` still serves `save_key`,
so a client holding only an append-only key can overwrite the key in `config` (`borg key
change-passphrase`, `borg key import`, or a modified client), and borg erases the previous
`config` as it does so. In repokey mode that key is the only way to read any archive, so
such a client could make every backup unreadable without removing a segment. `hive stats`
(root) therefore keeps a copy of every key it has seen (watcher/repokeys.py); an owner
puts one back with `borg key import URL FILE`.

`config` is written by the repository's user, so it is read as hostile input: at most
MAX_CONFIG_BYTES, only a regular file, never through a symlink, never a FIFO; anything
that is not a well-formed key with its repository id gives None, never an exception.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import stat
from dataclasses import dataclass

# A repokey config is about 1 KB; a larger file is not one borg wrote.
MAX_CONFIG_BYTES = 64 * 1024
# `id = ` in config: the repository id, 32 bytes as hex.
_REPO_ID = re.compile(r"[0-9a-f]{64}", re.ASCII)
# The key blob: base64 over several lines (configparser joins them with newlines).
_KEY_BLOB = re.compile(r"[A-Za-z0-9+/=\n]{1,60000}", re.ASCII)
#: The first word of a file `borg key export` writes (borg's KeyfileKey.FILE_ID).
EXPORT_HEADER = "BORG_KEY"


@dataclass(frozen=True)
class RepoKey:
    """The key a borg 1.x repository in repokey mode holds in its `config`."""

    repo_id: str   # 64 hex digits
    blob: str      # the encrypted key, base64 lines as borg keeps them

    @property
    def digest(self) -> str:
        """Names this key among the keys one repository has had (sha256 of the blob)."""
        return hashlib.sha256(self.blob.encode("ascii")).hexdigest()[:32]

    def exported(self) -> str:
        """The text `borg key export` writes, which `borg key import` takes back."""
        return f"{EXPORT_HEADER} {self.repo_id}\n{self.blob}\n"


def parse_config(text: str) -> RepoKey | None:
    """The key in a borg 1.x `config` text; None without one (keyfile mode, `none`
    encryption, borg 2, or a text borg did not write)."""
    parser = configparser.RawConfigParser(interpolation=None)  # strict: no duplicates
    try:
        parser.read_string(text)
        repo_id = parser.get("repository", "id", fallback="").strip()
        blob = parser.get("repository", "key", fallback="").strip()
    except configparser.Error:
        return None
    if not _REPO_ID.fullmatch(repo_id) or not _KEY_BLOB.fullmatch(blob):
        return None
    return RepoKey(repo_id, blob)


def read_repokey(path: str) -> RepoKey | None:
    """The key of the borg 1.x repository at `path`, or None (see parse_config)."""
    try:
        fd = os.open(os.path.join(path, "config"),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        return None
    try:
        return parse_config(data.decode("ascii"))
    except UnicodeDecodeError:
        return None
