"""The data of a plain hive.yaml, built fast, or "not sure" (then yamlsource parses it).

PyYAML's composer and resolver run in Python for every node: 12 s for a 23 MB hive.yaml
(50,000 repositories, 100,000 keys), where libyaml alone needs 2 s to emit its events and a
line-by-line scan of the same text 0.7 s. Positions are only needed when a problem is
reported, and yamlsource.Document builds the node tree from the text when it is asked for
one, so the data itself may come from anywhere that gives exactly what PyYAML gives.

Two tiers, each of which gives up (`Unsure`) rather than guess:

- `scan`: hive.yaml as people and generators write it -- block mappings indented with
  spaces, one `key: value` per line, values plain, single-line quoted without escapes, or
  one-line flow lists/mappings of such scalars -- read line by line with strict regular
  expressions. Anything else (block sequences, multi-line or escaped scalars, tags,
  anchors, tabs, non-ASCII outside quotes and comments, `---`, a duplicate key, ...) is
  Unsure.
- `from_events`: any YAML, built straight from libyaml's event stream. Tags, anchors and
  aliases, merge keys, complex keys, duplicate keys, more than one document and every
  error are Unsure, so the full path reports them exactly as before.

Both type plain scalars with PyYAML's own implicit resolver and SafeConstructor (YAML 1.1:
yes/no/on/off, 0o17, 0x1F, 1:20, .inf, ~, dates and times), so the values and their types
are the ones `yaml.load` makes; tests/test_fastyaml.py compares the three on the example,
generated fleets, the fuzz corpus and a list of corner cases.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

# the bounds of every parser (schemas/yamllimits.py): past them the full path says why
from schemas.yamllimits import MAX_DEPTH, MAX_VALUES

try:
    _Parser: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Parser = yaml.SafeLoader

_STR = "tag:yaml.org,2002:str"
# The implicit tags a plain scalar may resolve to here; `<<` (merge), `=` (value) and
# anything a later PyYAML adds are Unsure.
_TYPED = frozenset(f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float",
                                                      "timestamp"))
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
# First characters for which the resolver has a rule; a plain scalar starting with any
# other character is text (unless a wildcard rule exists: then every scalar is asked).
_RULES = Resolver.yaml_implicit_resolvers


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


_MAYBE_TYPED: Any = _Everything() if None in _RULES else frozenset(k for k in _RULES if k)



class Unsure(Exception):
    """This text is not one the fast builder can read exactly as PyYAML would."""


def typed(value: str, memo: dict[str, Any]) -> Any:
    """A plain scalar as PyYAML makes it: its implicit tag, then SafeConstructor."""
    if value and value[0] not in _MAYBE_TYPED:
        return value
    try:
        return memo[value]
    except KeyError:
        pass
    tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
    if tag == _STR:
        result: Any = value
    elif tag in _TYPED:
        try:
            result = _CONSTRUCTOR.yaml_constructors[tag](
                _CONSTRUCTOR, yaml.ScalarNode(tag, value))
        except Exception:   # 2024-02-30, a 5,000-digit int: the full path words it
            raise Unsure from None
    else:
        raise Unsure
    memo[value] = result
    return result


# --- tier 1: the line scanner ---------------------------------------------------------------

def _chars(excluded: str) -> str:
    """A regex class of printable ASCII but space and `excluded`."""
    return "[" + "".join(re.escape(chr(c)) for c in range(0x21, 0x7F)
                         if chr(c) not in excluded) + "]"


# Text libyaml reads as it is inside quotes and comments: printable, no line break in any
# YAML 1.1 sense (NEL, LS, PS) and no BOM (libyaml skips one at the start of a line).
_TEXT = "[ -~\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
_KEY = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}"   # libyaml: a simple key is < 1024 chars
_DQ = r'"(?:(?![\\"])' + _TEXT + ')*"'
_SQ = "'(?:(?!')" + _TEXT + ")*'"
# Plain scalars: never starting with an indicator; in block context ':' only before a
# non-space, never '#'; in flow context none of , [ ] { } : # ? ' " either.
_FIRST = r"(?:[A-Za-z0-9_./~+$(]|-(?=[!-~]))"
_BLOCK_CHAR = _chars("#:")
_BLOCK_WORD = f"{_BLOCK_CHAR}+(?::{_BLOCK_CHAR}+)*"
_PLAIN_BLOCK = f"{_FIRST}{_BLOCK_CHAR}*(?::{_BLOCK_CHAR}+)*(?: +{_BLOCK_WORD})*"
_FLOW_CHAR = _chars(",[]{}#:?'\"")
_FIRST_FLOW = r"[A-Za-z0-9_./~+$(]"
_PLAIN_FLOW = f"{_FIRST_FLOW}{_FLOW_CHAR}*(?: +{_FLOW_CHAR}+)*"
_ITEM = f"(?:{_DQ}|{_SQ}|{_PLAIN_FLOW})"
_PAIR = f"{_KEY}: +{_ITEM}"
_FLOW_SEQ = rf"\[ *(?:{_ITEM}(?: *, *{_ITEM})*)? *\]"
_FLOW_MAP = rf"\{{ *(?:{_PAIR}(?: *, *{_PAIR})*)? *\}}"
# Groups: 1 indentation, 2 key, then the value: 3 plain, 4 flow list, 5 flow mapping,
# 6 double-quoted, 7 single-quoted (m.lastindex says which; 2 means none).
_LINE = re.compile(
    rf"( *)({_KEY}):"
    rf"(?: +(?:({_PLAIN_BLOCK})|({_FLOW_SEQ})|({_FLOW_MAP})|({_DQ})|({_SQ})))?"
    rf"(?: +#{_TEXT}*| *)")
_PLAIN, _SEQ, _MAP, _DQUOTED, _SQUOTED = 3, 4, 5, 6, 7
_COMMENT = re.compile(rf" *(?:#{_TEXT}*)?")
_TOKEN = re.compile(rf"({_KEY}): +|\"((?:(?![\\\\\"]){_TEXT})*)\"|'((?:(?!'){_TEXT})*)'"
                    rf"|({_PLAIN_FLOW})")


def _flow(inner: str, mapping: bool, memo: dict[str, Any]) -> Any:
    """The items of a one-line flow list or mapping already matched by _LINE."""
    if not mapping and "'" not in inner and '"' not in inner:
        words = inner.split(",")
        if len(words) == 1 and not words[0].strip():
            return []
        maybe = _MAYBE_TYPED
        return [w if w[0] not in maybe else typed(w, memo)
                for w in map(str.strip, words)]   # _LINE let only spaces around them
    items: list[Any] = []
    for i, m in enumerate(_TOKEN.finditer(inner)):
        key, dq, sq, plain = m.groups()
        if (key is not None) != (mapping and i % 2 == 0):
            raise Unsure   # not key, value, key, value... as _LINE said: never guess
        if key is not None:
            items.append(typed(key, memo))
        elif plain is not None:
            items.append(typed(plain, memo))
        else:
            items.append(dq if dq is not None else sq)
    if not mapping:
        return items
    if len(items) % 2:
        raise Unsure
    result: dict[Any, Any] = {}
    for i in range(0, len(items), 2):
        if items[i] in result:
            raise Unsure   # a duplicate: the full path reports it
        result[items[i]] = items[i + 1]
    return result


def scan(text: str) -> dict[Any, Any]:
    """The data of `text` when every line is in the plain subset; else Unsure."""
    memo: dict[str, Any] = {}
    root: dict[Any, Any] = {}
    levels = [0]                 # indentation of each open mapping
    maps = [root]
    level, here = 0, root        # the innermost open mapping
    pending: tuple[dict[Any, Any], Any, int] | None = None   # a `key:` awaiting children
    match = _LINE.fullmatch
    maybe = _MAYBE_TYPED
    lines = text.split("\n")
    values = 2 * len(lines)      # a key and a value per line, and what flows hold
    if values > MAX_VALUES:
        raise Unsure
    for line in lines:
        m = match(line)
        if m is None:
            if _COMMENT.fullmatch(line):
                continue
            raise Unsure
        indent = m.end(1)
        if pending is not None:
            parent, name, above = pending
            pending = None
            if indent > above:
                if len(maps) >= MAX_DEPTH:
                    raise Unsure
                here = parent[name] = {}
                level = indent
                levels.append(indent)
                maps.append(here)
        if indent != level:
            while levels[-1] > indent:
                levels.pop()
                maps.pop()
            if levels[-1] != indent:
                raise Unsure   # between two levels, or deeper after a scalar (continued)
            level, here = indent, maps[-1]
        key = m.group(2)
        if key[0] in maybe:
            known = memo.get(key)
            key = known if known is not None else typed(key, memo)
        if key in here:
            raise Unsure
        kind = m.lastindex
        if kind == _PLAIN:
            value = m.group(_PLAIN)
            here[key] = value if value[0] not in maybe else typed(value, memo)
        elif kind == _SEQ:
            items = here[key] = _flow(m.group(_SEQ)[1:-1], False, memo)
            values += len(items)
        elif kind == _MAP:
            pairs = here[key] = _flow(m.group(_MAP)[1:-1], True, memo)
            values += 2 * len(pairs)
        elif kind in (_DQUOTED, _SQUOTED):
            here[key] = m.group(kind)[1:-1]
        else:
            here[key] = None
            pending = (here, key, indent)
        if values > MAX_VALUES:
            raise Unsure
    if not root:
        raise Unsure   # no content: YAML says null, or it is something else entirely
    return root


# --- tier 2: libyaml's events ---------------------------------------------------------------

_Scalar = yaml.ScalarEvent
_MapStart = yaml.MappingStartEvent
_SeqStart = yaml.SequenceStartEvent
_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_NOKEY = object()


def from_events(text: str) -> Any:
    """The data of `text` built from libyaml's events; Unsure for anything but plain
    mappings, lists and untagged scalars in a single document, and for any error."""
    parser = _Parser(text)
    try:
        return _from_events(parser.get_event)
    except yaml.YAMLError:
        raise Unsure from None
    finally:
        parser.dispose()


def _from_events(get: Any) -> Any:
    memo: dict[str, Any] = {}
    stack: list[Any] = []        # the open containers, innermost last
    keys: list[Any] = []         # per open container: the pending key (_NOKEY: none yet)
    current: Any = None
    key: Any = _NOKEY
    root: Any = _NOKEY
    values = 0
    if type(get()) is not yaml.StreamStartEvent:
        raise Unsure
    event = get()
    if type(event) is yaml.StreamEndEvent:
        return None
    if type(event) is not yaml.DocumentStartEvent:
        raise Unsure
    while True:
        event = get()
        kind = type(event)
        values += 1
        if kind is _Scalar:
            if event.anchor is not None or event.tag is not None:
                raise Unsure
            value = typed(event.value, memo) if event.implicit[0] else event.value
        elif kind is _MapStart or kind is _SeqStart:
            if event.anchor is not None or event.tag is not None or len(stack) >= MAX_DEPTH:
                raise Unsure
            if type(current) is dict and key is _NOKEY:
                raise Unsure   # a list or mapping as a key
            value = {} if kind is _MapStart else []
        elif kind in _ENDS:
            value = current
            if stack:
                current = stack.pop()
                key = keys.pop()
            else:
                current = None
            if current is None:
                root = value
                break
            if type(current) is dict:
                current[key] = value
                key = _NOKEY
            else:
                current.append(value)
            continue
        else:
            raise Unsure   # an alias, or anything unforeseen
        if values > MAX_VALUES:
            raise Unsure
        if current is None:
            if kind is _Scalar:
                root = value
                break
        elif type(current) is dict:
            if key is _NOKEY:
                if value in current:
                    raise Unsure   # a duplicate: the full path reports it
                key = value
                continue
            if kind is _Scalar:
                current[key] = value
                key = _NOKEY
                continue
        elif kind is _Scalar:
            current.append(value)
            continue
        if kind is not _Scalar:   # open a container: it is placed when it ends
            if current is not None:
                stack.append(current)
                keys.append(key)
            current = value
            key = _NOKEY
    if type(get()) is not yaml.DocumentEndEvent or type(get()) is not yaml.StreamEndEvent:
        raise Unsure   # a second document: the full path says so
    return root
