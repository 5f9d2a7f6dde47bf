"""Turn a `model.Report` into files, and swap the folder in so readers never see half.

Every page is self-contained: the stylesheet and the one script are inlined, and each
page carries a Content-Security-Policy of `default-src 'none'` that allows exactly those
two by their SHA-256 hashes. So a page can load nothing from anywhere, by construction:
no CDN, font, image or beacon, whether opened from file:// or behind a web server.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import re
import shutil
import stat
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from reconciler.fsutil import atomic_write
from reports import metrics, queries
from reports.model import SEVERITY, Report, Row

MAX_WORKERS = 4
PAGES_PER_WORKER = 500
MARKER = ".hive-report"  # a folder with this file is one hive report may replace
STATUS_FORMAT = 1


class ReportError(Exception):
    """The report cannot be written; the message says why and what to do."""


def _human_bytes(value: float | None) -> str:
    from watcher.commands import human_bytes

    return human_bytes(None if value is None else int(value))


def _growth(value: float | None) -> str:
    if value is None:
        return "-"
    sign = "+" if value >= 0 else "-"
    return sign + _human_bytes(abs(value))


def _age(seconds: float | None) -> str:
    from watcher.commands import human_age

    return human_age(seconds)


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return value.astimezone(UTC).strftime(fmt) if value is not None else "-"


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value is not None else ""


def _state_class(state: str) -> str:
    return {"never backed up": "never", "missing on disk": "missing",
            "expired": "missing"}.get(state, state)


def _asset(name: str) -> str:
    return resources.files("reports").joinpath("templates", name).read_text()


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"),
                             autoescape=True, trim_blocks=False, undefined=jinja2.StrictUndefined)
    env.filters.update(
        bytes=_human_bytes, growth=_growth, age=_age, when=_when, iso=_iso,
        when_s=lambda v: _when(v, "%Y-%m-%d %H:%M:%S"), state_class=_state_class,
        epoch=lambda v: f"{v.timestamp():.0f}" if v is not None else "")
    css, js = _asset("report.css"), _asset("report.js")
    env.globals.update(
        css=css, js=js,
        csp=(f"default-src 'none'; style-src {_hash(css)}; script-src {_hash(js)}; "
             "img-src 'none'; base-uri 'none'; form-action 'none'"),
        spark_w=queries.SPARK_W, spark_h=queries.SPARK_H, chart_w=queries.CHART_W,
        chart_h=queries.CHART_H, chart_days=queries.CHART_DAYS)
    return env


def status_document(report: Report, config: Any) -> dict[str, Any]:
    """status.json: the documented contract (README). Each entry is `hive status -o json`'s
    object plus host, client_url, description, growth and projection, page."""
    from hive import __version__

    entries = []
    for page in report.pages:
        row = page.row
        entry = row.status.as_json()
        entry.update(
            host=row.host, client_url=page.client_url, description=row.description,
            growth_bytes_per_week=(round(row.growth_per_week)
                                   if row.growth_per_week is not None else None),
            quota_full_at=_iso(page.projection.when) or None if page.projection else None,
            page=f"repos/{row.name}.html")
        entries.append(entry)
    summary = report.summary
    return {"format": STATUS_FORMAT, "generated_at": _iso(summary.generated),
            "hive": __version__, "host": summary.host, "worst": summary.worst,
            "counts": summary.counts, "repositories": entries}


def _list_context(report: Report, rows: list[Row], root: str,
                  html: dict[str, str]) -> dict[str, Any]:
    from reports.model import summary as summarise

    return {"rows_html": [html[r.name] for r in rows], "root": root,
            "summary": summarise(report.summary.host, rows, report.summary.generated),
            "owners": sorted({r.status.owner for r in rows}),
            "groups": sorted({g for r in rows for g in r.in_groups}),
            "states": [s for s in SEVERITY if any(r.status.state == s for r in rows)]}


def _render_pages(report: Report, folder: Path, common: dict[str, Any], part: int,
                  parts: int) -> None:
    template = _environment().get_template("repo.html.j2")
    for page in report.pages[part::parts]:
        (folder / "repos" / f"{page.row.name}.html").write_text(template.render(
            **common, page=page, root="../", summary=report.summary))


def _start_workers(report: Report, folder: Path, common: dict[str, Any]) -> tuple[int, list[Any]]:
    """One page per repository is the bulk of the work: when there are many, forked
    processes render their share (they inherit the finished report, nothing is sent
    back) while this one writes the list pages. Returns the number of shares and the
    workers; this process renders share 0."""
    parts = min(os.cpu_count() or 1, MAX_WORKERS)
    if parts < 2 or len(report.pages) < PAGES_PER_WORKER * 2:
        return 1, []
    import gc
    import multiprocessing

    gc.freeze()  # the children's collector leaves the inherited objects (and pages) alone
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_render_pages, args=(report, folder, common, part,
                                                           parts), daemon=True)
               for part in range(1, parts)]
    for worker in workers:
        worker.start()
    return parts, workers


def write_folder(report: Report, config: Any, folder: Path) -> str:
    """Write every file of the report into `folder` (new, empty); returns metrics text."""
    from hive import __version__

    env = _environment()
    common = {"hive_version": __version__}
    listing = env.get_template("list.html.j2")
    for sub in ("repos", "owners", "groups"):
        (folder / sub).mkdir()
    env.get_template("repo.html.j2")  # compiled once, before the fork
    parts, workers = _start_workers(report, folder, common)
    host = report.summary.host
    # A row looks the same on every list page below the top: render it once for each depth.
    macros = env.get_template("_macros.html.j2").make_module()
    top = {r.name: macros.repo_row(r, "") for r in report.rows}
    below = {r.name: macros.repo_row(r, "../") for r in report.rows}
    (folder / "index.html").write_text(listing.render(
        **common, **_list_context(report, report.rows, "", top), title=f"Backups on {host}",
        description=None,
        caption=f"{len(report.rows)} repositories on {host}, worst state first"))
    # Owner and group pages: the same list, only theirs, one level down.
    pages = [("owners", name, rows, config.owners.get(name), f"Backups of {name}",
              f"Repositories owned by {name} on {host}")
             for name, rows in report.owners.items()]
    pages += [("groups", name, rows, config.groups.get(name), f"Backups of group {name}",
               f"Repositories shared with {name} or owned by its members, on {host}")
              for name, rows in report.groups.items()]
    for kind, name, rows, spec, title, caption in pages:
        (folder / kind / f"{name}.html").write_text(listing.render(
            **common, **_list_context(report, rows, "../", below), title=title,
            description=spec.description if spec else None, caption=caption))
    _render_pages(report, folder, common, 0, parts)
    for worker in workers:
        worker.join()
    if any(worker.exitcode != 0 for worker in workers):
        raise OSError("a process rendering repository pages failed (see above)")
    (folder / "status.json").write_text(
        json.dumps(status_document(report, config), indent=1) + "\n")
    text = metrics.render(report)
    (folder / "metrics.prom").write_text(text)
    (folder / MARKER).write_text("Written by hive report; the next run replaces this "
                                 "folder as a whole.\n")
    return text


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot
        return False
    raise OSError(err, os.strerror(err), str(b))


def check_destination(dest: Path) -> None:
    """Refuse to replace a folder hive report did not write: `-d /etc` must not swap /etc.
    Refuse a parent folder someone else may change too: the report is written as a new
    folder beside `dest`, which they could swap for a symlink while root writes into it."""
    parent = dest.parent
    try:
        info = parent.stat()
    except FileNotFoundError:
        info = None  # made below, by this user
    if info is not None and (info.st_uid not in (0, os.geteuid()) or (
            info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX)):
        raise ReportError(f"{parent} may be changed by other users (owner uid "
                          f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}); choose a "
                          "-d/--dest in a folder that only root (or you) can write")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ReportError(f"{dest} exists and is not a folder; choose another -d/--dest")
    if dest.is_dir() and not (dest / MARKER).exists() and any(dest.iterdir()):
        raise ReportError(f"{dest} exists, is not empty and was not written by hive report "
                          f"(no {MARKER} in it); choose another -d/--dest, or empty it")


def publish(new: Path, dest: Path) -> None:
    """Put the finished folder `new` at `dest` in one step, then delete the old one."""
    if not dest.exists():
        os.rename(new, dest)
        return
    if not _exchange(new, dest):  # two renames: a moment without `dest`, never half a report
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
        os.rename(new, dest)
        new = old
    shutil.rmtree(new)


def write_file_atomic(path: Path, text: str) -> None:
    """For node_exporter's textfile collector: it must never read a half-written file.
    Its folder usually belongs to another user (prometheus): the temporary file is made
    new (O_EXCL, a name nobody can guess), so a symlink planted there is never followed."""
    atomic_write(path, text, mode=0o644)


def _sweep(dest: Path) -> None:
    """Folders left beside `dest` by a report that was killed half-way (its pid is gone)."""
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.(new|old)-(\d+)")
    for stale in dest.parent.iterdir():
        found = pattern.fullmatch(stale.name)
        if found is None or stale.is_symlink() or not stale.is_dir():
            continue
        try:
            os.kill(int(found.group(2)), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass


def write(report: Report, config: Any, dest: Path, prometheus_file: Path | None) -> None:
    check_destination(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {dest.parent}: {exc.strerror}") from None
    _sweep(dest)
    new = dest.with_name(f".{dest.name}.new-{os.getpid()}")
    try:
        new.mkdir(mode=0o755)
        os.chmod(new, 0o755)  # served by a web server: readable, whatever the umask
        text = write_folder(report, config, new)
        publish(new, dest)
    except OSError as exc:
        shutil.rmtree(new, ignore_errors=True)
        raise ReportError(f"cannot write {dest}: {exc.strerror or exc}") from None
    if prometheus_file is not None:
        try:
            write_file_atomic(prometheus_file, text)
        except OSError as exc:
            raise ReportError(f"cannot write {prometheus_file}: {exc.strerror}; the "
                              f"report in {dest} was written") from None
