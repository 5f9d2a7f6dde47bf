"""Secrets in channel URLs: `{env:NAME}` and `{file:/path}`, resolved only when sending.

hive.yaml is committed to git, so a URL holds only these placeholders. They are resolved
at the last moment, for one channel, and every text that leaves `hive notify` (output,
JSON, DuckDB rows) passes through `redact` with the values that were resolved, because
apprise's own error texts can quote the URL.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from urllib.parse import quote

from schemas.models import SECRET_PLACEHOLDER
from schemas.placeholders import SecretPolicy

MAX_SECRET_BYTES = 64 * 1024
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class SecretError(Exception):
    """A placeholder could not be resolved; the message names it, never a value."""


@dataclass
class Resolved:
    url: str
    secrets: list[str] = field(default_factory=list)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)


def _value(kind: str, arg: str, environ: dict[str, str] | os._Environ[str],
           policy: SecretPolicy) -> str:
    if kind == "env":
        refused = policy.env_problem(arg)
        if refused:
            raise SecretError(refused)
        value = environ.get(arg)
        if value is None or value == "":
            raise SecretError(f"environment variable {arg} (from {{env:{arg}}}) is not set")
        return value
    return _read_secret_file(arg, policy)


def _read_secret_file(arg: str, policy: SecretPolicy) -> str:
    """The first line of a secret file inside the secrets folder: symlinks resolved before
    the check (none may lead out), the file itself opened without following one, never a
    FIFO or device, and only so many bytes."""
    real = os.path.realpath(arg)
    refused = policy.file_problem(arg)
    if refused is None and SecretPolicy(os.path.realpath(policy.secrets_dir)).file_problem(real):
        refused = f"{{file:{arg}}} leads outside server.secrets_dir (through a symlink)"
    if refused:
        raise SecretError(refused)
    try:
        fd = os.open(real, _OPEN)
    except OSError as exc:
        raise SecretError(f"cannot read {arg} (from {{file:{arg}}}): {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{arg} (from {{file:{arg}}}) is not a regular file")
        if (info.st_dev, info.st_ino) in _identities(policy.forbidden_files):
            raise SecretError(policy.forbidden_file(arg))  # a link to it, or a symlink
        data = os.read(fd, MAX_SECRET_BYTES)
    finally:
        os.close(fd)
    value = data.decode("utf-8", "replace").splitlines()[0].strip() if data else ""
    if not value:
        raise SecretError(f"{arg} (from {{file:{arg}}}) is empty")
    return value


def _identities(paths: frozenset[str]) -> set[tuple[int, int]]:
    """(device, inode) of each existing file in `paths`."""
    found = set()
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        found.add((info.st_dev, info.st_ino))
    return found


def resolve(url: str, environ: dict[str, str] | None = None,
            policy: SecretPolicy | None = None) -> Resolved:
    """The URL with its placeholders replaced by their values, URL-quoted (a password
    with '@' or '/' must not change the URL's shape). Without a policy, the default one
    (files only in /etc/hive/secrets): never no limit."""
    env = os.environ if environ is None else environ
    policy = policy or SecretPolicy()
    found: list[str] = []

    def replace(match: object) -> str:
        kind, arg = match.group(1), match.group(2)  # type: ignore[attr-defined]
        value = _value(kind, arg, env, policy)
        quoted = quote(value, safe="")
        found.extend({value, quoted})
        return quoted

    return Resolved(SECRET_PLACEHOLDER.sub(replace, url), found)


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret (longest first, so a prefix cannot leave a tail) as ***,
    and the shortened forms apprise prints a secret in when it quotes a URL in a warning
    (apprise.url.URLBase.pprint: its first and last character, "S...n", or its last four,
    "...0ken"): a few characters of a password are still the password's."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.update((secret, f"{secret[:1]}...{secret[-1:]}", f"...{secret[-4:]}"))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text
