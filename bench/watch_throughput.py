"""Benchmark `hive watch`: sustained file-event throughput and the lag to the database.

    python bench/watch_throughput.py [--rate 10000] [--seconds 20] [--repos 50]

Makes `--repos` borg-1.x-shaped repositories (a `config` file each) in a fresh folder,
starts the real `python -m hive watch` on them, then plays borg sessions at `--rate` file
events per second: each session is what borg does at the top of a repository (mkdir
lock.exclusive, write index.N.tmp and rename it to index.N, delete index.N-1, rmdir
lock.exclusive: 6 inotify events, 3 repository events). Reports:

- throughput: file events generated per second, and whether every `updated` arrived
  (no overflow, no loss);
- processing lag: the event row's time (when the watcher handled it) minus when the
  rename happened;
- visibility lag: when a reader (shared lock, read-only, like `hive status`) first saw the
  row, minus when the rename happened. Includes the flush interval (0.5 s by default).

Targets (issue 5): 10,000 file events/s sustained with under 1 s of lag. Writes
bench/out/watch_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
EVENTS_PER_SESSION = 6


def make_tree(folder: Path, repos: int) -> Path:
    (folder / "state").mkdir(parents=True)
    lines = []
    for i in range(repos):
        name = f"r{i:05d}"
        repo = folder / "repos" / f"bh-{name}" / name
        repo.mkdir(parents=True)
        (repo / "config").write_text("[repository]\nversion = 1\n")
        (repo / "index.1").write_bytes(b"")
        lines.append(f"  {name}: {{owner: o}}\n")
    config = folder / "hive.yaml"
    config.write_text("version: 1\nserver: {name: bench, ssh_host: localhost, repos_root: "
                      "./repos, state_dir: ./state}\nowners: {o: {}}\nrepositories:\n"
                      + "".join(lines))
    return config


def start_watcher(config: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    handle = open(log, "wb")  # noqa: SIM115 (the child keeps it)
    process = subprocess.Popen([sys.executable, "-m", "hive", "watch", "-f", str(config),
                                *options], stdout=handle, stderr=handle, cwd=ROOT)
    handle.close()
    deadline = time.monotonic() + 300
    while "watching" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("hive watch did not start:\n" + log.read_text())
        time.sleep(0.05)
    return process


def play(folder: Path, repos: int, rate: float, seconds: float) -> dict[tuple[str, int], float]:
    """Borg-like sessions at `rate` file events per second; (repo, N) -> rename time."""
    paths = [folder / "repos" / f"bh-r{i:05d}" / f"r{i:05d}" for i in range(repos)]
    transaction = dict.fromkeys(range(repos), 1)
    done: dict[tuple[str, int], float] = {}
    sessions = int(rate * seconds / EVENTS_PER_SESSION)
    interval = EVENTS_PER_SESSION / rate
    start = time.monotonic()
    for s in range(sessions):
        due = start + s * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i = s % repos
        repo = paths[i]
        old, new = transaction[i], transaction[i] + 4
        lock = repo / "lock.exclusive"
        os.mkdir(lock)
        tmp = repo / f"index.{new}.tmp"
        tmp.write_bytes(b"")
        os.rename(tmp, repo / f"index.{new}")
        done[(repo.name, new)] = time.time()
        os.unlink(repo / f"index.{old}")
        os.rmdir(lock)
        transaction[i] = new
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10_000, help="file events per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repos", type=int, default=50)
    parser.add_argument("--flush-interval", default="0.5")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from watcher import store

    folder = Path(tempfile.mkdtemp(prefix="hive-watch-bench-", dir="/var/tmp"))
    try:
        config = make_tree(folder, args.repos)
        watcher = start_watcher(config, folder / "watch.log",
                                "--flush-interval", args.flush_interval)
        seen: dict[int, float] = {}  # number of updated rows visible -> first time seen
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                try:
                    with store.read(folder / "state") as con:
                        count = con.execute("SELECT count(*) FROM events WHERE kind = "
                                            "'updated' AND source = 'inotify'").fetchone()[0]
                    seen.setdefault(count, time.time())
                except store.StoreError:
                    pass
                time.sleep(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        started = time.monotonic()
        done = play(folder, args.repos, args.rate, args.seconds)
        elapsed = time.monotonic() - started
        ended = time.time()
        expected = len(done)
        deadline = time.monotonic() + 60
        while max(seen, default=0) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        all_visible = max(seen.values()) - ended if max(seen, default=0) >= expected else None
        stop.set()
        poller.join()
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(timeout=120)
        with store.read(folder / "state") as con:
            rows = con.execute(
                "SELECT repository, CAST(details->>'transaction' AS BIGINT), epoch(time) "
                "FROM events WHERE kind = 'updated' AND source = 'inotify' "
                "ORDER BY rowid").fetchall()
            overflows = con.execute("SELECT count(*) FROM watcher_log WHERE kind = "
                                    "'overflow'").fetchone()[0]
        processing = sorted(t - done[(r, n)] for r, n, t in rows if (r, n) in done)
        order = sorted(done.values())
        thresholds = sorted(seen.items())
        visibility = []
        for index, when in enumerate(order):
            first = next((t for c, t in thresholds if c > index), None)
            if first is not None:
                visibility.append(first - when)
        visibility.sort()

        def pct(values: list[float], p: float) -> float | None:
            return round(values[min(len(values) - 1, int(p * len(values)))], 3) \
                if values else None

        result = {
            "target_rate": args.rate, "seconds": round(elapsed, 2), "repos": args.repos,
            "file_events": expected * EVENTS_PER_SESSION,
            "file_events_per_second": round(expected * EVENTS_PER_SESSION / elapsed),
            "updated_expected": expected, "updated_recorded": len(rows),
            "overflows": overflows, "watcher_exit": code,
            "processing_lag_s": {"p50": pct(processing, 0.5), "p99": pct(processing, 0.99),
                                 "max": pct(processing, 1.0)},
            "visibility_lag_s": {"p50": pct(visibility, 0.5), "p99": pct(visibility, 0.99),
                                 "max": pct(visibility, 1.0)},
            "all_visible_after_end_s": round(all_visible, 3) if all_visible else None,
            "flush_interval_s": float(args.flush_interval),
        }
        print(json.dumps(result, indent=2))
        (BENCH / "out").mkdir(exist_ok=True)
        (BENCH / "out" / "watch_throughput.json").write_text(json.dumps(result, indent=2))
        ok = (result["updated_recorded"] == expected and overflows == 0
              and result["file_events_per_second"] >= 0.95 * args.rate
              and (result["visibility_lag_s"]["p99"] or 99) < 1.0 + float(args.flush_interval))
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
