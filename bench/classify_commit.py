"""Benchmark classifying one large borg 1.x commit from its segment headers.

    python bench/classify_commit.py [--gigabytes 10] [--chunk-mb 2] [--runs 5] [--real-mb 500]

1. Synthetic: segment files in borg 1.x's real format (`BORG_SEG`, then entries with
   crc32/size/tag headers and 32-byte ids) holding `--gigabytes` of PUT entries of
   `--chunk-mb` each (borg's default chunker averages 2 MiB), 500 MB per segment, then a
   manifest DELETE and PUT and a COMMIT -- what `borg create` writes. The payloads are
   holes (sparse files): only the headers are real, which is all the classifier reads,
   so a 10 GB backup costs a few MB of disk. Timed: `borgrepo.segments.commits`, cold
   (page cache dropped for the files when run as root) and warm.
2. Real: `borg create` of `--real-mb` of random data into a fresh repository with
   Debian's borg, then the same classification of that commit.
Target (issue 10): a 10 GB backup classified in well under a second.
Writes bench/out/classify_commit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from borgrepo import segments  # noqa: E402

SEGMENT_BYTES = 500 * 1000 * 1000


def synthesize(repo: Path, gigabytes: float, chunk: int) -> tuple[int, int]:
    """Write transaction 1 (init) and one backup commit; returns (last segment, entries)."""
    (repo / "data" / "0").mkdir(parents=True)
    (repo / "config").write_text("[repository]\nversion = 1\nsegments_per_dir = 1000\n")
    header = segments._HEADER

    def entry(tag: int, ident: bytes, payload: int) -> bytes:
        return header.pack(0, segments.ID_HEADER_SIZE + payload, tag) + ident

    commit = header.pack(0, segments.HEADER_SIZE, segments.COMMIT)
    (repo / "data" / "0" / "0").write_bytes(segments.MAGIC + entry(
        segments.PUT, segments.MANIFEST_ID, 0))
    (repo / "data" / "0" / "1").write_bytes(segments.MAGIC + commit)
    total, number, count = int(gigabytes * 1e9), 2, 0
    payload = chunk - segments.ID_HEADER_SIZE
    while total > 0:
        path = repo / "data" / "0" / str(number)
        with open(path, "wb") as out:
            offset = len(segments.MAGIC)
            out.write(segments.MAGIC)
            while offset < SEGMENT_BYTES and total > 0:
                out.seek(offset)
                out.write(entry(segments.PUT, os.urandom(32), payload))
                offset += chunk
                total -= chunk
                count += 1
            out.truncate(offset)  # the last payload as a hole
        number += 1
    last = repo / "data" / "0" / str(number)
    last.write_bytes(segments.MAGIC + entry(segments.DELETE, segments.MANIFEST_ID, 0)
                     + entry(segments.PUT, segments.MANIFEST_ID, 500) + bytes(500) + commit)
    (repo / f"index.{number}").write_bytes(b"")
    return number, count + 2


def _drop_cache(repo: Path) -> bool:
    """Evict the segments from the page cache (POSIX_FADV_DONTNEED) for a cold run."""
    for path in (repo / "data").rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def time_classify(repo: Path, after: int, upto: int, runs: int, cold: bool) -> list[float]:
    times = []
    for _ in range(runs):
        if cold:
            _drop_cache(repo)
        started = time.perf_counter()
        found = segments.commits(str(repo), after, upto, 1000)
        times.append(time.perf_counter() - started)
        assert found[-1].what == "backup", found
    return times


def real_borg(folder: Path, megabytes: int, runs: int) -> dict[str, object]:
    if shutil.which("borg") is None:
        return {"skipped": "borg is not installed"}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BORG_")},
           "BORG_PASSPHRASE": "bench", "BORG_BASE_DIR": str(folder / "base")}
    repo, src = folder / "real", folder / "src"
    src.mkdir()
    with open(src / "random", "wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(1 << 20))
    subprocess.run(["borg", "init", "-e", "repokey", str(repo)], env=env, check=True,
                   capture_output=True)
    subprocess.run(["borg", "create", f"{repo}::a1", str(src)], env=env, check=True,
                   capture_output=True)
    upto = max(int(p.name[6:]) for p in repo.glob("index.*"))
    times = time_classify(repo, 1, upto, runs, cold=False)
    found = segments.commits(str(repo), 1, upto)[-1]
    return {"megabytes": megabytes, "segments": upto - 1, "what": found.what,
            "bytes_added": found.bytes_added, "objects_added": found.objects_added,
            "seconds_median": round(statistics.median(times), 5)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=10.0)
    parser.add_argument("--chunk-mb", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--real-mb", type=int, default=500)
    parser.add_argument("--workdir", default="/var/tmp")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hive-classify-", dir=args.workdir))
    try:
        repo = folder / "synthetic"
        upto, entries = synthesize(repo, args.gigabytes, int(args.chunk_mb * (1 << 20)))
        warm = time_classify(repo, 1, upto, args.runs, cold=False)
        cold = time_classify(repo, 1, upto, args.runs, cold=True) if os.geteuid() == 0 \
            else []
        found = segments.commits(str(repo), 1, upto)[-1]
        result = {
            "synthetic": {"gigabytes": args.gigabytes, "segments": upto - 1,
                          "entries": entries, "bytes_added": found.bytes_added,
                          "what": found.what,
                          "warm_seconds_median": round(statistics.median(warm), 5),
                          "cold_seconds_median": round(statistics.median(cold), 5)
                          if cold else None},
            "real_borg": real_borg(folder, args.real_mb, args.runs),
            "target": "10 GB classified in well under 1 s",
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    (out / "classify_commit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    synthetic = result["synthetic"]
    assert isinstance(synthetic, dict)
    return 0 if synthetic["warm_seconds_median"] < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
