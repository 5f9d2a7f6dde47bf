"""The authorized-keys cache as sshd reads it: every line of the file counts.

sshd tries each line of `<state_dir>/authorized_keys/<user>` in turn and accepts a key from
any of them; a plan that shows one line per key name must not hide a second line carrying
the same name, or a file sshd would follow through a symlink."""

from __future__ import annotations

from pathlib import Path

from conftest import hive, requires_root, write_config

pytestmark = requires_root


def config(tmp_path: Path, pubkeys: dict[str, str], repos: str) -> Path:
    return write_config(tmp_path, f"""\
        owners: {{alice: {{}}}}
        keys:
          ka: {{owner: alice, public_key: {pubkeys['a']}}}
        repositories:
        {repos}
        """)


def test_a_second_line_with_a_managed_name_is_not_hidden(tmp_path: Path,
                                                         pubkeys: dict[str, str]) -> None:
    cfg = config(tmp_path, pubkeys, "  laptop: {owner: alice, keys: [ka]}")
    assert hive("apply", "-f", str(cfg)).returncode == 0
    keys = tmp_path / "state" / "authorized_keys" / "bh-laptop"
    wanted = keys.read_text()
    other = wanted.replace(pubkeys["a"].split()[1], pubkeys["b"].split()[1])
    assert other != wanted
    keys.write_text(other + wanted)  # sshd accepts key b from the first line
    plan = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ authorized_keys bh-laptop" in plan.stdout
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert keys.read_text() == wanted


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
