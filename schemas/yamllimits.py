"""How many values and how deep a hive.yaml may be: one bound for every parser of it
(schemas/yamlsource.py and its fast path, schemas/fastyaml.py)."""

# A hive.yaml of 5,000 repositories holds ~130,000 values; forty times that is no config.
MAX_VALUES = 5_000_000
# hive.yaml is five levels deep (server.identity.ldap.url); anchors under `x-` add a few.
# A bound far below Python's recursion limit gives a located error instead of a crash.
MAX_DEPTH = 64
