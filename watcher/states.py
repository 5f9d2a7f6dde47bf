"""The states `hive status` gives a repository, and which of them are trouble.

Their own module so the command line (watcher/commands.py, imported on every `hive` call)
can offer them as choices without importing the scanning code behind them.
"""

STATES = ("ok", "stale", "never backed up", "disabled", "locked", "missing on disk",
          "corrupt")
TROUBLE = frozenset({"stale", "never backed up", "locked", "missing on disk", "corrupt"})
