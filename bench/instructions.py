"""Instructions a `hive` command executes, counted by valgrind: an A/B that noise cannot move.

    python bench/instructions.py HIVE_YAML [--tree DIR ...] [--command "plan"]

Wall and CPU seconds on a shared or virtual machine drift by a third within the hour (the
scale rows of issue 11 moved from 24.7 s to 51.9 s on the same code), so a change worth 5%
cannot be seen in them. The number of instructions executed is the same on every run (to
about 0.1%), whatever else the machine does: run the command once under
`valgrind --tool=callgrind` for each source tree (PYTHONPATH=DIR, e.g. a `git worktree`
of the commit to compare with) and print the counts and their ratio to the first.

Instructions are not seconds (a cache miss costs more than an add), but for the same work
done by two versions of the code they rank the versions. Needs valgrind (Debian: valgrind);
valgrind makes the command about 50 times slower (a 50,000-repository plan: 5 minutes).
The file should be applied already, so the plan measured is the converged one.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def instructions(tree: Path, hive_yaml: Path, command: list[str]) -> int:
    """Instructions of one `python -m hive COMMAND -f HIVE_YAML` with PYTHONPATH=tree."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-m", "hive", *command, "-f", str(hive_yaml)],
        env=env, cwd=hive_yaml.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"valgrind gave no count for {tree}:\n{done.stderr[-2000:]}")
    if done.returncode not in (0, 2):
        raise SystemExit(f"hive {' '.join(command)} exited {done.returncode} for {tree}")
    return int(found[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hive_yaml", type=Path)
    parser.add_argument("--tree", type=Path, action="append",
                        help="a source tree to measure (repeatable; default: this checkout)")
    parser.add_argument("--command", default="plan",
                        help="the hive command and its options, without -f (default: plan)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    trees = args.tree or [ROOT]
    command = shlex.split(args.command)
    first = None
    for tree in trees:
        count = instructions(tree.resolve(), args.hive_yaml.resolve(), command)
        first = first or count
        print(f"{count:>16,}  {count / first:6.3f}  {tree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
