"""Shared fixtures: real SSH keys, a hive.yaml writer, and the `hive` CLI as a subprocess."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def ssh_keygen(path: Path, kind: str = "ed25519", bits: int | None = None) -> str:
    """A real key pair made by ssh-keygen; returns the public key line."""
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)]
    if bits:
        cmd += ["-b", str(bits)]
    subprocess.run(cmd, check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="session")
def pubkeys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: ssh_keygen(folder / name) for name in ("a", "b", "c", "d")}


def write_config(folder: Path, body: str, *, name: str = "hive.yaml",
                 prefix: str = "bh-", uid_range: str = "[20000, 20099]",
                 identity: str = "{backend: files, files_dir: ./extrausers}") -> Path:
    """hive.yaml with a server section whose paths all live in `folder`, then `body`."""
    server = textwrap.dedent(f"""\
        version: 1
        server:
          name: test1
          ssh_host: 127.0.0.1
          repos_root: ./repos
          state_dir: ./state
          users: {{prefix: "{prefix}", uid_range: {uid_range}, shell: /bin/sh}}
          identity: {identity}
        """)
    path = folder / name
    path.write_text(server + textwrap.dedent(body))
    return path


def alice_config(folder: Path, public_key: str, repositories: list[str],
                 **server: str) -> Path:
    """write_config with one owner (alice), her key `ka`, and `repositories` that all
    take it with full access."""
    lines = "".join(f"  {name}: {{owner: alice, keys: [ka]}}\n" for name in repositories)
    return write_config(folder, f"owners: {{alice: {{}}}}\n"
                                f"keys:\n  ka: {{owner: alice, public_key: {public_key}}}\n"
                                f"repositories:\n{lines}", **server)


def hive(*args: str, user: int | None = None, env: dict[str, str] | None = None,
         cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `hive` command line as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hive", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout,
                          user=user)


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="apply needs root (chown)")


@pytest.fixture
def sysroot() -> Any:
    """A root-owned 0755 folder outside /tmp (sshd's StrictModes and a non-root user need
    every parent to be root-owned and not world-writable); removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="hive-test-", dir="/run"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def nobody_hive_argv(sysroot: Path) -> list[str] | None:
    """argv prefix that runs this checkout's `hive` as `nobody`. The interpreter, its
    packages (a virtualenv's or the interpreter's own) and the checkout may live under
    /root (0700): a private mount namespace binds each to a path under `sysroot` that
    nobody can reach; the host is untouched. None where that cannot work (odd layout)."""
    base = Path(sys.base_prefix)
    exe = Path(sys.executable).resolve()   # a virtualenv's python links to its base's
    if not exe.is_relative_to(base):
        return None
    binds = {base: sysroot / "python", ROOT: sysroot / "src"}
    packages = Path(sysconfig.get_paths()["purelib"])
    env_prefix = Path(sys.prefix)
    if env_prefix != base:   # a virtualenv: its packages are under its own prefix
        binds[env_prefix] = sysroot / "venv"
    owner = env_prefix if packages.is_relative_to(env_prefix) else base
    if not packages.is_relative_to(owner):
        return None
    for target in binds.values():
        target.mkdir(exist_ok=True)
    inner = binds[base] / exe.relative_to(base)
    site = binds[owner] / packages.relative_to(owner)
    # -S: nothing from the interpreter's own site (a Debian python's dist-packages) can
    # shadow the environment's packages; the checkout comes first, as with an editable
    # install, and the environment's .pth files are read by addsitedir.
    boot = (f"import site, runpy, sys; site.addsitedir('{site}'); "
            f"sys.path.insert(0, '{binds[ROOT]}'); sys.argv[0] = 'hive'; "
            "runpy.run_module('hive', run_name='__main__')")
    mounts = " && ".join(f"mount -n --bind '{origin}' '{target}'"
                         for origin, target in binds.items())
    script = (f"{mounts} && exec setpriv --reuid=65534 --regid=65534 "
              f'--clear-groups {inner} -S -c "{boot}" "$@"')
    return ["unshare", "--mount", "sh", "-c", script, "sh"]


@pytest.fixture(scope="session")
def hive_install() -> Iterator[Any]:
    """Hive installed as deploy/sshd/hive-keys-command.conf says (a venv of Debian's python3
    under a root-owned folder, reachable by `nobody`), built once per session for every
    test that needs it; a string (the reason) when it cannot be built here."""
    from hive_install import InstallUnavailable, build_venv_install
    from sshd_harness import root_owned_test_root

    with root_owned_test_root(prefix="hive-venv-") as parent:
        try:
            yield build_venv_install(parent)
        except InstallUnavailable as why:
            yield str(why)


#: Test modules that use the sshd harness share host-wide paths with each other (/run/sshd,
#: the /var/lib/extrausers and /run/nslcd mount points, which the harness creates while a
#: server runs and removes after; host_state() compares them before and after). Tests run
#: in pytest-xdist workers (pyproject addopts: -n auto --dist loadfile, a module per
#: worker), so such a module holds a lock while its servers live, and a second one waits;
#: every other test has only its own tmp_path, ports and processes and runs beside them.
HOST_WIDE_HELPERS = frozenset({"sshd_harness", "hive_install"})


def _uses_host_paths(module: Any) -> bool:
    """Whether the test module uses a helper of HOST_WIDE_HELPERS (imports it, or anything
    defined in it)."""
    return any((getattr(value, "__module__", None) or getattr(value, "__name__", None))
               in HOST_WIDE_HELPERS for value in vars(module).values())


@pytest.fixture(scope="module", autouse=True)
def _host_wide_paths_one_module_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Held for the whole module (autouse: set up before the module's own sshd fixtures,
    torn down after them). flock on this very file: nothing is created, and the lock
    goes with the process."""
    if not _uses_host_paths(request.module):
        yield
        return
    with open(__file__, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# CI's gate on unexpected skips (tests/skip_gate.py); hooks are found as conftest names.
from skip_gate import pytest_runtest_logreport, pytest_sessionfinish  # noqa: E402, F401

if sys.prefix != sys.base_prefix:
    # Tests run from a virtualenv (README, .ci/run) without activating it: its console
    # scripts (`hive` for deploy/ci/hive-ci) must be the ones found on PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session", autouse=True)
def _parse_cache_of_this_session() -> Iterator[None]:
    """Parses cached by schemas/parsecache.py go to a folder of this session (for every
    `hive` the tests start too), not to root's ~/.cache: the host is left as found."""
    folder = tempfile.mkdtemp(prefix="hive-test-cache-")
    before = os.environ.get("HIVE_CACHE_DIR")
    os.environ["HIVE_CACHE_DIR"] = folder
    yield
    if before is None:
        os.environ.pop("HIVE_CACHE_DIR", None)
    else:
        os.environ["HIVE_CACHE_DIR"] = before
    shutil.rmtree(folder, ignore_errors=True)
