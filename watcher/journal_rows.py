"""The apply journal (`<state_dir>/journal.jsonl`) copied into the `journal` table.

So that one query shows who changed what next to what the repositories did (the
`history` view). The byte offset already copied is kept in `meta`, in the same
transaction as the rows, so a crash can neither skip nor repeat a line; a journal that
was replaced (another inode) or truncated is read again from its start.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.journal import FILE_NAME
from watcher import store

_KEY = "journal_position"
COLUMNS = ("time", "host", "run", "record_type", "who", "action", "resource_kind", "name",
           "repository", "error", "record")
_MAX_CHUNK = 64 * 1024 * 1024


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def pending(state_dir: Path, position: str | None) -> tuple[list[dict[str, Any]], str] | None:
    """New complete records after `position` ("inode:offset"), and the new position.

    None when there is nothing new (the common case: one stat, no read).
    """
    path = state_dir / FILE_NAME
    try:
        st = os.stat(path)
    except OSError:
        return None
    inode, offset = (position or "0:0").split(":")
    start = int(offset) if int(inode) == st.st_ino and int(offset) <= st.st_size else 0
    if start == st.st_size:
        return None
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(min(st.st_size - start, _MAX_CHUNK))
    end = data.rfind(b"\n") + 1  # a torn last line waits for its end
    if end == 0:
        return None
    records = []
    for line in data[:end].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, f"{st.st_ino}:{start + end}"


def rows(records: list[dict[str, Any]],
         known_users: dict[str, str | None]) -> list[tuple[Any, ...]]:
    """Table rows; a change inherits `who` from its run's start record."""
    out = []
    for r in records:
        if r.get("type") == "start" and r.get("run"):
            known_users[r["run"]] = r.get("user")
        out.append((_time(r.get("time")), r.get("host"), r.get("run"), r.get("type"),
                    r.get("user") or known_users.get(r.get("run", "")), r.get("action"),
                    r.get("kind"), r.get("name"), r.get("repository"),
                    r.get("error") if isinstance(r.get("error"), str | None) else
                    str(r.get("error")), json.dumps(r, default=str)))
    return out


def import_new(con: Any, state_dir: Path) -> int:
    """Copy journal records not yet in the table; returns how many. Call inside a write."""
    found = pending(state_dir, store.get_meta(con, _KEY))
    if found is None:
        return 0
    records, position = found
    runs = {r.get("run") for r in records if r.get("type") != "start"}
    known: dict[str, str | None] = {}
    if runs:
        for run, who in con.execute(
                "SELECT run, who FROM journal WHERE record_type = 'start' "
                "AND run IN (SELECT unnest($1))", [sorted(filter(None, runs))]).fetchall():
            known[run] = who
    count = store.insert(con, "journal", COLUMNS, rows(records, known))
    store.set_meta(con, _KEY, position)
    return count
