"""`hive report`: the static pages, status.json and metrics.prom, rendered from a DuckDB file
that real `hive apply`, `hive watch` and `hive stats` runs filled while real borg clients
backed up; then opened in Debian's headless chromium.

Screenshots are kept in $HIVE_TEST_ARTIFACTS/report (default: test-artifacts/report in
the repository) for a person to look at.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, ssh_keygen, write_config
from test_watcher_support import Borg, barrier, hive_cli, query, repo_path, watching

from watcher.states import STATES

ARTIFACTS = Path(os.environ.get("HIVE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "report"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STATUS_FIELDS = {"repository", "owner", "mode", "state", "last_backup", "age_seconds",
                 "size_bytes", "quota_bytes", "quota_used", "locked", "path", "unix_user",
                 "groups", "stale_after_seconds", "size_measured", "lock_since"}


# ----------------------------------------------------------------------------- HTML


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Any]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and all(
                        v in (child.attrs.get(k.rstrip("_")) or "").split()
                        for k, v in attrs.items()):
                    found.append(child)
                found += child.all(tag, **attrs)
        return found

    def one(self, tag: str, **attrs: str) -> Node:
        (found,) = self.all(tag, **attrs)
        return found


VOID = {"meta", "link", "br", "img", "input", "hr", "polyline", "source", "wbr"}


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, [])
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), [])
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, dict(attrs), []))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(path: Path) -> Node:
    tree = _Tree()
    tree.feed(path.read_text())
    tree.close()
    assert tree.stack == [tree.root], "unclosed elements"
    return tree.root


def table_rows(page: Node) -> dict[str, Node]:
    body = page.one("table", class_="repos").one("tbody")
    return {tr.one("th").text().strip(): tr for tr in body.all("tr")}


def facts(page: Node) -> dict[str, str]:
    """A repository page's `dl.facts` as {term: description}."""
    items = [c for c in page.one("dl", class_="facts").children if isinstance(c, Node)]
    return {dt.text(): " ".join(dd.text().split()) for dt, dd in zip(items[::2], items[1::2],
                                                                     strict=True)}


def cells(tr: Node) -> list[str]:
    return [" ".join(c.text().split()) for c in tr.children
            if isinstance(c, Node) and c.tag in ("th", "td")]


# ----------------------------------------------------------------------------- chromium


def chromium(url: str, profile: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Open `url` headless: the DOM after scripts ran, and every console message."""
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-default-apps",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--hide-scrollbars", "--window-size=1400,1000"]
    argv += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    profile.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([*argv, url], capture_output=True, text=True, timeout=120,
                            cwd=profile)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


class Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback web server that counts every request a page makes."""

    seen: list[str] = []  # noqa: RUF012 (one per server, set in counting_server)

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


# ----------------------------------------------------------------------------- the server


@dataclass
class Site:
    folder: Path
    config: Path
    report: Path
    prom: Path
    keys: dict[str, Path]
    status: list[dict[str, Any]]
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """Six repositories, one per state, after real applies, backups, watch and stats."""
    if os.geteuid() != 0:
        pytest.skip("hive apply needs root")  # CI runs as root; see requires_root
    folder = tmp_path_factory.mktemp("report")
    keys = {}
    for name in ("alice-laptop", "bob-nas"):
        ssh_keygen(folder / name)
        keys[name] = folder / f"{name}.pub"
    config = write_config(folder, f"""\
        owners: {{alice: {{description: Alice Example}}, bob: {{}}}}
        groups: {{team: {{members: [bob], description: The backup team}}}}
        keys:
          alice-laptop:
            owner: alice
            public_key: {keys['alice-laptop'].read_text().strip()}
            from: [10.0.0.0/8]
            expires: 2030-01-01
          bob-nas: {{owner: bob, public_key: {keys['bob-nas'].read_text().strip()}}}
        repositories:
          photos: {{owner: alice, groups: [team], quota: 20M, keys: [alice-laptop],
                    append_only_keys: [bob-nas], description: Family photos}}
          docs: {{owner: bob, keys: [bob-nas]}}
          fresh: {{owner: alice, keys: [alice-laptop]}}
          old: {{owner: bob}}
          paused: {{owner: alice, mode: disabled}}
          gone: {{owner: bob}}
        """)
    applied = hive_cli("apply", "-f", str(config))
    assert applied.returncode == 0, applied.stderr
    repo_path(folder, "gone").rmdir()
    borg = Borg(folder / "borg-base")
    src = folder / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(400_000))
    borg("init", repo_path(folder, "old"))
    borg("create", repo_path(folder, "old"), "a1", str(src))
    two_days_ago = time.time() - 2 * 86400
    old = repo_path(folder, "old")  # committed while no watcher ran, two days ago:
    for written in [*old.glob("index.*"), *old.glob("data/*/*")]:  # commits are dated by
        os.utime(written, (two_days_ago, two_days_ago))           # their segments' mtime
    state = folder / "state"
    with watching(config) as watcher:
        for name in ("photos", "docs", "fresh"):
            borg("init", repo_path(folder, name))
        borg("create", repo_path(folder, "photos"), "p1", str(src))
        borg("create", repo_path(folder, "docs"), "d1", str(src))
        barrier(folder, state)
        assert hive_cli("stats", "-f", str(config)).returncode == 0
        (src / "b").write_bytes(os.urandom(900_000))
        borg("create", repo_path(folder, "photos"), "p2", str(src))
        barrier(folder, state)
        assert hive_cli("stats", "-f", str(config)).returncode == 0
        assert watcher.stop() == 0
    status = hive_cli("status", "-f", str(config), "-o", "json")
    assert status.returncode == 2, status.stderr
    (folder / "textfile").mkdir()
    prom = folder / "textfile" / "hive.prom"
    result = hive_cli("report", "-f", str(config), "--prometheus-file", str(prom))
    return Site(folder=folder, config=config, report=state / "report", prom=prom, keys=keys,
                status=json.loads(status.stdout), result=result)


def test_the_states_match_hive_status(site: Site) -> None:
    assert site.result.returncode == 0, site.result.stderr
    assert f"Wrote {site.report}: 6 repositories" in site.result.stdout
    index = parse(site.report / "index.html")
    rows = table_rows(index)
    states = {s["repository"]: s["state"] for s in site.status}
    assert states == {"photos": "ok", "docs": "ok", "fresh": "never backed up", "old": "stale",
                      "paused": "disabled", "gone": "missing on disk"}
    for name, tr in rows.items():
        row = cells(tr)
        assert row[1] == states[name]
        assert row[2] == "test1"  # every row names its host
        assert tr.attrs["data-state"] == states[name]
    assert set(rows) == set(states)
    photos = cells(rows["photos"])
    assert photos[3:6] == ["alice", "team", "borg"]
    assert re.search(r"\d+% of 20\.0 MB", photos[8])
    assert photos[9] == "-"  # two measurements minutes apart: no growth guessed
    assert rows["photos"].one("svg").one("polyline").attrs["points"].count(",") >= 2
    assert cells(rows["old"])[6].endswith("(2d ago)")
    assert cells(rows["fresh"])[6] == "never"
    banner = index.one("section", class_="banner")
    assert "Worst: missing on disk" in banner.text()
    assert re.search(r"ok\s*2", banner.text()) and re.search(r"stale\s*1", banner.text())
    generated = banner.one("time").attrs["datetime"]
    assert abs(datetime.fromisoformat(generated) - datetime.now(UTC)) < timedelta(minutes=5)


def test_the_repository_page(site: Site) -> None:
    page = parse(site.report / "repos" / "photos.html")
    text = " ".join(page.text().split())
    url = f"ssh://bh-photos@127.0.0.1:22{site.folder}/repos/bh-photos/photos"  # README's form
    codes = [c.text() for c in page.all("code")]
    assert url in codes
    assert f"export BORG_REPO='{url}'" in codes
    borgmatic = next(c for c in codes if c.startswith("repositories:"))
    import yaml

    assert yaml.safe_load(borgmatic)["repositories"][0]["path"] == url
    keys = {tr.one("th").text(): cells(tr) for tr in page.one("table", class_="keys")
            .one("tbody").all("tr")}
    for name, access in (("alice-laptop", "full"), ("bob-nas", "append-only")):
        printed = subprocess.run(["ssh-keygen", "-l", "-f", str(site.keys[name])],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert keys[name][3] == printed[1]  # SHA256:..., exactly as ssh-keygen prints it
        assert keys[name][4] == access
    assert keys["alice-laptop"][5] == "10.0.0.0/8"
    assert keys["alice-laptop"][6].startswith("2030-01-01 00:00 UTC")
    assert keys["bob-nas"][1] == "bob" and keys["bob-nas"][6] == "never"
    timeline = [cells(tr) for tr in page.one("table", class_="timeline").one("tbody").all("tr")]
    whats = [row[3] for row in timeline]
    assert whats.count("updated") == 3  # init, p1, p2: what the watcher recorded
    assert any(w.startswith("create") and row[2] == "apply" for row, w in
               zip(timeline, whats, strict=True))
    assert all(row[1] == "test1" for row in timeline)
    recorded = query(site.folder / "state", "SELECT count(*) FROM events WHERE repository = "
                                            "'photos' AND kind = 'updated'")[0][0]
    assert recorded == 3
    chart = page.one("svg", class_="chart").one("polyline").attrs["points"]
    assert len(chart.split()) == 2  # two hive stats runs
    about = facts(page)
    assert about["Growth per week"] == "not enough data"
    assert about["Quota full"].startswith("not enough data")
    assert about["Host"] == "test1" and about["Owner"] == "alice"
    assert "Family photos" in text
    assert "No alerts sent for this repository" in text  # hive notify sent none
    assert facts(parse(site.report / "repos" / "fresh.html"))["Last backup"] == "never"
    gone = " ".join(parse(site.report / "repos" / "gone.html").text().split())
    assert "No measurements yet" in gone


def test_owner_and_group_pages(site: Site) -> None:
    alice = table_rows(parse(site.report / "owners" / "alice.html"))
    assert set(alice) == {"photos", "fresh", "paused"}
    team = table_rows(parse(site.report / "groups" / "team.html"))
    assert set(team) == {"photos", "docs", "old", "gone"}  # shared with it, or bob's
    assert "Alice Example" in parse(site.report / "owners" / "alice.html").text()


def test_status_json_is_hive_status_and_more(site: Site) -> None:
    document = json.loads((site.report / "status.json").read_text())
    assert document["format"] == 1 and document["host"] == "test1"
    assert document["hive"] and datetime.fromisoformat(document["generated_at"])
    assert document["counts"]["ok"] == 2 and document["worst"] == "missing on disk"
    entries = {e["repository"]: e for e in document["repositories"]}
    for status in site.status:
        entry = entries[status["repository"]]
        assert set(entry) >= STATUS_FIELDS and set(status) <= set(entry)
        for field in set(status) - {"age_seconds"}:
            assert entry[field] == status[field], field
        assert entry["host"] == "test1"
        assert (site.report / entry["page"]).exists()
    assert entries["photos"]["growth_bytes_per_week"] is None  # see test_growth_and_fill
    assert entries["photos"]["client_url"].startswith("ssh://bh-photos@127.0.0.1:22/")
    assert entries["fresh"]["growth_bytes_per_week"] is None


def test_metrics_parse_with_prometheus_client(site: Site) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = (site.report / "metrics.prom").read_text()
    assert site.prom.read_text() == text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {"hive_repository_last_backup_timestamp_seconds",
                             "hive_repository_size_bytes", "hive_repository_quota_bytes",
                             "hive_repository_state", "hive_report_generated_timestamp_seconds"}
    assert all(f.type == "gauge" and f.documentation for f in families.values())
    status = {s["repository"]: s for s in site.status}
    for family in families.values():
        for sample in family.samples:
            assert sample.labels["host"] == "test1"
            if family.name != "hive_report_generated_timestamp_seconds":
                assert sample.labels["owner"] == status[sample.labels["repository"]]["owner"]
    last = {s.labels["repository"]: s.value
            for s in families["hive_repository_last_backup_timestamp_seconds"].samples}
    assert set(last) == {"photos", "docs", "old"}
    assert last["old"] == pytest.approx(
        datetime.fromisoformat(status["old"]["last_backup"]).timestamp(), abs=1)
    states: dict[str, list[tuple[str, float]]] = {}
    for s in families["hive_repository_state"].samples:
        states.setdefault(s.labels["repository"], []).append((s.labels["state"], s.value))
    for name, values in states.items():
        assert {state for state, _ in values} == set(STATES)  # one sample per state
        assert [v for _, v in values].count(1.0) == 1
        assert dict(values)[status[name]["state"]] == 1.0
    quota = {s.labels["repository"]: s.value
             for s in families["hive_repository_quota_bytes"].samples}
    assert quota == {"photos": 20_000_000}
    size = {s.labels["repository"]: s.value for s in families["hive_repository_size_bytes"]
            .samples}
    assert size["photos"] == status["photos"]["size_bytes"] > 1_000_000


def test_nothing_external_and_no_secrets(site: Site) -> None:
    files = [p for p in site.report.rglob("*") if p.is_file()]
    assert len(files) >= 6 + 2 + 1 + 4
    for path in files:
        text = path.read_text()
        assert "test-passphrase" not in text
        if path.suffix == ".html":
            page = parse(path)
            for node in page.all("script") + page.all("link") + page.all("img"):
                assert "src" not in node.attrs and node.tag != "link" and node.tag != "img"
            for link in page.all("a"):
                href = link.attrs["href"] or ""
                assert "://" not in href and not href.startswith("//"), href
                assert (path.parent / href).resolve().exists(), href
            (csp,) = [m.attrs["content"] for m in page.all("meta")
                      if m.attrs.get("http-equiv") == "Content-Security-Policy"]
            assert csp.startswith("default-src 'none';")
            assert "unsafe" not in csp and "http" not in csp


def test_secrets_of_hive_yaml_never_reach_the_report(tmp_path: Path) -> None:
    secret_file = tmp_path / "ldap-password-file"
    secret_file.write_text("s3cr3t-from-file\n")
    config = write_config(tmp_path, """\
        owners: {carol: {email: carol@example.org}}
        repositories:
          vault: {owner: carol}
        """, identity=("{backend: ldap, ldap: {url: 'ldaps://ldap.internal.example', "
                       "base_dn: 'dc=example,dc=org', bind_dn: 'cn=hive,dc=example,dc=org', "
                       f"bind_password_file: {secret_file}}}}}"))
    result = hive_cli("report", "-f", str(config), "-d", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "vault" in written
    for secret in ("s3cr3t", str(secret_file), "ldap.internal", "cn=hive",
                   "carol@example.org"):
        assert secret not in written


def test_the_folder_is_swapped_whole_and_never_a_foreign_one(site: Site,
                                                             tmp_path: Path) -> None:
    dest = tmp_path / "site"
    first = hive_cli("report", "-f", str(site.config), "-d", str(dest))
    assert first.returncode == 0, first.stderr
    (dest / "index.html").rename(dest / "old-index.html")  # a leftover of the last run
    before = dest.stat().st_ino
    again = hive_cli("report", "-f", str(site.config), "-d", str(dest))
    assert again.returncode == 0, again.stderr
    assert dest.stat().st_ino != before  # a new folder, swapped in
    assert (dest / "index.html").exists() and not (dest / "old-index.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing left beside
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    refused = hive_cli("report", "-f", str(site.config), "-d", str(precious))
    assert refused.returncode == 1
    assert "was not written by hive report" in refused.stderr
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]


def test_pages_in_chromium(site: Site, tmp_path: Path) -> None:
    """Real chromium: scripts run without a console message, nothing is fetched."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, page in (("index", "index.html"), ("repository", "repos/photos.html"),
                       ("owner", "owners/alice.html")):
        url = (site.report / page).as_uri()
        dom, console = chromium(url, tmp_path / "profile")
        assert console == [], console
        assert "</html>" in dom
        if name != "repository":
            assert re.search(r'<form id="filters" class="filters" aria-label', dom)  # shown
            assert re.search(r'<output id="shown"[^>]*>\d+ of \d+ shown</output>', dom)
        assert re.search(r'<p id="freshness" class="freshness" role="alert" hidden', dom)
        shot = ARTIFACTS / f"{name}.png"
        shot.unlink(missing_ok=True)
        _, console = chromium(url, tmp_path / "profile", screenshot=shot)
        assert console == [] and shot.stat().st_size > 10_000


def test_a_page_can_fetch_nothing(site: Site, tmp_path: Path) -> None:
    """The CSP makes requests impossible: the same page with an image, a stylesheet and a
    frame from a live loopback server fetches nothing, while without the CSP it does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        html = (site.report / "index.html").read_text()
        bait = (f'<img src="{base}/img.png"><link rel="stylesheet" href="{base}/a.css">'
                f'<iframe src="{base}/frame"></iframe>')
        guarded = tmp_path / "guarded.html"
        guarded.write_text(html.replace("<main>", "<main>" + bait))
        _, console = chromium(guarded.as_uri(), tmp_path / "profile")
        assert Recorder.seen == []
        assert any("Content Security Policy" in line for line in console), console
        bare = tmp_path / "bare.html"
        bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "",
                               guarded.read_text()))
        chromium(bare.as_uri(), tmp_path / "profile")
        assert "/img.png" in Recorder.seen  # the bait does fetch without the policy
    finally:
        server.shutdown()


def test_an_old_report_says_so(site: Site, tmp_path: Path) -> None:
    """After two hours without a new run, the page itself says it is stale."""
    import schemas
    from reports.command import generate

    config = schemas.load(site.config)
    dest = tmp_path / "old-report"
    generate(config, dest, None, now=datetime.now(UTC) - timedelta(hours=3))
    dom, console = chromium((dest / "index.html").as_uri(), tmp_path / "profile")
    assert console == []
    assert re.search(r'<body class="stale-page">', dom)
    assert "This report is 3 hours old" in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chromium((dest / "index.html").as_uri(), tmp_path / "profile",
             screenshot=ARTIFACTS / "stale.png")


def test_files_beside_others_are_never_written_through_their_links(
        site: Site, tmp_path: Path) -> None:
    """--prometheus-file goes into node_exporter's folder, which another user (prometheus)
    may write: a symlink planted at the temporary's old, guessable name is not followed.
    The report folder itself is refused below a folder others may change."""
    from reports.render import write_file_atomic

    textdir = tmp_path / "node-exporter"
    textdir.mkdir()
    victim = tmp_path / "shadow"
    victim.write_text("root:$y$hash:19000:0:99999:7:::\n")
    victim.chmod(0o600)
    (textdir / f".hive.prom.tmp-{os.getpid()}").symlink_to(victim)
    write_file_atomic(textdir / "hive.prom", "hive_up 1\n")
    assert (textdir / "hive.prom").read_text() == "hive_up 1\n"
    assert victim.read_text().startswith("root:") and victim.stat().st_mode & 0o777 == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused = hive_cli("report", "-f", str(site.config), "-d", str(shared / "site"))
    assert refused.returncode == 1
    assert f"{shared} may be changed by other users" in refused.stderr
    assert list(shared.iterdir()) == []
    shared.chmod(0o1777)  # sticky, as /tmp: nobody else may rename what is in it
    done = hive_cli("report", "-f", str(site.config), "-d", str(shared / "site"))
    assert done.returncode == 0, done.stderr


def test_report_without_a_database(tmp_path: Path) -> None:
    config = write_config(tmp_path, "owners: {a: {}}\nrepositories: {r: {owner: a}}\n")
    result = hive_cli("report", "-f", str(config))
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "state" / "report" / "status.json").read_text())
    assert [e["state"] for e in document["repositories"]] == ["missing on disk"]


def test_growth_and_fill_date_are_least_squares_over_30_days(tmp_path: Path) -> None:
    """Ten daily measurements on a line (+10 MB a day) and an older outlier the fit must
    ignore; another host's rows with the same path must not count at all."""
    import schemas
    from reports.command import generate
    from watcher import store

    config_path = write_config(tmp_path, "owners: {a: {}}\nrepositories:\n"
                                         "  r: {owner: a, quota: 500M}\n  s: {owner: a}\n")
    config = schemas.load(config_path)
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    path = str(config.repo_path("r"))
    columns = ("time", "host", "repository", "unix_user", "path", "present", "size_bytes")
    rows = [(now - timedelta(days=9 - i), "test1", "r", "bh-r", path, True,
             100_000_000 + 10_000_000 * i) for i in range(10)]
    rows.append((now - timedelta(days=60), "test1", "r", "bh-r", path, True, 5_000_000_000))
    rows += [(now - timedelta(days=i), "other", "r", "bh-r", path, True, 1) for i in range(5)]
    with store.write(config.server.state_dir) as con:
        store.insert(con, "snapshots", columns, rows)
    generate(config, tmp_path / "out", None, now=now)
    entries = {e["repository"]: e for e in
               json.loads((tmp_path / "out" / "status.json").read_text())["repositories"]}
    assert entries["r"]["growth_bytes_per_week"] == pytest.approx(70_000_000, abs=1)
    assert entries["r"]["size_bytes"] == 190_000_000
    full = datetime.fromisoformat(entries["r"]["quota_full_at"])
    assert abs(full - (now + timedelta(days=31))) < timedelta(seconds=1)
    page = parse(tmp_path / "out" / "repos" / "r.html")
    assert facts(page)["Quota full"].startswith("2026-12-29 at the current rate")
    assert facts(page)["Growth per week"].startswith("+70.0 MB")
    chart = page.one("svg", class_="chart").one("polyline").attrs["points"].split()
    assert len(chart) == 11 and chart[0] == "0.0,8.0"  # the 5 GB peak is the top
    assert entries["s"]["growth_bytes_per_week"] is None


def test_a_link_can_sort_and_filter_the_table(site: Site, tmp_path: Path) -> None:
    """The script sorts and filters (here from the link's #view), in real chromium."""
    def shown(fragment: str) -> list[str]:
        dom, console = chromium((site.report / "index.html").as_uri() + fragment,
                                tmp_path / "profile")
        assert console == [], console
        tree = _Tree()
        tree.feed(dom)
        rows = tree.root.one("table", class_="repos").one("tbody").all("tr")
        return [tr.one("th").text().strip() for tr in rows if "hidden" not in tr.attrs]

    sizes = {s["repository"]: s["size_bytes"] or -1 for s in site.status}
    by_size = shown("#sort=size&dir=desc")
    assert sorted(by_size) == sorted(sizes) and by_size[0] == "photos"
    assert [sizes[n] for n in by_size] == sorted(sizes.values(), reverse=True)
    assert shown("#sort=repository") == sorted(sizes)
    assert shown("#sort=repository&dir=desc&owner=bob") == ["old", "gone", "docs"]
    assert shown("#group=team&state=ok") == ["docs", "photos"]  # worst first, then by name


def test_alerts_show_only_columns_without_secrets() -> None:
    """`hive notify`'s log (`notify_attempts`), when present: the newest messages per
    repository of this host, and never a column such as the error (a channel's answer).
    A real DuckDB, with no such table first."""
    import duckdb

    from reports import queries
    from watcher.store import MIGRATIONS

    con = duckdb.connect()
    assert queries.alerts(con, "h1", ["r"]) is None  # no table: the section is left out
    con.execute(MIGRATIONS[1][0])
    base = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [(base + timedelta(hours=i), "h1", "run", "ops", "mail", "stale", "alert",
             ["other", "r"], "failed", "mailto://user:password@example.org said no")
            for i in range(30)]
    rows += [(base + timedelta(days=9), "h2", "run", "ops", "mail", "stale", "alert", ["r"],
              "sent", None),
             (base + timedelta(days=9), "h1", "run", None, "mail", None, "test", [], "sent",
              None)]
    con.executemany("INSERT INTO notify_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    found = queries.alerts(con, "h1", ["r"])
    assert found is not None and list(found) == ["r"]
    assert len(found["r"]) == queries.ALERTS
    assert list(found["r"][0]) == ["time", "alert", "kind", "channel", "result"]
    assert found["r"][0]["time"] == base + timedelta(hours=29)  # newest first, h1's only
    assert "password" not in str(found)


def _contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
                   for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_colours_pass_wcag_aa_in_light_and_dark() -> None:
    """Every text colour of the stylesheet on the backgrounds it is used on: >= 4.5:1."""
    css = (ROOT / "reports" / "templates" / "report.css").read_text()
    blocks = re.findall(r":root\{([^}]*--bg:[^}]*)\}", css)
    assert len(blocks) == 3  # light, dark, print
    pairs = [("fg", "bg"), ("muted", "bg"), ("link", "bg"), ("fg", "head"), ("muted", "head"),
             ("link", "head"), ("ok-fg", "ok-bg"), ("bad-fg", "bad-bg"),
             ("warn-fg", "warn-bg"), ("off-fg", "off-bg")]
    for block in blocks:
        colours = {name: value if len(value) == 7 else "#" + "".join(2 * c for c in value[1:])
                   for name, value in re.findall(r"--([a-z-]+):(#[0-9a-f]{6}|#[0-9a-f]{3})\b",
                                                 block)}
        assert {"fg", "bg", "muted", "link"} <= set(colours)
        for fg, bg in pairs:
            if fg in colours and bg in colours:
                ratio = _contrast(colours[fg], colours[bg])
                assert ratio >= 4.5, (fg, bg, colours[fg], colours[bg], round(ratio, 2))
