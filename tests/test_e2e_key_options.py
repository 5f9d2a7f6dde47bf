"""End to end: a hostile `from:` cannot widen a key's access on a real sshd.

Issue 13: Python's ipaddress took `fe80::1%eth0,*` as one address, Hive wrote it unquoted
into from="...", and sshd read two entries, the second `*`: the key worked from anywhere.
With a quote in the "zone id" the value also added options of its own (port-forwarding,
permitopen). Here a real sshd (OpenSSH, the shipped deploy/sshd/hive.conf) reads what
`hive apply` wrote: a key limited to another address is refused from 127.0.0.1; the
hostile values are refused by `hive apply` with their line and column, the cache stays
as it was, and the key is still refused. A key limited to 127.0.0.1 with an expiry logs in,
and sshd's own debug log lists exactly the options Hive meant. Needs root, sshd, unshare.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd_harness import (
    BASE_OPTIONS,
    REPO_ROOT,
    SHIPPED_SNIPPET,
    SshdServer,
    describe,
    e2e_marks,
    generate_ed25519_key,
    missing_prerequisites,
    render_shipped,
    root_owned_test_root,
)
from sshd_harness import Deployment as BaseDeployment

DEPLOY_SNIPPET = SHIPPED_SNIPPET
_MISSING = missing_prerequisites(("ssh", "ssh-keygen", "borg"))

pytestmark = e2e_marks("real-sshd e2e", _MISSING)

Result = subprocess.CompletedProcess[str]
HOSTILE = ["fe80::1%eth0,*", 'fe80::1%x",port-forwarding,permitopen="127.0.0.1:*']
FROM_LINE = 17  # the line of `from:` in hive_yaml(), for the error location


@dataclass(kw_only=True)
class Deployment(BaseDeployment):
    files_dir: Path
    config: Path


def hive_yaml(d: Deployment, from_: str, expires: str = "") -> str:
    quoted = "'" + from_.replace("'", "''") + "'"
    return f"""\
version: 1
server:
  name: test1
  ssh_host: 127.0.0.1
  repos_root: {d.repos_root}
  state_dir: {d.state_dir}
  users: {{prefix: "bh-", uid_range: [20000, 20999], shell: /bin/sh}}
  identity: {{backend: files, files_dir: {d.files_dir}}}
owners:
  alice: {{}}
repositories:
  repoa: {{owner: alice, keys: [limited]}}
keys:
  limited:
    owner: alice
    public_key: "{d.keys['limited'].public_key}"
    from: [{quoted}]
{expires}"""


def apply(d: Deployment, from_: str, expires: str = "") -> Result:
    d.config.write_text(hive_yaml(d, from_, expires))
    return subprocess.run([sys.executable, "-m", "hive", "apply", "-f", str(d.config)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


#: What sshd's auth_log_authopts() may list after "key options:" (auth-options.c). It
#: prints "expires" without a leading space, so the words are split by name, not by space.
SSHD_LOGGED = ("agent-forwarding", "command", "environment", "expires", "no-touch-required",
               "permitopen", "permitlisten", "port-forwarding", "principals", "pty", "uv",
               "tun=", "user-rc", "x11-forwarding")


def logged_options(text: str) -> list[str]:
    rest, found = text.replace(" ", ""), []
    while rest:
        name = next((n for n in sorted(SSHD_LOGGED, key=len, reverse=True)
                     if rest.startswith(n)), rest)
        found.append(name)
        rest = rest[len(name):]
    return found


def login(d: Deployment) -> tuple[Result, str]:
    """One login of the limited key from 127.0.0.1, and what sshd logged about it."""
    assert d.server is not None
    mark = d.server.log_mark()
    result = d.client("limited").ssh(d.user("repoa"), "true")
    d.server.wait_for_log("Connection closed", since=mark, timeout=3)
    return result, d.server.log_since(mark)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with root_owned_test_root(prefix="hive-e2e-from-") as root:
        keys = {"limited": generate_ed25519_key(root / "client-keys", "limited")}
        d = Deployment(root=root, repos_root=root / "repos", state_dir=root / "state",
                       files_dir=root / "extrausers", keys=keys, config=root / "hive.yaml")
        first = apply(d, "10.9.9.9")
        assert first.returncode == 0, describe(first)
        snippet = render_shipped(DEPLOY_SNIPPET, [(
            "/var/lib/hive/authorized_keys/", f"{d.state_dir}/authorized_keys/")],
            root / "hive.conf")
        with SshdServer(workdir=root / "sshd", files_dir=d.files_dir, keys=None,
                        include=snippet, hardening=BASE_OPTIONS) as server:
            d.server = server
            yield d


def test_a_hostile_from_is_refused_and_the_key_stays_limited(deployment: Deployment) -> None:
    d = deployment
    cache = d.state_dir / "authorized_keys" / d.user("repoa")
    before = cache.read_bytes()
    assert b'from="10.9.9.9"' in before
    # The control: real sshd honours the limit Hive wrote.
    result, log = login(d)
    assert result.returncode != 0, describe(result, d.server)
    assert "correct key but not from a permitted host" in log, log
    for value in HOSTILE:
        applied = apply(d, value)
        assert applied.returncode == 1, describe(applied)
        assert f"{d.config}:{FROM_LINE}:12: keys.limited.from[0]: " in applied.stdout \
            + applied.stderr, describe(applied)
        assert cache.read_bytes() == before  # nothing half-applied
        result, log = login(d)
        assert result.returncode != 0, describe(result, d.server)
        assert "Accepted publickey" not in log, log


def test_every_option_hive_writes_is_read_by_sshd_as_meant(deployment: Deployment) -> None:
    """A key limited to 127.0.0.1 and expiring in 2999 logs in, and sshd's debug log says
    which options it parsed from the line: a forced command and an expiry, nothing that
    would open forwarding, a PTY or a user rc."""
    d = deployment
    applied = apply(d, "127.0.0.1", "    expires: 2999-01-01\n")
    assert applied.returncode == 0, describe(applied)
    line = (d.state_dir / "authorized_keys" / d.user("repoa")).read_text()
    assert line.startswith('restrict,from="127.0.0.1",expiry-time="29990101000000Z",'
                           'command="borg serve --restrict-to-repository '), line
    _, log = login(d)
    assert f"Accepted publickey for {d.user('repoa')} " in log, log
    # One row per reading of the line (`<file>:1: key options: ...`), one for the options
    # in force for the session (`active: key options: ...`, without the expiry).
    rows = [row.split(": key options:", 1) for row in log.splitlines()
            if ": key options:" in row]
    from_file = [logged_options(opts) for where, opts in rows
                 if where.endswith(f"authorized_keys/{d.user('repoa')}:1")]
    assert from_file and all(o == ["command", "expires"] for o in from_file), log
    assert all(set(logged_options(opts)) <= {"command", "expires"} for _, opts in rows), log
    d.server is not None and apply(d, "10.9.9.9")  # back to the limited key for other tests


def test_a_from_of_only_negations_is_refused_and_star_first_works(
        deployment: Deployment) -> None:
    """sshd lets a key in only from an address that a positive from= entry matches
    (match.c, match_host_and_ip): ['!10.9.9.9'] alone reads as "anywhere but 10.9.9.9"
    and lets the key in from nowhere. Validation refuses it, saying to put '*' first,
    which real sshd reads as meant."""
    d = deployment
    refused = apply(d, "!10.9.9.9")
    assert refused.returncode == 1, describe(refused)
    assert f"{d.config}:{FROM_LINE}:11: keys.limited.from: " in refused.stdout \
        + refused.stderr, describe(refused)
    assert "'*'" in refused.stdout + refused.stderr
    for entries, logs_in in (("'*', '!10.9.9.9'", True), ("'*', '!127.0.0.1'", False)):
        d.config.write_text(hive_yaml(d, "X").replace("from: ['X']", f"from: [{entries}]"))
        applied = subprocess.run([sys.executable, "-m", "hive", "apply", "-f", str(d.config)],
                                 capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert applied.returncode == 0, describe(applied)
        result, log = login(d)
        assert (result.returncode == 0) is logs_in, (entries, describe(result, d.server), log)
