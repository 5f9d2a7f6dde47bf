"""LDAP backend at scale: 5,000 repositories against a real slapd.

Reports the first apply, a no-op plan and a no-op apply: wall time, and the LDAP
operations each cost as the server itself counts them (cn=Monitor), so "a converged apply
costs a handful of searches and no writes" is measured, not assumed.

    python bench/ldap_bench.py [--repos 5000 --keys 10000]

Needs root (apply chowns folders) and slapd (Debian: slapd, ldap-utils).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def run(cfg: Path, slapd: Slapd, *args: str) -> dict[str, object]:
    env = {**os.environ, "HIVE_BENCH_LDAP_PW": HIVE_PW}
    before = slapd.operations()
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "hive", *args, "-f", str(cfg)],
                            capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    after = slapd.operations()
    if result.returncode != 0:
        raise SystemExit(f"hive {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    # operations() itself costs one bind, one search and one unbind on the server
    ops = {op: after[op] - before[op] - (1 if op in ("bind", "search", "unbind") else 0)
           for op in ("bind", "search", *WRITES)}
    return {"seconds": round(seconds, 3), "operations": ops}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=10000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hive-ldap-bench-", dir="/var/tmp"))
    slapd = Slapd(work / "slapd")
    (work / "slapd").mkdir()
    slapd.start()
    try:
        cfg = work / "hive.yaml"
        cfg.write_text(ldap_config(generate(args.repos, args.keys), slapd.url))
        results = {
            "first apply": run(cfg, slapd, "apply"),
            "no-op plan": run(cfg, slapd, "plan"),
            "no-op apply": run(cfg, slapd, "apply"),
        }
    finally:
        slapd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"LDAP backend, {args.repos} repositories, {args.keys} keys (real slapd)")
    print(f"{'run':<12} {'seconds':>8}  server-side operations")
    for name, r in results.items():
        ops = ", ".join(f"{k} {v}" for k, v in r["operations"].items() if v)
        print(f"{name:<12} {r['seconds']:>8.2f}  {ops or 'none'}")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "ldap.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
