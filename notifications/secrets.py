"""Secrets in channel URLs: `{env:NAME}` and `{file:/path}`, resolved only when sending.

hive.yaml is committed to git, so a URL holds only these placeholders. They are resolved
at the last moment, for one channel, and every text that leaves `hive notify` (output,
JSON, DuckDB rows) passes through `redact` with the values that were resolved, because
apprise's own error texts can quote the URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import quote

from schemas.models import SECRET_PLACEHOLDER


class SecretError(Exception):
    """A placeholder could not be resolved; the message names it, never a value."""


@dataclass
class Resolved:
    url: str
    secrets: list[str] = field(default_factory=list)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)


def _value(kind: str, arg: str, environ: dict[str, str] | os._Environ[str]) -> str:
    if kind == "env":
        value = environ.get(arg)
        if value is None or value == "":
            raise SecretError(f"environment variable {arg} (from {{env:{arg}}}) is not set")
        return value
    try:
        with open(arg, encoding="utf-8") as handle:
            value = handle.readline().strip()
    except OSError as exc:
        raise SecretError(f"cannot read {arg} (from {{file:{arg}}}): {exc.strerror}") from None
    if not value:
        raise SecretError(f"{arg} (from {{file:{arg}}}) is empty")
    return value


def resolve(url: str, environ: dict[str, str] | None = None) -> Resolved:
    """The URL with its placeholders replaced by their values, URL-quoted (a password
    with '@' or '/' must not change the URL's shape)."""
    env = os.environ if environ is None else environ
    found: list[str] = []

    def replace(match: object) -> str:
        kind, arg = match.group(1), match.group(2)  # type: ignore[attr-defined]
        value = _value(kind, arg, env)
        quoted = quote(value, safe="")
        found.extend({value, quoted})
        return quoted

    return Resolved(SECRET_PLACEHOLDER.sub(replace, url), found)


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret (longest first, so a prefix cannot leave a tail) as ***."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def placeholder_markers(url: str) -> tuple[str, list[str]]:
    """The URL with each placeholder replaced by a harmless marker, for parsing without
    secrets (validation); returns the markers used."""
    markers: list[str] = []

    def replace(_match: object) -> str:
        markers.append(f"hivesecret{len(markers)}x")
        return markers[-1]

    return SECRET_PLACEHOLDER.sub(replace, url), markers
