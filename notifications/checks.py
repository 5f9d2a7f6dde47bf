"""What apprise says of each channel URL, reported as FILE:LINE:COL.

The cheap checks of `notifications:` (references, channel restrictions, a literal password
in a URL) run with every load of hive.yaml, in schemas/checks.py. These import apprise
(half a second) to ask it whether it can parse each URL and which of its parts are
secrets, so only `hive validate` and `hive notify` run them. Nothing is sent.
"""

from __future__ import annotations

import re

from schemas.checks import Problem
from schemas.models import SECRET_PLACEHOLDER, HiveConfig
from schemas.placeholders import literal_password, placeholder_markers

_HAS_MARKER = re.compile(r"hivesecret[0-9]+x")
# Query parameters that carry secrets whatever the service (?token=, ?password=, ?apikey=).
_SECRET_ARG = re.compile(r"(pass|token|secret|key|auth)", re.IGNORECASE)


def apprise_problems(config: HiveConfig) -> list[Problem]:
    """Ask apprise, without sending, whether each channel URL is one it can use, and
    refuse literal values in the parts apprise itself marks private (tokens, keys)."""
    result = []
    for name, channel in config.notifications.channels.items():
        if literal_password(channel.url):
            continue  # schemas/checks.py said so already
        message = url_problem(channel.url)
        if message:
            result.append(Problem(("notifications", "channels", name, "url"), message))
    return result


def url_problem(url: str) -> str | None:
    from apprise.manager_plugins import NotificationManager

    marked, markers = placeholder_markers(url)
    schema = marked.split("://", 1)[0].lower()
    manager = NotificationManager()
    plugin = manager[schema] if schema in manager else None  # noqa: SIM401 (no .get)
    if plugin is None:
        return f"apprise knows no service {schema + '://'!r}; see apprise's list of services"
    try:
        parsed = plugin.parse_url(marked)
    except Exception:  # apprise raises assorted errors on odd input
        parsed = None
    if not parsed:
        return f"apprise cannot parse this {schema}:// URL; check its form in apprise's docs"
    private = {name for name, spec in plugin.template_tokens.items() if spec.get("private")}
    for name, spec in plugin.template_args.items():
        if spec.get("private"):
            private.update({name, spec.get("map_to", name)})
    # A value with a placeholder in it passes: tgram://123456789:{env:BOT_SECRET}/chat
    # keeps the public bot id literal and the secret out.
    literal = {name: parsed.get(name) for name in private}
    for name, value in (parsed.get("qsd") or {}).items():
        if name in private or _SECRET_ARG.search(name):
            literal[name] = value
    for name in sorted(literal):
        values = literal[name]
        for value in values if isinstance(values, list | tuple) else [values]:
            if value and isinstance(value, str) and not _HAS_MARKER.search(value):
                return (f"its {name!r} part holds a literal secret; write {{env:NAME}} or "
                        "{file:/path} in its place (hive.yaml is committed to git)")
    if not markers:
        from apprise import Apprise

        if Apprise.instantiate(url, suppress_exceptions=True) is None:
            return f"apprise refuses this {schema}:// URL; check its form in apprise's docs"
    return None


def has_secret_placeholders(url: str) -> bool:
    return bool(SECRET_PLACEHOLDER.search(url))


def apprise_problems_if_any(config: HiveConfig) -> list[Problem]:
    """apprise_problems, without importing apprise for a file that has no channels."""
    return apprise_problems(config) if config.notifications.channels else []
