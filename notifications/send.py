"""Delivery through apprise: the only module of Hive that imports it.

A channel's URL is resolved (secrets from the environment or files) right before its
message goes, and any text apprise produces about the attempt is redacted with those
secrets before it goes anywhere else.
"""

from __future__ import annotations

import logging

from notifications.secrets import Resolved, SecretError, redact, resolve
from schemas.placeholders import SecretPolicy

# apprise's WARNING lines say why a delivery failed ("A Connection error occurred ...").
_LOG_LEVEL = logging.WARNING


def deliver(url: str, title: str, body: str, notify_type: str,
            policy: SecretPolicy) -> str | None:
    """Send one message; None on success, else the (redacted) reason it failed. `policy`
    says where its secrets may come from (server.secrets_dir)."""
    from notifications.checks import url_problem

    problem = url_problem(url)  # the URL as written: placeholders, no secrets
    if problem:
        return f"the channel's URL: {problem}"
    try:
        resolved = resolve(url, policy=policy)
    except SecretError as exc:
        return str(exc)
    try:
        return _deliver(resolved, title, body, notify_type)
    except Exception as exc:  # apprise or a plugin failed in an unplanned way
        return resolved.redact(f"{type(exc).__name__}: {exc}")


def _deliver(resolved: Resolved, title: str, body: str, notify_type: str) -> str | None:
    import apprise

    sender = apprise.Apprise()
    with apprise.LogCapture(level=_LOG_LEVEL) as log:
        if not sender.add(resolved.url):
            return resolved.redact("apprise cannot use this URL with the resolved secrets "
                                   f"(check their form): {_last(log.getvalue())}").rstrip(": ")
        ok = sender.notify(body=body, title=title, notify_type=apprise.NotifyType(notify_type))
    if ok:
        return None
    return resolved.redact(_last(log.getvalue()) or "apprise reported a failure")


def _last(text: str) -> str:
    """The messages of the captured log lines, without their timestamps."""
    lines = [line.split(" - ", 2)[-1] for line in text.strip().splitlines() if line.strip()]
    return "; ".join(dict.fromkeys(lines))[:500]


__all__ = ["deliver", "redact"]
