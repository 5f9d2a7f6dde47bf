"""`hive rollback REPO`: undo what append-only keys did, with borg's transactions log.

The command is the careful shell around reconciler/rollback.py (pure plan + file moves):
it finds the repository the way `hive purge` does, shows the plan, asks for the name, then
holds Hive's apply lock and borg's repository lock while it moves files aside and journals
what it did. Imported by hive/cli.py at its end; nothing heavy is imported at module level.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hive import output
from hive.common import EXIT_OK, Seconds, fail
from hive.common import OUTPUT as _OUTPUT
from hive.common import file_option as _file_option
from hive.common import load as _load

if TYPE_CHECKING:
    from schemas.models import HiveConfig


def client_hint(repo_id: str | None) -> str:
    """What a client that saw the undone state runs next (checked with borg 1.2 and 1.4).

    borg compares the manifest's time with the one it remembered in its security directory
    and its cache; both must go (`borg delete --cache-only` keeps the security directory)."""
    ident = repo_id or "<repository id>"
    return ("Clients that saw the newer state now stop with 'Cache, or information obtained "
            "from the security directory is newer than repository'. On each such client, "
            "as the user that runs its backups, run once:\n"
            f"    rm -rf ~/.cache/borg/{ident} ~/.config/borg/security/{ident}\n"
            "(or the same below $BORG_BASE_DIR, $BORG_CACHE_DIR, $BORG_SECURITY_DIR). The next "
            "borg command rebuilds both. See README, 'Rolling back an append-only "
            "repository'.")


@click.command()
@click.argument("repository")
@_file_option
@click.option("--list", "list_only", is_flag=True,
              help="List the transactions in the repository's log, with their times (UTC).")
@click.option("--to", "target", type=int, metavar="N",
              help="Roll back to transaction N: later commits are undone.")
@click.option("--dry-run", is_flag=True, help="Only show what would be moved aside.")
@click.option("--force", is_flag=True,
              help="Roll back even a repository that is not append-only, or whose newest "
                   "commit is not in the log (a full-access client wrote after it).")
@click.option("--confirm", metavar="NAME",
              help="Confirm without a prompt by repeating the repository's name (scripts).")
@click.option("--lock-wait", type=Seconds(0, 3600), default=5.0, show_default=True,
              help="Seconds to wait for a borg client to release the repository's lock.")
@_OUTPUT
def rollback(repository: str, config_file: str | None, list_only: bool, target: int | None,
             dry_run: bool, force: bool, confirm: str | None, lock_wait: float,
             fmt: str) -> int:
    """Roll an append-only repository back to an earlier transaction.

    \b
    An append-only key may 'delete' and 'prune', but borg only marks archives deleted and
    logs each commit in <repository>/transactions. This moves the segments and index files
    newer than transaction N into <repository>.rollback-<time>-to-N beside it (nothing is
    deleted), with borg's repository lock held, and journals it.
      hive rollback REPO --list              the transactions and their times
      hive rollback REPO --to N --dry-run    what would move
      hive rollback REPO --to N              do it (asks for the name)
    """
    from reconciler import rollback as rb

    if fmt == "json":
        output.emit_version()
    config, path = _load(config_file, fmt)
    found = _repository_path(config, repository)
    if isinstance(found, str):
        return _fail(fmt, found)
    repo_path = found
    try:
        repo = rb.Repository.read(repo_path)
    except rb.RollbackError as exc:
        return _fail(fmt, str(exc))
    if list_only:
        return _list(repo, fmt)
    if target is None:
        return _fail(fmt, "say which transaction to return to with --to N (see --list)")
    settings = config.repositories.get(repository)
    append_only = bool(settings is not None and settings.append_only_keys) \
        or repo.append_only_config
    plan = rb.plan_rollback(repo.transactions, repo.layout, target, append_only)
    rb.warn_unlogged(plan, rb.unlogged_commits(repo_path, repo.layout, repo.transactions,
                                               target))
    _show_plan(plan, repository, repo_path, fmt)
    if plan.refusals:
        return _fail(fmt, "; ".join(plan.refusals))
    if plan.warnings and not force:
        return _fail(fmt, "; ".join(plan.warnings) + ". Add --force if that is what you want")
    if plan.nothing_to_do:
        _say(fmt, "summary", f"{repository} is at transaction {target} already: nothing to do.",
             moved=0, dry_run=dry_run)
        return EXIT_OK
    if dry_run:
        _say(fmt, "summary", "Dry run: nothing was moved.", moved=0, dry_run=True)
        return EXIT_OK
    import os

    if os.geteuid() != 0:
        return _fail(fmt, "hive rollback needs root")
    if confirm is None:
        confirm = click.prompt("Type the repository's name to roll it back", default="",
                               show_default=False)
    if confirm != repository:
        return _fail(fmt, "the name did not match; nothing was moved")
    return _execute(config, path, repository, repo_path, target, append_only, force,
                    lock_wait, fmt)


def _repository_path(config: HiveConfig, repository: str) -> Path | str:
    """The repository's folder, if Hive manages it; else why not (as `hive purge`)."""
    from reconciler import inventory as inventory_mod

    user = config.user_name(repository)
    try:
        known = inventory_mod.load(config.server.state_dir).made(user, repository)
    except inventory_mod.InventoryError as exc:
        return str(exc)
    if repository not in config.repositories and known is None:
        return f"repository {repository!r} is not one Hive manages on this server"
    repo_path = config.repo_path(repository)
    if repo_path.is_symlink():
        return f"{repo_path} is a symlink; Hive will not follow it"
    if not repo_path.is_dir():
        return f"{repo_path} does not exist"
    return repo_path


def _list(repo: Any, fmt: str) -> int:
    from reconciler.rollback import segment_ranges

    ranges = segment_ranges(repo.transactions)
    current = repo.layout.current
    if fmt == "json":
        for t in repo.transactions:
            output.emit("transaction", id=t.id, time=t.time.isoformat() if t.time else None,
                        segments=list(ranges[t.id]), current=t.id == current)
        output.emit("summary", transactions=len(repo.transactions), current=current)
        return EXIT_OK
    if not repo.transactions:
        click.echo(f"{repo.path} has no transactions log: borg writes one only for commits "
                   "made in append-only mode.")
        return EXIT_OK
    click.echo(f"Transactions of {repo.path} (times in UTC):")
    click.echo(f"  {'transaction':>11}  {'time':<19}  segments")
    for t in repo.transactions:
        first, last = ranges[t.id]
        when = t.time.strftime("%Y-%m-%d %H:%M:%S") if t.time else "?"
        mark = "  <- current" if t.id == current else ""
        click.echo(f"  {t.id:>11}  {when:<19}  {first}-{last}{mark}")
    if current is not None and current != repo.transactions[-1].id:
        click.echo(f"The newest transaction on disk is {current}: not in the log (written by "
                   "a full-access session).")
    return EXIT_OK


def _show_plan(plan: Any, name: str, repo_path: Path, fmt: str) -> None:
    if fmt == "json":
        output.emit("rollback", repository=name, path=str(repo_path), current=plan.current,
                    target=plan.target, undone=[t.id for t in plan.undone], move=plan.move,
                    refusals=plan.refusals, warnings=plan.warnings)
        return
    click.echo(f"Rollback of {name} ({repo_path}) from transaction {plan.current} to "
               f"{plan.target}:")
    for t in plan.undone:
        when = t.time.strftime("%Y-%m-%d %H:%M:%S UTC") if t.time else "?"
        click.echo(f"  - undo transaction {t.id} ({when})")
    if plan.move:
        click.echo(f"  moves aside {len(plan.move)} files: {', '.join(plan.move[:8])}"
                   + (", ..." if len(plan.move) > 8 else ""))
    for warning in plan.warnings:
        click.echo(click.style("Warning: ", fg="yellow") + warning, err=True)


def _execute(config: HiveConfig, path: Path, name: str, repo_path: Path, target: int,
             append_only: bool, force: bool, lock_wait: float, fmt: str) -> int:
    from reconciler import rollback as rb
    from reconciler.journal import Journal, who
    from reconciler.lock import LockBusy, apply_lock

    state_dir = config.server.state_dir

    def locked_rollback() -> tuple[Any, Any, list[str], str | None]:
        """Runs as the repository's user (rb.as_owner): lock, re-plan, move."""
        with rb.repository_lock(repo_path, lock_wait):
            # Read again under the lock: a client may have committed since the plan shown.
            repo = rb.Repository.read(repo_path)
            plan = rb.plan_rollback(repo.transactions, repo.layout, target, append_only)
            rb.warn_unlogged(plan, rb.unlogged_commits(repo_path, repo.layout,
                                                       repo.transactions, target))
            if plan.refusals or (plan.warnings and not force):
                return plan, repo.id, [], "; ".join(plan.refusals + plan.warnings)
            try:
                return plan, repo.id, rb.execute(plan, repo, aside), None
            except OSError as exc:
                return plan, repo.id, [], str(exc)

    try:
        with apply_lock(state_dir, 10.0):
            aside = rb.make_aside_folder(repo_path, target)
            journal = Journal(state_dir, config.server.name)
            journal.write(journal.record("start", user=who(), file=str(path), commit=None,
                                         command="rollback", summary={"change": 1}))
            plan, repo_id, moved, error = None, None, [], "interrupted"
            try:
                plan, repo_id, moved, error = rb.as_owner(repo_path, locked_rollback)
            except (rb.RollbackError, OSError) as exc:
                error = str(exc)
            except Exception as exc:  # e.g. MemoryError: still journal it and clean up
                error = f"{type(exc).__name__}: {exc}"
            finally:
                # Whatever happened (even Ctrl-C), the journal gets its finish and no empty
                # aside folder is left.
                if not moved:
                    with contextlib.suppress(OSError):
                        aside.rmdir()  # refused before anything moved
                journal.write(
                    journal.record("change", action="update", kind="repository rollback",
                                   name=str(repo_path),
                                   before={"transaction": plan.current if plan else None},
                                   after={"transaction": target, "aside": str(aside),
                                          "moved": len(moved),
                                          "undone": [t.id for t in plan.undone] if plan
                                          else []},
                                   error=error),
                    journal.record("finish", error=error, done=1, total=1))
            if error and moved:
                return _fail(fmt, f"rollback failed: {error}; files moved so far are in "
                                  f"{aside}")
            if error:
                return _fail(fmt, error)
    except (LockBusy, OSError) as exc:
        return _fail(fmt, str(exc))
    _say(fmt, "summary", f"Rolled {name} back to transaction {target}: moved {len(moved)} "
                         f"files to {aside}.", moved=len(moved), aside=str(aside),
         dry_run=False)
    if fmt == "text":
        click.echo("The next borg access rebuilds the repository index.")
        click.echo(client_hint(repo_id))
    return EXIT_OK


def _say(fmt: str, record: str, text: str, **fields: Any) -> None:
    if fmt == "json":
        output.emit(record, **fields)
    else:
        click.echo(text)


def _fail(fmt: str, message: str) -> int:
    return fail(message, fmt, errors=1)
