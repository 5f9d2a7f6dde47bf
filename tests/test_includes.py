"""`include:`: the desired state over several files, every problem at its file:line:col.

The main file (written by `write_config`, server block on lines 1-8) includes team files;
each test checks what `hive validate`/`plan`/`apply` and the journal make of the split.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import hive, requires_root, write_config

import schemas

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9rRXaF a"
ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrsAxFVn9PPclOZg1k/6yW6CYdqDmWmp/VFQjW6VPXp b"

MAIN = "include: [teams/*.yaml]\nowners:\n  alice: {}\n"   # lines 9-11
TEAM_A = f"""\
owners:
  bob: {{}}
keys:
  bob-pc: {{owner: bob, public_key: {ED}}}
repositories:
  bob-pc: {{owner: bob, keys: [bob-pc]}}
"""
TEAM_B = """\
groups:
  family: {members: [alice, bob]}
repositories:
  photos: {owner: alice, groups: [family], keys: [bob-pc]}
"""


def layout(folder: Path, main: str = MAIN, **teams: str) -> Path:
    (folder / "teams").mkdir(exist_ok=True)
    for name, text in teams.items():
        (folder / "teams" / f"{name}.yaml").write_text(text)
    return write_config(folder, main)


def problems(path: Path) -> list[str]:
    try:
        schemas.load(path)
    except schemas.ConfigError as exc:
        return [str(p) for p in exc.problems]
    raise AssertionError("the files were valid")


def test_names_from_every_file_make_one_state(tmp_path: Path) -> None:
    config = schemas.load(layout(tmp_path, a=TEAM_A, b=TEAM_B))
    assert set(config.owners) == {"alice", "bob"}
    assert set(config.repositories) == {"bob-pc", "photos"}
    assert config.groups["family"].members == ["alice", "bob"]
    assert config.source_files == (str(tmp_path / "hive.yaml"),
                                   str(tmp_path / "teams/a.yaml"),
                                   str(tmp_path / "teams/b.yaml"))


def test_errors_name_the_included_file_line_and_column(tmp_path: Path) -> None:
    bad_b = TEAM_B.replace("keys: [bob-pc]", "keys: [bob-pc, nope]").replace(
        "owner: alice", "owner: carol")
    found = problems(layout(tmp_path, a=TEAM_A, b=bad_b))
    b = tmp_path / "teams/b.yaml"
    assert found == [
        f"{b}:4:19: repositories.photos.owner: unknown owner 'carol'; add it under 'owners:'",
        f"{b}:4:59: repositories.photos.keys[1]: unknown key 'nope'; add it under 'keys:'",
    ], found


def test_a_name_defined_in_two_files_names_both_places(tmp_path: Path) -> None:
    found = problems(layout(tmp_path, a=TEAM_A, b=TEAM_B + "  bob-pc: {owner: bob}\n"))
    main, a, b = tmp_path / "hive.yaml", tmp_path / "teams/a.yaml", tmp_path / "teams/b.yaml"
    assert f"{b}:5:3: repositories.bob-pc: repository 'bob-pc' is also defined in " \
           f"{a}:6:3; each name may appear once across all files" in found, found
    assert f"{a}:6:3: repositories.bob-pc: repository 'bob-pc' is also defined in " \
           f"{b}:5:3; each name may appear once across all files" in found, found
    # against the main file too
    found = problems(layout(tmp_path, a=TEAM_A.replace("  bob: {}", "  alice: {}\n  bob: {}"),
                            b=TEAM_B.replace("  bob-pc: {owner: bob}\n", "")))
    assert f"{a}:2:3: owners.alice: owner 'alice' is also defined in {main}:11:3; each " \
           "name may appear once across all files" in found, found
    assert f"{main}:11:3: owners.alice: owner 'alice' is also defined in {a}:2:3; each " \
           "name may appear once across all files" in found, found


@pytest.mark.parametrize(("text", "fragment"), [
    ("server: {name: x}\n", "'server' may only be in the main file"),
    ("version: 1\n", "'version' may only be in the main file"),
    ("include: ['*.yaml']\n", "'include' may only be in the main file"),
    ("repos: {}\n", "unknown section 'repos'"),
    ("repositories: [a, b]\n", "'repositories' must be a mapping of names"),
])
def test_an_included_file_holds_only_names(tmp_path: Path, text: str, fragment: str) -> None:
    found = problems(layout(tmp_path, a=TEAM_A, c=text))
    assert len(found) == 1 and found[0].startswith(f"{tmp_path / 'teams/c.yaml'}:1:1: "), found
    assert fragment in found[0], found


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("teams/none-*.yaml", "matches no file"),
    ("../elsewhere.yaml", "leaves the main file's folder"),
    ("/etc/hive/*.yaml", "leaves the main file's folder"),
    ("out/*.yaml", "a link that leaves the main file's folder"),
])
def test_include_patterns_stay_in_the_folder_and_find_something(
        tmp_path: Path, pattern: str, fragment: str) -> None:
    root = tmp_path / "config"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_text("owners: {mallory: {}}\n")
    (tmp_path / "elsewhere.yaml").write_text("owners: {mallory: {}}\n")
    (root / "out").symlink_to(outside)
    main = layout(root, f"include: [teams/*.yaml, '{pattern}']\nowners:\n  alice: {{}}\n",
                  a=TEAM_A)
    found = problems(main)
    assert len(found) == 1 and found[0].startswith(f"{main}:9:25: include[1]: "), found
    assert fragment in found[0], found


def test_yaml_errors_in_an_included_file_name_it(tmp_path: Path) -> None:
    found = problems(layout(tmp_path, a=TEAM_A, b="repositories:\n  x: {owner: alice\n"))
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'teams/b.yaml'}:3:1: YAML syntax"), found
    found = problems(layout(tmp_path, a=TEAM_A, b="owners:\n  zed: {}\n  zed: {}\n"))
    assert found == [f"{tmp_path / 'teams/b.yaml'}:3:3: duplicate key 'zed' (first defined "
                     "on line 2); each name may appear once"], found


def test_validate_cli_and_relative_names(tmp_path: Path) -> None:
    layout(tmp_path, a=TEAM_A, b=TEAM_B.replace("owner: alice", "owner: carol"))
    result = hive("validate", "-f", "hive.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("teams/b.yaml:4:19: repositories.photos.owner: "
                                    "unknown owner 'carol'"), result.stderr
    json_out = hive("validate", "-f", "hive.yaml", "-o", "json", cwd=tmp_path)
    records = [json.loads(line) for line in json_out.stdout.splitlines()]
    problem = next(r for r in records if r["type"] == "problem")
    assert (problem["file"], problem["line"], problem["column"]) == ("teams/b.yaml", 4, 19)


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.email=t@example.org",
                           "-c", "user.name=t", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@requires_root
def test_plan_apply_and_journal_with_includes(tmp_path: Path) -> None:
    cfg = layout(tmp_path, a=TEAM_A, b=TEAM_B)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "hive.yaml", "teams")
    git(tmp_path, "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "HEAD")
    plan = hive("plan", "-f", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert "+ account bh-bob-pc" in plan.stdout and "+ account bh-photos" in plan.stdout
    assert hive("apply", "-f", str(cfg)).returncode == 0
    journal = tmp_path / "state" / "journal.jsonl"
    start = json.loads(journal.read_text().splitlines()[0])
    assert start["commit"] == head
    assert start["files"] == [str(tmp_path / "teams/a.yaml"), str(tmp_path / "teams/b.yaml")]
    # one repository changed in one team file: planned, and the journal says +dirty
    (tmp_path / "teams/b.yaml").write_text(TEAM_B.replace("[bob-pc]}", "[bob-pc], quota: 10G}"))
    plan = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ authorized_keys bh-photos" in plan.stdout
    assert hive("apply", "-f", str(cfg)).returncode == 0
    starts = [json.loads(line) for line in journal.read_text().splitlines()
              if json.loads(line)["type"] == "start"]
    assert starts[-1]["commit"] == head + "+dirty"
    assert hive("plan", "-f", str(cfg), "--detailed-exitcode").returncode == 0


def test_plan_server_from_reads_the_proposals_includes(tmp_path: Path) -> None:
    """A proposal split over files is planned against the server's own server: section."""
    (tmp_path / "trusted").mkdir()
    trusted = write_config(tmp_path / "trusted", "owners: {}\n")
    proposal = tmp_path / "proposal"
    proposal.mkdir()
    cfg = layout(proposal, a=TEAM_A, b=TEAM_B)
    result = hive("plan", "-f", str(cfg), "--server-from", str(trusted))
    assert result.returncode == 0, result.stderr
    assert "+ account bh-bob-pc" in result.stdout and "+ account bh-photos" in result.stdout
    assert str(tmp_path / "trusted" / "repos" / "bh-photos") in result.stdout
    layout(proposal, a=TEAM_A, b=TEAM_B.replace("owner: alice", "owner: carol"))
    result = hive("plan", "-f", str(cfg), "--server-from", str(trusted))
    assert result.returncode == 1
    assert f"{proposal / 'teams/b.yaml'}:4:19: repositories.photos.owner" in result.stderr
