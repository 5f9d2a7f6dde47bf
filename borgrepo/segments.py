"""borg 1.x segment files: what each commit did, from the entries' plaintext headers.

A segment (`data/<n // segments_per_dir>/<n>`) starts with `BORG_SEG`; each entry has a
header of crc32 (4 bytes LE), size (4 bytes LE, header included) and tag (1 byte), then
for PUT and DELETE the 32-byte object id; only the payload after it is encrypted. The
manifest's id is 32 zero bytes. A commit writes segments numbered above the previous
commit's and ends with a COMMIT entry (9 bytes) in segment N; `index.N` follows. Seen on
real repositories (borg 1.2.4, 1.4):

    init     a manifest PUT, then COMMIT (the first commit, from segment 0)
    create   PUTs of other objects (new chunks, the archive's metadata), a manifest
             DELETE and PUT, COMMIT -- also with no new data (the archive's own PUT)
    delete / prune   DELETEs of other objects, a manifest DELETE and PUT, COMMIT
    compact  segments removed (so the span has holes), live entries moved into new
             segments (a manifest PUT among them, but never a manifest DELETE), COMMIT
    check --repair   a manifest DELETE and PUT only: `other`
A transaction that both deletes and adds (create then prune in one session) is a backup.

The repository's user controls these files and Hive may read them as root: every open
is O_NOFOLLOW|O_NONBLOCK, non-regular files are skipped, each header's size is checked
against the file, a COMMIT must be its segment's last entry (borg's write_commit closes
the segment after it; else one 18 MB file of COMMITs was 2 million Commits in memory),
reads are 41 bytes at a time (payloads are seeked over, never read), and the work per
call is bounded. Anything that does not parse makes the commit `other`
(and says why in `problem`), never a crash or a hang.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

MAGIC = b"BORG_SEG"
PUT, DELETE, COMMIT, PUT2 = 0, 1, 2, 3
MANIFEST_ID = bytes(32)
_HEADER = struct.Struct("<IIB")
HEADER_SIZE = _HEADER.size          # 9: crc32, size, tag
ID_HEADER_SIZE = HEADER_SIZE + 32   # 41: PUT and DELETE carry the object id
PUT2_HEADER_SIZE = ID_HEADER_SIZE + 8  # borg 1.2+'s PUT2 adds an xxh64 of the entry
MAX_SEGMENT = 2**32 - 1
MAX_ENTRIES = 2_000_000             # per segment: ~20x what 500 MB of chunks make
WHATS = ("init", "backup", "delete", "compact", "other")
_DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class SegmentError(ValueError):
    """A segment that is not borg's format (the message says where and what)."""


@dataclass
class Commit:
    """One borg 1.x commit as its segments show it."""

    transaction: int                # the segment holding its COMMIT entry (index.N's N)
    time: float | None              # that segment's mtime
    what: str = "other"
    bytes_added: int = 0            # sizes of PUT entries other than the manifest
    objects_added: int = 0
    objects_deleted: int = 0
    manifest_written: bool = False
    manifest_deleted: bool = False
    first_segment: int = 0          # the first segment after the previous commit
    holes: int = 0                  # segment numbers in its span that are gone
    problem: str | None = None

    def details(self) -> dict[str, object]:
        """What an `updated` event says about it."""
        data: dict[str, object] = {"what": self.what, "bytes_added": self.bytes_added,
                                   "objects_added": self.objects_added,
                                   "objects_deleted": self.objects_deleted}
        if self.problem:
            data["problem"] = self.problem
        return data


@dataclass
class _Span:
    """Entries since the last COMMIT seen."""

    first: int
    bytes_added: int = 0
    objects_added: int = 0
    objects_deleted: int = 0
    manifest_written: bool = False
    manifest_deleted: bool = False
    segments: list[int] = field(default_factory=list)


def entries(fd: int, size: int, where: str) -> Iterator[tuple[int, int, bool]]:
    """(tag, entry size, is the manifest) for each entry of an open segment file."""
    if size < len(MAGIC) or os.pread(fd, len(MAGIC), 0) != MAGIC:
        raise SegmentError(f"{where}: no BORG_SEG magic")
    offset, count = len(MAGIC), 0
    while offset < size:
        count += 1
        if count > MAX_ENTRIES:
            raise SegmentError(f"{where}: more than {MAX_ENTRIES} entries")
        head = os.pread(fd, ID_HEADER_SIZE, offset)
        if len(head) < HEADER_SIZE:
            raise SegmentError(f"{where}: truncated header at {offset}")
        _crc, length, tag = _HEADER.unpack_from(head)
        if tag == COMMIT:
            if length != HEADER_SIZE:
                raise SegmentError(f"{where}: COMMIT of size {length} at {offset}")
            if offset + length != size:  # borg closes the segment after every COMMIT
                raise SegmentError(f"{where}: COMMIT at {offset} is not the last entry")
            manifest = False
        elif tag in (PUT, DELETE, PUT2):
            minimum = PUT2_HEADER_SIZE if tag == PUT2 else ID_HEADER_SIZE
            if len(head) < ID_HEADER_SIZE or length < minimum or \
                    (tag == DELETE and length != ID_HEADER_SIZE):
                raise SegmentError(f"{where}: entry of size {length} (tag {tag}) at {offset}")
            manifest = head[HEADER_SIZE:ID_HEADER_SIZE] == MANIFEST_ID
        else:
            raise SegmentError(f"{where}: unknown tag {tag} at {offset}")
        if offset + length > size:
            raise SegmentError(f"{where}: entry at {offset} runs past the end ({size} bytes)")
        yield tag, length, manifest
        offset += length


def segments_per_dir(config_text: str | None) -> int | None:
    """`segments_per_dir` from a borg 1.x config (default 1000, borg 1.0 used 10000)."""
    match = re.search(r"^segments_per_dir\s*=\s*([0-9]{1,7})\s*$", config_text or "",
                      re.MULTILINE | re.ASCII)
    value = int(match.group(1)) if match else None
    return value if value and 0 < value <= 1_000_000 else None


def segment_files(repo: str, first: int, last: int,
                  per_dir: int | None = None) -> list[tuple[int, str]]:
    """(number, path) of the segment files numbered first..last, in order, each file once
    (hard links: see below). Only the data/ folders that can hold them are listed when
    segments_per_dir is known."""
    data = os.path.join(repo, "data")
    try:
        if not stat.S_ISDIR(os.lstat(data).st_mode):
            return []  # a symlink the repository's user (an rsync import) planted: not data
        folders = [e.name for e in os.scandir(data)
                   if _DIGITS.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    if per_dir:
        wanted = range(first // per_dir, last // per_dir + 1)
        folders = [f for f in folders if int(f) in wanted]
    found = []
    for folder in folders:
        try:
            with os.scandir(os.path.join(data, folder)) as it:
                for entry in it:
                    if _DIGITS.fullmatch(entry.name) and first <= int(entry.name) <= last:
                        found.append((int(entry.name), entry.path, entry.inode()))
        except OSError:
            continue
    # borg never links one segment file under two numbers; an rsync import can (-H), and
    # 20,000 links of one 82 MB file, free on disk, were 20 hours of reading for `hive
    # status`. Each file counts once, under its lowest number; the others are holes.
    seen: set[int] = set()
    unique = []
    for number, path, inode in sorted(found):
        if inode not in seen:
            seen.add(inode)
            unique.append((number, path))
    return unique


def _open_segment(path: str) -> tuple[int, os.stat_result] | None:
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def _verdict(span: _Span, first_commit: bool) -> str:
    if span.manifest_deleted and span.objects_added:
        return "backup"
    if span.manifest_deleted and span.objects_deleted:
        return "delete"
    if span.manifest_deleted:
        return "other"   # the manifest rewritten alone: check --repair, a key change
    if first_commit and span.manifest_written and not span.objects_added \
            and not span.objects_deleted:
        return "init"
    if not first_commit and (len(span.segments) < 2 or
                             span.segments[-1] - span.first + 1 > len(span.segments)):
        return "compact"  # segments of its own span were removed as it went
    return "other"


def commits(repo: str, after: int | None, upto: int, per_dir: int | None = None,
            max_segments: int = 100_000) -> list[Commit]:
    """Every commit in segments after+1 .. upto (all of them when `after` is None), oldest
    first, classified. A segment that does not parse makes the commit it belongs to
    `other` with a `problem`; a span larger than max_segments is one `other` commit."""
    first = 0 if after is None else after + 1
    if upto < first or upto > MAX_SEGMENT:
        return []
    files = segment_files(repo, first, upto, per_dir)
    if len(files) > max_segments:
        last_time = _mtime(files[-1][1])
        return [Commit(upto, last_time, problem=f"{len(files)} segments to read, more "
                                                f"than {max_segments}")]
    found: list[Commit] = []
    span = _Span(first)
    problem: str | None = None
    for number, path in files:
        opened = _open_segment(path)
        if opened is None:
            problem = problem or f"segment {number} is not a regular file"
            span.segments.append(number)
            continue
        fd, st = opened
        span.segments.append(number)
        try:
            for tag, length, manifest in entries(fd, st.st_size, f"segment {number}"):
                if tag == COMMIT:
                    commit = _close(span, number, st.st_mtime, problem, after is None
                                    and not found)
                    found.append(commit)
                    span, problem = _Span(number + 1), None
                elif tag == DELETE:
                    if manifest:
                        span.manifest_deleted = True
                    else:
                        span.objects_deleted += 1
                elif manifest:
                    span.manifest_written = True
                else:
                    span.objects_added += 1
                    span.bytes_added += length
        except (SegmentError, OSError) as exc:
            problem = problem or str(exc)
        finally:
            os.close(fd)
    # upto's COMMIT was not seen (segment gone, unreadable or corrupt): say so
    if (not found or found[-1].transaction != upto) and (
            problem is not None or any(n == upto for n, _ in files)):
        found.append(Commit(upto, _mtime_of(files, upto), problem=problem or
                            f"segment {upto} ends with no COMMIT"))
    return found


def _close(span: _Span, number: int, mtime: float, problem: str | None,
           first_commit: bool) -> Commit:
    expected = number - span.first + 1
    commit = Commit(number, mtime, bytes_added=span.bytes_added,
                    objects_added=span.objects_added, objects_deleted=span.objects_deleted,
                    manifest_written=span.manifest_written,
                    manifest_deleted=span.manifest_deleted, first_segment=span.first,
                    holes=max(0, expected - len(span.segments)), problem=problem)
    commit.what = "other" if problem else _verdict(span, first_commit and span.first == 0)
    return commit


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return None


def _mtime_of(files: list[tuple[int, str]], number: int) -> float | None:
    for n, path in files:
        if n == number:
            return _mtime(path)
    return None


def ends_with_commit(path: str) -> bool:
    """Whether a segment's last entry is a COMMIT (9 bytes read at its end)."""
    opened = _open_segment(path)
    if opened is None:
        return False
    fd, st = opened
    try:
        if st.st_size < len(MAGIC) + HEADER_SIZE:
            return False
        tail = os.pread(fd, HEADER_SIZE, st.st_size - HEADER_SIZE)
    finally:
        os.close(fd)
    return len(tail) == HEADER_SIZE and _HEADER.unpack(tail)[1:] == (HEADER_SIZE, COMMIT)


def last_backup(repo: str, transaction: int, per_dir: int | None = None,
                max_segments: int = 20_000) -> Commit | None:
    """The newest commit up to `transaction` that was a backup, read backwards from it (what
    `hive status` needs when no watcher recorded it). None when none is found within
    max_segments segments (or compaction removed them). Looks at the newest 256 segments
    first: a status of thousands of repositories must not list every segment folder."""
    for window in (256, max_segments):
        first = max(0, transaction - window)
        files = segment_files(repo, first, transaction, per_dir)
        commit_segments = [n for n, path in files if ends_with_commit(path)]
        for index in range(len(commit_segments) - 1, -1, -1):
            upto = commit_segments[index]
            after = commit_segments[index - 1] if index > 0 else None
            if after is None and first > 0:
                break  # its span may start below the window: widen it
            if after is None and files and files[0][0] > 0:
                after = files[0][0] - 1
            found = commits(repo, after, upto, per_dir)
            if found and found[-1].what == "backup":
                return found[-1]
        if first == 0:
            break
    return None


def last_commit(repo: str, transaction: int, per_dir: int | None = None,
                max_segments: int = 20_000) -> list[Commit]:
    """The commit that wrote `transaction` alone (not every commit before it): what a
    watcher seeing a repository for the first time records. Its span starts after the
    previous segment that ends with a COMMIT, looked for in the newest 256 segments first."""
    for window in (256, max_segments):
        first = max(0, transaction - window)
        files = segment_files(repo, first, transaction - 1, per_dir)
        previous = [n for n, path in files if ends_with_commit(path)]
        if previous:
            return commits(repo, previous[-1], transaction, per_dir)
        if first == 0:
            return commits(repo, None, transaction, per_dir)
    return [Commit(transaction, None, problem=f"no earlier commit within {max_segments} "
                                              "segments")]

