"""reconciler/sessions.py: which open connections a revocation ends, and ending them.

The rules are tables over plain data; finding and ending processes runs real processes
under a spare uid (root only). tests/test_e2e_sessions.py does it all with real sshd.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import requires_root

from reconciler import keylines, sessions
from reconciler.sessions import Connection, Process


def ed25519(fill: bytes) -> tuple[str, str]:
    blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + fill * 32
    return "ssh-ed25519", base64.b64encode(blob).decode()


K1, K2 = ed25519(b"1"), ed25519(b"2")
CMD = 'restrict,command="borg serve --restrict-to-repository /r/bh-a/a"'
LINE1 = f"{CMD} {K1[0]} {K1[1]} hive:k1"
LINE2 = f"{CMD} {K2[0]} {K2[1]} hive:k2"
LINE1_APPEND = LINE1.replace('/a"', '/a --append-only"')
FOREIGN = f"{ed25519(b'3')[0]} {ed25519(b'3')[1]} someone@somewhere"


def rsa(exponent: bytes) -> str:
    """A 3072-bit RSA key's base64; sshd reads `exponent` with leading zeros skipped."""
    modulus = b"\0" + b"\xc1" * 384
    fields = (b"ssh-rsa", exponent, modulus)
    return base64.b64encode(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).decode()


RSA = ("ssh-rsa", rsa(b"\x01\x00\x01"))  # as ssh-keygen writes it, and sshd names it
# the same key with a zero byte before its exponent, as a Hive that did not insist on
# OpenSSH's form (schemas/sshkeys.py) may have written it
RSA_PADDED_LINE = f"{CMD} ssh-rsa {rsa(bytes([0, 1, 0, 1]))} hive:r"


def conn(name: str, keys: frozenset[tuple[str, str]] | None) -> Connection:
    return Connection("bh-a", [Process(1, 0, 20000, 0)], keys, client=name)


WITH_K1, WITH_K2 = conn("k1", frozenset({K1})), conn("k2", frozenset({K2}))
UNKNOWN = conn("unknown", None)
ALL = [WITH_K1, WITH_K2, UNKNOWN]


@pytest.mark.parametrize(("before", "after", "ended"), [
    ([LINE1, LINE2], [LINE1, LINE2], []),                       # nothing changed
    ([LINE1], [LINE1, LINE2], []),                              # a key added: nothing ends
    ([LINE1, LINE2], [LINE2], ["k1", "unknown"]),               # k1 removed
    ([LINE1, LINE2], [LINE1_APPEND, LINE2], ["k1", "unknown"]),  # k1 made append-only
    ([LINE1, LINE2], [], ["k1", "k2", "unknown"]),              # the file deleted
    ([LINE1, LINE2, FOREIGN], [LINE1, LINE2],                   # a line Hive cannot read
     ["k1", "k2", "unknown"]),                                  # (is it k1? k2?): all end
    ([LINE1, LINE1_APPEND, LINE2], [LINE1_APPEND, LINE2],       # one of k1's two lines
     ["k1", "unknown"]),
])
def test_which_connections_end(before: list[str], after: list[str],
                               ended: list[str]) -> None:
    gone = sessions.revoked(before, after)
    assert [c.client for c in sessions.to_end(ALL, gone)] == ended


def test_a_line_whose_key_is_in_another_text_than_sshd_names_ends_all_of_its_user() -> None:
    with_rsa = conn("rsa", frozenset({RSA}))
    gone = sessions.revoked([RSA_PADDED_LINE, LINE2], [LINE2])
    assert sessions.to_end([with_rsa, WITH_K2], gone) == [with_rsa, WITH_K2]
    assert keylines.key_of(f"{CMD} ssh-rsa {RSA[1]} hive:r") == RSA


def test_a_connection_with_two_keys_ends_when_either_is_revoked() -> None:
    both = conn("both", frozenset({K1, K2}))
    assert sessions.to_end([both], sessions.revoked([LINE1, LINE2], [LINE1])) == [both]


@pytest.mark.parametrize(("text", "keys"), [
    (f"publickey {K1[0]} {K1[1]}\n", frozenset({K1})),
    (f"password\npublickey {K1[0]} {K1[1]}\npublickey {K2[0]} {K2[1]}\n",
     frozenset({K1, K2})),
    ("password\n", None),
    ("", None),
    ("publickey\n", None),
    (f"publickey {K1[0]} {K1[1]}", None),  # cut short: no line end
])
def test_auth_info_files(text: str, keys: frozenset[tuple[str, str]] | None) -> None:
    assert sessions.auth_keys(text) == keys


def test_line_keys_and_names() -> None:
    assert keylines.key_of(LINE1) == K1
    assert keylines.key_of(FOREIGN) is None
    assert keylines.key_of("") is None
    lines = {"k1": LINE1, "k2": LINE2, "(unmanaged line 3)": FOREIGN}
    assert sessions.key_names(lines, {K2}) == ["k2"]
    assert sessions.key_names({"k1": LINE1}, None) == []


def test_the_plan_note_names_each_connection_and_says_when_a_key_is_not_known() -> None:
    from reconciler.engine import sessions_note

    assert sessions_note([]) is None
    known = Connection("bh-a", [Process(7, 1, 20000, 0)], frozenset({K1}),
                       client="127.0.0.1 5000", key_names=["k1"])
    assert sessions_note([known]) == (
        "apply ends 1 open ssh connection logged in with a key line this plan revokes: "
        "bh-a pid 7, key k1")  # no client address: plans are posted on pull requests
    unread = Connection("bh-b", [Process(8, 1, 20001, 0)])  # a plan run as another user
    note = sessions_note([known, unread])
    assert note is not None and note.startswith("apply ends 2 open ssh connections ")
    assert "; bh-b pid 8, key unknown. A key is unknown when " in note
    many = sessions_note([Connection("bh-a", [Process(pid, 1, 20000, 0)], key_names=["k"])
                          for pid in range(100, 112)])
    assert many is not None and "bh-a pid 109," in many and "bh-a pid 110," not in many
    assert many.endswith("; and 2 more")


# -- real processes ---------------------------------------------------------------------

SPARE_UID = 59977  # no account, in no test's uid_range; processes only


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """start(script, env, top="sshd"): a shell running `script` as SPARE_UID, whose
    process is named `top` (a link of that name to sh): what a connection's processes
    look like to /proc, sshd's own part left out."""
    started: list[subprocess.Popen[bytes]] = []
    links = Path(tempfile.mkdtemp(dir="/var/tmp"))  # (SPARE_UID cannot enter tmp_path)
    links.chmod(0o755)

    def start(script: str, env: dict[str, str] | None = None,
              top: str = "sshd") -> subprocess.Popen[bytes]:
        program = links / top
        if not program.exists():
            program.symlink_to("/bin/sh")
        process = subprocess.Popen([str(program), "-c", script], user=SPARE_UID,
                                   group=SPARE_UID, env=env or {}, cwd="/",
                                   start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:  # the whole group: the shell's children too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    wait_for(lambda: mine() == [])
    shutil.rmtree(links)


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def mine() -> list[Connection]:
    return sessions.connections("bh-test", {SPARE_UID})


@requires_root
def test_processes_are_grouped_under_their_top_and_read_with_their_key(
        spawn: object, tmp_path: Path) -> None:
    auth = tmp_path / "sshauth.x"
    auth.write_text(f"publickey {K1[0]} {K1[1]}\n")
    os.chown(auth, SPARE_UID, SPARE_UID)
    tmp_path.chmod(0o755)
    top = spawn("sleep 60 & sleep 61; wait", {  # type: ignore[operator]
        "SSH_USER_AUTH": str(auth), "SSH_CONNECTION": "192.0.2.7 50000 192.0.2.1 22"})
    wait_for(lambda: len([p for c in mine() for p in c.processes]) == 3)
    [found] = mine()
    assert found.pid == top.pid
    assert {p.pid for p in found.processes} > {top.pid}
    assert found.keys == frozenset({K1})
    assert found.client == "192.0.2.7 50000"


@pytest.mark.parametrize("case", ["a link", "root's file", "a fifo"])
@requires_root
def test_an_auth_file_the_session_user_does_not_own_names_no_key(
        spawn: object, tmp_path: Path, case: str) -> None:
    """A link (to a root-only file, say), a file of someone else, a fifo that would block
    the read: no key, so the connection counts as unknown (ended on any revocation)."""
    tmp_path.chmod(0o755)
    real = tmp_path / "real"
    real.write_text(f"publickey {K1[0]} {K1[1]}\n")
    auth = tmp_path / "sshauth.y"
    if case == "a link":
        os.chown(real, SPARE_UID, SPARE_UID)
        auth.symlink_to(real)
    elif case == "root's file":
        auth = real
    else:
        os.mkfifo(auth)
        os.chown(auth, SPARE_UID, SPARE_UID)
    spawn("sleep 60", {"SSH_USER_AUTH": str(auth)})  # type: ignore[operator]
    wait_for(lambda: mine() != [])
    assert [c.keys for c in mine()] == [None]


@requires_root
def test_processes_of_the_user_outside_ssh_are_left_alone(spawn: object) -> None:
    """Not below an sshd of the user (a cron job, an admin's su): not a connection."""
    spawn("sleep 60", top="cronjob")  # type: ignore[operator]
    wait_for(lambda: sessions.processes() and any(
        p.uid == SPARE_UID for p in sessions.processes().values()))
    assert mine() == []


@requires_root
def test_end_terms_then_kills_what_stays(spawn: object) -> None:
    polite = spawn("sleep 60")  # type: ignore[operator]
    stubborn = spawn("trap '' TERM; while :; do sleep 1; done")  # type: ignore[operator]
    wait_for(lambda: len(mine()) == 2)
    time.sleep(0.2)  # let the shell set its trap
    found = mine()
    sessions.end(found, wait=1.0)
    assert polite.wait(timeout=5) is not None and stubborn.wait(timeout=5) is not None
    by_pid = {c.pid: c for c in found}
    assert by_pid[polite.pid].killed == [] and polite.pid in by_pid[polite.pid].ended
    assert stubborn.pid in by_pid[stubborn.pid].killed


@requires_root
def test_end_never_signals_a_process_that_is_not_the_one_read(spawn: object) -> None:
    """The same pid with another start time is another process (pid reuse): untouched."""
    process = spawn("sleep 60")  # type: ignore[operator]
    wait_for(lambda: mine() != [])
    [found] = mine()
    real = found.processes[0]
    found.processes = [Process(real.pid, real.ppid, real.uid, real.start + 1)]
    sessions.end([found], wait=0.2)
    assert process.poll() is None and found.ended == [] and found.killed == []
