"""`hive notify` end to end: real borg repositories, real deliveries through apprise to
receivers on loopback (HTTP for json://, form://, ntfy://; SMTP for mailto://), the
alert state in the real DuckDB file. Time moves for real, in seconds (repeat_every: 10s)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from notify_receivers import HttpReceiver, SmtpReceiver, http_receiver, smtp_receiver
from test_watcher_support import Borg, repo_path

from watcher import store

SECRET = "s3cr3t-Hook-Value"
OTHER_SECRET = "an0ther-Secret-42"


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    with http_receiver() as receiver:
        yield receiver


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with smtp_receiver() as receiver:
        yield receiver


class Site:
    """A hive.yaml, its repositories (real borg), and `hive notify` runs on it."""

    def __init__(self, folder: Path, repos: dict[str, str], notifications: str,
                 owners: str = "alice: {}\n  bob: {}", backed_up: tuple[str, ...] = ()):
        self.folder = folder
        self.path = folder / "hive.yaml"
        lines = "".join(f"  {name}: {{{body}}}\n" for name, body in repos.items())
        self.path.write_text(textwrap.dedent("""\
            version: 1
            server:
              name: test1
              ssh_host: 127.0.0.1
              repos_root: ./repos
              state_dir: ./state
            """) + f"owners:\n  {owners}\nrepositories:\n{lines}notifications:\n"
            + textwrap.indent(textwrap.dedent(notifications), "  "))
        self.state = folder / "state"
        self.borg = Borg(folder / "borg-client")
        (folder / "data").mkdir()
        (folder / "data" / "file").write_text("some data\n")
        for name in repos:
            repo_path(folder, name).parent.mkdir(parents=True, exist_ok=True)
            self.borg("init", repo_path(folder, name))
        for name in backed_up:
            self.backup(name)
        self.outputs: list[str] = []

    def backup(self, name: str) -> None:
        self.borg("create", repo_path(self.folder, name), f"a{time.time_ns()}",
                  str(self.folder / "data"))

    def notify(self, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "hive", "notify", "-f", str(self.path),
                                 *args], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "HOOK_SECRET": SECRET,
                                     "OTHER_SECRET": OTHER_SECRET, **(env or {})}, cwd=ROOT)
        self.outputs += [result.stdout, result.stderr]
        return result

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with store.read(self.state) as con:
            return con.execute(sql).fetchall() if con is not None else []

    def database_text(self) -> str:
        """Every row of every table, as text: where a leaked secret would show."""
        with store.read(self.state) as con:
            if con is None:
                return ""
            tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema"
                                                ".tables WHERE table_type = 'BASE TABLE'")
                      .fetchall()]
            return "\n".join(str(con.execute(f'SELECT * FROM "{t}"').fetchall())
                             for t in tables)

    def assert_no_secret_anywhere(self) -> None:
        for text in [*self.outputs, self.database_text()]:
            assert SECRET not in text and OTHER_SECRET not in text, text


def titles(requests: list[Any]) -> list[str]:
    return [r.data["title"] for r in requests]


def first_sent(site: Site) -> datetime:
    (when,) = site.rows("SELECT min(first_sent) FROM notify_state")[0]
    return when


def sleep_until(moment: datetime, extra: float) -> None:
    time.sleep(max(0.0, moment.timestamp() + extra - time.time()))


def test_first_alert_is_grouped_per_channel_and_repeats_only_after_repeat_every(
        tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver) -> None:
    p = http.port
    site = Site(tmp_path, {"r1": "owner: alice", "r2": "owner: bob", "r3": "owner: bob"}, f"""\
        channels:
          hook: {{url: "json://hive:{{env:HOOK_SECRET}}@127.0.0.1:{p}/hook"}}
          form: {{url: "form://127.0.0.1:{p}/form"}}
          ntfy: {{url: "ntfy://127.0.0.1:{p}/hive-alerts"}}
          mail: {{url: "mailto://127.0.0.1:{smtp.port}?to=ops@example.org&from=hive@example.org"}}
        rules:
          - {{name: everything, channels: [hook, form, ntfy, mail], repeat_every: 10s}}
        """, backed_up=("r3",))
    first = site.notify()
    assert first.returncode == 0, first.stdout + first.stderr
    title = "test1: 2 backups late: r1 never, r2 never"
    hook = http.at("/hook")
    assert titles(hook) == [title] and titles(http.at("/form")) == [title]
    assert hook[0].data["type"] == "failure"
    assert hook[0].headers["Authorization"] == \
        "Basic " + base64.b64encode(f"hive:{SECRET}".encode()).decode()
    (ntfy,) = http.at("/")
    assert ntfy.data["topic"] == "hive-alerts" and ntfy.data["title"] == title
    (mail,) = smtp.mails
    assert (mail.subject, mail.recipients) == (title, ["ops@example.org"])
    assert "r1 (owner alice): never backed up" in mail.text
    assert "r2 (owner bob): never backed up" in mail.text and "r3" not in mail.text
    assert "hive status r1" in mail.text and "host: test1" in mail.text
    assert "> hook [failure] " + title in first.stdout
    rows = site.rows("SELECT host, rule, channel, alert, kind, repositories, result, error "
                     "FROM notify_attempts ORDER BY channel")
    assert rows == [("test1", "everything", c, "never_backed_up", "alert", ["r1", "r2"],
                     "sent", None) for c in ("form", "hook", "mail", "ntfy")]

    again = site.notify("-o", "json")  # inside repeat_every: nothing
    records = [json.loads(line) for line in again.stdout.splitlines()]
    assert again.returncode == 0 and records[-1]["messages"] == 0, again.stdout
    assert len(http.requests) == 3 and len(smtp.mails) == 1

    sleep_until(first_sent(site), 10.2)
    third = site.notify("-o", "json")
    assert third.returncode == 0, third.stderr
    messages = [json.loads(line) for line in third.stdout.splitlines()][1:-1]
    assert {m["channel"] for m in messages} == {"hook", "form", "ntfy", "mail"}
    assert {i["kind"] for m in messages for i in m["items"]} == {"repeat"}
    assert titles(http.at("/hook")) == [title, title] and len(smtp.mails) == 2
    assert "(reminder)" in smtp.mails[1].text
    site.assert_no_secret_anywhere()


def test_stop_after_ends_the_reminders(tmp_path: Path, http: HttpReceiver) -> None:
    site = Site(tmp_path, {"r1": "owner: alice"}, f"""\
        channels: {{hook: {{url: "json://127.0.0.1:{http.port}/hook"}}}}
        rules: [{{name: short, channels: [hook], repeat_every: 1s, stop_after: 15s}}]
        """)
    assert site.notify().returncode == 0
    time.sleep(1.1)
    assert site.notify().returncode == 0
    assert len(http.at("/hook")) == 2  # a reminder after repeat_every
    sleep_until(first_sent(site), 15.2)
    assert site.notify().returncode == 0
    assert len(http.at("/hook")) == 2  # stop_after since the first message: silence
    assert site.rows("SELECT sends FROM notify_state") == [(2,)]


def test_recovery_after_a_real_backup_then_stale(tmp_path: Path, http: HttpReceiver) -> None:
    site = Site(tmp_path, {"r1": "owner: alice, stale_after: 12s", "r2": "owner: bob"}, f"""\
        channels: {{hook: {{url: "json://127.0.0.1:{http.port}/hook"}}}}
        rules: [{{name: all, channels: [hook]}}]
        """, backed_up=("r2",))
    assert site.notify().returncode == 0
    assert titles(http.requests) == ["test1: 1 backup late: r1 never"]
    site.backup("r1")
    backed_up_at = time.time()
    recovered = site.notify()
    assert recovered.returncode == 0, recovered.stderr
    assert titles(http.requests)[1:] == ["test1: 1 recovered: r1"]
    assert http.requests[1].data["type"] == "success"
    assert "r1 (owner alice): never backed up recovered; now ok" in \
        http.requests[1].data["message"]
    assert site.notify().returncode == 0 and len(http.requests) == 2  # said once
    time.sleep(max(0.0, backed_up_at + 12.5 - time.time()))
    late = site.notify()
    assert late.returncode == 0
    assert re.fullmatch(r"test1: 1 backup late: r1 [1-5][0-9] s", titles(http.requests)[2])
    assert site.rows("SELECT kind, alert FROM notify_attempts ORDER BY time") == [
        ("alert", "never_backed_up"), ("recovery", "never_backed_up"), ("alert", "stale")]


def test_owner_channels_hear_only_about_their_owners_repositories(
        tmp_path: Path, http: HttpReceiver) -> None:
    p = http.port
    site = Site(tmp_path, {"r1": "owner: alice", "r2": "owner: bob", "r3": "owner: alice"},
                f"""\
        channels:
          ops: {{url: "json://127.0.0.1:{p}/ops"}}
          alice-hook: {{url: "json://127.0.0.1:{p}/alice", owner: alice}}
          bob-hook: {{url: "form://127.0.0.1:{p}/bob", owner: bob}}
        rules:
          - {{name: ops, channels: [ops]}}
          - {{name: owners, notify_owner: true}}
        """, owners="alice: {notify: [alice-hook]}\n  bob: {notify: [bob-hook]}")
    assert site.notify().returncode == 0
    assert titles(http.at("/ops")) == ["test1: 3 backups late: r1 never, r2 never, r3 never"]
    assert titles(http.at("/alice")) == ["test1: 2 backups late: r1 never, r3 never"]
    assert titles(http.at("/bob")) == ["test1: 1 backup late: r2 never"]
    assert "r2" not in http.at("/alice")[0].data["message"]


def test_a_failing_channel_does_not_block_the_others_and_is_retried(
        tmp_path: Path, http: HttpReceiver) -> None:
    p = http.port
    site = Site(tmp_path, {"r1": "owner: alice"}, f"""\
        channels:
          good: {{url: "json://127.0.0.1:{p}/good"}}
          broken: {{url: "json://hive:{{env:OTHER_SECRET}}@127.0.0.1:{p}/fail"}}
          unset: {{url: "json://hive:{{env:HIVE_TEST_NOT_SET}}@127.0.0.1:{p}/unset"}}
          unknown: {{url: "nosuchservice://127.0.0.1:{p}/unknown"}}
        rules: [{{name: all, channels: [broken, good, unset, unknown]}}]
        """)
    assert "apprise knows no service" in subprocess.run(
        [sys.executable, "-m", "hive", "validate", "-f", str(site.path)], capture_output=True,
        text=True, cwd=ROOT).stderr  # CI's check; a timer's run still tells the others
    first = site.notify()
    assert first.returncode == 1
    assert "delivery failed on channels broken, unknown, unset" in first.stderr
    assert "the channel's URL: apprise knows no service 'nosuchservice://'" in first.stdout
    assert "environment variable HIVE_TEST_NOT_SET (from {env:HIVE_TEST_NOT_SET}) is not " \
           "set" in first.stdout
    assert len(http.at("/good")) == 1 and len(http.at("/fail")) == 1
    assert http.at("/unset") == []
    failed = site.rows("SELECT channel, result, error FROM notify_attempts WHERE "
                       "result = 'failed' ORDER BY channel")
    assert [(c, r) for c, r, _ in failed] == [("broken", "failed"), ("unknown", "failed"),
                                              ("unset", "failed")]
    assert "error=500" in failed[0][2] or "500" in failed[0][2]
    second = site.notify("-o", "json")
    assert second.returncode == 1
    records = [json.loads(line) for line in second.stdout.splitlines()]
    assert {r["channel"] for r in records if r["type"] == "message"} == {"broken", "unset",
                                                                         "unknown"}
    assert len(http.at("/good")) == 1 and len(http.at("/fail")) == 2  # retried, not resent
    assert records[-1] == {"type": "summary", "messages": 3, "sent": 0, "failed": 3,
                           "errors": 3, "dry_run": False}
    site.assert_no_secret_anywhere()


def test_two_runs_at_once_send_once(tmp_path: Path, http: HttpReceiver) -> None:
    site = Site(tmp_path, {"r1": "owner: alice", "r2": "owner: bob"}, f"""\
        channels: {{hook: {{url: "json://hive:{{env:HOOK_SECRET}}@127.0.0.1:{http.port}/h"}}}}
        rules: [{{name: all, channels: [hook]}}]
        """)
    env = {**os.environ, "HOOK_SECRET": SECRET}
    argv = [sys.executable, "-m", "hive", "notify", "-f", str(site.path)]
    runs = [subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(120), *r.communicate()) for r in runs]
    assert [code for code, _, _ in results] == [0, 0], results
    assert len(http.requests) == 1
    assert sorted("nothing to send" in out for _, out, _ in results) == [False, True]


def test_dry_run_sends_and_records_nothing_and_test_sends_one(
        tmp_path: Path, http: HttpReceiver) -> None:
    site = Site(tmp_path, {"r1": "owner: alice"}, f"""\
        channels: {{hook: {{url: "json://hive:{{env:HOOK_SECRET}}@127.0.0.1:{http.port}/h"}}}}
        rules: [{{name: all, channels: [hook]}}]
        """)
    dry = site.notify("--dry-run", "-o", "json")
    records = [json.loads(line) for line in dry.stdout.splitlines()]
    assert dry.returncode == 0
    assert [r["result"] for r in records if r["type"] == "message"] == ["dry-run"]
    assert http.requests == [] and site.rows("SELECT * FROM notify_attempts") == []
    test = site.notify("--test", "hook")
    assert test.returncode == 0, test.stderr
    assert titles(http.requests) == ["test1: test message from hive notify"]
    assert site.rows("SELECT channel, kind, result FROM notify_attempts") == [
        ("hook", "test", "sent")]
    unknown = site.notify("--test", "nope")
    assert unknown.returncode == 1 and "no channel 'nope'" in unknown.stderr
    site.assert_no_secret_anywhere()


def test_apprise_is_imported_only_to_send_and_validate(tmp_path: Path) -> None:
    site = Site(tmp_path, {"r1": "owner: alice"}, """\
        channels: {hook: {url: "json://127.0.0.1:9/h"}}
        rules: [{name: all, channels: [hook]}]
        """)

    def modules(*args: str) -> set[str]:
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "hive", *args],
                                capture_output=True, text=True, cwd=ROOT)
        return {line.split("|")[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}

    for command in (["status"], ["plan"], ["history"]):
        assert "apprise" not in modules(*command, "-f", str(site.path)), command
    assert "apprise" not in modules("notify", "--dry-run", "-f", str(site.path))
    assert "apprise" in modules("validate", "-f", str(site.path))
    assert "apprise" in modules("notify", "-f", str(site.path))


def test_never_backed_up_counts_from_the_apply_that_created_it_and_quota_from_stats(
        tmp_path: Path, http: HttpReceiver) -> None:
    from reconciler.journal import Journal
    from reconciler.resources import Change

    site = Site(tmp_path, {"young": "owner: alice, stale_after: 1h",
                           "unknown": "owner: alice, stale_after: 1h",
                           "full": "owner: bob, quota: 10M, quota_warn: 0.01"}, f"""\
        channels: {{hook: {{url: "json://127.0.0.1:{http.port}/hook"}}}}
        rules: [{{name: all, channels: [hook]}}]
        """, backed_up=("full",))
    site.state.mkdir(exist_ok=True)
    journal = Journal(site.state, "test1")  # as `hive apply` records creating a repository
    created = Change("create", "directory", str(repo_path(tmp_path, "young")), None,
                     {"mode": "0700"}, {"role": "repository", "repository": "young"})
    journal.write(journal.record("change", **created.data, error=None))
    stats = subprocess.run([sys.executable, "-m", "hive", "stats", "-f", str(site.path)],
                           capture_output=True, text=True, cwd=ROOT)
    assert stats.returncode == 0, stats.stderr
    result = site.notify()
    assert result.returncode == 0, result.stderr
    (title,) = titles(http.requests)
    assert re.fullmatch(r"test1: 2 problems: full quota \d\.\d%, unknown never backed up",
                        title), title
    assert http.requests[0].data["type"] == "failure"
