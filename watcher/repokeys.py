"""Keep every repository key `hive watch` and `hive stats` see, out of any client's reach.

An append-only key can still replace a borg 1.x repository's key (borgrepo/config.py says
how); with the key gone, so is every archive. So each key read (by `hive watch` when borg
writes `config`, by `hive stats` every hour) is copied to

    <state_dir>/repokeys/<repository>/<repository id>-<key digest>.key

root's, mode 0600, in folders only root may enter, in the format `borg key export`
writes. A copy is written once and never changed or removed by Hive, so whatever a
client later writes into `config`, every key the repository had when Hive looked is
still here; the owner puts one back with `borg key import URL FILE` (README, "What the
server enforces"). A new key beside an older one of the same repository id is a change,
which the caller reports: either the owner changed the passphrase, or a client that
should not have replaced it. So is a `config` that holds no key Hive can read where a key
was kept: `borg key import` stores whatever text it is given (no base64, nothing, more
than Hive reads), and every archive is then as unreadable as after any other replacement.

A client can replace the key as often as it likes, so at most MAX_KEPT copies are kept
for one repository: the first ones, which hold the key its archives were made with
(a passphrase change re-encrypts the same key). Beyond that nothing more is written, and
each try is an error (KeeperError), not another file in root's state_dir.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from borgrepo.config import RepoKey, parse_key, read_config, read_text
from reconciler.fsutil import atomic_write, untrusted_state_dir

FOLDER = "repokeys"
SUFFIX = ".key"
MAX_KEPT = 100   # copies of one repository's keys; its owner changes it a few times at most


class KeeperError(OSError):
    """The copies cannot be kept safely here; the message says why."""


@dataclass(frozen=True)
class Kept:
    """What keeping one repository's key did."""

    repository: str
    digest: str | None           # the key's (RepoKey.digest); None: none Hive can read
    copy: Path                   # the file holding this key (new or from an earlier run);
                                 # without one, the last kept key of the repository
    new: bool                    # written just now
    earlier: tuple[Path, ...]    # copies of the repository's other keys (same id)

    @property
    def changed(self) -> bool:
        """A key not seen before, beside another of the same repository: replaced since
        the last look (reported once: the next run finds this copy already kept)."""
        return self.new and bool(self.earlier)


def keys_folder(state_dir: Path) -> Path:
    return state_dir / FOLDER


def keep(state_dir: Path, repository: str, key: RepoKey) -> Kept:
    """Copy `key` of `repository` (a name hive.yaml allows: one path component) unless a
    copy of it is already kept."""
    problem = untrusted_state_dir(state_dir)
    if problem is not None:
        raise KeeperError(f"{problem} (it holds copies of repository keys)")
    folder = _private_folder(_private_folder(keys_folder(state_dir)) / repository)
    copy = folder / f"{key.repo_id}-{key.digest}{SUFFIX}"
    new = not copy.exists()
    if new:
        kept = len(_copies(folder))
        if kept >= MAX_KEPT:
            raise KeeperError(f"{folder} already holds {kept} keys of repository "
                              f"{repository}: a client keeps replacing its key, and Hive "
                              f"keeps no more than {MAX_KEPT} (the first ones are the keys "
                              "its archives were made with); see 'hive history'")
        atomic_write(copy, key.exported(), mode=0o600)
    earlier = tuple(sorted(
        p for p in _copies(folder, key.repo_id) if p.name != copy.name))
    return Kept(repository, key.digest, copy, new, earlier)


def keep_key_of(state_dir: Path, repository: str, path: str) -> Kept | None:
    """Keep the key in the `config` of the borg 1.x repository at `path`; None when it
    holds none (keyfile mode, no encryption, a file borg did not write) and none was kept
    before; a change without a copy when one was. OSError when the copy cannot be
    written safely (or MAX_KEPT are kept)."""
    text = read_text(path)
    key = parse_key(text) if text is not None else None
    if key is not None:
        return keep(state_dir, repository, key)
    # none Hive can read: a change where a key of this repository (of this id, when
    # config still names one) was kept; nothing is written
    repo_id = read_config(text)[1] if text is not None else None
    folder = keys_folder(state_dir) / repository
    earlier = tuple(sorted(_copies(folder, repo_id)))
    if not earlier:
        return None
    return Kept(repository, None, earlier[-1], True, earlier)


def _copies(folder: Path, repo_id: str | None = None) -> list[Path]:
    """The key copies in a repository's folder (of `repo_id` only, when given). Not
    Path.glob: a pattern per repository id compiles a regular expression each time, which
    made keeping an already kept key cost half a millisecond."""
    prefix = f"{repo_id}-" if repo_id else ""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [folder / name for name in names
            if name.endswith(SUFFIX) and name.startswith(prefix)]


def _private_folder(path: Path) -> Path:
    """`path` as a folder only this user may enter, made if missing; anything else there
    (a symlink, a file, a folder others own or may write) is refused, not used."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise KeeperError(f"{path} is not a folder; move it away so that Hive can keep "
                          "repository keys there")
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise KeeperError(f"{path} must belong to this user with mode 0700 (it holds "
                          f"copies of repository keys): chown and chmod 700 it")
    return path
