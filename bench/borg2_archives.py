"""Benchmark reading a borg 2 repository's `archives/` folder, as the watcher does for
every borg 2 commit and `hive status` for every borg 2 repository.

    python bench/borg2_archives.py [--counts 100,1000,10000,100000] [--runs 5]

`archives/` holds one empty file per archive (borg 2.0.0b20); a repository pruned to
daily/weekly/monthly keeps a few dozen, one never pruned one per backup. For each count
a folder of that many entries (a tenth of them `.del`, as prune leaves them until
compact) is made, then `borgrepo.archives.listing` + `what` timed (warm page cache: the
watcher reads right after borg wrote). Writes bench/out/borg2_archives.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from borgrepo import archives  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,1000,10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="hive-bench-archives-") as tmp:
        for count in (int(c) for c in args.counts.split(",")):
            repo = Path(tmp) / str(count)
            (repo / "archives").mkdir(parents=True)
            for i in range(count):
                name = os.urandom(32).hex() + (archives.DELETED if i % 10 == 0 else "")
                (repo / "archives" / name).write_bytes(b"")
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                found = archives.listing(str(repo))
                archives.what(found, 0, time.time_ns())
                times.append(time.perf_counter() - start)
            assert found.live + found.deleted == count, found.problem
            results.append({"archives": count, "median_ms": round(
                statistics.median(times) * 1000, 2), "max_ms": round(max(times) * 1000, 2)})
            print(f"{count:>7} entries: median {results[-1]['median_ms']:8.2f} ms, "
                  f"max {results[-1]['max_ms']:8.2f} ms")
    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    (out / "borg2_archives.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
