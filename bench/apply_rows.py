"""The apply rows of the scale table alone, with the load step measured beside them.

    sudo python bench/apply_rows.py [--repos 50000 --keys 100000] [--repeat 1] [--keep]

bench/scale.py runs every row (validate cold and warm, includes, LDAP) and takes long;
this one generates the same fleet and runs only what the reconciler does: the first
apply on an empty server, then the converged plan and apply. Beside each it runs a warm
`hive validate` of the same file, so "minus load" shows what observing, planning and
applying cost on their own (the load step is schemas/' business). Every row gives wall
seconds, CPU seconds (user + system: on a shared machine wall time also counts the waits
for a core) and the process's peak RSS. Runs in a folder under /var/tmp; needs root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from scale import TARGETS, best, empty, hive, one_file, verdict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=50000)
    parser.add_argument("--keys", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="converged runs per row; the best one is shown")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run as root: apply sets owners of folders")
    work = Path(tempfile.mkdtemp(prefix="hive-apply-rows-", dir="/var/tmp"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        cfg, cache, _ = one_file(work, args.repos, args.keys)
        empty(cache)
        hive(["validate"], cfg, cache, ok=(0,))  # fills the parse cache, as a CI run would
        load = best([hive(["validate"], cfg, cache, ok=(0,)) for _ in range(args.repeat)])
        rows["validate, warm cache (the load)"] = load
        rows["first apply"] = hive(["apply"], cfg, cache)
        for name, command in (("converged plan", ["plan", "--detailed-exitcode"]),
                              ("converged apply", ["apply", "--detailed-exitcode"])):
            rows[name] = best([hive(command, cfg, cache, ok=(0,))
                               for _ in range(args.repeat)])
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.repos} repositories, {args.keys} keys")
    print(f"{'row':<34}{'seconds':>9}{'CPU s':>8}{'peak MB':>9}{'minus load (s, CPU s)':>24}"
          f"{'target':>8}")
    for name, row in rows.items():
        target = TARGETS.get(name)
        rest = "" if name.startswith("validate") else (
            f"{row['seconds'] - load['seconds']:.2f}, {row['cpu_s'] - load['cpu_s']:.2f}")
        print(f"{name:<34}{row['seconds']:>9.2f}{row['cpu_s']:>8.2f}{row['max_rss_mb']:>9.0f}"
              f"{rest:>24}{f'{target:g} s' if target else '':>8}  {verdict(name, row)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
