"""schemas/fastyaml.py builds exactly what PyYAML builds, or says it is not sure.

Differential: for every text here -- the example, generated fleets, the fuzz corpus of
tests/test_fuzz_hive_yaml.py and a list of YAML corner cases -- each fast tier either
raises Unsure or returns data equal, type for type and key order for key order, to both
the full node-tree path (yamlsource.parse_nodes) and `yaml.load` with libyaml's SafeLoader.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from conftest import ROOT
from test_fuzz_hive_yaml import mutants

from schemas import fastyaml, yamlsource

sys.path.insert(0, str(ROOT / "bench"))
from generate import generate

TIERS: dict[str, Callable[[str], Any]] = {"scan": fastyaml.scan,
                                          "events": fastyaml.from_events}


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down (1 == True == 1.0 in Python; not here),
    mappings in the same order; NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo == b.tzinfo
    return bool(a == b)


def compare(text: str) -> set[str]:
    """The tiers that were sure of `text`; fails when a sure tier differs from PyYAML."""
    sure = set()
    for name, tier in TIERS.items():
        try:
            fast = tier(text)
        except fastyaml.Unsure:
            continue
        sure.add(name)
        try:
            full = yamlsource.parse_nodes(text)
        except yamlsource.YamlSyntaxError as exc:
            pytest.fail(f"{name} read text the full path refuses ({exc.message}):\n{text}")
        assert not full.duplicates, f"{name} missed a duplicate key:\n{text}"
        assert same(fast, full.data), f"{name} differs from the full path:\n{text[:3000]}"
        reference = yaml.load(text, Loader=yaml.CSafeLoader)
        assert same(fast, reference), f"{name} differs from yaml.load:\n{text[:3000]}"
    return sure


def paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into `data`, and from each a few that leave it or confuse types."""
    found = [path, (*path, "nope"), (*path, 99), (*path, 0)]
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(paths(value, (*path, key)))
            if isinstance(key, bool | int) or key in ("1", "yes"):
                found.extend([(*path, str(key)), (*path, True), (*path, 1)])
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.extend(paths(value, (*path, i)))
    return found


def compare_positions(text: str) -> bool:
    """locate() from libyaml's events gives the node tree's mark for every path; False
    when the text has nothing to compare (not YAML, or events left to the node tree)."""
    try:
        full = yamlsource.parse_nodes(text)
    except yamlsource.YamlSyntaxError:
        return False
    if yamlsource._positions(text) is None:
        return False
    lazy = yamlsource.Document(full.data, None, [], text)
    everything = paths(full.data)
    for path in everything:
        for key in (False, True):
            assert lazy.locate(path, key=key) == full.locate(path, key=key), (path, text)
    # as the loader asks: some paths at once, then (rarely) one it did not name
    some = everything[::3]
    batched = yamlsource.Document(full.data, None, [], text)
    batched.prefetch(some)
    for path in [*some, *everything]:
        for key in (False, True):
            assert batched.locate(path, key=key) == full.locate(path, key=key), (path, text)
    return True


CORNERS = [
    # YAML 1.1 implicit types: bools, ints (octal, hex, binary, sexagesimal), floats, nulls
    *(f"a: {v}\n" for v in [
        "yes", "Yes", "YES", "no", "on", "Off", "y", "n", "true", "False", "TRUE", "tRue",
        "1", "-1", "+1", "0", "-0", "012", "09", "0o17", "0x1F", "0b101", "1_000", "190:20:30",
        "1:20", "1.5", "1.", ".5", "1e3", "1.0e+3", "1.0e3", "-.inf", ".Inf", ".NaN", ".nan",
        "6.8523015e+5", "685.230_15e+03", "~", "null", "Null", "NULL", "nUll",
        "9999999999999999999999", "9" * 5000, "2024-01-01", "2024-1-1", "2024-02-30",
        "2024-01-01T12:00:00Z", "2024-01-01 12:00:00", "2001-12-14t21:59:43.10-05:00",
        "2001-12-14 21:59:43.10 -5", "2024-01-01T25:00:00", "=", "<<", "<", "-", "--", "---",
        "...", ".", "-a", "-1x", "+x", "~x", "$HOME", "(x)", "x)", "a.b.c",
        # scalars, quotes and comments
        "x # c", "x#c", "x #c", "x  #  c", "'x' # c", "\"x\" # c", "x  ", "x  y", "'x'y",
        "\"\"", "''", "' '", "\" a \"", "'#'", "\"a\\\"b\"", "'it''s'", "\"\\x41\"", "é",
        "'é'", "\"é\"", "'\u2028'", "'\x85'", "'\ufeff'", "\"\t\"", "x:", "x:y", "x: y",
        "http://x.org/a#b", "a@b.org", "ssh-ed25519 AAAA+/= c@d", "%x", "@x", "`x`", ",x",
        "?x", ":x", "!x", "&x 1", "*x", "!!str 1", "!!binary aGk=", "! 1", "|\n  x",
        ">\n  x", "- 1", "'x", "\"x", "x]", "x}", "x,y", "x[0]", "{x}",
        # flow collections
        "[]", "[ ]", "[a,b]", "[a , b]", "[ a ]", "[a, 'b,c', \"d\"]", "[a, b,]", "[a b, c]",
        "[1, yes, ~, 2024-01-01, '1']", "[a: b]", "[a, [b]]", "[a, {b: c}]", "[-1]", "[.5]",
        "[?a]", "[a#b]", "[a #b]", "[a]x", "{}", "{ }", "{b: c}", "{b: c, d: 1}", "{b: c, b: d}",
        "{b: [c]}", "{a}", "{a: }", "{1: x, yes: y, ~: z}", "{a: 'x, y', b: \"}\"}",
        "{a:b}", "{a: b:c}", "[a, b", "{a: b", "it's", "say \"hi\"", "x: y", "[a, b]c",
        "~/x", "a: b", "a #", "a\\b", "\"a\\nb\"", "100%", "50%off", "a@", "a`b",
        "{a: 1}x", "[a]# c", "[a] # c", "'a' 'b'", "\"a\"\"b\"", "0:0", "1_2:3",
        "2024-01-01T12:00:00+01:00", "[2024-01-01T12:00:00Z]"]),
    "a : 1\n", "a-: 1\n", "a:b: 1\n", "a.b: 1\n", "_: 1\n", "A: 1\n", "On: 1\n",
    # keys and structure
    "yes: 1\n", "1: a\n", "1.5: a\n", "~: a\n", "null: a\n", "2024-01-01: a\n",
    "'a': 1\n", "a b: 1\n", "a: 1\na: 2\n", "a:\n  b: 1\n  b: 2\n", "<<: {a: 1}\n",
    "a: &x {b: 1}\nc: *x\n", "? a\n: b\n", "? [a]\n: b\n", "k" * 200 + ": 1\n",
    "k" * 1500 + ": 1\n", "a:\n  b: 1\n c: 2\n", "a: b\n  c\n", "a: b\n  c: d\n",
    "a:\n\n  b: 1\n", "a:\n# x\n  b: 1\n", "a:\n  b:\n    c:\nd: 1\n", "a:\n  b:\n  c: 1\n",
    "a:\n- 1\n", "a:\n  - 1\n", "a: 1\n  # deeper comment\nb: 2\n", "a: 1 # x\n",
    "a:\n    b: 1\n  c: 2\n", "  a: 1\n", "  a: 1\n  b: 2\n", "a: 1\r\nb: 2\r\n",
    "a:\tb\n", "a:\n\tb: 1\n", "--- \na: 1\n", "---\na: 1\n...\n", "a: 1\n---\nb: 2\n",
    "a: 1\n...\n", "\ufeffa: 1\n", "a: 1\n\ufeffb: 2\n", "# only a comment\n", "", "\n\n",
    "a", "[a]", "a: 1\nb", "a: 1\nb:", "a: 1\n b: 2\n", "%YAML 1.1\n---\na: 1\n",
    "a: 1 \n", "a:    \n", "a: # c\n  b: 1\n", "a: \x07\n", "a: '\x07'\n", "a: 'x\n  y'\n",
    "a: \"x\n  y\"\n", "a: x\n\n  y\n", "a: \u00e9t\u00e9\n", "a: 1\n\x85b: 2\n",
    "a: x\u2028b: 2\n", "a:\n  b: {c: 1}\n  d: [1, 2]\n", "x-defaults: &d {a: 1}\n",
    "".join(f"{'  ' * i}k{i}:\n" for i in range(70)) + "  " * 70 + "v: 1\n",
    "a: [" + "[" * 70 + "]" * 70 + "]\n",
]


@pytest.mark.parametrize("text", CORNERS, ids=range(len(CORNERS)))
def test_corner_cases_are_read_as_pyyaml_reads_them_or_left_alone(text: str) -> None:
    compare(text)
    compare_positions(text)


def test_positions_from_events_are_the_node_trees() -> None:
    example = (ROOT / "hive.yaml.example").read_text(encoding="utf-8")
    assert compare_positions(example)
    assert compare_positions(generate(40, 60, seed=7))
    assert sum(compare_positions(text) for text in CORNERS) > 60


def test_the_fast_tiers_read_every_generated_fleet_and_the_example() -> None:
    example = (ROOT / "hive.yaml.example").read_text(encoding="utf-8")
    assert compare(example) == {"events"}   # block sequences (its rules): not the scanner
    for repos, keys, seed in [(40, 60, 7), (300, 600, 1), (2000, 4000, 3)]:
        assert compare(generate(repos, keys, seed=seed)) == {"scan", "events"}


def test_the_corner_cases_reach_both_outcomes() -> None:
    """The list above must exercise the tiers: many read, many left alone."""
    outcomes = [compare(text) for text in CORNERS]
    for tier in TIERS:
        assert sum(tier in sure for sure in outcomes) > 60
        assert sum(tier not in sure for sure in outcomes) > 40


@pytest.mark.parametrize("source", ["example", "bench-fleet"])
def test_fuzzed_files_are_read_as_pyyaml_reads_them_or_left_alone(source: str) -> None:
    base = (ROOT / "hive.yaml.example").read_text(encoding="utf-8") if source == "example" \
        else generate(repos=40, keys=60, seed=7)
    counts = dict.fromkeys([*TIERS, "positions"], 0)
    rounds = 0
    for rounds, text in mutants(base, seed=11):
        for tier in compare(text):
            counts[tier] += 1
        if rounds % 4 == 0:
            counts["positions"] += compare_positions(text)
        if rounds >= 700:
            break
    assert rounds >= 700
    assert counts["events"] > 200, counts   # the comparison must not be vacuous
    assert counts["positions"] > 50, counts
    if source == "bench-fleet":
        assert counts["scan"] > 100, counts
