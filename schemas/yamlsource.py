"""YAML that can say where every value came from.

Validation errors are only useful when they say *where*: `hive.yaml:42:7`. PyYAML drops
positions once it builds Python objects, so this loader keeps libyaml's node tree beside
the data and finds a position only when a problem needs one (like octoDNS's loader, but
without paying for 150,000 positions when the file is fine). It also reports duplicate keys,
where PyYAML would silently keep the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml

try:  # libyaml's parser is ~10x faster; positions still come from its nodes
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
# A hive.yaml of 5,000 repositories holds ~130,000 values; forty times that is no config.
MAX_VALUES = 5_000_000


class Mark(NamedTuple):
    """A 1-based line and column in the source file."""

    line: int
    column: int


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


@dataclass
class Document:
    """Parsed data plus the node tree it came from, to locate problems later."""

    data: Any
    root: yaml.Node | None
    duplicates: list[tuple[Mark, str]]
    #: The source, when `data` came from a cache: the node tree is built on first locate().
    text: str | None = None

    def locate(self, path: tuple[Any, ...], *, key: bool = False) -> Mark:
        """The best position for a path of keys/indexes into the data.

        Walks as deep as the file allows; a path that leaves it (a missing field) stops at
        the closest enclosing mapping, which is where the user has to add it. With `key`,
        the last step points at the key itself rather than its value (for bad names).
        """
        if self.root is None and self.text is not None:
            self.root = parse(self.text).root
        node = self.root
        if node is None:
            return Mark(1, 1)
        mark = _mark(node)
        for i, step in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, yaml.MappingNode):
                # The first occurrence: duplicates were dropped when the data was built.
                pair = next(((k, v) for k, v in node.value
                             if isinstance(k, yaml.ScalarNode) and _same_key(k, step)), None)
                if pair is None:
                    break
                mark = _mark(pair[0] if (key and last) else pair[1])
                node = pair[1]
            elif isinstance(node, yaml.SequenceNode) and type(step) is int \
                    and 0 <= step < len(node.value):
                node = node.value[step]
                mark = _mark(node)
            else:
                break
        return mark


def _same_key(node: yaml.ScalarNode, step: Any) -> bool:
    if node.tag == _STR:
        return node.value == step
    try:  # `yes:` is the key True, `1:` the key 1: compare what YAML made of the text
        value = yaml.safe_load(node.value)
    except yaml.YAMLError:
        return False
    return value == step and type(value) is type(step)


class _Builder:
    """Turns libyaml's node tree into plain dicts, lists and scalars.

    One direct recursion instead of PyYAML's generic constructor, because a hive.yaml with
    5,000 repositories has ~130,000 nodes: plain strings take the fast path, every other
    scalar (int, bool, date, null) and any explicit tag goes through PyYAML's own rules.
    """

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.duplicates: list[tuple[Mark, str]] = []
        self.budget = MAX_VALUES

    def build(self, node: yaml.Node) -> Any:
        self.budget -= 1
        if self.budget < 0:  # aliases of aliases ("billion laughs") expand without end
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_VALUES:,} values: are aliases (*name) "
                "expanding each other?", node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value
            return self.loader.construct_object(node, deep=True)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            return self._mapping(node)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            return [self.build(child) for child in node.value]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode) -> dict[Any, Any]:
        explicit = {id(key) for key, _ in node.value}
        if any(key.tag == _MERGE for key, _ in node.value):
            self.loader.flatten_mapping(node)  # merged pairs first, then the explicit ones
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        merged: set[Any] = set()
        for key_node, value_node in node.value:
            key = self.build(key_node)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found an unhashable key", key_node.start_mark) from None
            if key in result and (key in merged or id(key_node) not in explicit):
                merged.discard(key)  # `<<:` gives defaults that later keys may override
            elif key in result:
                self.duplicates.append(
                    (_mark(key_node), f"duplicate key {key!r} (first defined on line "
                                      f"{first_line[key]}); each name may appear once"))
                continue
            result[key] = self.build(value_node)
            first_line[key] = key_node.start_mark.line + 1
            if id(key_node) not in explicit:
                merged.add(key)
        return result


class YamlSyntaxError(Exception):
    """The text is not YAML at all; carries the position the parser stopped at."""

    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def parse(text: str) -> Document:
    """Parse YAML text; duplicate keys are reported in the Document, not raised."""
    loader = _BaseLoader(text)
    try:
        root = loader.get_single_node()
        builder = _Builder(loader)
        data = builder.build(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        raise YamlSyntaxError(where, f"YAML syntax: {message}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise YamlSyntaxError(Mark(1, 1), f"YAML syntax: {exc}") from None
    finally:
        loader.dispose()
    return Document(data, root, builder.duplicates)
