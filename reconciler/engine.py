"""The pipeline: observe every target -> desired state -> plan -> (apply, journal).

`make_plan` does no writes at all, so `hive plan` and `apply --dry-run` are the same code
as `apply` minus the last step. `apply` adds the lock, the inventory claim, the drivers and
the journal around it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from reconciler import inventory as inventory_mod
from reconciler import plan as planner
from reconciler import sessions
from reconciler.desired import Desired
from reconciler.fsutil import remove_stale_temporaries
from reconciler.journal import Journal, git_commit, who
from reconciler.lock import apply_lock
from reconciler.plan import Plan
from reconciler.resources import Change, Facts
from reconciler.targets import Target, TargetError, registry
from reconciler.targets.registry import targets_for
from schemas.memory import no_cycle_collection
from schemas.models import HiveConfig

Progress = Callable[[int, int, Change, str | None], None]


class RefusedError(Exception):
    """The apply did not start: nothing was changed. The message says what to do."""


class ChecksumMismatch(RefusedError):
    """`--checksum` named another plan than the one computed now: nothing was changed."""

    def __init__(self, expected: str, planned: Planned) -> None:
        self.expected, self.planned = expected, planned
        super().__init__(
            f"the plan differs from the reviewed one: --checksum {expected}, but the plan "
            f"computed now has checksum {planned.plan.checksum} (the file or the server "
            "changed since that plan was made). Nothing was changed. Review the current "
            "plan ('hive plan' shows it), then apply with its checksum")


@dataclass
class Planned:
    plan: Plan
    desired: Desired
    facts: Facts
    inventory: inventory_mod.Inventory


@dataclass
class Applied:
    planned: Planned
    results: list[tuple[Change, str | None]] = field(default_factory=list)
    # open ssh connections ended because the line they logged in with was revoked
    sessions: list[sessions.Connection] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return next((f"{c.kind} {c.name}: {e}" for c, e in self.results if e), None)


def make_plan(config: HiveConfig, *, prune: bool = False, force: bool = False,
              now: dt.datetime | None = None,
              targets: dict[str, Target] | None = None) -> Planned:
    """Observe and diff. Reads only; safe as any user."""
    now = now or dt.datetime.now(dt.UTC)
    with no_cycle_collection():  # facts and desired state: plain data, no cycles
        inventory = inventory_mod.load(config.server.state_dir)
        facts = Facts()
        targets = targets or targets_for(config)
        for target in targets.values():
            try:
                target.observe(facts, inventory)
            except OSError as exc:  # unreadable files: one line, not a traceback
                where = f" {exc.filename}" if exc.filename else ""
                raise TargetError(f"cannot read{where}: {exc.strerror or exc}") from None
        plan, desired = planner.compute(config, inventory, facts, now, prune=prune,
                                        force=force)
    planned = Planned(plan, desired, facts, inventory)
    # who is connected is read after the diff, for the users whose lines it revokes
    note = sessions_note(revoked_sessions(
        planned, [c for c in plan.changes if registry.kind(c.kind).revokes]))
    if note:
        plan.notes.append(note)
    return planned


def revoked_sessions(planned: Planned, changes: list[Change]) -> list[sessions.Connection]:
    """The open ssh connections that logged in with a key line `changes` (of a kind that
    `revokes`) remove or change, each with its key names and repository. The user's uid
    is the one observed in the identity backend, and the one the inventory remembers,
    should they differ; never 0."""
    revoking = []
    for change in changes:
        before = (change.before or {}).get("keys") or {}
        gone = sessions.revoked(before.values(),
                                ((change.after or {}).get("keys") or {}).values())
        if not gone:  # (a create never revokes: it has no before)
            continue
        accounts = (planned.facts.accounts.get(change.name),
                    planned.inventory.accounts.get(change.name))
        uids = {a["uid"] for a in accounts if isinstance(a, dict)
                and isinstance(a.get("uid"), int) and a["uid"] > 0}
        if uids:
            revoking.append((change, before, gone, accounts, uids))
    if not revoking:
        return []
    # /proc read once, and kept to these users' processes: few, however many changes
    wanted = set().union(*(uids for *_, uids in revoking))
    table = {pid: p for pid, p in sessions.processes().items() if p.uid in wanted}
    found: list[sessions.Connection] = []
    for change, before, gone, accounts, uids in revoking:
        for connection in sessions.to_end(sessions.connections(change.name, uids, table),
                                          gone):
            connection.key_names = sessions.key_names(before, connection.keys)
            connection.repository = change.meta.get("repository") or \
                next((a["repository"] for a in accounts if isinstance(a, dict)
                      and "repository" in a), None)
            found.append(connection)
    return found


def end_sessions(planned: Planned, done: list[Change]) -> list[sessions.Connection]:
    """After key files were rewritten or removed (`done`): end the open ssh connections
    that logged in with a line that is gone or changed (reconciler/sessions.py says why
    this happens after the write, and not only as the plan's note)."""
    ended = revoked_sessions(planned, done)
    sessions.end(ended)
    return ended


def sessions_note(connections: list[sessions.Connection]) -> str | None:
    """The plan's note naming the open connections an apply would end (the first ten).
    Not their clients' addresses: CI posts plans on pull requests (apply's output and
    journal name them). Read as another user than root, /proc hides which key a
    connection used."""
    if not connections:
        return None
    listed = "; ".join(
        f"{c.user} pid {c.pid}, key {', '.join(c.key_names) or 'unknown'}"
        for c in connections[:10])
    more = f"; and {len(connections) - 10} more" if len(connections) > 10 else ""
    unknown = any(not c.key_names for c in connections)
    return (f"apply ends {len(connections)} open ssh connection"
            f"{'s' if len(connections) > 1 else ''} logged in with a key line this plan "
            f"revokes: {listed}{more}"
            + (". A key is unknown when sshd runs without ExposeAuthInfo, the plan is "
               "not run as root, or the line it logged in with is not one Hive wrote in "
               "OpenSSH's own text; such a connection ends on any revocation of its user"
               if unknown else ""))


def session_data(connection: sessions.Connection) -> dict[str, object]:
    """A journal record's fields for an ended connection (a `change` of kind session, so
    `hive history` lists it with the rest)."""
    return {"action": "delete", "kind": "session",
            "name": f"{connection.user} pid {connection.pid}",
            "repository": connection.repository,
            "before": {"keys": connection.key_names, "client": connection.client,
                       "pids": [p.pid for p in connection.processes]},
            "after": None, "ended": connection.ended, "killed": connection.killed,
            "error": None}  # (one that exited before its signal is gone all the same)


def apply(config: HiveConfig, config_file: Path, *, prune: bool = False, force: bool = False,
          lock_timeout: float = 10.0, progress: Progress | None = None,
          on_plan: Callable[[Planned], None] | None = None,
          checksum: str | None = None) -> Applied:
    """Make the server match the file. Raises RefusedError before changing anything.

    With `checksum` (from a reviewed `hive plan`), the plan computed here under the lock
    must have exactly that checksum, else ChecksumMismatch and nothing is touched.

    `on_plan` sees the plan (under the lock, before any change) so the caller can show it;
    `progress` sees each change as it is done.
    """
    if os.geteuid() != 0:
        raise RefusedError("hive apply needs root: it writes account files and sets the "
                           "owners of repository folders. Nothing was changed; 'hive plan' "
                           "shows what it would do")
    state_dir = config.server.state_dir
    state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    inventory_mod.check_state_dir(state_dir)
    with apply_lock(state_dir, lock_timeout):
        # An apply killed while writing the inventory leaves its temporary file behind.
        remove_stale_temporaries(state_dir, [inventory_mod.FILE_NAME])
        targets = targets_for(config)  # one connection each, reused to apply
        planned = make_plan(config, prune=prune, force=force, targets=targets)
        plan = planned.plan
        if checksum is not None and checksum != plan.checksum:
            raise ChecksumMismatch(checksum, planned)
        if plan.errors:
            raise RefusedError("the plan has errors; nothing was changed:\n  "
                               + "\n  ".join(plan.errors))
        outcome = Applied(planned)
        if on_plan:
            on_plan(planned)
        if not plan.changes:
            if planned.desired.inventory != planned.inventory:
                inventory_mod.save(state_dir, planned.desired.inventory)
            return outcome
        # Claim everything before creating it: a crash can leave only claimed things.
        claimed = planned.desired.inventory
        inventory_mod.save(state_dir, claimed)
        journal = Journal(state_dir, config.server.name)
        journal.write(journal.record("start", user=who(), file=str(config_file),
                                     files=list(config.source_files[1:]),
                                     commit=git_commit(config_file, config.source_files),
                                     prune=prune,
                                     force=force, summary=plan.summary))
        total = len(plan.changes)
        for (_phase, kind), batch_iter in groupby(
                plan.changes, key=lambda c: (c.action == "delete", c.kind)):
            batch = list(batch_iter)
            results = targets[kind].apply(batch)
            now = journal.now()  # one time for the batch: its records are written together
            journal.write_all(journal.record("change", **change.data, error=error, time=now)
                              for change, error in results)
            for change, error in results:
                outcome.results.append((change, error))
                if progress:
                    progress(len(outcome.results), total, change, error)
            if registry.kind(kind).revokes:
                ended = end_sessions(planned, [c for c, e in results if e is None])
                outcome.sessions += ended
                journal.write_all(journal.record("change", **data, time=journal.now())
                                  for data in map(session_data, ended))
            if any(error for _, error in results) or len(results) < len(batch):
                break
        forgotten = False
        for change, error in outcome.results:  # forget what is really gone
            forget = registry.kind(change.kind).forget
            if change.action == "delete" and error is None and forget:
                forget(claimed, change.name)
                forgotten = True
            elif (change.kind == "account" and change.action == "create"
                  and error is not None and forget
                  and change.name not in planned.inventory.accounts):
                # a new account the server refused (another Hive server sharing the
                # directory took that uid a moment before: slapo-unique): its claim
                # would stop every later plan at "uid N is already used"; the next plan
                # picks a free uid (or finds the entry, should it exist after all)
                forget(claimed, change.name)
                forgotten = True
        if forgotten:  # else the claim saved above is already the inventory
            inventory_mod.save(state_dir, claimed)
        journal.write(journal.record("finish", error=outcome.error,
                                     done=len(outcome.results), total=total))
        return outcome
