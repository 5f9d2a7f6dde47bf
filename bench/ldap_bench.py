"""LDAP backend at scale: 5,000 repositories against a real slapd.

Reports the first apply, a no-op plan and a no-op apply: wall and CPU time (user + system
of the hive process, os.wait4), slapd's own CPU time, and the LDAP operations each cost as
the server itself counts them (cn=Monitor), so "a converged apply costs a handful of
searches and no writes" is measured, not assumed.

Then the converged plan against the files backend on the same fleet: --repeat plans of
each, alternating (files, ldap, files, ...) so both see the same load, and the ratio of
the medians, for wall and for CPU time. On a shared machine the CPU ratio is the one to
trust; wall time also counts the waits for a core (and slapd's work).

    python bench/ldap_bench.py [--repos 5000 --keys 10000] [--repeat 5] [--no-compare]

Needs root (apply chowns folders) and slapd (Debian: slapd, ldap-utils).
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
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from generate import generate  # noqa: E402
from slapd import HIVE_DN, HIVE_PW, SUFFIX, Slapd  # noqa: E402

WRITES = ("add", "modify", "delete", "modrdn")


def ldap_config(text: str, url: str) -> str:
    files = "  identity:\n    backend: files\n    files_dir: ./data/extrausers\n"
    ldap = ("  identity:\n    backend: ldap\n    ldap:\n"
            f"      url: {url}\n      base_dn: {SUFFIX}\n      bind_dn: {HIVE_DN}\n"
            "      bind_password_env: HIVE_BENCH_LDAP_PW\n")
    assert files in text
    return text.replace(files, ldap)


def slapd_cpu(slapd: Slapd) -> float:
    """slapd's user + system CPU seconds so far (/proc/PID/stat)."""
    assert slapd.process is not None
    fields = Path(f"/proc/{slapd.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cfg: Path, slapd: Slapd | None, *args: str, ok: tuple[int, ...] = (0, 2),
        cache: Path | None = None) -> dict[str, Any]:
    """One `hive` run of this checkout: wall, its CPU time, and slapd's part."""
    env = {**os.environ, "HIVE_BENCH_LDAP_PW": HIVE_PW, "PYTHONPATH": str(HERE.parent)}
    if cache:
        env["HIVE_CACHE_DIR"] = str(cache)
    before = slapd.operations() if slapd else {}
    server_cpu = slapd_cpu(slapd) if slapd else 0.0
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hive", *args, "-f", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=cfg.parent)
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    rc = os.waitstatus_to_exitcode(status)
    if rc not in ok:
        raise SystemExit(f"hive {' '.join(args)} exited {rc}:\n{errors.decode()[-3000:]}")
    row: dict[str, Any] = {"seconds": round(seconds, 3),
                           "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                           "max_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if slapd:
        after = slapd.operations()
        # operations() itself costs one bind, one search and one unbind on the server
        row["operations"] = {op: after[op] - before[op] - (op in ("bind", "search", "unbind"))
                             for op in ("bind", "search", *WRITES)}
        row["slapd_cpu_s"] = round(slapd_cpu(slapd) - server_cpu, 3)
    return row


def compare(text: str, ldap_cfg: Path, slapd: Slapd, work: Path,
            repeat: int) -> dict[str, Any]:
    """Converged plans, files backend vs LDAP, alternating; medians and their ratios."""
    files = work / "files"
    files.mkdir()
    files_cfg = files / "hive.yaml"
    files_cfg.write_text(text)
    cache = work / "cache"
    run(files_cfg, None, "apply", cache=cache)
    plan = ("plan", "--detailed-exitcode")
    runs: dict[str, list[dict[str, Any]]] = {"files": [], "ldap": []}
    for _ in range(repeat):
        runs["files"].append(run(files_cfg, None, *plan, ok=(0,), cache=cache))
        runs["ldap"].append(run(ldap_cfg, slapd, *plan, ok=(0,), cache=cache))
    medians = {backend: {key: statistics.median(r[key] for r in rows)
                         for key in ("seconds", "cpu_s")}
               for backend, rows in runs.items()}
    return {"runs": runs, "medians": medians,
            "ratio_wall": round(medians["ldap"]["seconds"] / medians["files"]["seconds"], 2),
            "ratio_cpu": round(medians["ldap"]["cpu_s"] / medians["files"]["cpu_s"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5,
                        help="converged plans of each backend for the ratio (default 5)")
    parser.add_argument("--no-compare", action="store_true",
                        help="only the LDAP rows, no files-backend comparison")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hive-ldap-bench-", dir="/var/tmp"))
    slapd = Slapd(work / "slapd")
    (work / "slapd").mkdir()
    slapd.start()
    try:
        text = generate(args.repos, args.keys)
        (work / "ldap").mkdir()
        cfg = work / "ldap" / "hive.yaml"
        cfg.write_text(ldap_config(text, slapd.url))
        run(cfg, None, "validate", ok=(0,), cache=work / "cache")  # parse cache, as usual
        results: dict[str, Any] = {
            "first apply": run(cfg, slapd, "apply", cache=work / "cache"),
            "no-op plan": run(cfg, slapd, "plan", "--detailed-exitcode", ok=(0,),
                              cache=work / "cache"),
            "no-op apply": run(cfg, slapd, "apply", "--detailed-exitcode", ok=(0,),
                               cache=work / "cache"),
        }
        if not args.no_compare:
            results["converged plan vs files"] = compare(text, cfg, slapd, work, args.repeat)
    finally:
        slapd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"LDAP backend, {args.repos} repositories, {args.keys} keys (real slapd)")
    print(f"{'run':<12} {'wall s':>8} {'CPU s':>7} {'slapd s':>8} {'peak MB':>8}  "
          "server-side operations")
    for name in ("first apply", "no-op plan", "no-op apply"):
        r = results[name]
        ops = ", ".join(f"{k} {v}" for k, v in r["operations"].items() if v)
        print(f"{name:<12} {r['seconds']:>8.2f} {r['cpu_s']:>7.2f} {r['slapd_cpu_s']:>8.2f} "
              f"{r['max_rss_mb']:>8.0f}  {ops or 'none'}")
    if "converged plan vs files" in results:
        c = results["converged plan vs files"]
        m = c["medians"]
        print(f"converged plan, median of {args.repeat}: files {m['files']['seconds']:.2f} s "
              f"wall / {m['files']['cpu_s']:.2f} s CPU, LDAP {m['ldap']['seconds']:.2f} s "
              f"wall / {m['ldap']['cpu_s']:.2f} s CPU")
        print(f"LDAP/files ratio: wall {c['ratio_wall']:.2f}x, CPU {c['ratio_cpu']:.2f}x "
              "(target <= 1.3x)")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "ldap.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
