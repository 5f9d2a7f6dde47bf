"""`hive validate` at hosting scale: the load step of every command, without root.

    python bench/validate.py [--repos 50000 --keys 100000] [--split 100] [--repeat 3]

Runs this checkout's `hive validate` as a subprocess on a generated hive.yaml
(bench/generate.py) and reports, for each row, the best of --repeat runs: wall seconds, CPU
seconds (user + system, os.wait4: others sharing the cores do not count), the CPU seconds
of the child a cold run leaves writing the parse cache ("+child", waited for after the
command ended, so never hidden) and peak RSS.

- one file: an empty parse cache (a fresh CI checkout), then a warm one;
- one file with one problem (a key owned by nobody): the position of the problem needs the
  node tree, so this is the cost of an error report, cold and warm;
- the same state split into --split files by `include:`, warm, then one repository changed
  in one file (only that file is parsed again).

bench/scale.py has the same validate rows beside apply and plan (needs root); this script
is the quick one to run while working on schemas/. Results: bench/out/validate-<repos>.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from generate import generate  # noqa: E402
from scale import TARGET_RSS_MB, change_one_repository, empty, split  # noqa: E402
from scale import hive as run_hive  # noqa: E402

TARGETS = {"validate, cold cache": 3.0, "validate, warm cache": 3.0,
           "split: validate, one file changed": 5.0}


def adopt_orphans() -> None:
    """Become the subreaper of what `hive` leaves running (schemas/parsecache.py writes a
    large entry from a forked child), so its CPU time is counted too, not hidden."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:   # PR_SET_CHILD_SUBREAPER
        raise SystemExit(f"prctl: {os.strerror(ctypes.get_errno())}")


def hive(args: list[str], cfg: Path, cache: Path, ok: tuple[int, ...]) -> dict[str, Any]:
    """scale.hive, plus the CPU time of any child it left behind (waited for)."""
    row = run_hive(args, cfg, cache, ok=ok)
    left = 0.0
    while True:
        try:
            _, _, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        left += usage.ru_utime + usage.ru_stime
    row["cpu_s_left_behind"] = round(left, 3)
    return row


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the least CPU time, and the highest peak RSS of all of them."""
    chosen = dict(min(runs, key=lambda r: r["cpu_s"]))
    chosen["max_rss_mb"] = max(r["max_rss_mb"] for r in runs)
    chosen["runs"] = len(runs)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=50000)
    parser.add_argument("--keys", type=int, default=100000)
    parser.add_argument("--split", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    adopt_orphans()
    work = Path(tempfile.mkdtemp(prefix="hive-validate-", dir="/var/tmp"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        text = generate(args.repos, args.keys)
        one = work / "one"
        one.mkdir()
        cfg = one / "hive.yaml"
        cfg.write_text(text)
        cache = work / "cache"
        print(f"{args.repos} repositories, {args.keys} keys: {len(text) / 1e6:.1f} MB")
        cold, warm = [], []
        for _ in range(args.repeat):
            empty(cache)
            cold.append(hive(["validate"], cfg, cache, ok=(0,)))
            warm.append(hive(["validate"], cfg, cache, ok=(0,)))
        rows["validate, cold cache"] = best(cold)
        rows["validate, warm cache"] = best(warm)

        bad = work / "bad"
        bad.mkdir()
        broken = bad / "hive.yaml"
        last_key = text.rindex("\n    owner: ", 0, text.index("\nrepositories:"))
        broken.write_text(text[:last_key] + "\n    owner: nobody-at-all" +
                          text[text.index("\n", last_key + 1):])
        cold, warm = [], []
        for _ in range(args.repeat):
            empty(cache)
            cold.append(hive(["validate"], broken, cache, ok=(1,)))
            warm.append(hive(["validate"], broken, cache, ok=(1,)))
        rows["one problem, cold cache"] = best(cold)
        rows["one problem, warm cache"] = best(warm)

        if args.split:
            many = work / "split"
            main_file = split(text, many, args.split)
            empty(cache)
            hive(["validate"], main_file, cache, ok=(0,))
            rows["split: validate, warm cache"] = best(
                [hive(["validate"], main_file, cache, ok=(0,)) for _ in range(args.repeat)])
            changed = []
            for i in range(args.repeat):
                change_one_repository(many, f"{7 + i}G")
                changed.append(hive(["validate"], main_file, cache, ok=(0,)))
            rows["split: validate, one file changed"] = best(changed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'row':<36}{'seconds':>9}{'CPU s':>8}{'+child':>8}{'peak MB':>9}{'target':>9}")
    for name, row in rows.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("ok" if row["seconds"] <= target else "MISSED")
        if row["max_rss_mb"] > TARGET_RSS_MB:
            verdict += " RSS over"
        shown = f"{target:g} s" if target else ""
        print(f"{name:<36}{row['seconds']:>9.2f}{row['cpu_s']:>8.2f}"
              f"{row['cpu_s_left_behind']:>8.2f}{row['max_rss_mb']:>9.0f}"
              f"{shown:>9}  {verdict}")
    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    (out / f"validate-{args.repos}.json").write_text(json.dumps(
        {"repos": args.repos, "keys": args.keys, "split": args.split, "rows": rows},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
