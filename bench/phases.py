"""Where a `hive plan` spends its time, phase by phase, without a profiler's overhead.

    python bench/phases.py HIVE_YAML [--repeat 3] [--cpu]

Runs the same pipeline as `hive plan` in this process (imports, read, YAML parse, pydantic
validation, whole-file checks, observing each target, desired state, diff) and prints the
best wall time of each phase over --repeat runs. Reads only; the file should already have
been applied (bench/run.py --keep leaves one) for the no-op numbers to mean anything.
A file with `include:` is loaded in one phase (schemas.loader.load, as `hive plan` does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any


def phases(path: Path, clock: Any = time.perf_counter) -> dict[str, float]:
    t: dict[str, float] = {}

    def lap(name: str, start: float) -> float:
        now = clock()
        t[name] = t.get(name, 0.0) + now - start
        return now

    start = clock()
    import pydantic  # noqa: F401  (the import cost is a phase of its own)

    import schemas  # noqa: F401
    from reconciler import engine  # noqa: F401  (imported here to time it)
    from schemas import checks, parsecache, yamlsource
    from schemas.models import HiveConfig

    s = lap("import (first run only)", start)
    gc.disable()   # as schemas.loader.load_text: loading makes no cycles
    text = path.read_text(encoding="utf-8")
    if "\ninclude:" in text:  # files split by include: are loaded as `hive plan` does
        from schemas.loader import load

        s = lap("read file", s)
        config = load(path)
        gc.disable()
        s = lap("load, include: (all of it)", s)
        return _plan(config, t, lap, s)
    s = lap("read file", s)
    data = parsecache.get(text)
    if data is parsecache.MISS:
        data = yamlsource.parse(text).data
        s = lap("yaml parse (no cache)", s)
    else:
        s = lap("yaml parse (cached)", s)
    config = HiveConfig.model_validate(data, context={"base_dir": path.resolve().parent})
    s = lap("pydantic validate", s)
    problems = checks.check(config)
    assert not problems, problems[:3]
    gc.freeze()    # as schemas.loader.load: the loaded state is out of the collector's way
    s = lap("whole-file checks", s)  # (the collector stays paused, as in engine.make_plan)
    return _plan(config, t, lap, s)


def _plan(config: Any, t: dict[str, float], lap: Any, s: float) -> dict[str, float]:
    """The phases of engine.make_plan, after loading."""
    from reconciler import engine
    from reconciler import inventory as inventory_mod
    from reconciler.desired import Facts, desired_state
    from reconciler.plan import diff, safety_errors

    inventory = inventory_mod.load(config.server.state_dir)
    s = lap("inventory load", s)
    facts = Facts()
    for kind, target in engine.targets_for(config).items():
        target.observe(facts, inventory)
        s = lap(f"observe {kind}", s)
    desired = desired_state(config, inventory, facts, dt.datetime.now(dt.UTC))
    s = lap("desired state", s)
    plan = diff(desired, facts)
    plan.errors.extend(safety_errors(plan, facts, desired, False))
    lap("diff", s)
    gc.enable()
    t["changes in plan"] = float(len(plan.changes))
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--cpu", action="store_true",
                        help="time each phase in this process's CPU seconds (user + system) "
                             "instead of wall seconds: steadier on a shared machine")
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu else time.perf_counter
    runs = [phases(args.config, clock) for _ in range(args.repeat)]
    best: dict[str, Any] = {}
    for name in runs[0]:
        if name.startswith("import"):
            best[name] = runs[0][name]
        else:
            best[name] = min(r.get(name, 0.0) for r in runs)
    changes = int(best.pop("changes in plan"))
    if args.json:
        print(json.dumps({"seconds": best, "changes": changes}, indent=2))
        return 0
    total = sum(v for k, v in best.items() if not k.startswith("import"))
    for name, value in best.items():
        share = "" if name.startswith("import") else f"{100 * value / total:5.1f}%"
        print(f"  {name:<28}{value * 1000:9.1f} ms  {share}")
    print(f"  {'total (without imports)':<28}{total * 1000:9.1f} ms   ({changes} changes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
