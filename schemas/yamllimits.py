"""How many values and how deep a hive.yaml may be: one bound for every parser of it
(schemas/yamlsource.py and its fast path, schemas/fastyaml.py)."""

# A hive.yaml of 5,000 repositories holds ~130,000 values; forty times that is no config.
MAX_VALUES = 5_000_000
# hive.yaml is five levels deep (server.identity.ldap.url); anchors under `x-` add a few.
# A bound far below Python's recursion limit gives a located error instead of a crash.
MAX_DEPTH = 64


def count_values(data: object, limit: int) -> int:
    """How many values `data` holds (every mapping, list, key and scalar, as the parsers
    count), or limit + 1 once it holds more. The parsers bound one file; this bounds a
    file and all it includes together (schemas/loader.py), so a hundred small files of
    aliases expanding each other cannot add up to what one may not hold."""
    count, stack = 0, [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return limit + 1
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count
