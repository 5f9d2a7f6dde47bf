"""`hive authorized-keys`: the login path. Prints the cache, imports nothing heavy, and
trusts the cache only as sshd's StrictModes would: otherwise it prints nothing, says why
on stderr and exits 1 (sshd logs the failure and uses no keys).

The state folders live under a root-owned 0755 folder in /run (`sysroot`): below /tmp
(1777) every cache would rightly be refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import hive, requires_root, write_config

pytestmark = requires_root  # the rules are about root ownership

HEAVY = ("click", "pydantic", "yaml", "schemas", "reconciler", "json", "datetime", "apprise",
         "notifications", "duckdb")
LINE = 'restrict,command="borg serve" ssh-ed25519 AAAA hive:k\n'
REPO_UID = 20000  # a repository user's uid


@pytest.fixture
def cache(sysroot: Path) -> Path:
    """<sysroot>/state/authorized_keys/bh-r1, root-owned, 0755 folders and a 0644 file."""
    folder = sysroot / "state" / "authorized_keys"
    folder.mkdir(parents=True)
    for path in (folder.parent, folder):
        path.chmod(0o755)
    (folder / "bh-r1").write_text(LINE)
    (folder / "bh-r1").chmod(0o644)
    return sysroot / "state"


def keys(state: Path, user: str = "bh-r1") -> subprocess.CompletedProcess[str]:
    return hive("authorized-keys", "--state-dir", str(state), user, timeout=20)


def assert_refused(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Nothing printed, one line on stderr saying why, exit 1."""
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_prints_the_users_cache_file(cache: Path) -> None:
    result = keys(cache)
    assert (result.returncode, result.stdout, result.stderr) == (0, LINE, "")


@pytest.mark.parametrize("user", ["bh-nobody", "../authorized_keys/bh-r1", "BH-R1", "", "-x"])
def test_unknown_or_malformed_user_prints_nothing(cache: Path, user: str) -> None:
    result = keys(cache, user)
    assert (result.returncode, result.stdout) == (0, "")
    assert "Traceback" not in result.stderr


def test_missing_cache_prints_nothing(sysroot: Path) -> None:
    result = keys(sysroot / "absent")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# ------------------------------------------------------------------ what StrictModes refuses


def _chown(path: Path, uid: int) -> None:
    os.chown(path, uid, -1, follow_symlinks=False)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "folder owned by a repository user": (
        lambda s: _chown(s / "authorized_keys", REPO_UID), "owned by uid 20000, not root"),
    "folder mode 0777": (
        lambda s: (s / "authorized_keys").chmod(0o777), "group- or world-writable (mode 0777)"),
    "folder group-writable": (
        lambda s: (s / "authorized_keys").chmod(0o775), "group- or world-writable"),
    "state dir owned by a repository user": (
        lambda s: _chown(s, REPO_UID), "/state is owned by uid 20000"),
    "state dir world-writable": (
        lambda s: s.chmod(0o1777), "/state is group- or world-writable (mode 1777)"),
    "parent of the state dir world-writable": (
        lambda s: s.parent.chmod(0o777), "group- or world-writable (mode 0777)"),
    "cache file owned by another uid": (
        lambda s: _chown(s / "authorized_keys" / "bh-r1", REPO_UID), "owned by uid 20000"),
    "cache file world-writable": (
        lambda s: (s / "authorized_keys" / "bh-r1").chmod(0o666), "(mode 0666)"),
    "cache file group-writable": (
        lambda s: (s / "authorized_keys" / "bh-r1").chmod(0o664), "(mode 0664)"),
    "cache file is a folder": (
        lambda s: _replace(s / "authorized_keys" / "bh-r1", lambda p: p.mkdir(mode=0o755)),
        "is not a regular file"),
    "cache file is a FIFO": (
        lambda s: _replace(s / "authorized_keys" / "bh-r1", lambda p: os.mkfifo(p, 0o644)),
        "is not a regular file"),
    "cache file is a symlink": (
        lambda s: _replace(s / "authorized_keys" / "bh-r1",
                           lambda p: p.symlink_to(s / "planted")), "bh-r1 is a symlink"),
    "cache file too big": (
        lambda s: (s / "authorized_keys" / "bh-r1").write_bytes(LINE.encode() * 20000),
        "larger than 1048576 bytes"),
}


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


@pytest.mark.parametrize("case", CASES)
def test_a_cache_sshd_would_refuse_prints_nothing_and_says_why(cache: Path, case: str) -> None:
    (cache / "planted").write_text(LINE.replace("hive:k", "planted"))
    change, fragment = CASES[case]
    change(cache)
    started = time.monotonic()
    result = keys(cache)
    assert time.monotonic() - started < 10  # a FIFO must not hang the login
    assert_refused(result, fragment)


FOLDER_CASES = [case for case in CASES if not case.startswith("cache file")]


@pytest.mark.parametrize("case", [None, *FOLDER_CASES])
def test_plan_says_when_logins_would_refuse_the_cache(sysroot: Path, cache: Path,
                                                      case: str | None) -> None:
    """The same rules, asked by `hive plan` before anyone logs in (hive.login.cache_problem):
    a note naming the folder and why, and none for a cache sshd would read."""
    cfg = write_config(sysroot, "owners: {}\n")  # state_dir: ./state, which is `cache`
    if case is not None:
        change, fragment = CASES[case]
        change(cache)
    result = hive("plan", "-f", str(cfg))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if "logins will find no keys" in line]
    if case is None:
        assert notes == [], notes
    else:
        assert len(notes) == 1 and fragment in notes[0] and "/var/lib/hive" in notes[0], notes


def test_folder_symlinked_into_tmp_is_refused(cache: Path, tmp_path: Path) -> None:
    """The attack of issue 13: the folder replaced by a link to a copy somebody controls."""
    elsewhere = tmp_path / "authorized_keys"
    elsewhere.mkdir()
    (elsewhere / "bh-r1").write_text(LINE.replace("hive:k", "planted"))
    real = cache / "authorized_keys"
    (real / "bh-r1").unlink()
    real.rmdir()
    real.symlink_to(elsewhere)
    assert_refused(keys(cache), "/state/authorized_keys is a symlink or not a folder")


def test_state_dir_through_a_symlink_is_refused(cache: Path, sysroot: Path) -> None:
    """Even a link between root-owned folders: the walk never follows one (give the real
    path); sshd's own check would resolve it, this one does not have to guess."""
    link = sysroot / "link"
    link.symlink_to(cache)
    assert_refused(keys(link), "/link is a symlink or not a folder")
    assert keys(cache).stdout == LINE


def test_relative_or_dotted_state_dir_is_refused(cache: Path) -> None:
    assert_refused(keys(Path("state")), "is not an absolute path")
    assert_refused(keys(cache / ".." / "state"), "holds '..'")
    assert keys(cache / "." / ".").stdout == LINE


# ------------------------------------------------------------------ finding the state dir


def test_finds_state_dir_through_the_config_file(sysroot: Path, cache: Path) -> None:
    cfg = write_config(sysroot, "owners: {}\n")  # state_dir: ./state, relative to the file
    result = hive("authorized-keys", "-f", str(cfg), "bh-r1")
    assert result.stdout == LINE
    env = hive("authorized-keys", "bh-r1", env={"HIVE_CONFIG": str(cfg)})
    assert env.stdout == result.stdout


def test_config_without_a_findable_state_dir_denies(sysroot: Path) -> None:
    cfg = sysroot / "flow.yaml"
    cfg.write_text("version: 1\nserver: {name: x, state_dir: /var/lib/hive}\n")
    assert_refused(hive("authorized-keys", "-f", str(cfg), "bh-r1"), "use --state-dir")


def test_only_servers_own_state_dir_key_counts(tmp_path: Path) -> None:
    """A deeper `state_dir:` line may be text inside a block scalar (the full loader sees
    no key there): the login path must not read another folder than apply writes."""
    from hive.login import state_dir_from_config

    cfg = tmp_path / "hive.yaml"
    cfg.write_text("version: 1\nserver:\n  identity:\n    ldap:\n      base_dn: |-\n"
                   "        dc=x\n        state_dir: /var/lib/hive-old\n"
                   "  state_dir: /var/lib/hive\n")
    assert state_dir_from_config(str(cfg)) == "/var/lib/hive"
    cfg.write_text("server:\n  name: |\n    state_dir: /var/lib/hive-old\n")
    assert state_dir_from_config(str(cfg)) is None


def test_the_login_reader_takes_the_path_characters_the_file_format_allows() -> None:
    """hive/login.py cannot import the models (pydantic is far too slow for a login), so
    it holds its own copy of the characters a state_dir may hold: the same set."""
    from hive.login import _PATH_CHARS
    from schemas.models import _SAFE_PATH

    allowed = {chr(c) for c in range(32, 127) if _SAFE_PATH.fullmatch(chr(c))}
    assert allowed == _PATH_CHARS


# Text the full loader reads inside a quoted scalar or a flow collection that spans
# lines, but which a line-by-line reader takes for a `server:` section of its own.
HIDDEN_SERVER = {
    "double-quoted": 'owners:\n  alice:\n    description: "Alice\'s team\nserver:\n'
                     '  state_dir: ./old"\n',
    "single-quoted": "owners:\n  alice:\n    description: 'It''s ours\nserver:\n"
                     "  state_dir: ./old'\n",
    "anchored and quoted": 'owners:\n  alice:\n    description: &d "x\nserver:\n'
                           '  state_dir: ./old"\n',
}


@pytest.mark.parametrize("case", HIDDEN_SERVER)
def test_a_server_section_inside_a_quoted_text_is_not_the_one_apply_reads(
        sysroot: Path, cache: Path, case: str) -> None:
    """The loader reads the second `server:` (the first is text in a description), so
    apply writes ./state; the login path must not read ./old, which may hold a cache of
    keys since revoked: it finds no state_dir it can be sure of, and denies."""
    from schemas.loader import load

    old = sysroot / "old" / "authorized_keys"
    old.mkdir(parents=True)
    (old / "bh-r1").write_text(LINE.replace("hive:k", "revoked"))
    cfg = write_config(sysroot, "owners: {}\n")
    server = cfg.read_text().split("owners:")[0].removeprefix("version: 1\n")
    cfg.write_text("version: 1\n" + HIDDEN_SERVER[case] + server)
    assert load(cfg).server.state_dir == cache  # what apply writes
    result = hive("authorized-keys", "-f", str(cfg), "bh-r1")
    assert "revoked" not in result.stdout
    assert_refused(result, "use --state-dir")


def test_lines_a_yaml_reader_breaks_elsewhere_deny(tmp_path: Path) -> None:
    """A flow collection left open, or a line break YAML sees and a line reader does not
    (U+2028, U+0085): the login path cannot tell what follows, so it finds nothing."""
    from hive.login import state_dir_from_config

    cfg = tmp_path / "hive.yaml"
    for text in ("owners: {alice: {description: x,\nserver:\n  state_dir: /old}}\n",
                 "groups: [a,\nserver:\n  state_dir: /old]\n",
                 "server:\n  name: x\u2028  state_dir: /old\n  state_dir: /new\n"):
        cfg.write_text(text, encoding="utf-8")
        assert state_dir_from_config(str(cfg)) is None, text
    cfg.write_text("owners:\n  alice:\n    description: \"Alice's 'team' [x] {y}\"\n"
                   "    email: 'a@b.c' # it's\nserver:\n  state_dir: /new # \"x\n")
    assert state_dir_from_config(str(cfg)) == "/new"


def test_a_fifo_as_the_config_file_does_not_hang(sysroot: Path, cache: Path) -> None:
    fifo = sysroot / "hive.yaml"
    os.mkfifo(fifo)
    result = hive("authorized-keys", "-f", str(fifo), "bh-r1", timeout=10)
    assert_refused(result, "use --state-dir")


def test_symlinked_config_finds_the_same_state_dir_as_apply(sysroot: Path, cache: Path) -> None:
    """A relative state_dir is relative to the real file, as the full loader reads it."""
    cfg = write_config(sysroot, "owners: {}\n")
    link_dir = sysroot / "etc"
    link_dir.mkdir()
    (link_dir / "hive.yaml").symlink_to(cfg)
    result = hive("authorized-keys", "-f", str(link_dir / "hive.yaml"), "bh-r1")
    assert result.stdout == LINE


# ------------------------------------------------------------------ cost and help


def test_imports_nothing_heavy(cache: Path) -> None:
    """Measured, not timed: the modules the login path loads, from -X importtime."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "hive",
                             "authorized-keys", "--state-dir", str(cache), "bh-r1"],
                            capture_output=True, text=True, check=True)
    assert result.stdout == LINE
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "hive" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_help_teaches_the_sshd_lines() -> None:
    result = hive("authorized-keys", "--help")
    assert result.returncode == 0
    assert "AuthorizedKeysCommand" in result.stdout
