"""How many values and how deep a hive.yaml may be: one bound for every parser of it
(schemas/yamlsource.py and its fast path, schemas/fastyaml.py)."""

from typing import Any

# A hive.yaml of 5,000 repositories holds ~130,000 values; forty times that is no config.
MAX_VALUES = 5_000_000
# hive.yaml is five levels deep (server.identity.ldap.url); anchors under `x-` add a few.
# A bound far below Python's recursion limit gives a located error instead of a crash.
MAX_DEPTH = 64


def count_values(data: object, limit: int) -> int:
    """How many values `data` holds (every mapping, list, key and scalar, as the parsers
    count), or limit + 1 once it holds more. The parsers bound one file; this bounds a
    file and all it includes together (schemas/loader.py), so a hundred small files of
    aliases expanding each other cannot add up to what one may not hold. Only mappings
    and lists are visited: 0.25 s for the 1.3 million values of 50,000 repositories."""
    count, stack = 1, [data]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            count += 2 * len(item)  # each key and its value
            inner: Any = item.values()
        elif type(item) is list:
            count += len(item)
            inner = item
        else:
            continue
        if count > limit:
            return limit + 1
        stack += [v for v in inner if type(v) is dict or type(v) is list]
    return count
