"""The authorized-keys cache as sshd reads it: every line of the file counts.

sshd tries each line of `<state_dir>/authorized_keys/<user>` in turn and accepts a key from
any of them; a plan that shows one line per key name must not hide a second line carrying
the same name, or a file sshd would follow through a symlink."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import hive, requires_root, write_config

pytestmark = requires_root


def config(tmp_path: Path, pubkeys: dict[str, str], repos: str) -> Path:
    return write_config(tmp_path, f"""\
        owners: {{alice: {{}}}}
        keys:
          ka: {{owner: alice, public_key: {pubkeys['a']}}}
          kc: {{owner: alice, public_key: {pubkeys['c']}}}
        repositories:
        {repos}
        """)


def plan_shows_and_apply_restores(cfg: Path, keys: Path, wanted: str) -> None:
    """The plan sees the tampered file (exit 2, the file listed); apply writes `wanted`."""
    plan = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert f"~ authorized_keys {keys.name}" in plan.stdout, plan.stdout
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert keys.read_text() == wanted


@pytest.mark.parametrize("joint", ["\r", "\x1c", "\x85", "\u2028"])
def test_lines_end_where_sshd_ends_them(tmp_path: Path, pubkeys: dict[str, str],
                                        joint: str) -> None:
    """sshd ends a line at "\n" only: two of Hive's lines joined by another line break
    (Python's splitlines splits there) are one line to sshd, which then knows only the
    first key. The plan must see that file as changed, not as the two lines it wants."""
    cfg = config(tmp_path, pubkeys, "  laptop: {owner: alice, keys: [ka, kc]}")
    assert hive("apply", "-f", str(cfg)).returncode == 0
    keys = tmp_path / "state" / "authorized_keys" / "bh-laptop"
    wanted = keys.read_text()
    first, second = wanted.splitlines()
    keys.write_text(f"{first}{joint}{second}\n")
    plan_shows_and_apply_restores(cfg, keys, wanted)


def test_a_second_line_with_a_managed_name_is_not_hidden(tmp_path: Path,
                                                         pubkeys: dict[str, str]) -> None:
    cfg = config(tmp_path, pubkeys, "  laptop: {owner: alice, keys: [ka]}")
    assert hive("apply", "-f", str(cfg)).returncode == 0
    keys = tmp_path / "state" / "authorized_keys" / "bh-laptop"
    wanted = keys.read_text()
    other = wanted.replace(pubkeys["a"].split()[1], pubkeys["b"].split()[1])
    assert other != wanted
    keys.write_text(other + wanted)  # sshd accepts key b from the first line
    plan_shows_and_apply_restores(cfg, keys, wanted)


def test_a_symlink_in_the_cache_folder_is_seen(tmp_path: Path, pubkeys: dict[str, str]) -> None:
    """sshd opens <state_dir>/authorized_keys/%u following a symlink (StrictModes checks
    the folders of the real path), so a link there is keys for that user, and the folder
    is Hive's: a disabled repository's user must end up with no file at all."""
    cfg = config(tmp_path, pubkeys, "  laptop: {owner: alice, keys: [ka], mode: disabled}")
    assert hive("apply", "-f", str(cfg)).returncode == 0
    folder = tmp_path / "state" / "authorized_keys"
    assert not (folder / "bh-laptop").exists()
    planted = tmp_path / "state" / "planted"
    planted.write_text(f"{pubkeys['b']}\n")
    folder.mkdir(exist_ok=True)
    (folder / "bh-laptop").symlink_to(planted)
    plan = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "- authorized_keys bh-laptop" in plan.stdout, plan.stdout
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert not (folder / "bh-laptop").is_symlink() and planted.exists()
