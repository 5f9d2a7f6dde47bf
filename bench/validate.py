"""`hive validate` at hosting scale: the load step of every command, without root.

    python bench/validate.py [--repos 50000 --keys 100000] [--split 100] [--repeat 3]

Runs this checkout's `hive validate` as a subprocess on a generated hive.yaml
(bench/generate.py) and reports, for each row, the best of --repeat runs: wall seconds, CPU
seconds (user + system, os.wait4: others sharing the cores do not count; a cold run's
parse-cache writer is a child `hive` waits for, so its CPU time is in there) and peak RSS.

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
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from scale import (  # noqa: E402
    best,
    change_one_repository,
    empty,
    hive,
    one_file,
    report,
    split,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=50000)
    parser.add_argument("--keys", type=int, default=100000)
    parser.add_argument("--split", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hive-validate-", dir="/var/tmp"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        cfg, cache, text = one_file(work, args.repos, args.keys)
        print(f"{args.repos} repositories, {args.keys} keys: {len(text) / 1e6:.1f} MB")

        def cold_and_warm(path: Path, ok: int) -> tuple[dict[str, Any], dict[str, Any]]:
            """The best of --repeat runs with an empty parse cache, and with a warm one."""
            cold, warm = [], []
            for _ in range(args.repeat):
                empty(cache)
                cold.append(hive(["validate"], path, cache, ok=(ok,)))
                warm.append(hive(["validate"], path, cache, ok=(ok,)))
            return best(cold), best(warm)

        rows["validate, cold cache"], rows["validate, warm cache"] = cold_and_warm(cfg, 0)

        bad = work / "bad"
        bad.mkdir()
        broken = bad / "hive.yaml"
        last_key = text.rindex("\n    owner: ", 0, text.index("\nrepositories:"))
        broken.write_text(text[:last_key] + "\n    owner: nobody-at-all" +
                          text[text.index("\n", last_key + 1):])
        rows["one problem, cold cache"], rows["one problem, warm cache"] = \
            cold_and_warm(broken, 1)

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
    report(rows, f"validate-{args.repos}.json", args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
