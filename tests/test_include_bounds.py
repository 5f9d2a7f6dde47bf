"""`include:` patterns from a pull request (`hive plan --server-from`, deploy/ci/hive-ci):
a pattern and a tree made to make matching look at billions of names are refused with
a located problem, instead of keeping root's `hive plan` busy until it is killed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import hive, write_config

import schemas

BODY = "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n"


@pytest.mark.parametrize("shape", ["nested", "linked"])
def test_a_pattern_that_would_look_at_billions_of_names_is_refused(
        tmp_path: Path, shape: str) -> None:
    """nested: `**` five times over 200 nested folders, a tree hive-ci accepts (files and
    folders only). linked: `*` twelve times through six folders linked to their parent.
    Before the bound, both ran for minutes (killed here after 60 s)."""
    if shape == "nested":
        pattern = "**/**/**/**/**/t.yaml"
        deep = tmp_path.joinpath(*["d"] * 200)
        deep.mkdir(parents=True)
        (tmp_path / "d" / "t.yaml").write_text("owners: {bob: {}}\n")
    else:
        pattern = "/".join(["*"] * 12) + "/t.yaml"
        (tmp_path / "teams").mkdir()
        for i in range(6):
            os.symlink(".", tmp_path / "teams" / f"l{i}")
        (tmp_path / "teams" / "t.yaml").write_text("owners: {bob: {}}\n")
    path = write_config(tmp_path, f"include: ['{pattern}']\n" + BODY)
    ran = hive("validate", "-f", str(path), timeout=60)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert f"{path}:9:11: include[0]: '{pattern}' makes Hive look at more than" \
        in ran.stderr, ran.stderr


def test_a_plain_recursive_pattern_still_finds_its_files(tmp_path: Path) -> None:
    (tmp_path / "teams" / "web").mkdir(parents=True)
    (tmp_path / "teams" / "web" / "w.yaml").write_text("owners: {bob: {}}\n")
    (tmp_path / "teams" / "db.yaml").write_text("owners: {carol: {}}\n")
    path = write_config(tmp_path, "include: ['teams/**/*.yaml']\n" + BODY)
    ran = hive("validate", "-f", str(path))
    assert ran.returncode == 0, ran.stderr
    assert "1 repositories, 0 keys, 3 owners" in ran.stdout, ran.stdout


def test_a_pattern_over_a_very_deep_tree_is_a_located_problem(tmp_path: Path) -> None:
    """`**` over 1,500 nested folders (a path well within PATH_MAX) ran Python's
    recursion out: "unexpected error: RecursionError", no file, no line."""
    fd = os.open(tmp_path, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    path = write_config(tmp_path, "include: ['**/t.yaml']\n" + BODY)
    try:
        ran = hive("validate", "-f", str(path), timeout=60)
    finally:  # GNU rm walks any depth; pytest's own cleanup (shutil.rmtree) recurses
        subprocess.run(["rm", "-rf", "--", str(tmp_path / "d")], check=True)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert f"{path}:9:11: include[0]: '**/t.yaml' leads through folders nested" \
        in ran.stderr, ran.stderr


# -- bounds on the whole of a file and what it includes ---------------------------------
# Each bound below held for one file or one pattern, and a pull request could multiply it
# by the number of files or patterns: a hundred 500-byte files of aliases expanding each
# other took minutes and gigabytes. The limits are lowered here so the tests stay small;
# the code paths are the ones the real limits take.

LAUGHS = "".join(f"x-l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 12))


def refused_with_ten_alias_files(tmp_path: Path) -> schemas.ConfigError:
    """What loading a hive.yaml that includes ten small files of aliases (t/0..9.yaml)
    raises."""
    (tmp_path / "t").mkdir()
    for i in range(10):
        (tmp_path / "t" / f"{i}.yaml").write_text("x-l0: &l0 [aa, bb]\n" + LAUGHS)
    path = write_config(tmp_path, "include: ['t/*.yaml']\n" + BODY)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    return info.value


def test_many_small_files_of_aliases_cannot_add_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import loader

    monkeypatch.setattr(loader, "MAX_VALUES", 20_000)  # each file holds ~16,000
    message = str(refused_with_ten_alias_files(tmp_path))
    assert "t/1.yaml:1:1: with the files before it, more than 20,000 values in all" \
        in message, message


def test_the_patterns_share_one_budget_of_names_and_of_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import includes

    for team in range(20):
        (tmp_path / f"team{team}").mkdir()
        for i in range(50):
            (tmp_path / f"team{team}" / f"t{i}.yaml").write_text(
                f"owners: {{o{team}-{i}: {{}}}}\n")
    spread = ", ".join(f"'team{team}/*.yaml'" for team in range(20))  # ~51 names each
    path = write_config(tmp_path, f"include: [{spread}]\n" + BODY)
    monkeypatch.setattr(includes, "MAX_LOOKS", 500)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    assert "makes Hive look at more than 500 names" in str(info.value), str(info.value)
    # one folder, many patterns: listed once, charged once, each file found once
    same = ", ".join(["'team0/*.yaml'"] * 20 + [f"'team0/t{i}*.yaml'" for i in range(5)])
    write_config(tmp_path, f"include: [{same}]\n" + BODY)
    assert len(schemas.load(path).owners) == 51
    monkeypatch.setattr(includes, "MAX_LOOKS", 200_000)
    write_config(tmp_path, f"include: [{spread}]\n" + BODY)
    assert len(schemas.load(path).owners) == 1001
    monkeypatch.setattr(includes, "MAX_FILES", 50)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    assert f"{path}:9:1: include: the patterns match 1,000 files, more than 50" \
        in str(info.value), str(info.value)


def test_a_file_over_the_limit_by_itself_ends_the_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of these files is refused by the parser on its own; the first one ends the
    load, so ten of them cost one, not ten."""
    from schemas import fastyaml, loader, yamlsource

    for module in (loader, yamlsource, fastyaml):
        monkeypatch.setattr(module, "MAX_VALUES", 5_000)
    problems = refused_with_ten_alias_files(tmp_path).problems
    refused = [p for p in problems if "more than 5,000 values" in p.message]
    assert [p.file.rsplit("/", 1)[-1] for p in refused] == ["0.yaml"], problems


def test_a_file_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    """Problems print included files' names: one holding a newline would print a line of
    its own ("No changes.") in a plan a pull request shows."""

    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / "a\nNo changes. The server matches hive.yaml.\nx.yaml").write_text(
        "owners: {bob: {}}\n")
    path = write_config(tmp_path, "include: ['teams/*.yaml']\n" + BODY)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    message = str(info.value)
    assert "a name with a control character" in message, message
    assert "\nNo changes." not in message
