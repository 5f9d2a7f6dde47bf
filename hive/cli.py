"""The `hive` command: validate, plan, apply, history, purge, schema, authorized-keys.

Exit codes are a contract with CI pipelines: 0 success (no changes), 1 any error (usage
errors included), 2 changes pending or made, and only with --detailed-exitcode, 3 `hive apply
--checksum` refused because the plan is not the reviewed one.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hive import __version__, output
from hive.common import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, Seconds, fail
from hive.common import OUTPUT as _OUTPUT
from hive.common import file_option as _file_option
from hive.common import load as _load

if TYPE_CHECKING:  # imported where used: a command pays only for what it runs
    from reconciler.sessions import Connection

EXIT_CHECKSUM = 3  # apply --checksum: the plan is not the reviewed one; nothing changed

# What validate, plan and apply built (the file's models, facts, desired state, plan): kept
# until the process ends, which then skips freeing it (run, _exit). For 50,000 repositories
# that is millions of objects Python would free one by one, 0.3 s after the last line is
# printed; the kernel takes the whole heap back at once.
_HELD: list[object] = []


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(__version__, prog_name="hive")
def cli() -> None:
    """Hive keeps a borg backup server in the state hive.yaml describes.

    \b
    Typical flow (GitOps): edit hive.yaml, commit, and let CI run
      hive validate                  check the whole file, every problem with file:line:col
      hive plan                      show what would change (like terraform plan)
      hive apply                     make the server match (as root), then journal it
      hive history                   who applied what, when, from which git commit

    \b
    On the server: 'hive watch' records repository events (a service), 'hive stats'
    measures them (a timer), 'hive status' says which are stale (monitoring exit codes),
    'hive notify' tells people (a timer), 'hive report' writes the status page,
    status.json and Prometheus metrics (a timer), 'hive rollback' undoes what
    append-only keys did. 'hive COMMAND --help' for each.

    \b
    Exit codes: 0 success/no changes, 1 error, 2 changes (with --detailed-exitcode),
    3 'hive apply --checksum' refused (the plan is not the reviewed one).
    Nothing that Hive does deletes repository data; only 'hive purge' does, when asked.
    """


@cli.command()
@_file_option
@_OUTPUT
def validate(config_file: str | None, fmt: str) -> int:
    """Check hive.yaml completely and report every problem as FILE:LINE:COL: field: message.

    Notification channel URLs are parsed by apprise too (nothing is sent)."""
    if fmt == "json":
        output.emit_version()
    from notifications.checks import apprise_problems_if_any

    config, path = _load(config_file, fmt, apprise_problems_if_any)
    _HELD.append(config)
    if fmt == "json":
        output.emit("summary", valid=True, errors=0, repositories=len(config.repositories),
                    keys=len(config.keys))
    else:
        click.echo(f"{path}: valid ({len(config.repositories)} repositories, "
                   f"{len(config.keys)} keys, {len(config.owners)} owners).")
    return EXIT_OK


def _plan_options(f: Any) -> Any:
    f = click.option("--detailed-exitcode", is_flag=True,
                     help="Exit 0 when there is nothing to change, 2 when there are changes, "
                          "1 on any error (Terraform's convention, for CI drift checks).")(f)
    f = click.option("--force", is_flag=True,
                     help="Allow a plan that would revoke access to every repository.")(f)
    f = click.option("--prune", is_flag=True,
                     help="Also delete the users, groups and empty folders of repositories "
                          "removed from hive.yaml. Repository data is never deleted: see "
                          "'hive purge'.")(f)
    return _OUTPUT(_file_option(f))


def _show_plan(planned: Any, fmt: str, title: str) -> None:
    if fmt == "json":
        output.emit_plan(planned.plan)
    else:
        output.print_plan(planned.plan, title)
        click.echo(f"Plan checksum: {planned.plan.checksum}")


def _checksum_option(ctx: click.Context, param: click.Parameter, value: str | None
                     ) -> str | None:
    if value is None:
        return None
    value = value.strip().lower().removeprefix("sha256:")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise click.BadParameter("expected the 64 hex digits 'hive plan' prints after "
                                 "'Plan checksum:'", ctx, param)
    return value


@cli.command()
@_plan_options
@click.option("--server-from", type=click.Path(readable=False), default=None,
              help="Take the server: section from this trusted file (the server's own "
                   "hive.yaml) instead of FILE. For plans of an untrusted proposal, such as "
                   "a pull request: it cannot then point Hive at other files, another LDAP "
                   "server or other secrets.")
def plan(config_file: str | None, fmt: str, prune: bool, force: bool,
         detailed_exitcode: bool, server_from: str | None) -> int:
    """Show what 'hive apply' would change, without changing anything.

    \b
      + create   ~ change (before -> after)   - remove
    Works as any user that can read the files; run as root for a complete view.
    """
    return _plan_or_apply(config_file, fmt, prune, force, detailed_exitcode, dry_run=True,
                          lock_timeout=0, server_from=server_from)


@cli.command()
@_plan_options
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as 'hive plan').")
@click.option("--lock-timeout", type=Seconds(0, 3600), default=10.0, show_default=True,
              help="Seconds to wait for another running apply to finish.")
@click.option("--checksum", metavar="SUM", default=None, callback=_checksum_option,
              help="Apply only if the plan is exactly the one 'hive plan' showed with this "
                   "'Plan checksum:'. Otherwise show the new plan, change nothing, exit 3.")
def apply(config_file: str | None, fmt: str, prune: bool, force: bool,
          detailed_exitcode: bool, dry_run: bool, lock_timeout: float,
          checksum: str | None) -> int:
    """Make the server match hive.yaml: accounts, folders, the authorized-keys cache.

    Idempotent: a second run on an unchanged file changes nothing. Needs root. A repository
    removed from the file loses access (keys revoked, account locked) but keeps its data.
    Open ssh connections that logged in with a key line this run removes or changes are
    ended too, each one printed. Every run is appended to the journal in state_dir
    ('hive history').

    \b
    Reviewed plans: 'hive plan' ends with 'Plan checksum: SUM'; 'hive apply --checksum SUM'
    applies that plan or nothing (exit 3 when the server or the file changed since).
    """
    return _plan_or_apply(config_file, fmt, prune, force, detailed_exitcode, dry_run,
                          lock_timeout, checksum=checksum)


def _plan_or_apply(config_file: str | None, fmt: str, prune: bool, force: bool,
                   detailed_exitcode: bool, dry_run: bool, lock_timeout: float,
                   server_from: str | None = None, checksum: str | None = None) -> int:
    from reconciler import engine
    from reconciler.inventory import InventoryError
    from reconciler.lock import LockBusy
    from reconciler.targets import TargetError

    if fmt == "json":
        output.emit_version()
    config, path = _load(config_file, fmt)
    _HELD.append(config)
    if server_from:
        import schemas

        trusted, _ = _load(server_from, fmt)
        try:
            config = schemas.with_trusted_server(config, trusted, str(path))
        except schemas.ConfigError as exc:
            _fail(fmt, "\n".join(map(str, exc.problems)))
            return EXIT_ERROR
    changed_code = EXIT_CHANGES if detailed_exitcode else EXIT_OK
    login_notes = _login_notes(config.server.state_dir)
    try:
        if dry_run:
            planned = engine.make_plan(config, prune=prune, force=force)
            _HELD.append(planned)
            planned.plan.notes.extend(login_notes)
            _show_plan(planned, fmt, f"Hive plan for {config.server.name} ({path}):")
            if checksum is not None and checksum != planned.plan.checksum:
                _fail(fmt, str(engine.ChecksumMismatch(checksum, planned)),
                      checksum=planned.plan.checksum)
                return EXIT_CHECKSUM
            if fmt == "json":
                output.emit("summary", **planned.plan.summary, errors=len(planned.plan.errors),
                            checksum=planned.plan.checksum)
            if planned.plan.errors:
                return EXIT_ERROR
            return changed_code if planned.plan.changes else EXIT_OK
        text = fmt == "text"
        title = f"Hive will apply to {config.server.name} ({path}):"

        def show(planned: engine.Planned) -> None:
            planned.plan.notes.extend(login_notes)
            if text and planned.plan.changes:
                output.print_plan(planned.plan, title)

        applied = engine.apply(
            config, path, prune=prune, force=force, lock_timeout=lock_timeout,
            progress=_Progress() if text and sys.stderr.isatty() else None,
            on_plan=show, checksum=checksum)
        _HELD.append(applied)
    except engine.ChecksumMismatch as exc:
        _show_plan(exc.planned, fmt, f"The plan for {config.server.name} now ({path}):")
        _fail(fmt, str(exc), checksum=exc.planned.plan.checksum)
        return EXIT_CHECKSUM
    except (engine.RefusedError, LockBusy, InventoryError, TargetError) as exc:
        _fail(fmt, str(exc))
        return EXIT_ERROR
    plan_ = applied.planned.plan
    if fmt == "json":
        output.emit_plan(plan_)
        for change, error in applied.results:
            output.emit("applied", **change.data, error=error)
        for connection in applied.sessions:
            output.emit("session", **engine.session_data(connection))
        output.emit("summary", **plan_.summary, applied=len(applied.results),
                    errors=int(applied.error is not None), checksum=plan_.checksum)
    elif not plan_.changes:
        output.print_plan(plan_, "")
    elif applied.error:
        done = sum(1 for _, error in applied.results if error is None)
        click.echo(click.style(f"\nApply failed after {done} of {len(plan_.changes)} changes: "
                               f"{applied.error}", fg="red", bold=True), err=True)
        click.echo("What was done is safe and journaled; fix the cause and run 'hive apply' "
                   "again to converge.", err=True)
    else:
        s = plan_.summary
        click.echo(click.style(f"\nApply complete: {s['add']} added, {s['change']} changed, "
                               f"{s['remove']} removed.", fg="green", bold=True))
    if fmt == "text":
        for connection in applied.sessions:
            click.echo(_ended_line(connection), err=bool(applied.error))
    if applied.error:
        return EXIT_ERROR
    return changed_code if plan_.changes else EXIT_OK


def _ended_line(connection: Connection) -> str:
    """What apply says about one open ssh connection it ended."""
    keys = ", ".join(connection.key_names) or "not known (no ExposeAuthInfo)"
    how = "killed" if connection.killed else "ended" if connection.ended else "already gone"
    return (f"Open session of {connection.user} {how} (pid {connection.pid}, from "
            f"{connection.client or 'unknown'}, key {keys}): the line it logged in with "
            "was revoked")


def _login_notes(state_dir: Path) -> list[str]:
    """A plan's notes about the key cache as the login path will see it: a state_dir in
    a folder sshd and `hive authorized-keys` refuse (hive.login.cache_problem, the login
    path's own walk) would let nobody log in, and nothing else would say so before the
    first failed backup. A folder not made yet is fine: apply makes it root's, 0755."""
    from hive.login import cache_problem

    problem = cache_problem(str(state_dir))
    if problem is None:
        return []
    return [f"logins will find no keys: sshd and 'hive authorized-keys' refuse this cache, "
            f"as {problem}. Keep server.state_dir in folders that are root's and writable "
            "by root alone, such as /var/lib/hive"]


class _Progress:
    """One self-rewriting line on a terminal's stderr while changes are applied."""

    def __call__(self, done: int, total: int, change: Any, error: str | None) -> None:
        end = "\n" if done == total or error else ""
        click.echo(f"\rApplying {done}/{total}: {change.symbol} {change.kind} "
                   f"{change.name[-50:]}\033[K", err=True, nl=False)
        if end:
            click.echo(err=True)


def _fail(fmt: str, message: str, **summary: Any) -> None:
    """The error of plan and apply: its JSON summary carries the plan's counts (all 0)."""
    fail(message, fmt, **{"add": 0, "change": 0, "remove": 0, "errors": 1, **summary})


@cli.command()
@_file_option
@click.option("-n", "--limit", type=int, default=20, show_default=True,
              help="How many of the latest applies to show.")
@click.option("-v", "--verbose", is_flag=True, help="List every change of each apply.")
@_OUTPUT
def history(config_file: str | None, limit: int, verbose: bool, fmt: str) -> int:
    """Show the journal: every apply, who ran it, from which commit, and what it did."""
    from reconciler import journal

    if fmt == "json":
        output.emit_version()
    config, _ = _load(config_file, fmt)
    runs: dict[str, dict[str, Any]] = {}
    for record in journal.read(config.server.state_dir):
        run = runs.setdefault(record["run"], {"changes": []})
        if record["type"] == "change":
            run["changes"].append(record)
        else:
            run[record["type"]] = record
    selected = list(runs.items())[-limit:] if limit > 0 else []
    if fmt == "json":
        for run_id, run in selected:
            output.emit("run", run=run_id, start=run.get("start"), finish=run.get("finish"),
                        changes=run["changes"])
        output.emit("summary", runs=len(selected), errors=0)
        return EXIT_OK
    if not selected:
        click.echo(f"No applies recorded in {config.server.state_dir} yet.")
    for run_id, run in selected:
        start, finish = run.get("start", {}), run.get("finish")
        summary = start.get("summary", {})
        status = ("interrupted" if finish is None else
                  click.style("failed", fg="red") if finish.get("error") else "ok")
        commit = (start.get("commit") or "no git")[:12]
        click.echo(f"{start.get('time', '?')}  {start.get('host', '?')}  "
                   f"{start.get('user', '?')}  {commit}  +{summary.get('add', 0)} "
                   f"~{summary.get('change', 0)} -{summary.get('remove', 0)}  {status}  "
                   f"run {run_id}")
        if verbose:
            for c in run["changes"]:
                symbol = {"create": "+", "update": "~", "delete": "-"}[c["action"]]
                error = f"  FAILED: {c['error']}" if c.get("error") else ""
                click.echo(f"    {symbol} {c['kind']} {c['name']}{error}")
    return EXIT_OK


@cli.command()
@click.argument("repository")
@_file_option
@click.option("--confirm", metavar="NAME",
              help="Confirm without a prompt by repeating the repository's name (for scripts).")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
def purge(repository: str, config_file: str | None, confirm: str | None,
          dry_run: bool) -> int:
    """Delete a repository's DATA. The only Hive command that does; it cannot be undone.

    The repository must first be removed from hive.yaml (or set to 'mode: disabled') and
    applied, so no client writes while it goes, and it must not be 'protected'. Afterwards
    'hive apply --prune' removes its user and folders.
    """
    from reconciler import inventory as inventory_mod
    from reconciler.journal import Journal, who
    from reconciler.lock import LockBusy, apply_lock

    config, path = _load(config_file, "text")
    try:
        inventory = inventory_mod.load(config.server.state_dir)
    except inventory_mod.InventoryError as exc:
        return _refuse(str(exc))
    repo = config.repositories.get(repository)
    wanted_user = config.user_name(repository)
    made = inventory.made_as(wanted_user, repository)
    if made is None or (repo is not None and made[0] != wanted_user):
        return _refuse(f"repository {repository!r} is not one Hive created on this server")
    user, known = made
    if (repo is not None and repo.protected) or (repo is None and known.get("protected")):
        return _refuse(f"repository {repository!r} is protected; set 'protected: false' and "
                       "apply first")
    if repo is not None and repo.mode != "disabled":
        return _refuse(f"repository {repository!r} is still active in {path}; remove it or "
                       "set 'mode: disabled', run 'hive apply', then purge")
    from reconciler.targets.authorized_keys import cache_dir

    keys = cache_dir(config.server.state_dir) / user
    if os.path.lexists(keys):  # the file says so, but the server was not told yet
        return _refuse(f"repository {repository!r} still has keys sshd accepts ({keys}): "
                       "run 'hive apply' first, so no client writes while its data goes")
    # where the file puts it, else where it was last applied (repos_root changed since)
    target = config.repo_path(repository, user)
    recorded = Path(known.get("path") or target)
    if not os.path.lexists(target) and os.path.lexists(recorded):
        target = recorded
    if not os.path.lexists(target):
        click.echo(f"{target} does not exist: nothing to purge.")
        return EXIT_OK
    if target.is_symlink():
        return _refuse(f"{target} is a symlink; Hive will not follow it")
    from reconciler import treewalk

    found = treewalk.usage(target)
    size, files = found.apparent_bytes, found.files
    click.echo(f"This deletes {target}: {files} files, {size / 1e9:.2f} GB of backups.")
    if found.unreadable:
        click.echo(click.style("Warning: ", fg="yellow") + f"{found.unreadable} entries could "
                   f"not be read, so there may be more (e.g. {found.problems[0]})", err=True)
    if dry_run:
        return EXIT_OK
    if os.geteuid() != 0:
        return _refuse("hive purge needs root")
    if confirm is None:
        confirm = click.prompt("Type the repository's name to delete its data", default="",
                               show_default=False)
    if confirm != repository:
        return _refuse("the name did not match; nothing was deleted")
    try:
        with apply_lock(config.server.state_dir, 10.0):
            journal = Journal(config.server.state_dir, config.server.name)
            journal.write(journal.record("start", user=who(), file=str(path), commit=None,
                                         command="purge", summary={"remove": 1}))
            error = None
            try:
                treewalk.remove_tree(target)
            except OSError as exc:
                error = str(exc)
            journal.write(journal.record("change", action="delete", kind="repository data",
                                         name=str(target), before={"files": files,
                                                                   "bytes": size},
                                         after=None, error=error),
                          journal.record("finish", error=error, done=0 if error else 1,
                                         total=1))
    except (LockBusy, OSError) as exc:
        return _refuse(str(exc))
    if error:
        return _refuse(error)
    click.echo(f"Deleted {target}. 'hive apply --prune' now removes its user and folders.")
    return EXIT_OK


def _refuse(message: str) -> int:
    """The error of commands with text output only."""
    return fail(message)


@cli.command()
@click.option("--check", "check_path", type=click.Path(dir_okay=False), default=None,
              help="Exit 1 if this file differs from the generated schema.")
@click.option("--write", "write_path", type=click.Path(dir_okay=False), default=None,
              help="Write the schema to this file.")
def schema(check_path: str | None, write_path: str | None) -> int:
    """Print the JSON Schema of hive.yaml, generated from the pydantic models.

    Editors use it for completion: put '# yaml-language-server: $schema=...' at the top.
    """
    from schemas.jsonschema import render

    text = render()
    if check_path:
        if Path(check_path).read_text(encoding="utf-8") != text:
            return _refuse(f"{check_path} is stale; run 'hive schema --write {check_path}'")
        click.echo(f"{check_path} is up to date.")
        return EXIT_OK
    if write_path:
        Path(write_path).write_text(text, encoding="utf-8")
        click.echo(f"wrote {write_path}")
        return EXIT_OK
    click.echo(text, nl=False)
    return EXIT_OK


@cli.command("authorized-keys", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
def authorized_keys_help(args: tuple[str, ...]) -> int:
    """Print USER's key lines from the cache, for sshd's AuthorizedKeysCommand.

    \b
    hive authorized-keys [-f FILE | --state-dir DIR] USER
    Runs on every login, so it reads one file and imports nothing heavy. Unknown users
    and a missing cache print nothing and exit 0 (no access). A cache sshd's StrictModes
    would refuse (any folder from / down, or the file, not root-owned, group- or world-
    writable, a symlink; not a regular file) prints nothing, says why on stderr and
    exits 1. In sshd_config:
      AuthorizedKeysCommand /opt/hive/bin/hive authorized-keys --state-dir /var/lib/hive %u
      AuthorizedKeysCommandUser nobody
    """
    from hive.login import authorized_keys

    return authorized_keys(list(args))


def run() -> None:
    """Run the CLI with Hive's exit codes (click would use 2 for usage errors)."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        code = EXIT_OK
    except click.ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = EXIT_ERROR
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = EXIT_ERROR
    except Exception as exc:  # a bug: still exit 1 (never 2) and say how to get details
        if os.environ.get("HIVE_DEBUG"):
            raise
        click.echo(f"hive: unexpected error: {type(exc).__name__}: {exc} (set HIVE_DEBUG=1 "
                   "for the traceback, and please report it)", err=True)
        code = EXIT_ERROR
    code = code if isinstance(code, int) else EXIT_OK
    if _HELD and sys.getprofile() is None and sys.gettrace() is None:
        _exit(code)  # (a profiler or coverage writes its results at a normal exit)
    sys.exit(code)


def _exit(code: int) -> None:
    """End the process without freeing what it holds (_HELD): what sys.exit does that
    matters (the exit handlers: the parse cache's writer is waited for, logging flushed;
    then the output flushed), then os._exit."""
    atexit._run_exitfuncs()  # CPython's own, what a normal exit runs; kept under this name
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (hive plan | head)
            code = code or EXIT_ERROR
    os._exit(code)


# Commands that live in their own packages (they import their heavy parts lazily).
from watcher.commands import stats, status, watch  # noqa: E402

cli.add_command(watch)
cli.add_command(stats)
cli.add_command(status)

from hive.rollback_cmd import rollback  # noqa: E402

cli.add_command(rollback)

from notifications.command import notify  # noqa: E402

cli.add_command(notify)

from reports.command import report  # noqa: E402

cli.add_command(report)
