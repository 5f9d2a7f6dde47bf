"""One rule for Python's cyclic garbage collector while Hive builds large, cycle-free data.

Loading a 50,000-repository hive.yaml, observing the server and computing the desired
state each make about a million dicts, lists and strings and not one reference cycle.
The cyclic collector would walk all of them again and again as they pile up (a third of
a load, a quarter of a desired state); reference counting frees everything as before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic collector for the block, and restore it as it was (nested blocks
    leave it paused until the outermost ends)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
