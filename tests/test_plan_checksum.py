"""Reviewed plans: `hive plan` prints a checksum of the plan; `hive apply --checksum SUM`
applies exactly that plan or nothing (exit 3), on a real (temporary) root."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import hive, requires_root, write_config

pytestmark = requires_root

BODY = """\
    owners: {alice: {}}
    keys:
      ka: {owner: alice, public_key: %s}
    repositories:
      laptop: {owner: alice, keys: [ka]}
    """


def _config(tmp_path: Path, pubkeys: dict[str, str]) -> Path:
    return write_config(tmp_path, BODY % pubkeys["a"])


def _text_checksum(stdout: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith("Plan checksum: ")]
    return line.removeprefix("Plan checksum: ")


def _records(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines()]


def test_plan_checksum_is_sha256_of_the_plans_json_and_stable(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = _config(tmp_path, pubkeys)
    text = hive("plan", "-f", str(cfg))
    assert text.returncode == 0, text.stderr
    records = _records(hive("plan", "-f", str(cfg), "-o", "json").stdout)
    summary = records[-1]
    assert summary["type"] == "summary"
    # Recomputed from what -o json shows: the changes in order and the errors.
    changes = [{k: v for k, v in r.items() if k != "type"} for r in records
               if r["type"] == "change"]
    errors = [r["message"] for r in records if r["type"] == "error"]
    assert len(changes) == summary["add"] > 0
    canonical = json.dumps({"changes": changes, "errors": errors}, sort_keys=True,
                           separators=(",", ":"))
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert summary["checksum"] == expected == _text_checksum(text.stdout)
    assert _text_checksum(hive("plan", "-f", str(cfg)).stdout) == expected  # stable
    # Another file, another plan, another checksum.
    other = cfg.read_text().replace("laptop: {owner: alice", "laptop2: {owner: alice")
    cfg.write_text(other)
    assert _text_checksum(hive("plan", "-f", str(cfg)).stdout) != expected


def test_apply_with_the_reviewed_checksum_applies(tmp_path: Path,
                                                   pubkeys: dict[str, str]) -> None:
    cfg = _config(tmp_path, pubkeys)
    reviewed = _text_checksum(hive("plan", "-f", str(cfg)).stdout)
    applied = hive("apply", "-f", str(cfg), "--checksum", reviewed, "--detailed-exitcode")
    assert applied.returncode == 2, applied.stdout + applied.stderr
    assert "Apply complete: 5 added" in applied.stdout
    assert (tmp_path / "repos" / "bh-laptop" / "laptop").is_dir()
    keys = (tmp_path / "state" / "authorized_keys" / "bh-laptop").read_text()
    assert keys.startswith("restrict,") and pubkeys["a"].split()[1] in keys
    # The empty plan has its own checksum, which an apply with nothing to do accepts.
    empty = _text_checksum(hive("plan", "-f", str(cfg)).stdout)
    assert empty != reviewed
    again = hive("apply", "-f", str(cfg), "--checksum", f"sha256:{empty.upper()}", "-o", "json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _records(again.stdout)[-1]["checksum"] == empty


def test_apply_refuses_when_the_file_changed_since_the_plan(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    """The pull request's plan was reviewed; main now holds another file: nothing applied."""
    cfg = _config(tmp_path, pubkeys)
    reviewed = _text_checksum(hive("plan", "-f", str(cfg)).stdout)
    cfg.write_text(cfg.read_text() + "  desktop: {owner: alice, keys: [ka]}\n")
    refused = hive("apply", "-f", str(cfg), "--checksum", reviewed)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "the plan differs from the reviewed one" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert "+ account bh-desktop" in refused.stdout      # the plan it would have applied
    assert not (tmp_path / "repos").exists()
    assert not (tmp_path / "extrausers").exists()
    assert not (tmp_path / "state" / "journal.jsonl").exists()
    assert not (tmp_path / "state" / "authorized_keys").exists()
    as_json = _records(hive("apply", "-f", str(cfg), "--checksum", reviewed, "-o",
                            "json").stdout)
    assert as_json[-2]["type"] == "error" and reviewed in as_json[-2]["message"]
    assert as_json[-1]["checksum"] != reviewed and as_json[-1]["errors"] == 1
    assert not (tmp_path / "repos").exists()


def test_apply_refuses_when_the_server_drifted_since_the_plan(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    """Same file, but someone changed the server after the review: the reviewed plan (no
    changes) is not what apply would do now, so it does nothing and exits 3."""
    cfg = _config(tmp_path, pubkeys)
    assert hive("apply", "-f", str(cfg)).returncode == 0
    reviewed = _text_checksum(hive("plan", "-f", str(cfg)).stdout)
    keys = tmp_path / "state" / "authorized_keys" / "bh-laptop"
    keys.unlink()
    refused = hive("apply", "-f", str(cfg), "--checksum", reviewed)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert not keys.exists()
    assert hive("apply", "-f", str(cfg)).returncode == 0     # without: it repairs
    assert keys.exists()


@pytest.mark.parametrize("bad", ["abc", "z" * 64, "0" * 63])
def test_a_malformed_checksum_is_a_usage_error(tmp_path: Path, pubkeys: dict[str, str],
                                               bad: str) -> None:
    cfg = _config(tmp_path, pubkeys)
    result = hive("apply", "-f", str(cfg), "--checksum", bad)
    assert result.returncode == 1
    assert "64 hex digits" in result.stderr
    assert not (tmp_path / "state").exists()
