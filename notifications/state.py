"""What `hive notify` remembers, in DuckDB (tables of migration 2 in watcher/store.py).

`notify_state` holds one row per alert that went out and has not ended: (rule, channel,
repository, alert) with its first and latest successful message. It is the alert state:
it survives restarts, and a row is only written after its message was delivered, so a
failed channel is simply tried again next run. `notify_attempts` is the log: one row per
(message, rule, alert), naming the channel, never its URL.

Also here: when Hive created each repository, read from the apply journal.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from notifications.alerts import Delivery, Sent, StateKey
from reconciler.journal import FILE_NAME as JOURNAL

LOCK_NAME = "notify.lock"
ATTEMPT_COLUMNS = ("time", "host", "run", "rule", "channel", "alert", "kind", "repositories",
                   "result", "error")
_SEP = "\x1f"


class NotifyBusy(Exception):
    pass


@contextmanager
def run_lock(state_dir: Path, timeout: float) -> Iterator[None]:
    """One `hive notify` at a time per server, so two never send the same alert: the
    second waits, then finds the first one's rows and sends nothing again."""
    from reconciler.lock import flock_within

    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not flock_within(fd, timeout):
            raise NotifyBusy(f"another hive notify holds {state_dir / LOCK_NAME}; "
                             f"waited {timeout:g}s")
        yield
    finally:
        os.close(fd)


def load_sent(state_dir: Path, host: str) -> dict[StateKey, Sent]:
    from watcher import store

    with store.read(state_dir) as con:
        if con is None:
            return {}
        rows = con.execute("SELECT rule, channel, repository, alert, first_sent, last_sent "
                           "FROM notify_state WHERE host = $1", [host]).fetchall()
    return {(r, c, repo, a): Sent(first, last) for r, c, repo, a, first, last in rows}


@dataclass
class Attempt:
    """One message's outcome: which deliveries it carried, and the error if it failed."""

    channel: str
    kind: str  # alert, recovery, test
    deliveries: list[Delivery]
    error: str | None


def record(state_dir: Path, host: str, now: datetime, attempts: Sequence[Attempt],
           cleared: Sequence[Delivery]) -> str:
    """Log every attempt and move the alert state on; one transaction. Returns the run id."""
    from watcher import store

    run = uuid.uuid4().hex[:12]
    rows: list[tuple[Any, ...]] = []
    upsert: dict[StateKey, Delivery] = {}
    delete: set[StateKey] = {d.key for d in cleared}
    for a in attempts:
        result = "sent" if a.error is None else "failed"
        if a.kind == "test":
            rows.append((now, host, run, None, a.channel, None, "test", [], result, a.error))
            continue
        groups: dict[tuple[str, str], list[str]] = {}
        for d in a.deliveries:
            groups.setdefault((d.rule, d.alert), []).append(d.repository)
            if a.error is None:
                if d.kind == "recovery":
                    delete.add(d.key)
                else:
                    upsert[d.key] = d
        for (rule, alert), repos in sorted(groups.items()):
            rows.append((now, host, run, rule, a.channel, alert, a.kind,
                         sorted(set(repos)), result, a.error))
    with store.write(state_dir) as con:
        store.insert(con, "notify_attempts", ATTEMPT_COLUMNS, rows)
        gone = sorted(_SEP.join(k) for k in delete | set(upsert))
        if gone:
            # Keep first_sent of an episode that goes on (a repeat), then rewrite the rows.
            kept = dict(((r, c, repo, a), (first, sends)) for r, c, repo, a, first, sends in
                        con.execute(
                            "SELECT rule, channel, repository, alert, first_sent, sends "
                            "FROM notify_state WHERE host = $1 AND list_contains($2, "
                            "concat_ws(chr(31), rule, channel, repository, alert))",
                            [host, gone]).fetchall())
            con.execute("DELETE FROM notify_state WHERE host = $1 AND list_contains($2, "
                        "concat_ws(chr(31), rule, channel, repository, alert))", [host, gone])
            new = []
            for key in sorted(upsert):
                first, sends = kept.get(key, (now, 0))
                new.append((host, *key, first, now, sends + 1))
            store.insert(con, "notify_state", ("host", "rule", "channel", "repository",
                                               "alert", "first_sent", "last_sent", "sends"),
                         new)
    return run


def created_times(state_dir: Path) -> dict[str, datetime]:
    """When Hive last created each repository's folder, from the apply journal (the
    change records of `hive apply`; a repository purged and made again counts anew)."""
    found: dict[str, datetime] = {}
    try:
        handle = open(state_dir / JOURNAL, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return found
    with handle:
        for line in handle:
            if '"role": "repository"' not in line or '"create"' not in line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if (r.get("type") == "change" and r.get("action") == "create"
                    and r.get("role") == "repository" and not r.get("error")
                    and isinstance(r.get("repository"), str)):
                try:
                    found[r["repository"]] = datetime.fromisoformat(r["time"])
                except (KeyError, TypeError, ValueError):
                    continue
    return found
