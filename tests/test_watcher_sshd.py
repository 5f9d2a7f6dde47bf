"""`hive watch` seeing borg clients that come in over the real sshd, as in production:
`hive apply` writes users and keys, sshd runs `borg serve` as the repository's user, the
watcher (root) records what that `borg serve` does on disk. And when `borg serve` dies
holding the lock, the lock is reported stale: its holder was a process of this host.

Reuses the end-to-end setup of tests/test_e2e_sshd.py (needs root, sshd, unshare, borg).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from sshd_harness import describe, missing_prerequisites, root_owned_test_root
from test_e2e_sshd import _hive_server, hive_apply, hive_yaml, make_deployment
from test_watcher_support import hive_cli, kinds, wait_for, watching

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(bool(missing_prerequisites(("ssh", "ssh-keygen", "borg", "sshd"))),
                       reason="needs ssh, sshd and borg"),
]


def test_borg_over_sshd_is_watched_and_a_dead_borg_serve_leaves_a_stale_lock() -> None:
    with root_owned_test_root(prefix="hive-watch-e2e-") as root:
        d = make_deployment(root)
        config = root / "hive.yaml"
        config.write_text(hive_yaml(d))
        applied = hive_apply(config)
        assert applied.returncode == 0, describe(applied)
        state = d.state_dir
        with _hive_server(d) as server, watching(config) as watcher:
            d.server = server
            alice = d.client("alice-key")
            url = d.url(alice, "repoa")
            data = alice.workdir / "data.txt"
            data.write_text("hello over ssh\n")
            for args in (("init", "-e", "repokey", url), ("create", f"{url}::a1", str(data))):
                result = alice.borg(*args)
                assert result.returncode == 0, describe(result, server)
            wait_for(lambda: kinds(state, "repoa").count("closed") == 2, what="two sessions")

            # A backup that streams from a FIFO holds the lock until we say; then its
            # borg serve (the lock's holder, running as bh-repoa) is killed.
            fifo = alice.workdir / "fifo"
            os.mkfifo(fifo)
            env = alice._env()
            client = subprocess.Popen(["borg", "create", "--read-special", f"{url}::a2",
                                       str(fifo)], env=env, cwd=alice.workdir,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            writer = None
            try:
                writer = wait_for(lambda: _open_writer(fifo, client), what="borg to read")
                lock = d.repo_path("repoa") / "lock.exclusive"
                holder = wait_for(lambda: [p.name for p in lock.iterdir()]
                                  if lock.is_dir() else [], what="the lock")[0]
                pid = int(re.match(r".+\.(\d+)-\d+$", holder).group(1))
                assert Path(f"/proc/{pid}").stat().st_uid == \
                    d.repo_path("repoa").stat().st_uid  # borg serve, as the repo's user
                os.kill(pid, signal.SIGKILL)
                stale = wait_for(lambda: [json.loads(x) for (x,) in _lock_stale(state)],
                                 what="lock_stale")
            finally:
                if writer is not None:
                    os.close(writer)
                client.kill()
                client.wait(timeout=30)
            assert stale[0]["reason"] == "holder gone"
            assert f"pid {pid}" in stale[0]["holders"][0]
            status = hive_cli("status", "-f", str(config), "-o", "json", "--owner", "alice")
            states = {s["repository"]: s["state"] for s in json.loads(status.stdout)}
            assert states["repoa"] == "locked" and status.returncode == 2
            assert watcher.stop() == 0
        assert kinds(state, "repoa")[:9] == ["created", "opened", "updated", "closed",
                                             "opened", "updated", "closed", "opened",
                                             "lock_stale"]


def _open_writer(fifo: Path, client: subprocess.Popen[str]) -> int | None:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        assert client.poll() is None, client.communicate()
        return None
    os.set_blocking(fd, True)
    os.write(fd, b"streamed over ssh\n" * 100)
    return fd


def _lock_stale(state: Path) -> list[tuple[str]]:
    from test_watcher_support import query

    return query(state, "SELECT details FROM events WHERE kind = 'lock_stale'")
