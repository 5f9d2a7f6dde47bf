"""Random mutations of hive.yaml: every result validates or fails cleanly, at FILE:LINE:COL.

Starting from hive.yaml.example and a small fleet made by bench/generate.py, each round
changes the document the way a careless or hostile contributor could: scalars replaced by
dates, huge, negative or float numbers, nulls, lists, mappings, binary, sets, unicode,
control characters and long strings; keys renamed to dates, numbers or booleans, deleted,
added and duplicated; anchors and aliases; lines duplicated, dropped or cut. The invariant:
loading either succeeds or raises ConfigError whose every problem carries the file, a line
and a column; a file that loads is planned (and its status evaluated) without an
exception. The seed is fixed and each run is bounded in rounds and seconds, so a failure
reproduces; the failing text is printed.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, hive

import schemas
from hive import output
from reconciler import engine
from reconciler.inventory import InventoryError
from reconciler.targets import TargetError

sys.path.insert(0, str(ROOT / "bench"))
from generate import generate

SEED = 20261128
ROUNDS = 1500          # per source; the time bound below usually ends a run first
SECONDS = 5.0          # per source, in-process
LOCATED = re.compile(r"^hive\.yaml:(\d+):(\d+): ")


def sources() -> dict[str, str]:
    return {"example": (ROOT / "hive.yaml.example").read_text(encoding="utf-8"),
            "bench-fleet": generate(repos=40, keys=60, seed=7)}


# --- values and names a mutation puts in ----------------------------------------------------

def _values(rng: random.Random) -> list[Callable[[], Any]]:
    return [
        lambda: dt.date(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28)),
        lambda: dt.datetime(rng.choice([1, 1969, 2027, 8999, 9999]), 12, 31, 23,
                            tzinfo=dt.timezone(dt.timedelta(hours=rng.randint(-23, 23)))),
        lambda: dt.datetime(9999, 12, 31, 23),
        lambda: rng.choice([dt.date(1970, 1, 1), dt.date(8999, 12, 31), dt.date(2000, 2, 29)]),
        lambda: int("9" * rng.choice([10, 19, 20, 40, 400, 4000])),
        lambda: -rng.randint(1, 10**rng.randint(1, 30)),
        lambda: rng.choice([0, 1, 22, 999, 1000, 65535, 65536, 2**31 - 2, 2**31 - 1,
                            2**32 - 1, 2**63, 20000, 29999]),
        lambda: rng.choice([0.5, -1.5, 1e308, float("inf"), float("-inf"), float("nan"),
                            25000.0]),
        lambda: None, lambda: True, lambda: False,
        lambda: [], lambda: {}, lambda: ["a", 1, None], lambda: {"x": 1, "y": [1]},
        lambda: b"\x00\xff binary",
        lambda: {"a", "b"},
        lambda: "ünïcødé ☃ 𝄞 \u202e",
        lambda: "ctrl\x01\x07\x1b[31m\x7f",
        lambda: "line\nbreak",
        lambda: "x" * rng.choice([33, 300, 30_000]),
        lambda: rng.choice(["500G", "1.5T", "999P", "1000P", "9.5M", "10M", "0",
                            "9" * 30 + "P", "0" * 30 + "1G", "1.0000000000000000000001T"]),
        lambda: rng.choice(["26h", "3650d", "3651d", "0s", "9" * 30 + "w", "1w", "2 days"]),
        lambda: rng.choice(["9999-12-31T23:00:00-12:00", "2024-02-30", "0001-01-01",
                            "1969-12-31T23:59:59Z", "soon", "2027-06-30"]),
        lambda: rng.choice(["fe80::1%eth0", "10.0.0.0/8", "*", "!*", "a b", "x\"y",
                            "192.168.1.0/24", "*.example.org", "1.2.3.4/33"]),
        lambda: rng.choice(["borg", "import", "export", "disabled", "ldap", "files", "rw"]),
        lambda: rng.choice(["/bin/sh", "/usr/sbin/nologin", "../../etc", "/tmp/x y",
                            "relative/path", "/"]),
        lambda: rng.choice(["alice", "bob", "ops", "family", "web01", "alice-laptop",
                            "nobody", "root", "bh-x"]),
    ]


def _names(rng: random.Random) -> list[Callable[[], Any]]:
    return [
        lambda: dt.date(2024, 1, 1), lambda: rng.randint(-5, 10**6), lambda: True,
        lambda: None, lambda: 1.5, lambda: "UPPER", lambda: "../etc", lambda: "a" * 40,
        lambda: "ünï", lambda: "x-anchor", lambda: "password", lambda: "bind_password",
        lambda: rng.choice(["quota", "uid", "keys", "mode", "owner", "expires", "from",
                            "stale_after", "protected", "groups", "members", "identity",
                            "ldap", "backend", "uid_range", "ssh_port", "timeout",
                            "append_only_keys", "description", "email", "version",
                            "repositories", "server", "notify"]),
    ]


# --- walking and changing the data ------------------------------------------------------------

def _containers(data: Any, path: tuple[Any, ...] = (),
                seen: set[int] | None = None) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every list and mapping once; sharing can make the data a cycle (YAML: &a [*a])."""
    seen = set() if seen is None else seen
    if isinstance(data, (dict, list)) and id(data) not in seen:
        seen.add(id(data))
        yield path, data
        items = data.items() if isinstance(data, dict) else enumerate(data)
        for key, child in list(items):
            yield from _containers(child, (*path, key), seen)


def mutate_data(data: Any, rng: random.Random) -> Any:
    data = copy.deepcopy(data)
    values, names = _values(rng), _names(rng)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        found = list(_containers(data))
        if not found:
            return rng.choice(values)()
        _, node = rng.choice(found)
        op = rng.random()
        if isinstance(node, list):
            if node and op < 0.5:
                node[rng.randrange(len(node))] = rng.choice(values)()
            elif node and op < 0.7:
                del node[rng.randrange(len(node))]
            elif node and op < 0.8:
                node.append(node[rng.randrange(len(node))])  # a duplicate entry
            else:
                node.append(rng.choice(values)())
            continue
        if not node:
            node[rng.choice(names)()] = rng.choice(values)()
            continue
        key = rng.choice(list(node))
        if op < 0.45:
            node[key] = rng.choice(values)()
        elif op < 0.6:
            del node[key]
        elif op < 0.75:
            value = node.pop(key)
            try:
                node[rng.choice(names)()] = value
            except TypeError:
                node[key] = value
        elif op < 0.85:
            node[rng.choice(names)()] = rng.choice(values)()
        else:  # share a subtree: safe_dump writes it as an anchor and an alias
            _, other = rng.choice(found)
            node[key] = other if other is not node else rng.choice(values)()
    return data


class _Dumper(yaml.SafeDumper):
    """safe_dump, but sets and NaN-free floats are fine as they are; it must never refuse."""


def dump(data: Any, rng: random.Random) -> str:
    return yaml.dump(data, Dumper=_Dumper, allow_unicode=rng.random() < 0.5,
                     default_flow_style=rng.choice([False, None]), sort_keys=False,
                     width=rng.choice([80, 10**6]))


def mutate_text(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    if not lines:
        return text
    i = rng.randrange(len(lines))
    op = rng.random()
    if op < 0.3:
        lines.insert(i, lines[i])  # a duplicate key, or a duplicate list entry
    elif op < 0.45:
        del lines[i]
    elif op < 0.55:
        return text[:rng.randrange(len(text))]  # cut short
    elif op < 0.65:
        pos = rng.randrange(len(text))
        return text[:pos] + rng.choice(["\x00", "\x07", "\ufeff", "\t", "\r", "\x85",
                                        "\ud7ff", "{", "]", "&a ", "*a ", "!!binary ",
                                        "<<: *a\n", "? "]) + text[pos:]
    elif op < 0.8:
        indent = re.match(r"\s*", lines[i]).group(0)  # type: ignore[union-attr]
        lines.insert(i, rng.choice([
            f"{indent}x-bomb: &b [*b]\n", f"{indent}<<: {{owner: alice}}\n",
            f"{indent}2024-01-01: x\n", f"{indent}yes: 1\n", f"{indent}~: ~\n",
            f"{indent}? [a, b]\n{indent}: c\n", f"{indent}'': ''\n",
            f"{indent}k: !!python/object:os.system x\n", f"{indent}k: !custom x\n",
            f"{indent}k: {'[' * 80}{']' * 80}\n"]))
    else:
        lines[i] = re.sub(r":\s+(\S.*)$", lambda m: ": " + rng.choice(
            ["2024-01-01", "9" * 50, "-1", ".inf", "~", "[]", "{}", "0x1F", "1:20", "0o777",
             "!!binary aGVsbG8=", "!!set {a}", "*nope", "&a x", "|\n  text", '"\\x01"']),
            lines[i], count=1)
    return "".join(lines)


def mutants(text: str, seed: int) -> Iterator[tuple[int, str]]:
    rng = random.Random(seed)
    data = yaml.safe_load(text)
    for round_no in range(ROUNDS):
        choice = rng.random()
        if choice < 0.55:
            mutated = dump(mutate_data(data, rng), rng)
        elif choice < 0.85:
            mutated = mutate_text(text, rng)
        else:
            mutated = mutate_text(dump(mutate_data(data, rng), rng), rng)
        yield round_no, mutated


# --- the invariant --------------------------------------------------------------------------

def check_in_process(text: str, folder: Path) -> str:
    """'invalid', 'valid' or 'plan-error'; anything else is an exception (a failure)."""
    try:
        config = schemas.load_text(text, "hive.yaml", folder)
    except schemas.ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == "hive.yaml" and problem.line >= 1 and problem.column >= 1
            assert problem.message and "Traceback" not in problem.message
            assert LOCATED.match(str(problem)), str(problem)
            assert len(str(problem)) < 2000, str(problem)[:300]
        return "invalid"
    if config.server.identity.backend == "ldap":  # would dial the URL; validation is enough
        return "valid"
    try:
        planned = engine.make_plan(config)
    except (InventoryError, TargetError):
        return "plan-error"
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        output.print_plan(planned.plan, "fuzz")
        output.emit_plan(planned.plan)
    from watcher import status

    for repo_status in status.gather(config):
        assert repo_status.stale_after_seconds > 0
    return "plan-error" if planned.plan.errors else "valid"


@pytest.mark.parametrize("source", ["example", "bench-fleet"])
def test_mutated_hive_yaml_is_valid_or_a_located_error(tmp_path: Path, source: str) -> None:
    text = sources()[source]
    outcomes: dict[str, int] = {}
    start = time.monotonic()
    for round_no, mutated in mutants(text, SEED + len(source)):
        if time.monotonic() - start > SECONDS:
            break
        try:
            outcome = check_in_process(mutated, tmp_path)
        except Exception as exc:  # the finding: print what reproduces it
            pytest.fail(f"{source} round {round_no} (seed {SEED + len(source)}): "
                        f"{type(exc).__name__}: {str(exc)[:500]}\n--- hive.yaml ---\n"
                        f"{mutated[:4000]}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    rounds = sum(outcomes.values())
    print(f"{source}: {rounds} rounds, {outcomes}")
    assert rounds >= 20, outcomes  # the bound must still leave a real run
    assert outcomes.get("invalid", 0) > rounds // 3, outcomes  # the mutations do bite
    assert outcomes.get("valid", 0) + outcomes.get("plan-error", 0) > 0, outcomes


def test_mutated_files_through_the_command_line(tmp_path: Path) -> None:
    """The sources and a few mutants through the real `hive validate` (and `hive plan` when
    valid): exit 0 or 1, problems at FILE:LINE:COL, never a traceback or 'unexpected error'."""
    picked = []
    for source, text in sources().items():
        picked.append((source, -1, text))  # as it is: valid, and planned
        for n, mutated in mutants(text, SEED + 1):
            if n in (3, 11):
                picked.append((source, n, mutated))
            if n >= 11:
                break
    path = tmp_path / "hive.yaml"
    located = re.compile(rf"^{re.escape(str(path))}:\d+:\d+: ")
    for source, round_no, mutated in picked:
        path.write_text(mutated, encoding="utf-8", errors="surrogatepass")
        result = hive("validate", "-f", str(path), cwd=tmp_path)
        where = f"{source} round {round_no}:\n{result.stdout[-500:]}{result.stderr[-1500:]}"
        assert result.returncode in (0, 1), where
        assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr, \
            where
        if round_no == -1:
            assert result.returncode == 0, where
        if result.returncode == 1:
            problems = [line for line in result.stderr.splitlines()
                        if line and not line.startswith(f"{path}: ")]  # not the count line
            assert problems and all(located.match(line) for line in problems), where
            continue
        plan = hive("plan", "-f", str(path), cwd=tmp_path)
        where = f"{source} round {round_no}, plan:\n{plan.stdout[-500:]}{plan.stderr[-1500:]}"
        assert plan.returncode in (0, 1), where
        assert "Traceback" not in plan.stderr and "unexpected error" not in plan.stderr, where
        if round_no == -1:
            assert plan.returncode == 0, where
