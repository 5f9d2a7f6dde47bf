"""events.py is pure: tables of file events (as inotify reported them for real borg runs,
see the module docstring) -> repository events. No I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watcher.events import (
    BORG1,
    BORG2,
    FileEvent,
    RepoState,
    apply,
    check_lock,
    gone,
    is_stale_lock,
    reconcile,
)

T = 1_000_000.0


def run(events: list[tuple[str, bool, bool]], state: RepoState | None = None,
        mtime_ns: int | None = None) -> tuple[RepoState, list[tuple[str, dict]]]:
    """Feed (name, added, is_dir) triples through apply; return the end state and kinds."""
    state = state or RepoState()
    out = []
    for i, (name, added, is_dir) in enumerate(events):
        state, found = apply(state, FileEvent(T + i, name, added, is_dir,
                                              mtime_ns=(mtime_ns or 0) + i if mtime_ns
                                              else None))
        out += [(e.kind, e.details) for e in found]
    return state, out


# borg 1.2.4 `borg init` then `borg create`, top-level names as inotify reported them.
BORG1_INIT = [
    ("config-mttlpx91.tmp", True, False), ("config-mttlpx91.tmp", False, False),
    ("config", True, False),
    ("lock.exclusive.wny6pzqr.tmp", True, True), ("lock.exclusive.wny6pzqr.tmp", False, True),
    ("lock.exclusive", True, True), ("lock.roster", True, False),
    ("config.old", True, False), ("config", True, False), ("config.old", False, False),
    ("nonce", True, False), ("data", True, True),
    ("hints.1.tmp", True, False), ("index.1.tmp", True, False),
    ("integrity.1.tmp", False, False), ("integrity.1", True, False),
    ("hints.1", True, False), ("index.1.tmp", False, False), ("index.1", True, False),
    ("lock.roster", False, False), ("lock.exclusive", False, True),
]
BORG1_CREATE = [
    ("lock.exclusive.r6gubo9x.tmp", True, True), ("lock.exclusive", True, True),
    ("lock.roster", True, False), ("nonce", True, False),
    ("index.5.tmp", True, False), ("index.5", True, False), ("hints.5", True, False),
    ("hints.1", False, False), ("index.1", False, False), ("integrity.1", False, False),
    ("lock.roster", False, False), ("lock.exclusive", False, True),
]
BORG1_LIST = [("lock.exclusive", True, True), ("lock.roster", True, False),
              ("lock.roster", False, False), ("lock.exclusive", False, True)]

# borg 2.0.0b20 `repo-create`, `create`, `delete`: names relative to the repository.
BORG2_INIT = [
    ("config", True, True), ("config/tmpipsy8nk3.tmp", True, False),
    ("config/readme", True, False), ("config/version", True, False),
    ("config/id", True, False), ("cache", True, True), ("locks", True, True),
    ("locks/1032e50e8809d98e", True, False), ("keys", True, True),
    ("keys/repokey", True, False), ("config/manifest", True, False),
    ("locks/1032e50e8809d98e", False, False),
]
BORG2_CREATE = [
    ("locks/d9c3b5b3492294e8", True, False), ("data", True, True), ("archives", True, True),
    ("archives/tmpjd25h5i7.tmp", True, False), ("archives/d4ac025a", True, False),
    ("config/manifest", True, False), ("locks/d9c3b5b3492294e8", False, False),
]


def test_borg1_init_is_created_then_an_init_commit_that_is_no_backup() -> None:
    state, found = run(BORG1_INIT)
    assert [k for k, _ in found] == ["created", "opened", "updated", "closed"]
    assert found[2][1] == {"transaction": 1, "previous": None, "backup": False}
    assert state.layout == BORG1 and state.transaction == 1 and not state.locked
    assert not state.backed_up


def test_borg1_create_is_one_updated_between_opened_and_closed() -> None:
    state, _ = run(BORG1_INIT)
    state, found = run(BORG1_CREATE, state)
    assert found == [("opened", {"locks": ["lock.exclusive"]}),
                     ("updated", {"transaction": 5, "previous": 1, "backup": True}),
                     ("closed", {})]
    assert state.backed_up


def test_borg1_read_only_session_opens_and_closes_without_update() -> None:
    state, _ = run(BORG1_INIT + BORG1_CREATE)
    _, found = run(BORG1_LIST, state)
    assert [k for k, _ in found] == ["opened", "closed"]


@pytest.mark.parametrize(("transaction", "index", "expected"), [
    (5, "index.5", []),              # already counted (a scan saw it first)
    (5, "index.3", []),              # an older index reappearing is not a new commit
    (5, "index.9", ["updated"]),
    (None, "index.1", ["updated"]),
    (5, "index.9.tmp", []),
    (5, "index.x", []),
])
def test_borg1_index_numbers(transaction: int | None, index: str, expected: list[str]) -> None:
    state = RepoState(layout=BORG1, transaction=transaction)
    _, found = run([(index, True, False)], state)
    assert [k for k, _ in found] == expected


def test_a_folder_with_an_index_but_no_config_is_no_repository() -> None:
    """Like the folder `hive rollback` moves files into: rsync and borg both put `config`
    in place first, so only `config` makes a repository."""
    assert run([("index.13", True, False), ("hints.13", True, False)])[1] == []


def test_borg1_rollback_is_an_update_to_a_lower_transaction() -> None:
    """`hive rollback` moves index.13 aside; borg's next open rebuilds index.9."""
    state = RepoState(layout=BORG1, transaction=13)
    state, found = run([("integrity.13", False, False), ("index.13", False, False)], state)
    assert found == [] and state.dropped == 13
    state, found = run([("index.9.tmp", True, False), ("index.9", True, False)], state)
    assert found == [("updated", {"transaction": 9, "previous": 13, "backup": True,
                                  "rollback": True})]
    state, found = run([("index.11", True, False), ("index.9", False, False)], state)
    assert found == [("updated", {"transaction": 11, "previous": 9, "backup": True})]
    assert reconcile(state, replace(state, dropped=None), T)[1] == []


ROLLED_BACK = {"transaction": 9, "previous": 13, "backup": True, "rollback": True}
NEXT_BACKUP = {"transaction": 13, "previous": 9, "backup": True}
AT_13 = RepoState(layout=BORG1, layout_version=1, transaction=13, commit_time=T - 60)
NO_INDEX = replace(AT_13, transaction=None, commit_time=None)


def _index(state: RepoState, number: int, how: str,
           step: int) -> tuple[RepoState, list[tuple[str, dict]]]:
    """index.<number> appears, seen live ("event") or found by a rescan ("scan")."""
    if how == "event":
        new, found = apply(state, FileEvent(T + step, f"index.{number}", True))
    else:
        scanned = replace(AT_13, transaction=number, commit_time=T + step)
        merged, found = reconcile(state, scanned, T + step)
        assert merged is not None
        new = merged
    return new, [(e.kind, e.details) for e in found]


@pytest.mark.parametrize("removed", ["event", "scan"])
@pytest.mark.parametrize("appears", ["event", "scan"])
def test_borg1_rollback_survives_rescans_without_an_index(removed: str, appears: str) -> None:
    """`hive rollback` leaves no index until borg rebuilds a lower one (index.9 after 13);
    the next backup may commit at 13 again. Rescans in between must not forget the drop,
    and the rebuilt number is what the next commit is compared with, whichever input
    (live file events or rescans) reports the removal and the new indexes."""
    state = AT_13
    if removed == "event":
        state, found = apply(state, FileEvent(T, "index.13", False))
        assert found == []
    for step in (1, 2):  # periodic rescans while no index exists
        merged, found = reconcile(state, NO_INDEX, T + step)
        assert found == [] and merged is not None
        state = merged
    state, found = _index(state, 9, appears, 3)
    assert found == [("updated", ROLLED_BACK)]
    state, found = _index(state, 13, appears, 4)
    assert found == [("updated", NEXT_BACKUP)]
    assert state.transaction == 13 and state.dropped is None
    assert reconcile(state, replace(AT_13, commit_time=T + 4), T + 5)[1] == []


def test_borg2_init_and_create() -> None:
    state, found = run(BORG2_INIT, mtime_ns=10**18)
    assert [k for k, _ in found] == ["created", "opened", "updated", "closed"]
    assert found[0][1] == {"layout": BORG2}
    assert found[2][1]["backup"] is False  # no archives/ yet: the init commit
    state, found = run(BORG2_CREATE, state, mtime_ns=2 * 10**18)
    assert [k for k, _ in found] == ["opened", "updated", "closed"]
    assert found[1][1]["backup"] is True and state.backed_up


def test_borg2_shared_locks_close_when_the_last_goes() -> None:
    state = RepoState(layout=BORG2, transaction=1)
    _, found = run([("locks/a", True, False), ("locks/b", True, False),
                    ("locks/a", False, False), ("locks/b", False, False)], state)
    assert [k for k, _ in found] == ["opened", "closed"]


def test_borg2_names_mean_nothing_in_a_borg1_repository() -> None:
    state = RepoState(layout=BORG1, transaction=3)
    assert run([("locks/a", True, False), ("config/manifest", True, False)], state)[1] == []


# ----------------------------------------------------------------------------- reconcile

B1 = RepoState(layout=BORG1, layout_version=1, transaction=5, commit_time=T - 60)


@pytest.mark.parametrize(("old", "new", "expected"), [
    (None, None, []),
    (None, RepoState(), []),                           # an empty folder is no repository
    (None, B1, ["created", "updated"]),                # first sight
    (B1, B1, []),                                      # a restart with nothing new
    (B1, replace(B1, transaction=9), ["updated"]),     # a backup while we were away
    (B1, replace(B1, transaction=3), ["updated"]),     # a rollback
    (B1, None, ["deleted"]),
    (B1, RepoState(), ["deleted"]),
    (B1, replace(B1, locks=frozenset({"lock.exclusive"}), lock_since=T - 5), ["opened"]),
    (replace(B1, locks=frozenset({"lock.exclusive"})), B1, ["closed"]),
    (replace(B1, locks=frozenset({"a"})), replace(B1, locks=frozenset({"b"})),
     ["closed", "opened"]),
])
def test_reconcile(old: RepoState | None, new: RepoState | None, expected: list[str]) -> None:
    _, found = reconcile(old, new, T)
    assert [e.kind for e in found] == expected
    assert all(e.source == "scan" for e in found)


def test_a_scan_between_a_commits_renames_undoes_nothing() -> None:
    """A scan may find no index at all for an instant (index.N deleted, the next one not
    listed yet); the transaction is kept, or the next file event would count it twice."""
    merged, found = reconcile(B1, replace(B1, transaction=None, commit_time=None), T)
    assert found == [] and merged is not None and merged.transaction == 5
    assert apply(merged, FileEvent(T, "index.5", True))[1] == []


def test_reconcile_dates_a_commit_by_its_file_not_by_now() -> None:
    _, found = reconcile(B1, replace(B1, transaction=9, commit_time=T - 3600), T)
    assert found[0].time == T - 3600
    assert found[0].details == {"transaction": 9, "previous": 5, "backup": True}


def test_reconcile_keeps_the_stale_mark_while_the_same_lock_is_held() -> None:
    held = replace(B1, locks=frozenset({"lock.exclusive"}), lock_since=T - 100,
                   stale_reported=True)
    merged, found = reconcile(held, replace(held, stale_reported=False, lock_since=T - 90), T)
    assert found == [] and merged is not None
    assert merged.stale_reported and merged.lock_since == T - 100


def test_scan_and_file_events_agree() -> None:
    """What apply concluded live, a scan of the same end state confirms silently."""
    live, _ = run(BORG1_INIT + BORG1_CREATE)
    on_disk = RepoState(layout=BORG1, layout_version=1, transaction=5, commit_time=T)
    assert reconcile(live, on_disk, T + 100)[1] == []


def test_gone_only_for_repositories() -> None:
    assert gone(None, T, "removed") == []
    assert gone(RepoState(), T, "removed") == []
    assert [e.details for e in gone(B1, T, "moved")] == [{"layout": BORG1, "how": "moved"}]


# ----------------------------------------------------------------------------- stale locks

LOCKED = replace(B1, locks=frozenset({"lock.exclusive"}), lock_since=T - 600)


@pytest.mark.parametrize(("state", "alive", "stale_after", "reason"), [
    (LOCKED, False, 3600, "holder gone"),
    (LOCKED, True, 3600, None),
    (LOCKED, None, 3600, None),
    (LOCKED, None, 300, "older than threshold"),
    (LOCKED, True, 300, "older than threshold"),
    (replace(LOCKED, stale_reported=True), False, 3600, None),  # once per lock
    (B1, False, 0, None),                                        # not locked at all
])
def test_check_lock(state: RepoState, alive: bool | None, stale_after: float,
                    reason: str | None) -> None:
    new, found = check_lock(state, T, stale_after, alive, ["vm@1.42"])
    assert [e.details["reason"] for e in found] == ([reason] if reason else [])
    assert new.stale_reported == (reason is not None or state.stale_reported)
    if reason is None and not state.stale_reported:
        assert is_stale_lock(state, T, stale_after, alive) is False
    if reason is not None:
        assert is_stale_lock(state, T, stale_after, alive) is True
        assert found[0].details["age_seconds"] == 600.0


def test_a_new_lock_after_a_stale_one_can_be_reported_again() -> None:
    stale, _ = check_lock(LOCKED, T, 3600, False)
    closed, _ = run([("lock.exclusive", False, True)], stale)
    reopened, found = run([("lock.exclusive", True, True)], closed)
    assert [k for k, _ in found] == ["opened"] and not reopened.stale_reported
