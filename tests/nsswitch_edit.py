"""The nsswitch edits deploy/ ships (a `sed` line in a comment), applied as a sysadmin would.

WHY: deploy/sshd/nsswitch.conf.extrausers and deploy/ldap/nsswitch.conf hold an edit of the
host's own file, not lines to copy (copying dropped Debian 12's `systemd`). The tests run
that very sed line on Debian 12's file and hand the result to sshd and nslcd.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAUSERS_EDIT = ROOT / "deploy" / "sshd" / "nsswitch.conf.extrausers"
LDAP_EDIT = ROOT / "deploy" / "ldap" / "nsswitch.conf"

#: /etc/nsswitch.conf of a Debian 12 host with systemd (libnss-systemd adds `systemd`).
DEBIAN12 = """\
# /etc/nsswitch.conf
#
# Example configuration of GNU Name Service Switch functionality.

passwd:         files systemd
group:          files systemd
shadow:         files systemd
gshadow:        files systemd

hosts:          files dns
networks:       files

protocols:      db files
services:       db files
ethers:         db files
rpc:            db files

netgroup:       nis
"""


def sed_argv(shipped: Path) -> list[str]:
    """The one `sed -i ... /etc/nsswitch.conf` command written in the shipped file."""
    (line,) = [x.lstrip("# ").strip() for x in shipped.read_text().splitlines()
               if x.lstrip("# ").startswith("sed -i")]
    argv = shlex.split(line)
    assert argv[-1] == "/etc/nsswitch.conf", line
    return argv


def edited(shipped: Path, text: str = DEBIAN12) -> str:
    """`text` after the shipped edit, run by the real sed on a copy."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nsswitch.conf"
        path.write_text(text)
        subprocess.run([*sed_argv(shipped)[:-1], str(path)], check=True)
        return path.read_text()


def documented_result(shipped: Path) -> list[str]:
    """The `passwd:`/`group:`/`shadow:` lines the shipped file says Debian 12 ends up with."""
    return [" ".join(x.lstrip("# ").split()) for x in shipped.read_text().splitlines()
            if x.lstrip("# ").startswith(("passwd:", "group:", "shadow:"))]
