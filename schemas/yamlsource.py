"""YAML that remembers where every value came from.

Validation errors are only useful when they say *where*: `hive.yaml:42:7`. PyYAML drops
positions after construction, so this loader (like octoDNS's) keeps the line and column of
every mapping key and value and of every list item, and reports duplicate keys instead of
silently keeping the last one, which PyYAML would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

try:  # libyaml's parser is ~10x faster; positions still come from its nodes
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader


@dataclass(frozen=True)
class Mark:
    """A 1-based line and column in the source file."""

    line: int
    column: int


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class PosDict(dict):
    """A dict that knows where it, each key and each value stand in the file."""

    mark: Mark
    key_marks: dict[Any, Mark]
    value_marks: dict[Any, Mark]


class PosList(list):
    """A list that knows where it and each item stand in the file."""

    mark: Mark
    item_marks: list[Mark]


class DuplicateKey(Exception):
    pass


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Mark, str]] = []


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> PosDict:
    loader.flatten_mapping(node)
    result = PosDict()
    result.mark = _mark(node)
    result.key_marks = {}
    result.value_marks = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "found an unhashable key", key_node.start_mark) from None
        if key in result:
            loader.duplicates.append(
                (_mark(key_node), f"duplicate key {key!r} (first defined on line "
                                  f"{result.key_marks[key].line}); each name may appear once"))
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_marks[key] = _mark(key_node)
        result.value_marks[key] = _mark(value_node)
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> PosList:
    result = PosList(loader.construct_object(child, deep=True) for child in node.value)
    result.mark = _mark(node)
    result.item_marks = [_mark(child) for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class YamlSyntaxError(Exception):
    """The text is not YAML at all; carries the position the parser stopped at."""

    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def parse(text: str) -> tuple[Any, list[tuple[Mark, str]]]:
    """Parse YAML text into PosDict/PosList trees; return (data, duplicate-key problems)."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        raise YamlSyntaxError(where, f"YAML syntax: {message}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Mark(1, 1), f"YAML syntax: {exc}") from None
    finally:
        loader.dispose()
    return data, loader.duplicates


def locate(data: Any, path: tuple[Any, ...], *, key: bool = False) -> Mark:
    """Find the best position for a path of keys/indexes into parsed data.

    Walks as deep as the data allows; a path that leaves the data (a missing field) stops
    at the closest enclosing mapping, which is where the user has to add it. With `key`,
    the last step points at the key itself rather than its value (for bad names).
    """
    mark = getattr(data, "mark", Mark(1, 1))
    node = data
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, PosDict) and step in node:
            mark = (node.key_marks if (key and last) else node.value_marks)[step]
            node = node[step]
        elif isinstance(node, PosList) and isinstance(step, int) and 0 <= step < len(node):
            mark = node.item_marks[step]
            node = node[step]
        else:
            break
    return mark
