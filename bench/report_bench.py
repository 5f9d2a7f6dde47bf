"""Benchmark `hive report` (target: 5,000 repositories and 1,000,000 events in < 10 s and
< 500 MB).

    python bench/report_bench.py [--repos 5000] [--events 1000000] [--snapshot-hours 6]
                                 [--days 90] [--runs 3] [--keep]

Writes the generated hive.yaml (bench/generate.py: 5,000 repositories, 10,000 keys,
1,000 owners, groups), makes every repository folder borg-1 shaped (`config`, `index.N`,
a tenth never backed up, a few missing), then fills `events.duckdb` in DuckDB itself:
`--events` events spread over `--days` days, one snapshot per repository every
`--snapshot-hours` hours (1,800,000 rows by default: hourly-ish `hive stats` for 90
days), and 20,000 journal rows. Then runs the real `python -m hive report` `--runs`
times and reports the median wall and CPU time and the peak memory (the larger of the
summed PSS of the process and its page-rendering children, and the high-water RSS of the
largest one). On a busy machine the wall time says more
about the neighbours than about Hive: the load average is printed with it.
Writes bench/out/report.json; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
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
TARGET_SECONDS, TARGET_MB = 10.0, 500.0


def make_server(folder: Path, repos: int, events: int, snapshot_hours: int,
                days: int) -> Path:
    import schemas
    from bench.generate import generate
    from watcher import store

    config_path = folder / "hive.yaml"
    config_path.write_text(generate(repos, repos * 2, None, 1))
    config = schemas.load(config_path)
    names = sorted(config.repositories)
    paths = [str(config.repo_path(n)) for n in names]
    users = [config.user_name(n) for n in names]
    now = time.time()
    for i, path in enumerate(paths):
        if i % 50 == 7:
            continue  # missing on disk
        repo = Path(path)
        (repo / "data").mkdir(parents=True)
        (repo / "config").write_text("[repository]\nversion = 1\n")
        if i % 10 != 3:  # the rest were only initialised: never backed up
            index = repo / "index.5"
            index.write_bytes(b"")
            age = (i % 40) * 3600.0  # some are older than the 26 h stale limit
            os.utime(index, (now - age, now - age))
    host = config.server.name
    with store.write(config.server.state_dir, timeout=60) as con:
        con.execute("CREATE TEMP TABLE r AS SELECT unnest($1::VARCHAR[]) AS repository, "
                    "unnest($2::VARCHAR[]) AS path, unnest($3::VARCHAR[]) AS unix_user, "
                    "generate_subscripts($1::VARCHAR[], 1) - 1 AS i", [names, paths, users])
        n = len(names)
        con.execute(f"""
            INSERT INTO events
            SELECT now() - to_seconds(CAST(random() * {days * 86400} AS BIGINT)), $1,
                   r.repository, r.unix_user, r.path,
                   ['opened', 'updated', 'closed', 'opened', 'closed'][(e // {n}) % 5 + 1],
                   'inotify',
                   CASE WHEN (e // {n}) % 5 = 1 THEN
                     json_object('transaction', e, 'previous', e - 1, 'backup', true)
                   ELSE json_object('locks', ['lock.exclusive']) END
            FROM range({events}) t(e) JOIN r ON r.i = e % {n}""", [host])
        con.execute(f"""
            INSERT INTO snapshots (time, host, repository, unix_user, path, in_config,
                                   present, layout, layout_version, size_bytes)
            SELECT now() - to_hours(h::BIGINT), $1, r.repository, r.unix_user, r.path, true,
                   true, 'borg1', 1,
                   CAST(1e9 * (1 + r.i % 97) + 5e6 * (r.i % 13) * ({days * 24} - h)
                        + 1e6 * random() AS BIGINT)
            FROM r, range(0, {days * 24}, {snapshot_hours}) t(h)""", [host])
        con.execute("""
            INSERT INTO journal (time, host, run, record_type, who, action, resource_kind,
                                 name, repository, error, record)
            SELECT now() - to_hours(j::BIGINT), $1, 'run-' || j, 'change', 'admin',
                   'create', 'account', r.unix_user, r.repository, NULL, '{}'
            FROM range(20000) t(j) JOIN r ON r.i = j % 5000""", [host])
        counts = con.execute("SELECT (SELECT count(*) FROM events), "
                             "(SELECT count(*) FROM snapshots), "
                             "(SELECT count(*) FROM journal)").fetchone()
    print(f"database: {counts[0]:,} events, {counts[1]:,} snapshots, {counts[2]:,} journal "
          f"rows; {(config.server.state_dir / store.DB_NAME).stat().st_size / 1e6:.0f} MB",
          file=sys.stderr)
    return config_path


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (a forked child's) split between their users,
    so a sum over processes is the memory they really take together."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_once(config: Path, dest: Path) -> dict[str, float]:
    """One `python -m hive report`: wall seconds, CPU seconds (user + sys of it and its
    page-rendering children) and memory: the peak of the summed PSS of the process and its
    children, sampled every 10 ms, and the high-water RSS of the largest single process
    (ru_maxrss, which a 10 ms sample can miss)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "hive", "report", "-f", str(config),
                                "-d", str(dest)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    peak = 0
    while process.poll() is None:
        peak = max(peak, _pss_kb(process.pid) + sum(_pss_kb(c) for c in
                                                    _children(process.pid)))
        time.sleep(0.01)
    wall = time.monotonic() - started
    _out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"hive report failed:\n{err}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "pss_sum_mb": peak / 1024,
            "rss_max_process_mb": after.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--snapshot-hours", type=int, default=6)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hive-report-bench-", dir="/var/tmp"))
    try:
        started = time.monotonic()
        config = make_server(folder, args.repos, args.events, args.snapshot_hours, args.days)
        print(f"set up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        runs = [run_once(config, folder / "report") for _ in range(args.runs)]
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        rss = max(max(r["pss_sum_mb"], r["rss_max_process_mb"]) for r in runs)
        size = sum(p.stat().st_size for p in (folder / "report").rglob("*") if p.is_file())
        files = sum(1 for p in (folder / "report").rglob("*") if p.is_file())
        result = {"repos": args.repos, "events": args.events,
                  "snapshot_hours": args.snapshot_hours, "days": args.days,
                  "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                  "wall_seconds_median": round(wall, 2), "cpu_seconds_median": round(cpu, 2),
                  "runs": [{k: round(v, 2) for k, v in r.items()} for r in runs],
                  "peak_memory_mb": round(rss, 1), "files": files,
                  "report_mb": round(size / 1e6, 1),
                  "targets": {"seconds": TARGET_SECONDS, "mb": TARGET_MB}}
        (BENCH / "out").mkdir(exist_ok=True)
        (BENCH / "out" / "report.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"hive report: {wall:.2f} s wall, {cpu:.2f} s CPU (medians of {args.runs}; "
              f"target < {TARGET_SECONDS:g} s), peak memory {rss:.0f} MB (the larger of "
              f"summed PSS and the largest process's RSS; target < {TARGET_MB:g}); "
              f"{files} files, {size / 1e6:.1f} MB; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        return 0 if wall < TARGET_SECONDS and rss < TARGET_MB else 1
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
