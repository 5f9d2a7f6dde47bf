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

from schemas.memory import no_cycle_collection
from schemas.yamllimits import MAX_DEPTH, MAX_VALUES

try:  # libyaml's parser is ~10x faster; positions still come from its nodes
    _BaseLoader: Any = yaml.CSafeLoader  # (no common type with SafeLoader in the stubs)
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


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
    #: The source, when `data` came from a cache or the fast builder: positions are found
    #: on first locate().
    text: str | None = None
    #: Node positions from libyaml's events (see _positions); False: not made yet.
    positions: Any = False
    #: The paths `positions` was made for; None: every path.
    prefetched: set[tuple[Any, ...]] | None = None

    def prefetch(self, paths: list[tuple[Any, ...]]) -> None:
        """Find the positions of these paths in one pass, so that locating the problems of
        a 50,000-repository file builds neither the node tree nor every node's position."""
        if self.root is None and self.text is not None and self.positions is False:
            self.positions = _positions(self.text, paths)
            self.prefetched = set(paths)

    def locate(self, path: tuple[Any, ...], *, key: bool = False) -> Mark:
        """The best position for a path of keys/indexes into the data.

        Walks as deep as the file allows; a path that leaves it (a missing field) stops at
        the closest enclosing mapping, which is where the user has to add it. With `key`,
        the last step points at the key itself rather than its value (for bad names).
        """
        if self.root is None and self.text is not None:
            if self.positions is False or (self.prefetched is not None
                                           and self.positions is not None
                                           and path not in self.prefetched):
                self.positions = _positions(self.text)
                self.prefetched = None
            if self.positions is not None:
                return _walk(self.positions, path, key)
            self.root = parse_nodes(self.text).root
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


def _walk(node: Any, path: tuple[Any, ...], key: bool) -> Mark:
    """Document.locate over _positions' tree: the same walk, the same marks."""
    mark = Mark(node[0], node[1])
    for i, step in enumerate(path):
        children = node[2]
        if type(children) is dict:
            try:
                pair = children.get((type(step), step))
            except TypeError:   # unhashable: no key of the file can equal it
                pair = None
            if pair is None:
                break
            node = pair[0] if (key and i == len(path) - 1) else pair[1]
            mark = Mark(node[0], node[1])
            node = pair[1]
        elif type(children) is list and type(step) is int and 0 <= step < len(children):
            node = children[step]
            mark = Mark(node[0], node[1])
        else:
            break
    return mark


_NO_KEY = object()


def _positions(text: str, paths: list[tuple[Any, ...]] | None = None) -> Any:
    """The position of every node (or, given `paths`, of the nodes along them), as (line,
    column, children) with children a dict {(type, key): (key node, value node)} for a
    mapping, a list for a sequence and None for a scalar; None when the file has anything
    on the way this cannot mirror exactly (anchors, aliases, tags, merge keys, complex
    keys, a second document, an error): then locate() builds the node tree.

    The node tree of a 50,000-repository file takes 12 s to build (PyYAML's resolver runs
    in Python per node); this takes the time of libyaml's events. Keys are typed as
    PyYAML types them (fastyaml.typed), so `yes:` is found as True and `1:` as 1, the
    first of duplicate keys wins, and each mark is the start of the same event the
    composer would have made the node from.
    """
    from schemas import fastyaml  # (see parse)

    wanted: set[tuple[Any, ...]] | None = None
    if paths is not None:
        wanted = set()
        for path in paths:
            steps = tuple((type(step), step) for step in path)
            wanted.update(steps[:n] for n in range(len(steps) + 1))
    parser = _BaseLoader(text)
    get = parser.get_event
    memo: dict[str, Any] = {}
    scalar, starts = yaml.ScalarEvent, (yaml.MappingStartEvent, yaml.SequenceStartEvent)
    ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    # per open container: [children, pending key, key node, its path]
    stack: list[list[Any]] = []
    root = None
    try:
        while (event := get()) is not None:
            kind = type(event)
            if kind is scalar or kind in starts:
                if stack and type(stack[-1][0]) is dict and stack[-1][1] is _NO_KEY:
                    top = stack[-1]
                    if kind is not scalar or event.anchor is not None \
                            or event.tag is not None:
                        return None
                    top[1] = fastyaml.typed(event.value, memo) if event.implicit[0] \
                        else event.value
                    start = event.start_mark
                    top[2] = (start.line + 1, start.column + 1, None)
                    continue
                if stack:
                    top = stack[-1]
                    if type(top[0]) is dict:
                        step: tuple[Any, Any] = (type(top[1]), top[1])
                    else:
                        step = (int, len(top[0]))
                    where = (*top[3], step) if wanted is not None else ()
                    if (wanted is not None and where not in wanted) or \
                            (type(top[0]) is dict and step in top[0]):
                        top[1] = _NO_KEY   # not on the way to a problem, or a duplicate
                        if type(top[0]) is list:
                            top[0].append(None)
                        if kind is not scalar:
                            _skip(get, starts, ends)
                        continue
                elif root is not None:
                    return None
                if event.anchor is not None or event.tag is not None:
                    return None
                start = event.start_mark
                children: Any = None if kind is scalar else \
                    {} if kind is yaml.MappingStartEvent else []
                node = (start.line + 1, start.column + 1, children)
                if not stack:
                    root = node
                    where = ()
                elif type(stack[-1][0]) is dict:
                    top = stack[-1]
                    top[0][step] = (top[2], node)
                    top[1] = _NO_KEY
                else:
                    stack[-1][0].append(node)
                if kind is not scalar:
                    stack.append([children, _NO_KEY, None, where])
            elif kind in ends:
                stack.pop()
            elif kind is yaml.AliasEvent:
                return None
    except (yaml.YAMLError, fastyaml.Unsure):
        return None
    finally:
        parser.dispose()
    return root


def _skip(get: Any, starts: tuple[type, ...], ends: tuple[type, ...]) -> None:
    """Read past the rest of a mapping or sequence whose start was just read."""
    depth = 1
    while depth:
        kind = type(get())
        if kind in starts:
            depth += 1
        elif kind in ends:
            depth -= 1


def _same_key(node: yaml.ScalarNode, step: Any) -> bool:
    if node.tag == _STR:
        return node.value == step
    try:  # `yes:` is the key True, `1:` the key 1, `!!binary cjE=` b'r1': what YAML made of it
        value = yaml.constructor.SafeConstructor().construct_object(node, deep=True)
    except Exception:
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
        self.depth = 0

    def build(self, node: yaml.Node) -> Any:
        self.budget -= 1
        if self.budget < 0:  # aliases of aliases ("billion laughs") expand without end
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_VALUES:,} values: are aliases (*name) "
                "expanding each other?", node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value
            return self._construct(node)
        if self.depth >= MAX_DEPTH:
            raise _too_deep(node.start_mark)
        self.depth += 1
        try:
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
                return self._mapping(node)
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
                return [self.build(child) for child in node.value]
            return self._construct(node)
        finally:
            self.depth -= 1

    def _construct(self, node: yaml.Node) -> Any:
        """PyYAML's own rules for ints, dates, `!!binary`, `!!set`...; their failures
        (`2024-02-30`, `!!int x`, a 5,000-digit number) are ValueErrors, KeyErrors or
        AttributeErrors with no position: turn every one into an error at the node."""
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            text = node.value if isinstance(node, yaml.ScalarNode) else ""
            shown = f" {text[:40]!r}{'...' if len(text) > 40 else ''}" if text else ""
            reason = ("not a value of this type" if isinstance(exc, (KeyError, AttributeError))
                      else str(exc).split("; use sys.set_int_max_str_digits")[0][:200])
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value{shown} ({node.tag.rsplit(':', 1)[-1]}): "
                f"{reason}", node.start_mark) from None

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


def _too_deep(mark: Any) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(
        None, None, f"nested more than {MAX_DEPTH} levels deep, counting what aliases "
        "(*name) expand to; hive.yaml needs five",
        mark)


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before libyaml builds the node tree: its
    composer recurses in C, and 30,000 `[` overflow the C stack (a segfault, not an
    exception). The event stream needs no recursion and costs ~10% of composing."""
    loader = _BaseLoader(text)
    try:
        depth = 0
        while (event := loader.get_event()) is not None:
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(event.start_mark)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    finally:
        loader.dispose()


# Invisible characters that reorder how a line is displayed: U+202A..U+202E (embeddings and
# overrides) and U+2066..U+2069 (isolates). In a comment or a plain value they make the
# reviewer of a hive.yaml change read another text than the one Hive applies ("Trojan
# Source", CVE-2021-42574). str.find per character: free for an ASCII or Latin-1 text.
BIDI_CONTROLS = tuple(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def _refuse_bidi_controls(text: str) -> None:
    found = [i for i in (text.find(c) for c in BIDI_CONTROLS) if i >= 0]
    if not found:
        return
    at = min(found)
    before = text[:at]
    where = Mark(before.count("\n") + 1, at - (before.rfind("\n") + 1) + 1)
    raise YamlSyntaxError(where, f"the invisible character U+{ord(text[at]):04X} changes how "
                                 "this line is displayed, so a review of the file would "
                                 "show another text than the one Hive reads; remove it")


class YamlSyntaxError(Exception):
    """The text is not YAML at all; carries the position the parser stopped at."""

    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def parse(text: str) -> Document:
    """Parse YAML text; duplicate keys are reported in the Document, not raised.

    The data comes from schemas/fastyaml.py when it is sure to build exactly what PyYAML
    would (the node tree, for positions, is then built only if a problem needs one);
    anything it is not sure of -- and every error -- takes the full path below.
    """
    # Imported here: fastyaml compiles its patterns on import (50 ms), and a command whose
    # file is in the parse cache parses nothing.
    from schemas import fastyaml

    _refuse_bidi_controls(text)
    with no_cycle_collection():
        try:
            return Document(fastyaml.scan(text), None, [], text)
        except fastyaml.Unsure:
            pass
        try:
            return Document(fastyaml.from_events(text), None, [], text)
        except fastyaml.Unsure:
            pass
    return parse_nodes(text)


def parse_nodes(text: str) -> Document:
    """parse() through libyaml's node tree, which keeps every node's position."""
    loader = _BaseLoader(text)
    try:
        _check_depth(text)
        root = loader.get_single_node()
        builder = _Builder(loader)
        data = builder.build(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        kind = "YAML" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax"
        raise YamlSyntaxError(where, f"{kind}: {message}") from None
    except yaml.reader.ReaderError as exc:  # a control character: a position, not a mark
        before = text[:exc.position]
        where = Mark(before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlSyntaxError(where, f"YAML syntax: the control character U+{code:04X} is "
                                     "not allowed in YAML; remove it or write it as an escape "
                                     "in a double-quoted string") from None
    except RecursionError:  # not reached within MAX_DEPTH; kept so it can never escape
        raise YamlSyntaxError(Mark(1, 1), f"YAML: {_too_deep(None).problem}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Mark(1, 1), f"YAML syntax: {exc}") from None
    finally:
        loader.dispose()
    return Document(data, root, builder.duplicates)
