"""How long `hive notify` takes on a large server: 5,000 repositories, 1,000 of them stale.

    python bench/notify_bench.py [--repos 5000] [--stale 1000] [--repeat 3] [--keep]

Generates a fleet with generate.py, adds a `notifications:` section (two rules, one
channel: a json:// webhook on a loopback HTTP receiver this script runs), and lays out
every borg repository as borg 1.x leaves it on disk (a `config` file and the newest
`index.N`, whose mtime is the last commit: what `hive status` and `hive notify` read):
fresh ones committed an hour ago, `--stale` of them five days ago. Then it times, as
subprocesses of the real CLI:

- `hive notify --dry-run` (the target: < 3 s), the median of --repeat runs;
- the first real run, which delivers one grouped message and writes its DuckDB rows;
- a second real run, which finds everything already sent and sends nothing.

Prints a table and writes bench/out/notify.json; exits 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
TARGET_SECONDS = 3.0


def receiver() -> tuple[ThreadingHTTPServer, list[bytes]]:
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, bodies


def lay_out(config_path: Path, stale: int) -> dict[str, int]:
    """borg-1.x-shaped repositories for every borg-mode repository of the file."""
    import schemas

    config = schemas.load(config_path)
    now = time.time()
    borg = [n for n, r in config.repositories.items() if r.mode == "borg"]
    late = set(borg[:: max(1, len(borg) // stale)][:stale])
    for name, repo in config.repositories.items():
        if repo.mode == "disabled":
            continue
        path = config.repo_path(name)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config").write_text("[repository]\nversion = 1\n")
        index = path / "index.5"
        index.write_bytes(b"")
        when = now - (5 * 86400 if name in late else 3600)
        os.utime(index, (when, when))
    return {"borg": len(borg), "stale": len(late)}


CPU: list[float] = []  # CPU seconds (user + sys) of each timed run, beside its wall time


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, result


def phases(config_path: Path) -> dict[str, float]:
    """CPU seconds of each step of a dry run, in this process: where the time goes (a dry
    run never imports apprise: URLs are checked by `hive validate` and when sending)."""
    from datetime import UTC, datetime

    import schemas
    from notifications import alerts, render, state
    from watcher import status

    marks = [("start", time.process_time())]
    config = schemas.load(config_path)
    marks.append(("load_and_validate_hive_yaml", time.process_time()))
    now = datetime.now(UTC)
    found = status.gather(config, now=now)
    marks.append(("hive_status_evaluation", time.process_time()))
    active = alerts.conditions(config, found, state.created_times(config.server.state_dir),
                               now)
    deliveries = alerts.decide(config, active,
                               state.load_sent(config.server.state_dir, config.server.name),
                               now)
    render.messages(config, deliveries, {s.repository: s for s in found}, now)
    marks.append(("notify_decide_and_render", time.process_time()))
    return {name: round(t - marks[i][1], 3) for i, (name, t) in enumerate(marks[1:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--stale", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="hive-notify-bench-", dir="/var/tmp"))
    server, bodies = receiver()
    try:
        subprocess.run([sys.executable, str(BENCH / "generate.py"), str(folder),
                        "--repos", str(args.repos), "--keys", str(args.repos * 2)],
                       check=True)
        config = folder / "hive.yaml"
        with config.open("a") as handle:
            handle.write(f"""
notifications:
  channels:
    ops: {{url: "json://127.0.0.1:{server.server_address[1]}/hook"}}
  rules:
    - {{name: everything, channels: [ops]}}
    - {{name: borg-backups, match: {{mode: borg}}, channels: [ops],
       alerts: [stale, never_backed_up]}}
""")
        fleet = lay_out(config, args.stale)
        split = phases(config)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        hive = [sys.executable, "-m", "hive", "notify", "-f", str(config), "-o", "json"]
        dry = []
        for _ in range(args.repeat):
            seconds, result = timed([*hive, "--dry-run"], env)
            assert result.returncode == 0, result.stderr
            dry.append(seconds)
        records = [json.loads(line) for line in result.stdout.splitlines()]
        items = sum(len(r["items"]) for r in records if r["type"] == "message")
        first, sent = timed(hive, env)
        assert sent.returncode == 0, sent.stderr
        second, quiet = timed(hive, env)
        quiet_summary = json.loads(quiet.stdout.splitlines()[-1])
        figures = {
            "repositories": args.repos, **fleet, "alert_items_in_dry_run": items,
            "dry_run_seconds_median": round(statistics.median(dry), 3),
            "dry_run_seconds": [round(s, 3) for s in dry],
            "dry_run_cpu_seconds_median": round(statistics.median(CPU[:len(dry)]), 3),
            "dry_run_cpu_phases": split,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "first_real_run_seconds": round(first, 3),
            "messages_delivered": len(bodies),
            "message_bytes": sum(len(b) for b in bodies),
            "second_run_seconds": round(second, 3),
            "second_run_messages": quiet_summary["messages"],
            "target_seconds": TARGET_SECONDS,
        }
        out = BENCH / "out"
        out.mkdir(exist_ok=True)
        (out / "notify.json").write_text(json.dumps(figures, indent=2) + "\n")
        for key, value in figures.items():
            print(f"{key:28} {value}")
        ok = figures["dry_run_seconds_median"] < TARGET_SECONDS
        print(f"\nhive notify --dry-run on {args.repos} repositories, {fleet['stale']} stale: "
              f"{figures['dry_run_seconds_median']:.2f} s "
              f"({'meets' if ok else 'MISSES'} the {TARGET_SECONDS:g} s target)")
        return 0 if ok else 1
    finally:
        server.shutdown()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
