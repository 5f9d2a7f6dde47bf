"""The extrausers files as glibc (libnss-extrausers) reads them, not as a split on ':'.

glibc skips leading blanks and `#` comment lines, and `getpwnam` returns the FIRST line
for a name. A plan that reads them any other way claims "converged" for an account sshd
resolves to another uid, home and shell. Every expectation here is checked against the
real thing: `getent` in a private mount namespace whose nsswitch.conf lists extrausers
and whose /var/lib/extrausers is the test's folder (the host's files are not touched)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import hive, requires_root, write_config
from sshd_harness import EXTRAUSERS_DIR, NSCD_DIR, NSSWITCH_EXTRAUSERS, UNSHARE

pytestmark = requires_root


def laptop(tmp_path: Path, pubkeys: dict[str, str]) -> Path:
    """hive.yaml of one repository, laptop (user bh-laptop), with one key."""
    return write_config(tmp_path, f"""\
        owners: {{alice: {{}}}}
        keys:
          ka: {{owner: alice, public_key: {pubkeys['a']}}}
        repositories:
          laptop: {{owner: alice, keys: [ka]}}
        """)


def getent(files_dir: Path, name: str) -> str:
    """`getent passwd NAME` as glibc answers it with `files_dir` as /var/lib/extrausers."""
    nss = files_dir.parent / "nsswitch.conf"
    nss.write_text(NSSWITCH_EXTRAUSERS)
    empty = files_dir.parent / "no-nscd"
    empty.mkdir(exist_ok=True)
    script = (f"mount --bind {nss} /etc/nsswitch.conf && "
              f"mount --bind {files_dir} {EXTRAUSERS_DIR} && "
              f"{{ [ ! -d {NSCD_DIR} ] || mount --bind {empty} {NSCD_DIR}; }} && "
              f"getent passwd {name}; true")
    result = subprocess.run([UNSHARE, "--mount", "sh", "-c", script], capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout.strip()


STALE = {
    "an earlier line of the same name": "bh-laptop:x:30000:30000:stale:/tmp:/bin/sh\n",
    "an earlier line with leading blanks": "  bh-laptop:x:30000:30000:stale:/tmp:/bin/sh\n",
}


@pytest.mark.parametrize("case", STALE)
def test_the_plan_sees_the_account_line_glibc_returns(tmp_path: Path, pubkeys: dict[str, str],
                                                      case: str) -> None:
    cfg = laptop(tmp_path, pubkeys)
    assert hive("apply", "-f", str(cfg)).returncode == 0
    files_dir = tmp_path / "extrausers"
    wanted = getent(files_dir, "bh-laptop")
    assert wanted.startswith("bh-laptop:x:20000:20000:"), wanted
    passwd = files_dir / "passwd"
    passwd.write_text("#bh-laptop:x:1:1:a comment to glibc:/:/bin/sh\n" + STALE[case]
                      + passwd.read_text())
    assert getent(files_dir, "bh-laptop").startswith("bh-laptop:x:30000:30000:stale:")
    plan = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr  # not "converged"
    assert "~ account bh-laptop" in plan.stdout, plan.stdout
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert getent(files_dir, "bh-laptop") == wanted
    entries = [line for line in passwd.read_text().split("\n")
               if line.lstrip().startswith("bh-laptop:")]
    assert len(entries) == 1, entries  # no second line for glibc to find after a delete
    assert hive("plan", "-f", str(cfg), "--detailed-exitcode").returncode == 0


def test_a_line_glibc_cannot_read_is_skipped_not_a_crash(tmp_path: Path,
                                                        pubkeys: dict[str, str]) -> None:
    """glibc's strtoul reads ASCII digits only: a uid of '²' or '٣' (digits to Python's
    str.isdigit) makes the line no entry, so the plan must not die on it or see a uid."""
    cfg = laptop(tmp_path, pubkeys)
    files_dir = tmp_path / "extrausers"
    files_dir.mkdir()
    odd = "odd:x:\u00b2:1::/:/bin/sh\nodder:x:\u0663:1::/:/bin/sh\n"
    (files_dir / "passwd").write_text(odd)
    (files_dir / "group").write_text("odd:x:\u00b2:\n")
    assert getent(files_dir, "odd") == getent(files_dir, "odder") == ""
    plan = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 2 and "Traceback" not in plan.stderr, plan.stdout + plan.stderr
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert (files_dir / "passwd").read_text().startswith(odd)
