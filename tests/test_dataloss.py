"""Ways an operator's ordinary steps could lose backup data or hand it to another user:
each test walks one such path with real applies, real borg repositories and real uids."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import hive, requires_root, write_config

pytestmark = requires_root


def body(pubkeys: dict[str, str], repositories: str) -> str:
    return (f"owners: {{alice: {{}}, bob: {{}}}}\n"
            f"keys:\n  ka: {{owner: alice, public_key: {pubkeys['a']}}}\n"
            f"  kb: {{owner: bob, public_key: {pubkeys['b']}}}\n"
            f"repositories:\n{repositories}")


def borg_repository(path: Path, uid: int, base: Path) -> None:
    """A real borg 1.x repository with one archive at `path`, owned by `uid` as a client
    writing through `borg serve` would leave it."""
    env = {**os.environ, "BORG_BASE_DIR": str(base),
           "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
    source = base / "source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "precious.txt").write_text("the only copy\n")
    subprocess.run(["borg", "init", "-e", "none", str(path)], env=env, check=True,
                   capture_output=True)
    subprocess.run(["borg", "create", f"{path}::one", str(source)], env=env, check=True,
                   capture_output=True)
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(path)], check=True)


def reads_as(uid: int, path: Path) -> bool:
    """Whether a process with this uid and gid (and no other group) can read `path`."""
    done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "cat", str(path)], capture_output=True)
    return done.returncode == 0


def passwd_uids(tmp_path: Path) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split(":")[2])
            for line in (tmp_path / "extrausers" / "passwd").read_text().splitlines()}


def test_prune_after_repos_root_moved_keeps_the_owner_of_a_removed_repositorys_data(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """repos_root changed and the tree moved with `mv` (what the plan's own error message
    asks for): a repository removed from the file earlier still has its data, now under
    the new repos_root. `--prune` must not delete its user (and free its uid for the next
    repository) while that data exists, and `hive purge` must still reach it."""
    laptop = "  laptop: {owner: alice, keys: [ka]}\n"
    phone = "  phone: {owner: bob, keys: [kb]}\n"
    cfg = write_config(sysroot, body(pubkeys, laptop + phone))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    uid = passwd_uids(sysroot)["bh-phone"]
    borg_repository(sysroot / "repos" / "bh-phone" / "phone", uid, sysroot / "borg")

    write_config(sysroot, body(pubkeys, laptop))      # phone removed: locked, data kept
    assert hive("apply", "-f", str(cfg)).returncode == 0

    (sysroot / "repos").rename(sysroot / "store")   # repos_root moved, tree and all
    cfg.write_text(cfg.read_text().replace("repos_root: ./repos", "repos_root: ./store"))
    moved = hive("apply", "-f", str(cfg))
    assert moved.returncode == 0, moved.stdout + moved.stderr
    data = sysroot / "store" / "bh-phone" / "phone"
    segment = data / "data" / "0" / "1"
    assert segment.is_file()

    pruned = hive("apply", "-f", str(cfg), "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert segment.is_file()
    assert "bh-phone" in passwd_uids(sysroot), pruned.stdout   # its data is still there

    # A new repository must not get the uid that still owns phone's data.
    write_config(sysroot, body(pubkeys, laptop + "  tablet: {owner: alice, keys: [ka]}\n"))
    cfg.write_text(cfg.read_text().replace("repos_root: ./repos", "repos_root: ./store"))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert passwd_uids(sysroot)["bh-tablet"] != uid
    assert not reads_as(passwd_uids(sysroot)["bh-tablet"], data / "config")

    # and the data can still be purged on request.
    purged = hive("purge", "phone", "-f", str(cfg), "--confirm", "phone")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not data.exists()
    inventory = json.loads((sysroot / "state" / "inventory.json").read_text())
    assert "bh-phone" in inventory["accounts"]


def test_readding_a_removed_repository_under_another_owner_does_not_hand_over_its_data(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """A repository removed from the file keeps its data for a later purge. A repository of
    the same name added later by someone else (another team's file) must not get that
    data and the uid that owns it without saying so: the plan refuses."""
    laptop = "  laptop: {owner: alice, keys: [ka]}\n"
    cfg = write_config(sysroot, body(pubkeys, laptop + "  db: {owner: alice, keys: [ka]}\n"))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    uid = passwd_uids(sysroot)["bh-db"]
    data = sysroot / "repos" / "bh-db" / "db"
    borg_repository(data, uid, sysroot / "borg")
    write_config(sysroot, body(pubkeys, laptop))            # db removed: data kept
    assert hive("apply", "-f", str(cfg)).returncode == 0

    write_config(sysroot, body(pubkeys, laptop + "  db: {owner: bob, keys: [kb]}\n"))
    applied = hive("apply", "-f", str(cfg))
    keys = sysroot / "state" / "authorized_keys" / "bh-db"
    assert applied.returncode == 1 and not keys.exists(), applied.stdout
    assert "(owner alice); adding it again under owner bob" in applied.stderr
    assert "hive purge db" in applied.stderr

    # Given back to its owner it comes back as it was; purged first, bob gets a new one.
    write_config(sysroot, body(pubkeys, laptop + "  db: {owner: alice, keys: [ka]}\n"))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert "hive:ka" in keys.read_text() and (data / "data" / "0" / "1").is_file()
    write_config(sysroot, body(pubkeys, laptop))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert hive("purge", "db", "-f", str(cfg), "--confirm", "db").returncode == 0
    write_config(sysroot, body(pubkeys, laptop + "  db: {owner: bob, keys: [kb]}\n"))
    again = hive("apply", "-f", str(cfg))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "hive:kb" in keys.read_text() and not (data / "data").exists()


def test_a_changed_user_prefix_does_not_start_repositories_that_hold_data_afresh(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """server.users.prefix changed: every repository would get a new user and a new, empty
    folder while its backups stay locked away under the old user (clients lose their
    history; the plan even calls them removed). Refused like a changed repos_root; an
    empty repository may move to the new prefix."""
    repos = "  laptop: {owner: alice, keys: [ka]}\n  phone: {owner: bob, keys: [kb]}\n"
    cfg = write_config(sysroot, body(pubkeys, repos))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    data = sysroot / "repos" / "bh-phone" / "phone"
    borg_repository(data, passwd_uids(sysroot)["bh-phone"], sysroot / "borg")

    write_config(sysroot, body(pubkeys, repos), prefix="bk-")
    refused = hive("apply", "-f", str(cfg), "--prune")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"repository phone was made as user bh-phone (its data is at {data})"
            in refused.stderr)
    assert "laptop" not in refused.stderr          # empty: nothing to keep it from moving
    assert set(passwd_uids(sysroot)) == {"bh-laptop", "bh-phone"}
    keys = sysroot / "state" / "authorized_keys" / "bh-phone"
    assert "hive:kb" in keys.read_text()            # nothing was changed

    write_config(sysroot, body(pubkeys, repos))     # the prefix set back: as it was
    assert hive("plan", "-f", str(cfg), "--detailed-exitcode").returncode == 0


def _phone_with_data_removed_from_the_file(sysroot: Path, pubkeys: dict[str, str]
                                           ) -> tuple[Path, Path]:
    """Repositories laptop and phone applied, a real borg repository in phone's folder,
    then phone removed from the file (not applied yet): the file and phone's folder."""
    cfg = write_config(sysroot, body(pubkeys, LAPTOP + "  phone: {owner: bob, keys: [kb]}\n"))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    data = sysroot / "repos" / "bh-phone" / "phone"
    borg_repository(data, passwd_uids(sysroot)["bh-phone"], sysroot / "borg")
    write_config(sysroot, body(pubkeys, LAPTOP))
    return cfg, data


LAPTOP = "  laptop: {owner: alice, keys: [ka]}\n"


def test_purge_finds_a_removed_repository_left_under_an_earlier_repos_root(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """repos_root changed after a repository was removed, its data left where it was:
    prune says to purge it, so purge must delete it there (it said "nothing to purge" and
    exited 0 while the backups stayed)."""
    cfg, data = _phone_with_data_removed_from_the_file(sysroot, pubkeys)
    assert hive("apply", "-f", str(cfg)).returncode == 0
    (sysroot / "repos" / "bh-laptop").rename(sysroot / "bh-laptop")
    cfg.write_text(cfg.read_text().replace("repos_root: ./repos", "repos_root: ./"))
    pruned = hive("apply", "-f", str(cfg), "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert f"its data at {data} is kept; run 'hive purge phone'" in pruned.stdout

    purged = hive("purge", "phone", "-f", str(cfg), "--confirm", "phone")
    assert purged.returncode == 0 and f"Deleted {data}." in purged.stdout, purged.stdout
    assert not data.exists()
    pruned = hive("apply", "-f", str(cfg), "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "bh-phone" not in passwd_uids(sysroot)


def test_purge_finds_a_removed_repository_after_the_user_prefix_changed(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """server.users.prefix changed after a repository was removed: prune says to purge
    it, so purge must find it under the user it was made as (it refused: "not one Hive
    created on this server")."""
    cfg, data = _phone_with_data_removed_from_the_file(sysroot, pubkeys)
    assert hive("apply", "-f", str(cfg)).returncode == 0
    write_config(sysroot, body(pubkeys, LAPTOP), prefix="bk-")
    pruned = hive("apply", "-f", str(cfg), "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert f"its data at {data} is kept; run 'hive purge phone'" in pruned.stdout

    purged = hive("purge", "phone", "-f", str(cfg), "--confirm", "phone")
    assert purged.returncode == 0 and f"Deleted {data}." in purged.stdout, \
        purged.stdout + purged.stderr
    assert not data.exists()
    assert hive("apply", "-f", str(cfg), "--prune").returncode == 0
    assert set(passwd_uids(sysroot)) == {"bk-laptop"}


def test_purge_waits_until_an_apply_revoked_the_repositorys_keys(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """Removed from the file but not applied yet, a repository's keys still log in: purge
    (given a file without it) must not delete backups a client may be writing."""
    cfg, data = _phone_with_data_removed_from_the_file(sysroot, pubkeys)
    early = hive("purge", "phone", "-f", str(cfg), "--confirm", "phone")
    assert early.returncode == 1 and "run 'hive apply' first" in early.stderr, early.stdout
    assert (data / "data" / "0" / "1").is_file()
    assert hive("apply", "-f", str(cfg)).returncode == 0
    purged = hive("purge", "phone", "-f", str(cfg), "--confirm", "phone")
    assert purged.returncode == 0 and not data.exists(), purged.stdout + purged.stderr


def test_a_prune_killed_after_deleting_the_user_is_finished_by_the_next_one(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """An apply --prune killed after the account files were rewritten, before the inventory
    was trimmed: the next prune forgets the user (it used to keep it for ever, and every
    plain apply made it again as a locked account)."""
    laptop = "  laptop: {owner: alice, keys: [ka]}\n"
    cfg = write_config(sysroot, body(pubkeys, laptop + "  phone: {owner: bob, keys: [kb]}\n"))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    write_config(sysroot, body(pubkeys, laptop))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    for name in ("group", "passwd", "shadow"):      # what the killed prune had done
        path = sysroot / "extrausers" / name
        path.write_text("".join(f"{line}\n" for line in path.read_text().splitlines()
                                if not line.startswith("bh-phone:")))
    pruned = hive("apply", "-f", str(cfg), "--prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert not (sysroot / "repos" / "bh-phone").exists()
    inventory = json.loads((sysroot / "state" / "inventory.json").read_text())
    assert list(inventory["accounts"]) == ["bh-laptop"]
    plain = hive("apply", "-f", str(cfg), "--detailed-exitcode")
    assert plain.returncode == 0, plain.stdout
    assert "bh-phone" not in passwd_uids(sysroot)


def test_a_folder_hive_did_not_make_is_not_given_to_a_new_repository(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """A folder already where a new repository goes (an operator's copy, another tool's),
    owned by someone else: adopting it chowned everything of that owner inside (root's
    0600 files included) to the repository's user, shown in the plan as one folder's
    owner. Refused; a folder already owned by the repository's uid is taken as its own."""
    laptop = "  laptop: {owner: alice, keys: [ka]}\n"
    foreign = sysroot / "repos" / "bh-old" / "old"
    foreign.mkdir(parents=True)
    secret = foreign / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    cfg = write_config(sysroot, body(pubkeys, laptop + "  old: {owner: bob, keys: [kb]}\n"))
    refused = hive("apply", "-f", str(cfg))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{foreign} exists, Hive did not make it, and it belongs to uid 0" in refused.stderr
    assert os.stat(secret).st_uid == 0
    subprocess.run(["chown", "-R", "20001:20001", str(foreign)], check=True)  # "it is ours"
    adopted = hive("apply", "-f", str(cfg))
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert passwd_uids(sysroot)["bh-old"] == 20001 and secret.read_text() == "root's\n"


def test_readding_a_removed_repository_under_another_owner_after_repos_root_moved(
        sysroot: Path, pubkeys: dict[str, str]) -> None:
    """The two earlier paths together: a repository removed (data kept), then repos_root
    moved with its tree (`mv`, as the plan asks), then the same name added by another
    owner. The kept data is now where the file puts the new repository, not where it was
    last applied: the new owner's keys must not get it."""
    cfg, _ = _phone_with_data_removed_from_the_file(sysroot, pubkeys)
    assert hive("apply", "-f", str(cfg)).returncode == 0       # phone: locked, data kept
    (sysroot / "repos").rename(sysroot / "store")
    cfg.write_text(cfg.read_text().replace("repos_root: ./repos", "repos_root: ./store"))
    assert hive("apply", "-f", str(cfg)).returncode == 0

    cfg.write_text(cfg.read_text() + "  phone: {owner: alice, keys: [ka]}\n")
    applied = hive("apply", "-f", str(cfg))
    moved = sysroot / "store" / "bh-phone" / "phone"
    keys = sysroot / "state" / "authorized_keys" / "bh-phone"
    assert applied.returncode == 1 and not keys.exists(), applied.stdout + applied.stderr
    assert f"its data kept at {moved} (owner bob); adding it again under owner alice" \
        in applied.stderr
    assert (moved / "data" / "0" / "1").is_file()


@pytest.mark.parametrize("unrecorded", [("owner",), ("owner", "removed")],
                         ids=["marked-removed", "only-the-locked-account-says"])
def test_readding_a_repository_removed_before_owners_were_recorded(
        sysroot: Path, pubkeys: dict[str, str], unrecorded: tuple[str, ...]) -> None:
    """phone (bob) removed by a Hive that did not record owners (data kept); after the
    upgrade it is added again under alice: whose backups these are is not known, so
    nobody's keys get them (it went to alice's keys, an unlock in the plan). The older
    inventory may also lack the removed mark: the locked account's gecos says it."""
    cfg, data = _phone_with_data_removed_from_the_file(sysroot, pubkeys)
    assert hive("apply", "-f", str(cfg)).returncode == 0      # removed: locked, data kept
    state = sysroot / "state" / "inventory.json"
    inventory = json.loads(state.read_text())
    for field in unrecorded:                                   # as the older Hive wrote it
        del inventory["accounts"]["bh-phone"][field]
    state.write_text(json.dumps(inventory))
    cfg.write_text(cfg.read_text() + "  phone: {owner: alice, keys: [ka]}\n")
    applied = hive("apply", "-f", str(cfg))
    assert applied.returncode == 1, applied.stdout
    assert (f"repository phone was removed from the file and its data kept at {data}, by "
            "a Hive that did not record whose it is") in applied.stderr, applied.stderr
    assert not (sysroot / "state" / "authorized_keys" / "bh-phone").exists()
    assert (data / "data" / "0" / "1").is_file()
