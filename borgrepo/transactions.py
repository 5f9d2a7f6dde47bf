"""borg 1.x's `transactions` log and the files a rollback deals with (segments, index,
hints, integrity), as pure functions over their text and names.

borg appends `transaction N, UTC time ...` per commit made in append-only mode; N is the
commit's last segment. Numbers are checked where they are parsed (borg keeps segment
numbers as uint32).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from borgrepo import RepositoryError

TRANSACTIONS = "transactions"
STATE_PREFIXES = ("index", "hints", "integrity")
# Numbers are ASCII digits, at most 10 of them (borg keeps segment numbers as uint32;
# int() of 5,000 digits is an error of its own), checked against MAX_SEGMENT after parsing.
_LINE = re.compile(r"^transaction ([0-9]{1,10}), UTC time (\S+)$", re.ASCII)
_SEGMENT = re.compile(r"^data/([0-9]+)/([0-9]+)$", re.ASCII)
_STATE = re.compile(r"^(index|hints|integrity)\.([0-9]+)$", re.ASCII)
MAX_SEGMENT = 2**32 - 1



@dataclass(frozen=True)
class Transaction:
    """One line of borg's `transactions` log: a commit and its time (UTC)."""

    id: int
    time: datetime | None


def parse_transactions(text: str) -> list[Transaction]:
    """The commits listed in a `transactions` file, oldest first.

    borg 1.x appends `transaction N, UTC time 2024-01-31T12:00:00.123456` per commit made in
    append-only mode, and again with the same N when it rebuilds that transaction's index
    (after a rollback): the first time is the commit's. A torn last line (a crash
    mid-append, no newline) is ignored; any other line that does not parse, or ids that go
    down, make the log untrustworthy.
    """
    result: list[Transaction] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        if match is None:
            if number == len(lines):  # last line without newline: torn write
                continue
            raise RepositoryError(f"transactions line {number} is not borg's format: {line!r}")
        ident = int(match.group(1))
        if ident > MAX_SEGMENT:
            raise RepositoryError(f"transactions line {number}: transaction {ident} is beyond "
                                f"what borg writes ({MAX_SEGMENT})")
        try:
            when: datetime | None = datetime.fromisoformat(match.group(2)).replace(tzinfo=UTC)
        except ValueError:
            when = None
        if result and ident == result[-1].id:
            continue  # borg rebuilt the index of this transaction (seen after a rollback)
        if result and ident < result[-1].id:
            raise RepositoryError(f"transactions line {number}: transaction {ident} follows "
                                f"{result[-1].id}; was the repository rolled back by hand?")
        result.append(Transaction(ident, when))
    return result


def truncate_log(text: str, target: int) -> str:
    """The log's own lines up to and including transaction `target`, verbatim.

    After a rollback borg numbers new commits from the segments left, so lines of undone
    transactions would later be followed by smaller numbers again: they must go."""
    kept = []
    for line in text.splitlines(keepends=True):
        match = _LINE.match(line.strip())
        if match is not None and int(match.group(1)) > target:
            break
        if match is not None:
            kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept)


@dataclass(frozen=True)
class Layout:
    """What a borg 1.x repository folder holds, by relative path."""

    segments: dict[int, str]
    state_files: dict[str, int]

    @classmethod
    def from_paths(cls, paths: Iterable[str]) -> Layout:
        """Sort relative paths (`data/0/13`, `index.13`, ...) into segments and the
        index/hints/integrity files; anything else (config, nonce, README, locks) is not
        part of a rollback."""
        segments: dict[int, str] = {}
        state: dict[str, int] = {}
        for path in paths:
            m = _SEGMENT.match(path) or _STATE.match(path)
            if m is None:
                continue
            digits = m.group(2)
            number = int(digits) if len(digits) <= 10 else MAX_SEGMENT + 1
            if number > MAX_SEGMENT:
                raise RepositoryError(f"{path[:60]}: no borg writes a number above {MAX_SEGMENT}; "
                                    "the repository's files make no sense (see borg check)")
            if m.re is _SEGMENT:
                segments[number] = path
            else:
                state[path] = number
        return cls(segments, state)

    @property
    def current(self) -> int | None:
        """The newest transaction on disk: the index's number, else the newest segment."""
        if self.state_files:
            return max(self.state_files.values())
        return max(self.segments) if self.segments else None


def segment_ranges(transactions: list[Transaction]) -> dict[int, tuple[int, int]]:
    """Transaction id -> the segment numbers it wrote (a commit ends in segment `id`)."""
    ranges: dict[int, tuple[int, int]] = {}
    previous = -1
    for t in transactions:
        ranges[t.id] = (previous + 1, t.id)
        previous = t.id
    return ranges
