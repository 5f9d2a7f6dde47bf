"""`hive authorized-keys`: the login path. Prints the cache, imports nothing heavy, and
never fails loudly (no output, exit 0) when it cannot answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hive, write_config

HEAVY = ("click", "pydantic", "yaml", "schemas", "reconciler", "json", "datetime", "apprise",
         "notifications", "duckdb")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    folder = tmp_path / "state" / "authorized_keys"
    folder.mkdir(parents=True)
    (folder / "bh-r1").write_text('restrict,command="borg serve" ssh-ed25519 AAAA hive:k\n')
    return tmp_path / "state"


def test_prints_the_users_cache_file(cache: Path) -> None:
    result = hive("authorized-keys", "--state-dir", str(cache), "bh-r1")
    assert result.returncode == 0
    assert result.stdout == 'restrict,command="borg serve" ssh-ed25519 AAAA hive:k\n'


@pytest.mark.parametrize("user", ["bh-nobody", "../authorized_keys/bh-r1", "BH-R1", "", "-x"])
def test_unknown_or_malformed_user_prints_nothing(cache: Path, user: str) -> None:
    result = hive("authorized-keys", "--state-dir", str(cache), user)
    assert (result.returncode, result.stdout) == (0, "")
    assert "Traceback" not in result.stderr


def test_missing_cache_prints_nothing(tmp_path: Path) -> None:
    result = hive("authorized-keys", "--state-dir", str(tmp_path / "absent"), "bh-r1")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_symlinked_cache_file_is_not_followed(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("ssh-ed25519 AAAA planted\n")
    (cache / "authorized_keys" / "bh-r2").symlink_to(tmp_path / "secret")
    result = hive("authorized-keys", "--state-dir", str(cache), "bh-r2")
    assert (result.returncode, result.stdout) == (0, "")


def test_finds_state_dir_through_the_config_file(tmp_path: Path, cache: Path) -> None:
    cfg = write_config(tmp_path, "owners: {}\n")  # state_dir: ./state, relative to the file
    result = hive("authorized-keys", "-f", str(cfg), "bh-r1")
    assert result.stdout.endswith("hive:k\n")
    env = hive("authorized-keys", "bh-r1", env={"HIVE_CONFIG": str(cfg)})
    assert env.stdout == result.stdout


def test_config_without_a_findable_state_dir_denies(tmp_path: Path) -> None:
    cfg = tmp_path / "flow.yaml"
    cfg.write_text("version: 1\nserver: {name: x, state_dir: /var/lib/hive}\n")
    result = hive("authorized-keys", "-f", str(cfg), "bh-r1")
    assert (result.returncode, result.stdout) == (0, "")
    assert "use --state-dir" in result.stderr


def test_imports_nothing_heavy(cache: Path) -> None:
    """Measured, not timed: the modules the login path loads, from -X importtime."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "hive",
                             "authorized-keys", "--state-dir", str(cache), "bh-r1"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.endswith("hive:k\n")
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "hive" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_help_teaches_the_sshd_lines() -> None:
    result = hive("authorized-keys", "--help")
    assert result.returncode == 0
    assert "AuthorizedKeysCommand" in result.stdout


def test_symlinked_config_finds_the_same_state_dir_as_apply(tmp_path: Path, cache: Path) -> None:
    """A relative state_dir is relative to the real file, as the full loader reads it."""
    cfg = write_config(tmp_path, "owners: {}\n")
    link_dir = tmp_path / "etc"
    link_dir.mkdir()
    (link_dir / "hive.yaml").symlink_to(cfg)
    result = hive("authorized-keys", "-f", str(link_dir / "hive.yaml"), "bh-r1")
    assert result.stdout.endswith("hive:k\n")
