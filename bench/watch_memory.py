"""Benchmark `hive watch` memory with many repositories (target: under 200 MB at 5,000).

    python bench/watch_memory.py [--repos 5000] [--borg2-share 0.2] [--sessions 20000]

Makes `--repos` repositories shaped like real ones (borg 1.x: config, index.N,
lock-free; a share of borg 2: config/, locks/, archives/ folders, so 4 watches each),
starts the real `python -m hive watch`, measures its start-up time and peak RSS
(VmHWM from /proc) after start, then after `--sessions` open/commit/close sessions spread
over all repositories and a periodic rescan. Writes bench/out/watch_memory.json.
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
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))


def make_tree(folder: Path, repos: int, borg2_share: float) -> tuple[Path, list[Path]]:
    (folder / "state").mkdir(parents=True)
    lines, paths = [], []
    borg2_every = int(1 / borg2_share) if borg2_share else 0
    for i in range(repos):
        name = f"r{i:05d}"
        repo = folder / "repos" / f"bh-{name}" / name
        (repo / "data" / "0").mkdir(parents=True)
        if borg2_every and i % borg2_every == 0:
            for sub in ("config", "locks", "archives", "keys", "cache"):
                (repo / sub).mkdir()
            (repo / "config" / "version").write_text("3")
            (repo / "config" / "manifest").write_bytes(b"m")
        else:
            (repo / "config").write_text("[repository]\nversion = 1\n")
            (repo / "index.1").write_bytes(b"")
        paths.append(repo)
        lines.append(f"  {name}: {{owner: o}}\n")
    config = folder / "hive.yaml"
    config.write_text("version: 1\nserver: {name: bench, ssh_host: localhost, repos_root: "
                      "./repos, state_dir: ./state}\nowners: {o: {}}\nrepositories:\n"
                      + "".join(lines))
    return config, paths


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--borg2-share", type=float, default=0.2)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from watcher import store

    folder = Path(tempfile.mkdtemp(prefix="hive-watch-mem-", dir="/var/tmp"))
    try:
        config, paths = make_tree(folder, args.repos, args.borg2_share)
        log = folder / "watch.log"
        handle = open(log, "wb")  # noqa: SIM115 (the child keeps it)
        started = time.monotonic()
        watcher = subprocess.Popen([sys.executable, "-m", "hive", "watch", "-f", str(config),
                                    "--rescan-interval", "10s"], stdout=handle,
                                   stderr=handle, cwd=ROOT)
        handle.close()
        while "watching" not in log.read_text(errors="replace"):
            if watcher.poll() is not None:
                raise SystemExit(log.read_text())
            time.sleep(0.05)
        startup = time.monotonic() - started
        rss_start = status_kb(watcher.pid, "VmRSS")
        transactions = dict.fromkeys(range(len(paths)), 1)
        for s in range(args.sessions):
            i = (s * 7919) % len(paths)
            repo = paths[i]
            if (repo / "config").is_dir():
                lock = repo / "locks" / f"l{s}"
                lock.write_bytes(b"{}")
                (repo / "config" / "manifest.tmp").write_bytes(str(s).encode())
                os.rename(repo / "config" / "manifest.tmp", repo / "config" / "manifest")
                lock.unlink()
            else:
                old, new = transactions[i], transactions[i] + 4
                (repo / "lock.exclusive").mkdir()
                os.rename(_touch(repo / f"index.{new}.tmp"), repo / f"index.{new}")
                os.unlink(repo / f"index.{old}")
                (repo / "lock.exclusive").rmdir()
                transactions[i] = new
            if s % 2000 == 0:
                time.sleep(0.1)  # a busy server, not a flood
        time.sleep(12)  # let a periodic rescan of every repository happen
        rss_end = status_kb(watcher.pid, "VmRSS")
        peak = status_kb(watcher.pid, "VmHWM")
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(timeout=120)
        with store.read(folder / "state") as con:
            # every commit after start, seen live or by a periodic rescan; each once
            updated, distinct = con.execute(
                "SELECT count(*), count(DISTINCT (repository, details->>'transaction')) "
                "FROM events WHERE kind = 'updated' AND details->>'previous' IS NOT NULL"
            ).fetchone()
            by_scan = con.execute("SELECT count(*) FROM events WHERE kind = 'updated' AND "
                                  "details->>'previous' IS NOT NULL AND source = 'scan'"
                                  ).fetchone()[0]
            watches = json.loads(con.execute("SELECT details FROM watcher_log WHERE kind = "
                                             "'start'").fetchone()[0])["watches"]
            rescans = con.execute("SELECT count(*) FROM watcher_log WHERE kind = "
                                  "'rescan'").fetchone()[0]
        result = {
            "repos": args.repos, "inotify_watches": watches, "startup_s": round(startup, 2),
            "rss_after_start_mb": round(rss_start / 1024, 1),
            "rss_after_sessions_mb": round(rss_end / 1024, 1),
            "peak_rss_mb": round(peak / 1024, 1), "sessions": args.sessions,
            "updated_recorded": updated, "updated_distinct": distinct,
            "updated_found_by_rescan": by_scan, "periodic_rescans_logged": rescans,
            "watcher_exit": code,
        }
        print(json.dumps(result, indent=2))
        (BENCH / "out").mkdir(exist_ok=True)
        (BENCH / "out" / "watch_memory.json").write_text(json.dumps(result, indent=2))
        ok = updated == distinct == args.sessions
        return 0 if peak / 1024 < 200 and ok and code == 0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


if __name__ == "__main__":
    sys.exit(main())
