"""`{env:NAME}` and `{file:PATH}` in notification URLs, as the file format sees them: where a
secret may come from (SecretPolicy, set by the trusted server: section), how validation
reads a URL without its secrets (placeholder_markers), and a literal password where a
placeholder belongs. Resolving them, at send time, is notifications/secrets.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.models import SECRET_PLACEHOLDER, HiveConfig

_MARKER = re.compile(r"^(hivesecret[0-9]+x)+$")


@dataclass(frozen=True)
class SecretPolicy:
    """Where secrets may come from. `hive notify` runs as root, and hive.yaml's channels
    are edited by more people than the server: a {file:} outside `secrets_dir`, or the
    LDAP bind password's variable, would let a channel send the server's own secrets to
    whoever its URL names."""

    secrets_dir: str = "/etc/hive/secrets"
    forbidden_env: frozenset[str] = frozenset()
    # the LDAP bind password's file, as server: names it (it may well sit in secrets_dir);
    # at send time the file opened is also compared with it by inode (links, symlinks)
    forbidden_files: frozenset[str] = frozenset()

    def file_problem(self, path: str) -> str | None:
        """Why {file:path} is not allowed (None: it is), from the path as written."""
        root = os.path.normpath(self.secrets_dir)
        if os.path.commonpath([root, os.path.normpath(path)]) != root or \
                os.path.normpath(path) == root:
            return (f"{{file:{path}}} is outside server.secrets_dir ({self.secrets_dir}); "
                    "keep the secret in a file there")
        if os.path.normpath(path) in self.forbidden_files:
            return self.forbidden_file(path)
        return None

    def forbidden_file(self, path: str) -> str:
        return (f"{{file:{path}}} is the LDAP bind password's file; a channel may not send "
                "it anywhere")

    def env_problem(self, name: str) -> str | None:
        if name in self.forbidden_env:
            return (f"{{env:{name}}} is the LDAP bind password's variable; a channel may not "
                    "send it anywhere")
        return None


def policy_of(config: HiveConfig) -> SecretPolicy:
    """The policy hive.yaml's trusted server: section sets."""
    identity = config.server.identity
    forbidden, files = set(), set()
    ldap = getattr(identity, "ldap", None)
    if ldap is not None and ldap.bind_password_env:
        forbidden.add(ldap.bind_password_env)
    if ldap is not None and ldap.bind_password_file:
        files.add(os.path.normpath(str(ldap.bind_password_file)))
    return SecretPolicy(str(config.server.secrets_dir), frozenset(forbidden), frozenset(files))


def placeholder_markers(url: str) -> tuple[str, list[str]]:
    """The URL with each placeholder replaced by a harmless marker, for parsing without
    secrets (validation); returns the markers used."""
    markers: list[str] = []

    def replace(_match: object) -> str:
        markers.append(f"hivesecret{len(markers)}x")
        return markers[-1]

    return SECRET_PLACEHOLDER.sub(replace, url), markers


def literal_password(url: str) -> str | None:
    """A password in the URL's user:password@ part that is not a placeholder."""
    marked, _ = placeholder_markers(url)
    try:
        password = urlsplit(marked).password
    except ValueError:
        return None  # apprise_problems says what is wrong with it
    if password and not _MARKER.fullmatch(password):
        return ("holds a literal password; hive.yaml is committed to git, so write "
                "{env:NAME} or {file:/path} in its place")
    return None
