"""A real OpenSSH server and real ssh/borg/rsync clients for Hive's end-to-end tests.

Why this exists: Hive's promise is that the files it writes (extrausers passwd/group/shadow,
one authorized_keys file per repository user, repository directories with exact owners and
modes) make a stock sshd + `borg serve` do the right thing. Only the real programs can check
that: sshd's StrictModes, its account checks without PAM, the forced command running through
the login shell, and borg's `--restrict-to-repository`. So nothing here is mocked.

How the host is kept clean:

* sshd runs inside `unshare --mount`, where `/etc/nsswitch.conf` is replaced (bind mount) by
  one saying `files extrausers`, and `/var/lib/extrausers` by the test's `files_dir`. The
  host's files are never written; the mounts vanish with the namespace when its last
  process (sshd and its sessions) exits.
* Everything else (host key, config, pid file, log, client keys, borg's base dir) lives in a
  test root directory that the caller removes. `root_owned_test_root()` makes one under
  `/run`, because sshd's StrictModes refuses an AuthorizedKeysFile below a group- or
  world-writable directory such as /tmp or /var/tmp (both 1777).
* `/run/sshd` (sshd's privilege-separation directory) and the `/var/lib/extrausers` mount
  point are created only if missing, and removed again when the last server stops.
* Processes are ended by pid: sshd itself, then any session process left in its mount
  namespace (found through /proc/<pid>/ns/mnt), never by name.

The LDAP variant (tests/test_e2e_ldap.py) needs more in the same namespace: nslcd's config
path and socket are compiled in (/etc/nslcd.conf, /run/nslcd/socket), so a test cannot run
its own nslcd beside the host's except by mounting over those paths where only sshd sees
them. `SshdServer(files_dir=None, nsswitch=..., mounts=[BindMount(...)],
daemons=[NamespaceDaemon(...)])` does that: the mounts are made, the daemons started and
waited for, and only then sshd is exec'd, all inside one private mount namespace; stopping
the server ends every process of that namespace, daemons included. `run_in_namespace()`
runs a command (e.g. `getent passwd`) where sshd's view of users applies.

Only the standard library is used, so the harness works before Hive itself is importable.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import nsswitch_edit
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
#: What an operator copies into /etc/ssh/sshd_config.d/: the file-cache way and the
#: AuthorizedKeysCommand way (deploy/sshd/).
SHIPPED_SNIPPET = REPO_ROOT / "deploy" / "sshd" / "hive.conf"
SHIPPED_COMMAND_SNIPPET = REPO_ROOT / "deploy" / "sshd" / "hive-keys-command.conf"
SSHD = "/usr/sbin/sshd"
UNSHARE = "/usr/bin/unshare"
EXTRAUSERS_DIR = Path("/var/lib/extrausers")
PRIVSEP_DIR = Path("/run/sshd")
LOOPBACK = "127.0.0.1"

#: Debian 12's nsswitch.conf after the edit deploy/sshd/nsswitch.conf.extrausers ships:
#: glibc (and so sshd) then sees libnss-extrausers users.
NSSWITCH_EXTRAUSERS = nsswitch_edit.edited(nsswitch_edit.EXTRAUSERS_EDIT)

#: glibc asks a running nscd before reading nsswitch.conf; a host nscd would answer from the
#: host's configuration. An empty folder mounted here (in the namespace only) switches it off.
NSCD_DIR = Path("/run/nscd")
NSENTER = "/usr/bin/nsenter"

#: Client options that make ssh non-interactive and independent of root's ~/.ssh:
#: no config file, no known_hosts (the host key is new every run), only the given key.
SSH_CLIENT_OPTIONS: tuple[str, ...] = (
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "PasswordAuthentication=no",
    "-o", "ConnectTimeout=10",
    "-o", "LogLevel=ERROR",
)


# --------------------------------------------------------------------------- prerequisites


def e2e_marks(label: str, missing: list[str]) -> list[pytest.MarkDecorator]:
    """An end-to-end module's marks: `e2e`, and a skip saying what is `missing` (under
    CI, tests/skip_gate.py fails the run on it: CI installs everything)."""
    return [pytest.mark.e2e,
            pytest.mark.skipif(bool(missing), reason=f"{label}: " + "; ".join(missing))]


def missing_prerequisites(programs: Sequence[str] = ("ssh", "ssh-keygen", "borg")) -> list[str]:
    """Why the real-sshd tests cannot run here (empty list: they can).

    Root is needed for `unshare --mount`, bind mounts and for sshd to switch users.
    """
    reasons = []
    if os.geteuid() != 0:
        reasons.append("must run as root (unshare --mount, bind mounts, sshd changes user)")
    for path in (SSHD, UNSHARE):
        if not os.access(path, os.X_OK):
            reasons.append(f"{path} is missing")
    for program in ("mount", *programs):
        if shutil.which(program) is None:
            reasons.append(f"{program} is not on PATH")
    return reasons


# --------------------------------------------------------------------------- test root


def strict_modes_problems(path: Path, allowed_uids: Sequence[int] = (0,)) -> list[str]:
    """What sshd's StrictModes would object to in `path` and each of its parents.

    sshd wants every component of an AuthorizedKeysFile path owned by root (or the user)
    and not writable by group or others; this reports the offending components, so a test
    can fail with a clear message instead of a bare "Permission denied (publickey)".
    """
    problems = []
    current = Path(path).absolute()
    for component in (current, *current.parents):
        info = component.stat()
        if info.st_uid not in allowed_uids:
            problems.append(f"{component} is owned by uid {info.st_uid}")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problems.append(f"{component} is group/world-writable ({oct(info.st_mode & 0o7777)})")
    return problems


@contextlib.contextmanager
def root_owned_test_root(parent: str | Path = "/run", prefix: str = "hive-e2e-") -> Iterator[Path]:
    """A fresh root-owned 0755 directory whose whole path satisfies sshd's StrictModes.

    /tmp and /var/tmp are 1777, so anything below them is refused by sshd; /run is
    root-owned 0755 on Debian. 0755 (not mkdtemp's 0700) because repository users must be
    able to traverse it to reach <repos_root>/<user>/<repo>. Removed on exit.
    """
    problems = strict_modes_problems(Path(parent))
    if problems:
        raise RuntimeError(f"{parent} cannot hold an sshd state dir: " + "; ".join(problems))
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def render_shipped(shipped: Path, replacements: Sequence[tuple[str, str]], dest: Path,
                   mode: int = 0o644) -> Path:
    """Write a shipped config file (deploy/...) to `dest` with test values swapped in.

    Tests load what ships, changing only paths and secrets; every string to replace must
    still be there, so a change to the shipped file fails the test instead of silently
    testing something else.
    """
    text = shipped.read_text()
    for old, new in replacements:
        if old not in text:
            raise AssertionError(f"{shipped} no longer says {old!r}: update the test")
        text = text.replace(old, new)
    dest.write_text(text)
    dest.chmod(mode)
    return dest


# --------------------------------------------------------------------------- key sources


class KeySource(Protocol):
    """Where sshd finds a user's authorized keys: one implementation per sshd mechanism."""

    def sshd_options(self) -> list[tuple[str, str]]:
        """The sshd_config keywords and values for this mechanism."""
        ...


@dataclass(frozen=True)
class AuthorizedKeysFile:
    """sshd reads `<directory>/<user>`: no process is started per login (Hive's default)."""

    directory: Path

    def sshd_options(self) -> list[tuple[str, str]]:
        return [("AuthorizedKeysFile", f"{self.directory}/%u")]


@dataclass(frozen=True)
class AuthorizedKeysCommand:
    """sshd runs `command` (as `user`) and reads keys from its stdout.

    The command must be an absolute path whose file and parents are root-owned and not
    group/world-writable; tokens such as %u are expanded by sshd. AuthorizedKeysFile is set
    to `none` so only the command decides.
    """

    command: str
    user: str = "nobody"

    def sshd_options(self) -> list[tuple[str, str]]:
        return [
            ("AuthorizedKeysFile", "none"),
            ("AuthorizedKeysCommand", self.command),
            ("AuthorizedKeysCommandUser", self.user),
        ]


#: What every harness sshd needs: no PAM (nothing of the host's PAM stack runs, and PAM
#: modules such as pam_motd would write to the host's /run), StrictModes as in production.
BASE_OPTIONS: tuple[tuple[str, str], ...] = (
    ("UsePAM", "no"),
    ("StrictModes", "yes"),
    ("PermitRootLogin", "no"),
)

#: The hardening of deploy/sshd/hive.conf, applied globally (minus the key source). A
#: server that Includes the real snippet should pass `hardening=BASE_OPTIONS` instead, so
#: the snippet alone is what is tested.
HARDENING_OPTIONS: tuple[tuple[str, str], ...] = (
    *BASE_OPTIONS,
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("PubkeyAuthentication", "yes"),
    ("DisableForwarding", "yes"),
    ("PermitTTY", "no"),
    ("PermitUserRC", "no"),
    ("ClientAliveInterval", "10"),
    ("ClientAliveCountMax", "3"),
    ("ExposeAuthInfo", "yes"),
)


# --------------------------------------------------------------------------- namespace parts


@dataclass(frozen=True)
class BindMount:
    """`source` mounted over `target`, visible only inside the server's mount namespace.

    A bind mount needs an existing mount point. With `create_target`, a missing `target`
    directory is created on the host for as long as a server uses it (like /run/sshd) and
    removed afterwards if still empty; without it a missing target is an error, so that a
    test never silently runs against the host's file.
    """

    source: Path
    target: Path
    create_target: bool = False


@dataclass(frozen=True)
class NamespaceDaemon:
    """A daemon started inside the namespace after the mounts and before sshd.

    `argv` must keep it in the foreground (e.g. `nslcd -d`): it is started in the
    background of the shell that then becomes sshd, so it is sshd's child (sshd reaps it)
    and its output goes to `log`, not to the host's syslog. sshd is only started once
    `ready_path` (a path as seen inside the namespace) exists, so the first login cannot
    race the daemon. It ends with the namespace (SshdServer.stop).
    """

    name: str
    argv: Sequence[str]
    log: Path
    ready_path: Path | None = None
    ready_timeout: float = 10.0

    def script(self) -> list[str]:
        """Shell lines: start in the background, remember the pid, wait until ready."""
        lines = [f"{shlex.join(self.argv)} </dev/null >{shlex.quote(str(self.log))} 2>&1 &",
                 'pids="$pids $!"']
        if self.ready_path is not None:
            tries = max(1, int(self.ready_timeout / 0.05))
            ready = shlex.quote(str(self.ready_path))
            lines.append(
                f"i=0; until [ -e {ready} ]; do"
                f" kill -0 $! 2>/dev/null || {{ echo '{self.name} exited before ready' >&2;"
                " exit 1; };"
                f" i=$((i+1)); [ $i -le {tries} ] || {{ echo '{self.name} not ready after"
                f" {self.ready_timeout}s' >&2; exit 1; }};"
                " sleep 0.05; done")
        return lines


# --------------------------------------------------------------------------- the server


_created_host_paths: dict[Path, int] = {}


def _acquire_host_dir(path: Path, mode: int) -> None:
    """Create a host directory sshd needs if it is missing; count users so the last
    release removes exactly what we created."""
    if path in _created_host_paths:
        _created_host_paths[path] += 1
    elif not path.exists():
        path.mkdir(mode=mode)
        path.chmod(mode)
        _created_host_paths[path] = 1


def _release_host_dir(path: Path) -> None:
    count = _created_host_paths.get(path)
    if count is None:
        return
    if count > 1:
        _created_host_paths[path] = count - 1
        return
    del _created_host_paths[path]
    with contextlib.suppress(OSError):
        path.rmdir()  # only if still empty: never remove something another party put there


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now (sshd start retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class SshdError(RuntimeError):
    """sshd did not start; the message includes its log."""


@dataclass
class SshdServer:
    """A real sshd on 127.0.0.1 that sees the users in `files_dir` and nothing of the host's
    extrausers.

    `workdir` receives sshd_config, the host key, pid file, nsswitch.conf and the log; it
    must be private to this server. `keys` sets the key source globally; `include` names
    an sshd_config snippet read first (as Debian's sshd_config reads sshd_config.d/*.conf),
    e.g. the shipped deploy/sshd/hive.conf whose Match block brings its own key source, in
    which case `keys` may be None. Use as a context manager, or call start()/stop().

    For other identity sources: `files_dir=None` mounts nothing over /var/lib/extrausers,
    `nsswitch` replaces the namespace's nsswitch.conf text, `mounts` and `daemons` add bind
    mounts and daemons (such as nslcd) to the same namespace, before sshd starts.
    """

    workdir: Path
    files_dir: Path | None
    keys: KeySource | None
    extra_options: Sequence[tuple[str, str]] = ()
    include: Path | None = None
    hardening: Sequence[tuple[str, str]] = HARDENING_OPTIONS
    log_level: str = "DEBUG1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    nsswitch: str = NSSWITCH_EXTRAUSERS
    mounts: Sequence[BindMount] = ()
    daemons: Sequence[NamespaceDaemon] = ()
    _namespace: str | None = field(default=None, repr=False)
    _held_host_dirs: list[Path] = field(default_factory=list, repr=False)

    # paths ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "sshd.stderr"

    @property
    def host_key_path(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def nsswitch_path(self) -> Path:
        return self.workdir / "nsswitch.conf"

    # config --------------------------------------------------------------
    def render_config(self) -> str:
        """The sshd_config text: own port, host key and pid file, then hardening and keys."""
        lines = [
            "# Written by tests/sshd_harness.py",
            f"Port {self.port}",
            f"ListenAddress {LOOPBACK}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"LogLevel {self.log_level}",
        ]
        if self.include is not None:
            # First, as Debian does: sshd keeps the first value of a global keyword. A Match
            # block in the included file ends with that file (checked with sshd -T), so the
            # lines below stay global.
            lines.append(f"Include {self.include}")
        keys = self.keys.sshd_options() if self.keys is not None else []
        options = [*self.hardening, *keys, *self.extra_options]
        # sshd keeps the FIRST value of a keyword; here later (more specific) entries win,
        # and each keyword is written once.
        chosen: dict[str, str] = {}
        for key, value in options:
            chosen[key] = value
        lines += [f"{key} {value}" for key, value in chosen.items()]
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.host_key_path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hive-test-host",
                 "-f", str(self.host_key_path)],
                check=True, capture_output=True,
            )
        self.nsswitch_path.write_text(self.nsswitch)
        self.nsswitch_path.chmod(0o644)
        if NSCD_DIR.is_dir():
            self._nscd_hider.mkdir(mode=0o755, exist_ok=True)
        for mount in self.mounts:
            if not mount.source.exists():
                raise SshdError(f"bind mount source {mount.source} does not exist")
            if not mount.create_target and not mount.target.exists():
                raise SshdError(f"bind mount target {mount.target} does not exist on the host")

    @property
    def _nscd_hider(self) -> Path:
        return self.workdir / "nscd-hidden"

    def _all_mounts(self) -> list[BindMount]:
        mounts = [BindMount(self.nsswitch_path, Path("/etc/nsswitch.conf"))]
        if self.files_dir is not None:
            mounts.append(BindMount(self.files_dir, EXTRAUSERS_DIR, create_target=True))
        if NSCD_DIR.is_dir():
            mounts.append(BindMount(self._nscd_hider, NSCD_DIR))
        return [*mounts, *self.mounts]

    def _command(self) -> list[str]:
        # -n: do not record the mounts in /run/mount/utab, which lives on the host's /run.
        lines = ["set -e", "pids="]
        lines += [f"mount -n --bind {shlex.quote(str(m.source))} {shlex.quote(str(m.target))}"
                  for m in self._all_mounts()]
        if self.daemons:
            # If a daemon never gets ready, end the ones already started before giving up.
            lines.append("trap 'kill $pids 2>/dev/null' EXIT")
            for daemon in self.daemons:
                lines += daemon.script()
            lines.append("trap - EXIT")
        lines.append("exec " + shlex.join([SSHD, "-D", "-e", "-f", str(self.config_path),
                                           "-E", str(self.log_path)]))
        # unshare execs sh, sh execs sshd: the Popen pid IS sshd's pid, and daemons started
        # in the background are sshd's children.
        return [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)]

    # lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 10.0, attempts: int = 3) -> SshdServer:
        """Start sshd and return once it answers with an SSH banner.

        Retries on a new port if another process took the chosen one in the meantime.
        """
        if self.process is not None:
            raise SshdError("already started")
        self._prepare()
        try:
            for path in (PRIVSEP_DIR, *(m.target for m in self._all_mounts()
                                        if m.create_target)):
                _acquire_host_dir(path, 0o755)
                self._held_host_dirs.append(path)
            for attempt in range(attempts):
                self.port = free_port()
                self.config_path.write_text(self.render_config())
                test = subprocess.run([SSHD, "-t", "-f", str(self.config_path)],
                                      capture_output=True, text=True)
                if test.returncode != 0:
                    raise SshdError(f"sshd -t rejected {self.config_path}:\n{test.stderr}")
                self.log_path.write_text("")
                with self.stderr_path.open("wb") as err:
                    self.process = subprocess.Popen(
                        self._command(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                        start_new_session=True)
                if self._wait_ready(timeout):
                    self._namespace = _mount_namespace(self.process.pid)
                    return self
                in_use = "Address already in use" in self.log_text()
                self._stop_process()
                # Daemons of a failed attempt outlive its sshd: end them with their namespace.
                namespace, self._namespace = self._namespace, None
                if namespace is not None:
                    _end_namespace_processes(namespace)
                if not in_use or attempt == attempts - 1:
                    raise SshdError(f"sshd did not start on port {self.port}:\n"
                                    + self.log_text())
            raise SshdError("unreachable")  # pragma: no cover
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        own = _mount_namespace(os.getpid())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Learn the namespace as soon as unshare made it, so that stop() can end the
            # namespace's daemons even if sshd itself never comes up.
            namespace = _mount_namespace(self.process.pid)
            if namespace is not None and namespace != own:
                self._namespace = namespace
            if self.process.poll() is not None:
                return False
            with (contextlib.suppress(OSError),
                  socket.create_connection((LOOPBACK, self.port), timeout=1) as sock):
                if sock.recv(64).startswith(b"SSH-"):
                    return True
            time.sleep(0.02)
        return False

    def _stop_process(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop sshd, then any session process still in its mount namespace, by pid."""
        namespace, self._namespace = self._namespace, None
        try:
            self._stop_process()
            if namespace is not None:
                _end_namespace_processes(namespace)
        finally:
            held, self._held_host_dirs = self._held_host_dirs, []
            for path in reversed(held):
                _release_host_dir(path)

    @property
    def namespace(self) -> str | None:
        """The server's mount namespace (`mnt:[...]`) while it runs."""
        return self._namespace

    def __enter__(self) -> SshdServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # inside the namespace ------------------------------------------------
    def run_in_namespace(self, *argv: str, timeout: float = 30.0
                         ) -> subprocess.CompletedProcess[str]:
        """Run a command in sshd's mount namespace, where its nsswitch.conf, extrausers
        and daemons apply (e.g. `getent passwd bh-x` answered through nslcd)."""
        if self.process is None or self.process.poll() is not None:
            raise SshdError("the server is not running")
        return subprocess.run(
            [NSENTER, "--target", str(self.process.pid), "--mount", "--", *argv],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    # diagnostics ---------------------------------------------------------
    def log_text(self) -> str:
        """sshd's log (-E) plus anything it wrote to stderr before redirecting."""
        parts = []
        for path in (self.stderr_path, self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text.strip():
                    parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts) or "(sshd wrote no log)"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def daemon_log_tail(self, name: str, lines: int = 40) -> str:
        """The end of a namespace daemon's own log (its stdout and stderr)."""
        for daemon in self.daemons:
            if daemon.name == name:
                with contextlib.suppress(OSError):
                    text = daemon.log.read_text(errors="replace")
                    return "\n".join(text.splitlines()[-lines:])
                return f"({name} wrote no log)"
        raise KeyError(name)

    def log_mark(self) -> int:
        """The log's current size; pass it to log_since() to see one client's session.

        Clients cannot always report why sshd refused them (borg may exit before it relays
        ssh's "Permission denied"), but sshd's own log always says.
        """
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def wait_for_log(self, text: str, since: int = 0, timeout: float = 5.0) -> bool:
        """Whether `text` shows up in the log after `since` within `timeout` seconds
        (sshd's monitor may write a line a moment after the client has gone)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_since(since):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def log_since(self, mark: int) -> str:
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")
        return ""


def _mount_namespace(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/mnt")
    return None


def _end_namespace_processes(namespace: str, timeout: float = 5.0) -> None:
    """SIGTERM (then SIGKILL) every process in the given mount namespace.

    After sshd's listener exits, per-connection sshd children and their sessions (borg
    serve) may still run; they are exactly the processes in sshd's private namespace.
    """
    if namespace == _mount_namespace(os.getpid()):
        return  # never the test's own namespace
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while True:
        pids = [pid for pid in _all_pids() if _mount_namespace(pid) == namespace]
        if not pids:
            return
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.05)


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def namespace_pids(namespace: str) -> list[int]:
    """The processes still running in a mount namespace (SshdServer.namespace)."""
    return [pid for pid in _all_pids() if _mount_namespace(pid) == namespace]


def pids_named(comm: str) -> set[int]:
    """Live (not zombie) pids whose comm is `comm`: to notice a daemon left behind, never
    to kill by name. A zombie has ended; it only waits for its new parent to reap it."""
    found = set()
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            # /proc/<pid>/stat: "pid (comm) state ..."; comm may contain spaces.
            head, _, rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
            if head.split("(", 1)[1] == comm and rest.split()[0] != "Z":
                found.add(pid)
    return found


#: What the harness mounts over or may create, and must leave exactly as it found it.
WATCHED_HOST_PATHS: tuple[Path, ...] = (
    Path("/etc/nsswitch.conf"), Path("/etc/nslcd.conf"), Path("/run/nslcd"),
    Path("/run/mount"), EXTRAUSERS_DIR,
)


def host_state(paths: Sequence[Path] = WATCHED_HOST_PATHS) -> dict[str, str]:
    """A fingerprint of host files the harness must not change, and of the test process's
    own mount table: take one before and compare after, so a leak fails a test."""
    state = {}
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            state[str(path)] = "missing"
            continue
        owner = f"{info.st_uid}:{info.st_gid} {oct(info.st_mode)}"
        if stat.S_ISDIR(info.st_mode):
            state[str(path)] = f"dir {owner} {sorted(os.listdir(path))}"
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
            state[str(path)] = f"file {owner} {digest}"
    watched = {str(path) for path in paths}
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    state["mounts"] = str(sorted(m for m in mounts if m in watched))
    return state


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class ClientKey:
    """An ed25519 key pair made by ssh-keygen for one test client."""

    private_key: Path
    comment: str

    @property
    def public_key(self) -> str:
        """`ssh-ed25519 AAAA... comment`, as hive.yaml's public_key wants it."""
        return self.private_key.with_suffix(".pub").read_text().strip()


def generate_ed25519_key(directory: Path, name: str, comment: str | None = None) -> ClientKey:
    """Make `<directory>/<name>` (0600) and its .pub with ssh-keygen, no passphrase."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    comment = comment or name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )
    return ClientKey(path, comment)


@dataclass
class SshClient:
    """Run ssh, borg and rsync as one key against a server on 127.0.0.1.

    `workdir` is private to this client: borg's base dir (keys cache, security dir) lives
    there, so root's ~/.config/borg and ~/.cache/borg are never touched.
    """

    port: int
    key: ClientKey
    workdir: Path
    host: str = LOOPBACK
    passphrase: str = "hive-e2e-passphrase"
    timeout: float = 60.0

    def ssh_argv(self) -> list[str]:
        """The ssh command without port or destination (as BORG_RSH / rsync -e want it)."""
        return ["ssh", *SSH_CLIENT_OPTIONS, "-i", str(self.key.private_key)]

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BORG_", "SSH_AUTH_SOCK", "SSH_AGENT"))}
        base = self.workdir / "borg-base"
        base.mkdir(parents=True, exist_ok=True)
        env.update({
            "BORG_BASE_DIR": str(base),
            "BORG_PASSPHRASE": self.passphrase,
            "BORG_RSH": shlex.join(self.ssh_argv()),
            "BORG_DISPLAY_PASSPHRASE": "no",
            # Every server gets a new random port, which borg would call a relocation.
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
        })
        env.update(extra or {})
        return env

    def _run(self, argv: Sequence[str], input: str | None = None,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, text=True, env=self._env(env), timeout=self.timeout,
            cwd=self.workdir,
        )

    def ssh(self, user: str, *command: str, input: str | None = None,
            options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """`ssh -p PORT user@host [command...]`; `options` go before the destination."""
        argv = [*self.ssh_argv(), "-p", str(self.port), *options, f"{user}@{self.host}"]
        if command:
            argv += ["--", *command]
        return self._run(argv, input=input)

    def borg_url(self, user: str, path: str | Path) -> str:
        return f"ssh://{user}@{self.host}:{self.port}{path}"

    def borg(self, *args: str, env: Mapping[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        """The real borg client, talking to the server through BORG_RSH."""
        return self._run(["borg", *args], env=env)

    def rsync(self, *args: str) -> subprocess.CompletedProcess[str]:
        """rsync over this client's ssh; remote paths are written `user@127.0.0.1:path`."""
        rsh = shlex.join([*self.ssh_argv(), "-p", str(self.port)])
        return self._run(["rsync", "-e", rsh, *args])


@dataclass(kw_only=True)
class Deployment:
    """One test server as the e2e tests see it: Hive's folders, client keys, the sshd.
    Each test module adds what its setup needs (an extrausers folder, a slapd, an install).
    """

    root: Path
    repos_root: Path
    state_dir: Path
    keys: dict[str, ClientKey]
    server: SshdServer | None = None

    def user(self, repo: str) -> str:
        return f"bh-{repo}"

    def repo_path(self, repo: str) -> Path:
        return self.repos_root / self.user(repo) / repo

    def client(self, key: str, server: SshdServer | None = None) -> SshClient:
        """A client with `key` against `server` (default: the deployment's own sshd)."""
        server = server or self.server
        assert server is not None
        workdir = self.root / "clients" / key
        workdir.mkdir(parents=True, exist_ok=True)
        return SshClient(port=server.port, key=self.keys[key], workdir=workdir)

    def url(self, client: SshClient, repo: str, path: Path | None = None) -> str:
        return client.borg_url(self.user(repo), path or self.repo_path(repo))


def describe(result: subprocess.CompletedProcess[str], server: SshdServer | None = None) -> str:
    """A failure message: the command, its exit code and output, and sshd's log tail."""
    argv = result.args if isinstance(result.args, list) else [str(result.args)]
    text = (f"command: {shlex.join(str(a) for a in argv)}\nexit code: {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    if server is not None:
        text += f"\n--- sshd log (tail)\n{server.log_tail()}"
    return text
