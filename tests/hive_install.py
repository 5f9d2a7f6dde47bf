"""Hive installed the way a production AuthorizedKeysCommand needs it: reachable by `nobody`.

Why this exists: the test run's own Hive is an editable install into a pyenv Python under
/root, which is 0700, so an AuthorizedKeysCommand run as `nobody` cannot even start that
interpreter (see /work/shared/README.md). deploy/sshd/hive-keys-command.conf tells the
operator to make a venv from Debian's /usr/bin/python3 under a root-owned 0755 folder and
`pip install` Hive into it; this module does exactly that, so the test exercises the same
layout: a real, non-editable install with its dependencies, a console script whose path
sshd accepts (root-owned, no group/world-writable parent), an interpreter nobody can run.

The project is copied first (only what the package needs) and installed from the copy:
pip builds in the source tree (build/, *.egg-info), and the working tree is shared with
other people; the install also must not depend on the working tree staying reachable.
`--no-cache-dir` keeps root's ~/.cache/pip untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")
#: pip's words when the index (PyPI or a mirror) cannot be reached or lacks a dependency:
#: the one failure that skips instead of failing.
UNREACHABLE_INDEX = (
    "No matching distribution found", "Could not find a version that satisfies",
    "NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
    "ConnectTimeoutError", "ReadTimeoutError", "ProxyError", "Max retries exceeded",
)


class InstallUnavailable(RuntimeError):
    """The install cannot be built on this machine (no python3-venv, no package index):
    a reason to skip, not a failure of Hive."""


@dataclass(frozen=True)
class HiveInstall:
    """A venv holding Hive; `hive` is its console script."""

    prefix: Path

    @property
    def hive(self) -> Path:
        return self.prefix / "bin" / "hive"

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"


def project_parts(project: Path) -> list[str]:
    """What `pip install` of the project needs, read from its pyproject.toml (packages
    change as the project grows): the file itself, the readme, each top-level package."""
    with (project / "pyproject.toml").open("rb") as handle:
        meta = tomllib.load(handle)
    packages = meta.get("tool", {}).get("setuptools", {}).get("packages", [])
    readme = meta.get("project", {}).get("readme")
    parts = ["pyproject.toml", *([readme] if isinstance(readme, str) else [])]
    for package in packages:
        top = package.split(".")[0]
        if top not in parts:
            parts.append(top)
    return parts


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYENV"))}
    env["PIP_NO_INPUT"] = "1"
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, umask=0o022)  # readable by nobody


def build_venv_install(parent: Path, project: Path = REPO_ROOT,
                       timeout: float = 600) -> HiveInstall:
    """`python3 -m venv <parent>/venv` (Debian's python) + `pip install` of a copy of Hive.

    `parent` must be a root-owned 0755 folder (e.g. from root_owned_test_root()); raises
    InstallUnavailable when python3-venv or the package index is missing.
    """
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        raise InstallUnavailable(f"{DEBIAN_PYTHON} is missing")
    probe = _run([str(DEBIAN_PYTHON), "-c", "import venv, ensurepip"], timeout=60)
    if probe.returncode != 0:
        raise InstallUnavailable("python3 -m venv needs the Debian package python3-venv: "
                                 + probe.stderr.strip().splitlines()[-1])
    source = parent / "src"
    source.mkdir(mode=0o755)
    for part in project_parts(project):
        origin = project / part
        if origin.is_dir():
            shutil.copytree(origin, source / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / part)
    install = HiveInstall(parent / "venv")
    made = _run([str(DEBIAN_PYTHON), "-m", "venv", str(install.prefix)], timeout=120)
    if made.returncode != 0:
        raise RuntimeError(f"python3 -m venv failed:\n{made.stdout}{made.stderr}")
    pip = _run([str(install.python), "-m", "pip", "install", "--no-cache-dir",
                "--disable-pip-version-check", "--quiet", str(source)], timeout=timeout)
    if pip.returncode != 0:
        output = pip.stdout + pip.stderr
        tail = "\n".join(output.strip().splitlines()[-5:])
        if any(sign in output for sign in UNREACHABLE_INDEX):
            raise InstallUnavailable(f"pip could not get Hive's dependencies: {tail}")
        raise RuntimeError(f"pip install of Hive failed:\n{output}")
    if not install.hive.exists():
        raise RuntimeError(f"pip installed no console script at {install.hive}")
    return install
