"""What Hive reads from a hive.yaml is what PyYAML reads: a differential test over random
documents made of the corner cases a reviewer could read one way and Hive another (tabs,
CR and CRLF, NEL and LINE SEPARATOR, BOM, YAML 1.1 scalars, quoted keys with escapes,
flow collections, anchors, merge keys, tags, directives, a second document)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import yaml

from schemas import yamlsource

KEYS = ["a", "r1", "yes", "no", "on", "1", "0x1F", "1_0", "1:20", "2024-01-01", "null",
        "true", "a.b", "a-b", "_x", "y", "0o17", "017", "1e3", "1.5", "x-a", "NO", "~",
        "'a'", '"a"', '"a\\tb"', "'a''b'", "<<", "? a", "&x a", "*x", "!!str a", "a b",
        "a#b", '"\\u2028"', '"a\\x41"']
VALUES = ["1", "-1", "+1", "0x1F", "0o17", "017", "1_000", "1:20:30", "1e3", "1.", ".5",
          ".inf", "-.inf", ".nan", "~", "null", "NULL", "yes", "No", "OFF", "y", "true",
          "2024-01-01", "2024-1-1", "2024-01-01 12:00:00", "2024-01-01T12:00:00Z",
          "2024-01-01t12:00:00.5+01:00", "foo", "foo bar", "foo:bar", "foo: bar", "foo #c",
          "foo#c", "-foo", "- foo", "--- x", "/p/a", "$x", "(x)", "a,b", "[a, b]", "[]",
          "{}", "{a: b}", "{a: 1, b: [x]}", "[a, [b]]", "[ 'a', \"b\" ]", "[a,b]", "'x'",
          "'it''s'", "\"a\\nb\"", "\"a\\\"b\"", "\"\\u2028\"", "'a\u2028b'", "\"a\u0085b\"",
          "'a\ufeffb'", "\"a\tb\"", "'a\u00a0b'", "'é'", "é", "&a x", "*a", "!!int 1",
          "!x y", "|", ">", "|-\n  t", "'a\n  b'", "foo\n  bar", "''", "{a: [1]}",
          "{'a': b}", "[a: b]", "{a}", "[a,]", "0b101", "1__0", "12:30", "-0", "09",
          "[-1]", "x\r", "\"#\"", "a  b", "'a'  # c", "%x", "@x", "`x`", "? x", ": x",
          "a:b:c", "..", "...", "-", "=", "<<", "*x", "{<<: {a: 1}}"]
SEPARATORS = [": ", ":  ", ":", ": \t", ":\t"]
BREAKS = ["\n", "\n", "\n", "\n", "\r\n", "\r", "\u2028", "\x85"]
EXTRA = ["", "  ", "# c", "\t", "---", "...", "- x", "  # c", "\ufeff", "%YAML 1.1",
         "x-a: &x {a: 1}", "m: {<<: *x, b: 2}"]


def document(rng: random.Random) -> str:
    lines: list[str] = []
    indents = [0]
    for _ in range(rng.randint(1, 7)):
        indent = rng.choice(indents)
        key = rng.choice(KEYS)
        if rng.random() < 0.25:
            lines.append(" " * indent + key + ":")
            deeper = indent + rng.choice([1, 2, 2, 4])
            indents = [i for i in indents if i <= indent] + [deeper]
            continue
        line = " " * indent + key + rng.choice(SEPARATORS) + rng.choice(VALUES)
        if rng.random() < 0.1:
            line += rng.choice([" # c", "# c", "  #\tc", " #é", " #\u2028x"])
        lines.append(line)
        if rng.random() < 0.05:
            lines.append(rng.choice(EXTRA))
    text = "".join(line + rng.choice(BREAKS) for line in lines)
    if rng.random() < 0.05:
        text = "\ufeff" + text
    return text


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 is not True, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return [repr(k) for k in a] == [repr(k) for k in b] and all(same(a[k], b[k])
                                                                    for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def pyyaml(loader: Any, text: str) -> tuple[bool, Any]:
    try:
        return True, yaml.load(text, Loader=loader)   # safe loaders only
    except Exception:   # PyYAML's own errors, and its ValueErrors ('1# c' as an int)
        return False, None


@pytest.mark.parametrize("seed", range(4))
def test_hive_reads_what_pyyaml_reads(seed: int) -> None:
    """Every document Hive accepts (without duplicate keys, which it refuses) gives the
    data libyaml's SafeLoader gives, and the data of PyYAML's pure-Python SafeLoader where
    that one reads it at all (it refuses some text libyaml reads, e.g. a tab after ':'):
    never a value of another type or another key."""
    rng = random.Random(seed)
    accepted = 0
    for _ in range(1500):
        text = document(rng)
        try:
            parsed = yamlsource.parse(text)
        except yamlsource.YamlSyntaxError:
            continue
        if parsed.duplicates:
            continue
        accepted += 1
        ok, data = pyyaml(yaml.CSafeLoader, text)
        assert ok and same(parsed.data, data), (text, parsed.data, data)
        ok, data = pyyaml(yaml.SafeLoader, text)
        assert not ok or same(parsed.data, data), (text, parsed.data, data)
    assert accepted > 300   # the generator still makes documents Hive reads
