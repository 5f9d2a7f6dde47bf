"""Helpers for the watcher, stats and status tests (no tests here): real borg clients, a
real `hive watch` subprocess, and queries through the same lock `hive status` takes.

Waiting is bounded (`wait_for`) but never asserted on: a slow machine makes a test slower,
not red. What is asserted is what ended up in the database.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(probe: Callable[[], T], timeout: float = 30.0, what: str = "") -> T:
    """Poll until probe() is truthy; fail with its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or probe}: last {value!r}")
        time.sleep(0.05)


class Borg:
    """A real borg client (1.x CLI, or 2.x when `two`) with its own base dir."""

    def __init__(self, base: Path, binary: str = "borg") -> None:
        self.binary = binary
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]
        self.version = version
        self.two = version.startswith("2.")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
        env.update(BORG_BASE_DIR=str(self.base), BORG_PASSPHRASE="test-passphrase",
                   BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_DISPLAY_PASSPHRASE="no")
        return env

    def argv(self, command: str, repo: Path, *args: str) -> list[str]:
        if self.two:
            name = {"init": "repo-create", "list": "repo-list"}.get(command, command)
            extra = ["-e", "repokey-aes-ocb"] if command == "init" else []
            return [self.binary, "-r", str(repo), name, *extra, *args]
        extra = ["-e", "repokey"] if command == "init" else []
        if command == "create":  # borg 1.x: [options] REPO::ARCHIVE PATH...
            options = [a for a in args[1:] if a.startswith("--")]
            paths = [a for a in args[1:] if not a.startswith("--")]
            return [self.binary, command, *options, f"{repo}::{args[0]}", *paths]
        return [self.binary, command, *extra, str(repo), *args]

    def __call__(self, command: str, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(command, repo, *args), capture_output=True,
                                text=True, env=self.env(), timeout=120,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"borg {command} failed:\n{result.stderr}"
        return result

    def start(self, command: str, repo: Path, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(command, repo, *args), env=self.env(), text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)


def optional_borgs() -> list[Any]:
    """The Debian borg always; borg 1.4 and a borg 2 beta when the environment names them
    (HIVE_TEST_BORG14=/path/to/borg, HIVE_TEST_BORG2=/path/to/borg)."""
    import pytest

    found = [pytest.param("borg", id="borg-debian")]
    for var, label in (("HIVE_TEST_BORG14", "borg-1.4"), ("HIVE_TEST_BORG2", "borg-2")):
        path = os.environ.get(var)
        found.append(pytest.param(path or "", id=label, marks=pytest.mark.skipif(
            not path or not shutil.which(path), reason=f"set {var} to a {label} binary")))
    return found


def config_text(body: str, **server: str) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in server.items())
    return textwrap.dedent("""\
        version: 1
        server:
          name: test1
          ssh_host: 127.0.0.1
          repos_root: ./repos
          state_dir: ./state
        """) + extra + textwrap.dedent(body)


def make_config(folder: Path, repos: dict[str, str], **server: str) -> Path:
    """hive.yaml with owners alice and bob and the given repositories (name -> flow map
    body), and their user folders made by hand (the watcher needs no `hive apply`)."""
    lines = "".join(f"  {name}: {{{body}}}\n" for name, body in repos.items())
    path = folder / "hive.yaml"
    path.write_text(config_text("owners: {alice: {}, bob: {}}\ngroups: {team: {members: "
                                "[bob]}}\nrepositories:\n" + lines, **server))
    for name in repos:
        (folder / "repos" / f"bh-{name}").mkdir(parents=True, exist_ok=True)
    (folder / "state").mkdir(exist_ok=True)
    return path


def repo_path(folder: Path, name: str) -> Path:
    return folder / "repos" / f"bh-{name}" / name


def hive_cli(*args: str, cwd: Path | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hive", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout)


class WatchProcess:
    """`python -m hive watch -f FILE` as a subprocess; its log goes to a file."""

    def __init__(self, config: Path, *options: str) -> None:
        self.config = config
        self.options = options
        self.log = config.parent / "watch.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.mark = 0

    def start(self, wait: bool = True) -> WatchProcess:
        self.mark = self.log.stat().st_size if self.log.exists() else 0
        handle = open(self.log, "ab")  # noqa: SIM115 (the child keeps it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hive", "watch", "-f", str(self.config), "-v",
             "--lock-check-interval", "0.2", *self.options],
            stdout=handle, stderr=handle, cwd=ROOT)
        handle.close()
        if wait:
            wait_for(lambda: "watching" in self.text() or self.process.poll() is not None,
                     what="hive watch to start")
            assert self.process.poll() is None, self.text()
        return self

    def text(self) -> str:
        """The log since the last start."""
        return self.log.read_bytes()[self.mark:].decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=90)
        self.process = None
        return code

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=30)


@contextlib.contextmanager
def watching(config: Path, *options: str) -> Iterator[WatchProcess]:
    watcher = WatchProcess(config, *options).start()
    try:
        yield watcher
    finally:
        watcher.kill_if_running()


def query(state_dir: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Read the database the way `hive status` does: shared lock, read-only."""
    from watcher import store

    with store.read(state_dir) as con:
        if con is None:
            return []
        return con.execute(sql, params or []).fetchall()


def events(state_dir: Path, repository: str | None = None) -> list[tuple[Any, ...]]:
    """(kind, details as dict, source) in recorded order."""
    import json

    rows = query(state_dir, "SELECT kind, details, source, repository FROM events "
                            "ORDER BY rowid")
    return [(k, json.loads(d), s) for k, d, s, r in rows if repository in (None, r)]


def kinds(state_dir: Path, repository: str | None = None) -> list[str]:
    return [k for k, _, _ in events(state_dir, repository)]


def barrier(folder: Path, state_dir: Path) -> None:
    """Return once the watcher has recorded everything that happened before the call.

    It makes a tiny repository (a folder with a `config`) and waits for its `created`
    event: one thread handles inotify events in order and writes them in order, so every
    earlier event is in the database by then.
    """
    parent = folder / "repos" / "bh-barrier"
    parent.mkdir(parents=True, exist_ok=True)
    name = f"b{len(list(parent.iterdir()))}"
    (parent / name).mkdir()
    (parent / name / "config").write_text("[repository]\nversion = 1\n")
    wait_for(lambda: query(state_dir, "SELECT count(*) FROM events WHERE repository = $1 "
                                      "AND kind = 'created'", [name])[0][0] == 1,
             what=f"barrier {name}")


@contextlib.contextmanager
def backup_in_progress(borg: Borg, repo: Path, archive: str,
                       fifo: Path) -> Iterator[subprocess.Popen[str]]:
    """`borg create --read-special` reading a FIFO: the backup holds the repository lock
    until the FIFO is closed, so a test decides exactly when it ends."""
    if not fifo.exists():
        os.mkfifo(fifo)
    process = borg.start("create", repo, archive, "--read-special", str(fifo))

    def open_writer() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            assert process.poll() is None, process.communicate()
            if exc.errno != errno.ENXIO:  # ENXIO: borg has not opened it yet
                raise
            return None

    writer = wait_for(open_writer, what="borg to open the FIFO")
    os.set_blocking(writer, True)
    os.write(writer, b"streamed backup data\n" * 100)
    try:
        yield process
    finally:
        with contextlib.suppress(OSError):
            os.close(writer)
