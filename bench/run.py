"""Benchmark Hive at scale: validate, plan, apply and the sshd login path.

    python bench/run.py [--repos 5000] [--keys 10000] [--runs 50] [--profile]

Generates a large hive.yaml (bench/generate.py) in a fresh folder under /var/lib, runs the
real `hive` console script on it as subprocesses, exactly as a user or sshd would, prints
a table and writes bench/out/results.json. Needs root for `hive apply`; without root the
apply steps are skipped. See bench/README.md for what each number means and the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from generate import generate  # noqa: E402

OUT = BENCH / "out"

TARGET_NOOP_S = 2.0
TARGET_RSS_MB = 300.0
TARGET_LOGIN_MS = 30.0


# ----------------------------------------------------------------------------- helpers


def find_hive(explicit: str | None) -> tuple[Path, Path | None]:
    """(the real `hive` console script, the `hive` found on PATH if it is something else).

    On PATH `hive` may be a wrapper (a pyenv shim is a bash script); the login path is
    measured on the console script itself, which is what sshd_config names in production.
    """
    on_path = shutil.which("hive")
    shim = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser() / "shims" / "hive"
    if shim.is_file():  # `python` run through pyenv has the real bin first on PATH
        on_path = str(shim)
    candidates = [explicit] if explicit else [
        on_path, str(Path(sys.executable).parent / "hive"),
        str(Path(sysconfig.get_path("scripts")) / "hive")]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if path.is_file() and "python" in _shebang(path):
            real = path.resolve()
            wrapper = Path(on_path) if on_path and Path(on_path).resolve() != real else None
            return real, wrapper
    sys.exit(f"cannot find the hive console script (tried {candidates}); "
             "pip install -e . or pass --hive PATH")


def _shebang(path: Path) -> str:
    with open(path, "rb") as handle:
        first = handle.readline(512).decode("utf-8", "replace")
    return first[2:].strip() if first.startswith("#!") else ""


def interpreter_of(script: Path) -> list[str]:
    """The interpreter command of a script's shebang, e.g. ['/usr/bin/python3.11']."""
    words = shlex.split(_shebang(script))
    if words and Path(words[0]).name == "env":
        words = words[1:]
        words[0] = shutil.which(words[0]) or words[0]
    return words


def run_measured(argv: list[str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run one command; wall time, exit code and that process's own peak RSS.

    os.wait4 gives the rusage of exactly this child (RUSAGE_CHILDREN would be the maximum
    over every child so far). Output goes to a log file, so no pipe can stall the child.
    """
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": elapsed, "rc": proc.returncode, "max_rss_mb": usage.ru_maxrss / 1024,
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def count_lines(path: Path) -> int:
    try:
        return path.read_text(encoding="utf-8").count("\n")
    except FileNotFoundError:
        return 0


# ----------------------------------------------------------------------------- steps


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, hive: Path) -> None:
        self.args = args
        self.work = work
        self.hive = hive
        self.config = work / "hive.yaml"
        self.logs = work / "logs"
        self.logs.mkdir()
        self.steps: list[dict[str, Any]] = []

    def step(self, name: str, argv: list[str], runs: int, ok_codes: tuple[int, ...],
             target_s: float | None = None) -> dict[str, Any]:
        results = []
        for i in range(runs):
            slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
            log = self.logs / f"{slug}.{i}.log"
            result = run_measured([str(self.hive), *argv], self.work, log)
            if result["rc"] not in ok_codes:
                tail = log.read_text(errors="replace")[-3000:]
                sys.exit(f"{name}: exit code {result['rc']} (expected {ok_codes}); "
                         f"output ends:\n{tail}")
            results.append(result)
        seconds = [r["seconds"] for r in results]
        entry = {
            "step": name, "command": "hive " + shlex.join(argv), "runs": runs,
            "median_s": statistics.median(seconds), "max_s": max(seconds),
            "min_s": min(seconds), "runs_s": [round(x, 3) for x in seconds],
            "max_rss_mb": max(r["max_rss_mb"] for r in results),
            "user_s": statistics.median(r["user_s"] for r in results),
            "sys_s": statistics.median(r["sys_s"] for r in results),
            "exit_codes": sorted({r["rc"] for r in results}),
            "target_s": target_s,
            "pass": None if target_s is None else statistics.median(seconds) < target_s,
        }
        self.steps.append(entry)
        print(f"  {name:<22} {entry['median_s']:8.2f} s  {entry['max_rss_mb']:7.1f} MB",
              file=sys.stderr)
        return entry

    def profile(self, name: str, argv: list[str], interpreter: list[str]) -> dict[str, Any]:
        """Run once more under cProfile; keep the .prof and the top functions."""
        import pstats

        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        prof = OUT / f"{slug}.prof"
        log = self.logs / f"profile_{slug}.log"
        run_measured([*interpreter, "-m", "cProfile", "-o", str(prof), str(self.hive), *argv],
                     self.work, log)
        stats = pstats.Stats(str(prof))
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = []
        for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in \
                stats.stats.items():  # type: ignore[attr-defined]
            rows.append({"function": f"{_short(file)}:{line}({func})", "calls": ncalls,
                         "tottime_s": round(tottime, 4), "cumtime_s": round(cumtime, 4)})
        by_cum = sorted(rows, key=lambda r: -r["cumtime_s"])[:25]
        by_tot = sorted(rows, key=lambda r: -r["tottime_s"])[:15]
        return {"step": name, "profile_file": str(prof), "total_s": round(total, 3),
                "top_cumtime": by_cum, "top_tottime": by_tot}


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    root = str(BENCH.parent) + "/"
    return file.removeprefix(root)


def clean_install(work: Path, hive: Path, interpreter: list[str]) -> Path:
    """Hive installed as in production: a venv of its own, with no other .pth files.

    The development install (`pip install -e`) puts an import finder in site-packages that
    runs at every interpreter start, and other packages' .pth files run too; sshd would
    pay for those on each login. This venv holds a copy of Hive's packages and a console
    script made from the installed one (only the shebang differs), which is what
    `pip install .` into a venv (or pipx) produces. The login path needs no dependencies.
    """
    venv = work / "venv"
    subprocess.run([*interpreter, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    root = BENCH.parent
    for package in ("hive", "reconciler", "schemas"):
        shutil.copytree(root / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    body = hive.read_text(encoding="utf-8").split("\n", 1)[1]
    script = venv / "bin" / "hive"
    script.write_text(f"#!{python}\n{body}", encoding="utf-8")
    script.chmod(0o755)
    return script


def login_latency(args: argparse.Namespace, work: Path, hive: Path, wrapper: Path | None,
                  interpreter: list[str], user: str,
                  clean: Path | None) -> list[dict[str, Any]]:
    """Median and p90 of sshd's per-login command, against bare interpreter start-up."""
    state_dir = str(work / "data" / "state")
    config = str(work / "hive.yaml")
    expected = (work / "data" / "state" / "authorized_keys" / user).read_bytes()
    variants: list[tuple[str, list[str], bytes | None, bool]] = [
        # name, argv, expected stdout, has the login target
        ("python -c pass (baseline)", [*interpreter, "-c", "pass"], b"", False),
        ("--state-dir DIR USER", [str(hive), "authorized-keys", "--state-dir", state_dir,
                                  user], expected, True),
        ("-f FILE USER", [str(hive), "authorized-keys", "-f", config, user], expected, True),
        ("--state-dir, unknown user", [str(hive), "authorized-keys", "--state-dir",
                                       state_dir, "bh-nobody-here"], b"", False),
        ("python -m hive --state-dir", [*interpreter, "-m", "hive", "authorized-keys",
                                        "--state-dir", state_dir, user], expected, False),
    ]
    if wrapper is not None:
        variants.append((f"PATH hive ({_wrapper_kind(wrapper)})",
                         [str(wrapper), "authorized-keys", "--state-dir", state_dir, user],
                         expected, False))
    if clean is not None:
        python = str(clean.parent / "python")
        variants += [
            ("clean venv: python -c pass", [python, "-c", "pass"], b"", False),
            ("clean venv: --state-dir DIR USER",
             [str(clean), "authorized-keys", "--state-dir", state_dir, user], expected, True),
            ("clean venv: -f FILE USER",
             [str(clean), "authorized-keys", "-f", config, user], expected, True),
            ("clean venv: python -m hive --state-dir",
             [python, "-m", "hive", "authorized-keys", "--state-dir", state_dir, user],
             expected, False),
        ]
    env = {k: v for k, v in os.environ.items() if k != "HIVE_CONFIG"}
    env["PYTHONPATH"] = ""  # as under sshd: nothing extra on the path
    times: dict[str, list[float]] = {name: [] for name, *_ in variants}
    neutral = tempfile.gettempdir()  # not the repo: `python -m hive` must use the install
    for i in range(args.warmup + args.runs):
        for name, argv, want, _ in variants:  # interleaved, so drift hits all alike
            start = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, env=env, cwd=neutral,
                                  check=False)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0 or (want is not None and proc.stdout != want):
                sys.exit(f"{name}: rc {proc.returncode}, unexpected output "
                         f"{proc.stdout[:200]!r} {proc.stderr[:500]!r}")
            if i >= args.warmup:
                times[name].append(elapsed * 1000)
    rows = []
    for name, argv, _, targeted in variants:
        values = times[name]
        median = statistics.median(values)
        baseline = "clean venv: python -c pass" if name.startswith("clean venv") else \
            "python -c pass (baseline)"
        base = statistics.median(times[baseline])
        rows.append({
            "variant": name, "command": shlex.join(argv), "runs": len(values),
            "median_ms": median, "p90_ms": percentile(values, 0.9), "min_ms": min(values),
            "over_baseline_ms": median - base,
            "target_ms": TARGET_LOGIN_MS if targeted else None,
            "pass": (median < TARGET_LOGIN_MS) if targeted else None,
        })
    return rows


def import_breakdown(argv: list[str], interpreter: list[str], runs: int = 7) -> dict[str, Any]:
    """Where start-up goes: `python -X importtime`, median microseconds per module.

    Top-level imports (site, hive, ...) with their cumulative time, and the biggest
    imports below them (for site: whatever the .pth files in site-packages pull in).
    """
    samples: dict[tuple[int, str], list[int]] = {}
    env = {k: v for k, v in os.environ.items() if k != "HIVE_CONFIG"}
    for _ in range(runs):
        proc = subprocess.run([*interpreter, "-X", "importtime", *argv], capture_output=True,
                              text=True, env=env, check=False)
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _self, cumulative, name = line.removeprefix("import time:").split("|", 2)
            depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
            samples.setdefault((depth, name.strip()), []).append(int(cumulative))
    rows = [{"module": name, "depth": depth, "cumulative_ms": statistics.median(v) / 1000}
            for (depth, name), v in samples.items()]
    top = [r for r in rows if r["depth"] == 0]
    return {"command": shlex.join([*interpreter, "-X", "importtime", *argv]),
            "top_level": sorted(top, key=lambda r: -r["cumulative_ms"]),
            "total_ms": sum(r["cumulative_ms"] for r in top),
            "largest_nested": sorted((r for r in rows if r["depth"] == 1),
                                     key=lambda r: -r["cumulative_ms"])[:8]}


def phase_breakdown(work: Path, interpreter: list[str]) -> dict[str, Any] | None:
    proc = subprocess.run([*interpreter, str(BENCH / "phases.py"), str(work / "hive.yaml"),
                           "--json"], capture_output=True, text=True, cwd=BENCH.parent,
                          check=False)
    if proc.returncode != 0:
        print(f"  phases.py failed: {proc.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout)


def _wrapper_kind(path: Path) -> str:
    shebang = _shebang(path)
    if ".pyenv/shims" in str(path):
        return "pyenv shim"
    return Path(shlex.split(shebang)[0]).name if shebang else "binary"


# ----------------------------------------------------------------------------- report


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def print_report(result: dict[str, Any]) -> None:
    print()
    print(f"Hive bench: {result['counts']['repositories']} repositories, "
          f"{result['counts']['keys']} keys, {result['counts']['owners']} owners "
          f"({result['config_mb']:.1f} MB hive.yaml), python {result['python']}")
    print()
    head = f"{'step':<24}{'runs':>5}{'median s':>10}{'max s':>8}{'max RSS MB':>12}" \
           f"{'target':>10}  result"
    print(head)
    print("-" * len(head))
    for s in result["steps"]:
        target = f"< {s['target_s']:g} s" if s["target_s"] else ""
        print(f"{s['step']:<24}{s['runs']:>5}{s['median_s']:>10.2f}{s['max_s']:>8.2f}"
              f"{s['max_rss_mb']:>12.1f}{target:>10}  {_verdict(s['pass'])}")
    peak = result["peak_rss"]
    print(f"{'peak RSS (any command)':<24}{'':>5}{'':>10}{'':>8}{peak['max_rss_mb']:>12.1f}"
          f"{'< ' + format(TARGET_RSS_MB, 'g') + ' MB':>10}  {_verdict(peak['pass'])}")
    if result["login"]:
        print()
        print(f"hive authorized-keys {result['login_user']} "
              f"({result['login_lines']} key lines), {result['login'][0]['runs']} runs each:")
        head = f"{'variant':<40}{'median ms':>10}{'p90 ms':>8}{'min ms':>8}" \
               f"{'+baseline':>10}{'target':>9}  result"
        print(head)
        print("-" * len(head))
        for r in result["login"]:
            target = f"< {r['target_ms']:g} ms" if r["target_ms"] else ""
            print(f"{r['variant']:<40}{r['median_ms']:>10.1f}{r['p90_ms']:>8.1f}"
                  f"{r['min_ms']:>8.1f}{r['over_baseline_ms']:>+10.1f}{target:>9}  "
                  f"{_verdict(r['pass'])}")
    for where, imports in (result.get("login_imports") or {}).items():
        print()
        print(f"imports of the login path, {where} (-X importtime, median of 7: "
              f"{imports['total_ms']:.1f} ms):")
        top = ", ".join(f"{r['module']} {r['cumulative_ms']:.1f}"
                        for r in imports["top_level"][:6])
        print(f"  top level (ms): {top}")
        nested = ", ".join(f"{r['module']} {r['cumulative_ms']:.1f}"
                           for r in imports["largest_nested"][:5])
        print(f"  largest nested: {nested}")
    phases = result.get("plan_phases")
    if phases:
        print()
        total = sum(v for k, v in phases["seconds"].items() if not k.startswith("import"))
        print(f"no-op plan, in process (bench/phases.py, best of 3, {total:.2f} s "
              "without imports):")
        for name, value in phases["seconds"].items():
            share = "" if name.startswith("import") else f"{100 * value / total:5.1f}%"
            print(f"  {name:<28}{value * 1000:9.1f} ms  {share}")
    failed = [t for t in result["targets"] if not t["pass"]]
    print()
    print(f"targets: {len(result['targets']) - len(failed)}/{len(result['targets'])} pass"
          + ("" if not failed else "; missed: " + ", ".join(t["name"] for t in failed)))
    for p in result.get("profiles", []):
        print()
        print(f"cProfile of '{p['step']}' ({p['total_s']} s under the profiler; "
              f"{_short(p['profile_file'])}), top by own time:")
        for row in p["top_tottime"][:12]:
            print(f"  {row['tottime_s']:7.3f} own {row['cumtime_s']:7.3f} cum "
                  f"{row['calls']:>9}  {row['function']}")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--owners", type=int, default=None,
                        help="default: one per 5 repositories")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of validate and of the no-op plan/apply (median kept)")
    parser.add_argument("--runs", type=int, default=50,
                        help="timed runs per authorized-keys variant")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the temporary folder goes (default /var/lib as root: "
                             "the login path refuses a cache below a world-writable folder "
                             "such as /var/tmp, as sshd does; /var/tmp otherwise; /run is "
                             "tmpfs on most systems, which makes fsync free)")
    parser.add_argument("--hive", default=None, help="path of the hive console script")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--no-venv", action="store_true",
                        help="skip the login-path measurement in a clean venv")
    parser.add_argument("--profile", action="store_true",
                        help="also run validate, the no-op plan, the no-op apply and a "
                             "first apply under cProfile (bench/out/*.prof) and print the "
                             "top functions")
    args = parser.parse_args(argv)

    hive, wrapper = find_hive(args.hive)
    interpreter = interpreter_of(hive)
    is_root = os.geteuid() == 0
    OUT.mkdir(exist_ok=True)
    workdir = args.workdir or Path("/var/lib" if is_root else "/var/tmp")
    work = Path(tempfile.mkdtemp(prefix="hive-bench-", dir=workdir))
    work.chmod(0o755)
    started = time.perf_counter()
    try:
        print(f"hive: {hive} (interpreter {shlex.join(interpreter)}); work dir {work}",
              file=sys.stderr)
        t0 = time.perf_counter()
        text = generate(args.repos, args.keys, args.owners, args.seed)
        (work / "hive.yaml").write_text(text, encoding="utf-8")
        gen_s = time.perf_counter() - t0
        print(f"  {'generate':<22} {gen_s:8.2f} s  ({len(text) / 1e6:.1f} MB)",
              file=sys.stderr)

        bench = Bench(args, work, hive)
        f = ["-f", str(bench.config)]
        bench.step("validate", ["validate", *f], args.repeat, (0,))
        bench.step("plan, empty server", ["plan", *f, "--detailed-exitcode"], 1, (2,))
        login: list[dict[str, Any]] = []
        imports: dict[str, Any] | None = None
        phases: dict[str, Any] | None = None
        user = None
        lines = 0
        counts_on_disk: dict[str, int] = {}
        if is_root:
            bench.step("apply, first", ["apply", *f, "--detailed-exitcode"], 1, (2,))
            # --detailed-exitcode: 0 proves the second run found nothing to change.
            bench.step("plan, no-op", ["plan", *f, "--detailed-exitcode"], args.repeat,
                       (0,), TARGET_NOOP_S)
            bench.step("apply, no-op", ["apply", *f, "--detailed-exitcode"], args.repeat,
                       (0,), TARGET_NOOP_S)
            cache = work / "data" / "state" / "authorized_keys"
            files = sorted(cache.iterdir())
            counts_on_disk = {
                "authorized_keys_files": len(files),
                "authorized_keys_lines": sum(count_lines(p) for p in files),
                "passwd_lines": count_lines(work / "data" / "extrausers" / "passwd"),
                "repository_dirs": sum(1 for _ in (work / "data" / "repos").glob("*/*")),
            }
            # The user with the most key lines: the worst case for the login path.
            user = max(files, key=lambda p: (count_lines(p), p.name)).name
            lines = count_lines(cache / user)
            print(f"  login path: {args.runs} runs x variants, user {user}", file=sys.stderr)
            clean = None
            if not args.no_venv:
                try:
                    clean = clean_install(work, hive, interpreter)
                except (OSError, subprocess.CalledProcessError) as exc:
                    print(f"  clean venv skipped: {exc}", file=sys.stderr)
            login = login_latency(args, work, hive, wrapper, interpreter, user, clean)
            state_dir = str(work / "data" / "state")
            imports = {"dev install": import_breakdown(
                [str(hive), "authorized-keys", "--state-dir", state_dir, user], interpreter)}
            if clean is not None:
                imports["clean venv"] = import_breakdown(
                    [str(clean), "authorized-keys", "--state-dir", state_dir, user],
                    [str(clean.parent / "python")])
            print("  phases of a no-op plan (in process)...", file=sys.stderr)
            phases = phase_breakdown(work, interpreter)
        else:
            print("  not root: skipping apply and the login path (needs an applied cache)",
                  file=sys.stderr)

        profiles = []
        if args.profile:
            print("  profiling (cProfile)...", file=sys.stderr)
            profiles.append(bench.profile("validate", ["validate", *f], interpreter))
            profiles.append(bench.profile("plan, no-op", ["plan", *f], interpreter))
            if is_root:
                profiles.append(bench.profile("apply, no-op", ["apply", *f], interpreter))
                fresh = work / "fresh"  # a second, empty server for the first apply
                fresh.mkdir()
                shutil.copy(bench.config, fresh / "hive.yaml")
                profiles.append(bench.profile("apply, first", [
                    "apply", "-f", str(fresh / "hive.yaml")], interpreter))

        peak = max(s["max_rss_mb"] for s in bench.steps)
        targets = [{"name": s["step"], "value": round(s["median_s"], 3), "unit": "s",
                    "target": s["target_s"], "pass": s["pass"]}
                   for s in bench.steps if s["target_s"] is not None]
        targets.append({"name": "peak RSS", "value": round(peak, 1), "unit": "MB",
                        "target": TARGET_RSS_MB, "pass": peak < TARGET_RSS_MB})
        targets += [{"name": f"authorized-keys {r['variant']}", "value": round(r["median_ms"], 1),
                     "unit": "ms", "target": r["target_ms"], "pass": r["pass"]}
                    for r in login if r["target_ms"] is not None]
        result = {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": platform.node(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "hive_script": str(hive), "interpreter": interpreter,
            "path_hive": str(wrapper) if wrapper else str(hive),
            "git_commit": _git_commit(),
            "workdir": str(work), "root": is_root,
            "args": {"repos": args.repos, "keys": args.keys, "owners": args.owners,
                     "seed": args.seed, "repeat": args.repeat, "runs": args.runs},
            "counts": {"repositories": args.repos, "keys": args.keys,
                       "owners": args.owners or max(1, args.repos // 5),
                       **counts_on_disk},
            "config_mb": len(text) / 1e6, "generate_s": gen_s,
            "steps": bench.steps,
            "peak_rss": {"max_rss_mb": peak, "target_mb": TARGET_RSS_MB,
                         "pass": peak < TARGET_RSS_MB},
            "login_user": user, "login_lines": lines, "login": login,
            "login_imports": imports, "plan_phases": phases,
            "targets": targets, "profiles": profiles,
        }
        result["bench_s"] = time.perf_counter() - started
        (OUT / "results.json").write_text(json.dumps(result, indent=2) + "\n",
                                          encoding="utf-8")
        print_report(result)
        print(f"\nwrote {OUT / 'results.json'} (bench took {result['bench_s']:.0f} s)")
        return 0 if all(t["pass"] for t in targets) else 1
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(BENCH.parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
