"""A borg 1.x repository's `config` file: its id, whether it is append-only, and its key
in repokey mode.

The repository's user writes this file, so it is read as hostile input: bounded, never
through a symlink, never a FIFO (borgrepo.read_regular), and only values in the form
borg writes count; anything else reads as "not there", never as an exception.

Why the key matters: borg 1.2's `borg serve --append-only` still serves `save_key`, so a
client holding only an append-only key can overwrite the key here (`borg key
change-passphrase`, `borg key import`, or a modified client), and borg erases the previous
`config` as it does so. In repokey mode that key is the only way to read any archive, so
`hive watch` and `hive stats` keep a copy of every key they see (watcher/repokeys.py), in
the format `borg key export` writes; an owner puts one back with `borg key import URL
FILE`.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from borgrepo import RepositoryError, read_regular

# A repokey config is about 1 KB; a larger file is not one borg wrote.
MAX_CONFIG_BYTES = 64 * 1024
# borg writes the repository id as 32 random bytes in hex. Nothing else is one: the id
# goes into a shell line for the operator (`hive rollback`) and into file names.
_REPOSITORY_ID = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
# The key: base64 over several lines (configparser joins them with newlines).
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


def _parsed(text: str) -> configparser.RawConfigParser | None:
    parser = configparser.RawConfigParser(interpolation=None)  # strict: no duplicates
    try:
        # Lines as borg's open() reads them: universal newlines ("\r" alone ends one too).
        parser.read_file(io.StringIO(text, newline=None))
    except configparser.Error:
        return None
    return parser


def _repository_id(parser: configparser.RawConfigParser) -> str | None:
    ident = parser.get("repository", "id", fallback="")
    return ident if _REPOSITORY_ID.fullmatch(ident) else None


def read_config(text: str) -> tuple[bool, str | None]:
    """(`append_only = 1`?, the repository id) from a config text; the id is None unless
    it is 64 hex digits, as borg writes it (`hive rollback` puts it into an `rm -rf` line
    the operator runs on each client)."""
    parser = _parsed(text)
    if parser is None:
        return False, None
    try:
        append_only = parser.getboolean("repository", "append_only", fallback=False)
    except ValueError:
        return False, None
    return append_only, _repository_id(parser)


def parse_key(text: str) -> RepoKey | None:
    """The key in a config text; None without one (keyfile mode, `none` encryption, or a
    text borg did not write)."""
    parser = _parsed(text)
    if parser is None:
        return None
    repo_id = _repository_id(parser)
    blob = parser.get("repository", "key", fallback="").strip()
    if repo_id is None or not _KEY_BLOB.fullmatch(blob):
        return None
    return RepoKey(repo_id, blob)


def read_text(path: str | Path) -> str | None:
    """The `config` text of the repository at `path`; None when it is missing or is no
    config borg wrote (not a regular file, larger than borg writes, unreadable)."""
    try:
        return read_regular(Path(path, "config"), MAX_CONFIG_BYTES)
    except RepositoryError:
        return None


def read_key(path: str | Path) -> RepoKey | None:
    """The key of the borg 1.x repository at `path`, or None (see parse_key)."""
    text = read_text(path)
    return parse_key(text) if text is not None else None
