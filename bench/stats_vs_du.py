"""Benchmark `hive stats` against `du -s` on a repository of 100,000 segment files.

    python bench/stats_vs_du.py [--segments 100000] [--runs 5]

Makes one borg-1.x-shaped repository (data/0 .. data/99, 1,000 small segment files each,
plus config and index) in a fresh folder under /var/tmp, then times, alternating and with
a warm cache (the first round is discarded):
- `du -s` on the repository;
- the walk alone (watcher.stats.usage, in this process);
- the whole `hive stats -f FILE` command (Python start, imports, the walk, the DuckDB
  snapshot row), as a timer would run it, and the same command on a one-segment
  repository: its fixed cost, which a server with many repositories pays once.
Also checks the walk finds what `du -s --block-size=1` finds, and records the peak RSS of
the `hive stats` process (bounded memory). Target (issue 5): within 1.5x of `du -s`.
Writes bench/out/stats_vs_du.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))


def make_repo(folder: Path, segments: int) -> tuple[Path, Path]:
    folder.mkdir(exist_ok=True)
    repo = folder / "repos" / "bh-big" / "big"
    for n in range(segments):
        sub = repo / "data" / str(n // 1000)
        if n % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / str(n)).write_bytes(b"BORG_SEG" + n.to_bytes(8, "little"))
    (repo / "config").write_text("[repository]\nversion = 1\n")
    (repo / f"index.{segments - 1}").write_bytes(b"x" * 4096)
    (folder / "state").mkdir()
    config = folder / "hive.yaml"
    config.write_text("version: 1\nserver: {name: bench, ssh_host: localhost, repos_root: "
                      "./repos, state_dir: ./state}\nowners: {o: {}}\nrepositories:\n"
                      "  big: {owner: o, quota: 1T}\n")
    return config, repo


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from watcher.stats import usage

    folder = Path(tempfile.mkdtemp(prefix="hive-stats-bench-", dir="/var/tmp"))
    try:
        config, repo = make_repo(folder, args.segments)
        du_argv = ["du", "-s", str(repo)]
        stats_argv = [sys.executable, "-m", "hive", "stats", "-f", str(config)]
        small, _ = make_repo(folder / "small", 1)  # the same command on a 1-segment repo:
        small_argv = [*stats_argv[:-1], str(small)]  # its fixed cost (start-up, DuckDB)
        du, walk, command, fixed = [], [], [], []
        for run in range(args.runs + 1):
            t_du = timed(du_argv)
            started = time.perf_counter()
            found = usage(repo)
            t_walk = time.perf_counter() - started
            t_cmd = timed(stats_argv)
            t_fixed = timed(small_argv)
            if run:  # the first round warms the cache
                du.append(t_du)
                walk.append(t_walk)
                command.append(t_cmd)
                fixed.append(t_fixed)
        du_bytes = int(subprocess.run(["du", "-s", "--block-size=1", str(repo)],
                                      capture_output=True, text=True,
                                      check=True).stdout.split()[0])
        probe = subprocess.run(
            [sys.executable, "-c", "import resource, sys, runpy; sys.argv = ['hive', 'stats', "
             f"'-f', '{config}', '--no-record']\ntry:\n    runpy.run_module('hive', "
             "run_name='__main__')\nexcept SystemExit:\n    pass\nprint(resource.getrusage("
             "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"],
            capture_output=True, text=True, cwd=ROOT, check=True)
        peak_kb = int(probe.stderr.strip().splitlines()[-1])
        result = {
            "segments": args.segments, "files": found.files, "dirs": found.dirs,
            "walk_matches_du": found.size_bytes == du_bytes,
            "du_s_median": round(statistics.median(du), 4),
            "walk_s_median": round(statistics.median(walk), 4),
            "hive_stats_command_s_median": round(statistics.median(command), 4),
            "hive_stats_fixed_cost_s_median": round(statistics.median(fixed), 4),
            "walk_vs_du": round(statistics.median(walk) / statistics.median(du), 2),
            "command_minus_fixed_vs_du": round((statistics.median(command)
                                                - statistics.median(fixed))
                                               / statistics.median(du), 2),
            "command_vs_du": round(statistics.median(command) / statistics.median(du), 2),
            "hive_stats_peak_rss_mb": round(peak_kb / 1024, 1),
            "bench_process_peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        print(json.dumps(result, indent=2))
        (BENCH / "out").mkdir(exist_ok=True)
        (BENCH / "out" / "stats_vs_du.json").write_text(json.dumps(result, indent=2))
        return 0 if result["walk_vs_du"] <= 1.5 and result["walk_matches_du"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
