"""deploy/: what can be checked on a machine without Docker, Kubernetes or a booted systemd.

* every YAML file parses; the Helm chart's templates use only values that values.yaml has;
* the systemd units pass `systemd-analyze verify` (offline) without a single warning, are
  hardened, and run hive commands that exist;
* the Dockerfile installs exactly the packages .ci/run installs for the tests, copies only
  files that exist, and its entrypoint parses;
* deploy/ci/hive-ci, CI's forced command, really validates, plans and applies a commit of
  a real git repository, and refuses everything else.
`helm template` and `docker build` run only where those programs exist (not here).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import requires_root, write_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
CHART = DEPLOY / "helm" / "hive"
HIVE_CI = DEPLOY / "ci" / "hive-ci"
#: hive commands named by units or the entrypoint that another issue is still adding.
PENDING_COMMANDS = {"report"}


def _hive_commands() -> set[str]:
    from hive.cli import cli

    return set(cli.commands)


# --------------------------------------------------------------------------- YAML


def _yaml_files() -> list[Path]:
    templates = CHART / "templates"
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml")
                  and templates not in p.parents)


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} holds no YAML document"


def test_ci_examples_have_the_three_steps() -> None:
    github = yaml.safe_load((DEPLOY / "ci" / "github-actions.yml").read_text())
    assert set(github["jobs"]) == {"validate", "plan", "apply"}
    gitlab = yaml.safe_load((DEPLOY / "ci" / "gitlab-ci.yml").read_text())
    assert gitlab["stages"] == ["validate", "plan", "apply"]
    for path in (DEPLOY / "ci" / "github-actions.yml", DEPLOY / "ci" / "gitlab-ci.yml"):
        text = " ".join(path.read_text().replace("\\\n", " ").split())
        assert "hive validate -f hive.yaml" in text
        assert ' plan < hive.yaml' in text
        assert ' apply "$' in text


# --------------------------------------------------------------------------- systemd


def _units() -> list[Path]:
    return sorted(p for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer"))


def _settings(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_every_timer_has_its_service_and_every_service_is_hardened() -> None:
    units = {p.name for p in _units()}
    assert {"hive-watch.service", "hive-stats.timer", "hive-notify.timer", "hive-report.timer",
            "hive-drift.timer"} <= units
    for timer in (p for p in _units() if p.suffix == ".timer"):
        assert timer.with_suffix(".service").name in units, timer
    for service in (p for p in _units() if p.suffix == ".service"):
        s = _settings(service)
        assert s.get("ProtectSystem") == ["strict"], service
        assert s.get("NoNewPrivileges") == ["yes"], service
        assert "CapabilityBoundingSet" in s, service
        assert set(s.get("ReadWritePaths", [])) <= {"/var/lib/hive"}, service


def test_units_run_hive_commands_that_exist() -> None:
    commands = _hive_commands()
    used = set()
    for service in SYSTEMD.glob("*.service"):
        for start in _settings(service)["ExecStart"]:
            argv = shlex.split(start)
            assert argv[0] == "/opt/hive/bin/hive", start
            used.add(argv[1])
    assert used - commands <= PENDING_COMMANDS, used - commands


def test_drift_check_plans_and_does_not_apply() -> None:
    """The design decision in hive-drift.service: the timer reports drift, CI applies."""
    (start,) = _settings(SYSTEMD / "hive-drift.service")["ExecStart"]
    assert shlex.split(start)[1:] == ["plan", "--detailed-exitcode"]
    assert "ReadWritePaths" not in _settings(SYSTEMD / "hive-drift.service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Offline verification, warnings included (unknown keys are only warnings). The units
    name /opt/hive/bin/hive, which exists only on a server: a copy points at this Hive."""
    hive = shutil.which("hive")
    assert hive, "the hive console script is not on PATH (pip install -e .)"
    for unit in _units():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/hive/bin/hive", hive))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


# --------------------------------------------------------------------------- Docker


def _apt_install(text: str) -> tuple[list[str], list[str]]:
    """(options, packages) of the first `apt-get install` in a shell text."""
    joined = text.replace("\\\n", " ")
    match = re.search(r"apt-get install ([^&\n>]*)", joined)
    assert match, "no apt-get install"
    words = match.group(1).split()
    return ([w for w in words if w.startswith("-")],
            sorted(w for w in words if not w.startswith("-")))


def test_dockerfile_installs_what_ci_installs() -> None:
    """The image's first RUN is .ci/run's install line: the tests prove those packages."""
    ci_options, ci_packages = _apt_install((ROOT / ".ci" / "run").read_text())
    runs = re.findall(r"^RUN (.*?)(?=^\S|\Z)", DOCKERFILE.read_text(), re.M | re.S)
    image_options, image_packages = _apt_install(runs[0])
    assert image_packages == ci_packages
    assert image_options == ci_options


def test_dockerfile_copies_files_that_exist() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), line
    assert (DOCKERFILE.parent / "Dockerfile.dockerignore").exists()


@pytest.mark.parametrize("script", [DEPLOY / "docker" / "entrypoint.sh", HIVE_CI],
                         ids=["entrypoint.sh", "hive-ci"])
def test_shell_scripts_parse(script: Path) -> None:
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"


def test_entrypoint_passes_on_hive_commands_that_exist() -> None:
    text = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    (line,) = [x for x in text.splitlines() if x.strip().startswith("validate|plan|apply")]
    named = set(line.strip().rstrip(")").split("|"))
    assert named - _hive_commands() <= PENDING_COMMANDS


def test_compose_builds_this_dockerfile() -> None:
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    build = compose["services"]["hive"]["build"]
    context = (DEPLOY / "docker" / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    named = {v.split(":")[0] for s in compose["services"].values()
             for v in s.get("volumes", []) if not v.startswith(".")}
    assert named <= set(compose["volumes"])


# --------------------------------------------------------------------------- Helm


def _values_used(text: str) -> set[tuple[str, ...]]:
    return {tuple(m.split(".")) for m in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text)}


def test_chart_templates_use_only_defined_values() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "hive"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    yaml.safe_load(values["hiveYaml"])  # the embedded hive.yaml is YAML too
    for template in (CHART / "templates").iterdir():
        for path in _values_used(template.read_text()):
            node = values
            for part in path:
                assert isinstance(node, dict) and part in node, \
                    f"{template.name}: .Values.{'.'.join(path)} is not in values.yaml"
                node = node[part]


@pytest.mark.skipif(shutil.which("helm") is None,
                    reason="helm is not installed: neither Debian 12 nor PyPI ships it")
def test_helm_template_renders() -> None:
    result = subprocess.run(["helm", "template", "hive", str(CHART)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert {"StatefulSet", "Service", "ConfigMap"} <= kinds


# --------------------------------------------------------------------------- CI's forced command


def _hive_ci(command: str, stdin: str = "", env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    hive = shutil.which("hive")
    assert hive, "the hive console script is not on PATH (pip install -e .)"
    full = {**os.environ, "SSH_ORIGINAL_COMMAND": command, "HIVE_BIN": hive, **(env or {})}
    return subprocess.run([str(HIVE_CI)], input=stdin, capture_output=True, text=True,
                          env=full, timeout=120)


def test_hive_ci_validates_and_plans_from_stdin(tmp_path: Path) -> None:
    body = "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n"
    trusted = write_config(tmp_path, body.replace("  r1:", "  r0: {owner: alice}\n  r1:"))
    config = trusted.read_text().replace("  r0: {owner: alice}\n", "")
    env = {"HIVE_CHECKOUT": str(tmp_path)}
    assert _hive_ci("validate", config, env).returncode == 0
    bad = _hive_ci("validate", config.replace("owner: alice}", "owner: nobody}"), env)
    assert bad.returncode == 1
    planned = _hive_ci("plan", config, env)
    assert planned.returncode == 2, planned.stderr   # everything still to create
    assert "Plan:" in planned.stdout and "bh-r1" in planned.stdout
    assert f"{tmp_path}/repos" in planned.stdout     # the trusted file's paths


def test_hive_ci_plan_ignores_the_proposals_server_section(tmp_path: Path) -> None:
    """A pull request must not make the server read other files or send a secret to an
    LDAP server of its choosing: the plan uses the server's own server: section."""
    trusted = write_config(tmp_path, "owners: {alice: {}}\nrepositories:\n"
                                     "  r1: {owner: alice}\n")
    evil = trusted.read_text().replace(
        "identity: {backend: files, files_dir: ./extrausers}",
        "identity: {backend: ldap, ldap: {url: 'ldap://127.0.0.1:9', base_dn: 'dc=x', "
        "bind_dn: 'cn=x', bind_password_file: /etc/shadow}}").replace(
        "repos_root: ./repos", "repos_root: /root")
    assert evil != trusted.read_text()
    planned = _hive_ci("plan", evil, {"HIVE_CHECKOUT": str(tmp_path)})
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "LDAP" not in planned.stdout + planned.stderr
    assert "/root/" not in planned.stdout and f"{tmp_path}/repos" in planned.stdout


@pytest.mark.parametrize("command", ["", "sh", "plan extra", "apply 1234 alice",
                                     "apply " + "a" * 40 + " 'al ice'", "validate; id",
                                     "apply $(id) x y", "history"])
def test_hive_ci_refuses_anything_else(command: str) -> None:
    result = _hive_ci(command)
    assert result.returncode == 1
    assert result.stderr.startswith("hive-ci: "), result.stderr


def _git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


@requires_root
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_hive_ci_applies_a_commit_of_main(tmp_path: Path) -> None:
    """CI's apply: the server's checkout fetches main, checks out the commit, applies it,
    and the journal names the CI actor and the commit; a commit not on main is refused."""
    origin, checkout = tmp_path / "origin", tmp_path / "checkout"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    write_config(origin, "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n",
                 uid_range="[23000, 23099]")
    _git(origin, "add", "hive.yaml")
    _git(origin, "commit", "-q", "-m", "r1")
    commit = _git(origin, "rev-parse", "HEAD")
    _git(origin, "checkout", "-q", "-b", "unmerged")
    (origin / "hive.yaml").write_text((origin / "hive.yaml").read_text() + "\n")
    _git(origin, "commit", "-q", "-am", "not merged")
    unmerged = _git(origin, "rev-parse", "HEAD")
    _git(origin, "checkout", "-q", "main")
    subprocess.run(["git", "clone", "-q", str(origin), str(checkout)], check=True)
    env = {"HIVE_CHECKOUT": str(checkout)}

    refused = _hive_ci(f"apply {unmerged} alice", env=env)
    assert refused.returncode == 1 and "is not on main" in refused.stderr, refused.stderr
    applied = _hive_ci(f"apply {commit} alice", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = _hive_ci(f"apply {commit} alice", env=env)
    assert again.returncode == 0, again.stderr
    records = [json.loads(x) for x in
               (checkout / "state" / "journal.jsonl").read_text().splitlines()]
    starts = [r for r in records if r["type"] == "start"]
    assert starts[0]["user"] == "alice"
    assert starts[0]["commit"] == commit
    assert (checkout / "repos" / "bh-r1" / "r1").is_dir()
    # A newer commit on main: re-running the old pipeline must not apply the old state.
    (origin / "hive.yaml").write_text((origin / "hive.yaml").read_text().replace(
        "  r1: {owner: alice}", "  r1: {owner: alice}\n  r2: {owner: alice}"))
    _git(origin, "commit", "-q", "-am", "r2")
    old = _hive_ci(f"apply {commit} alice", env=env)
    assert old.returncode == 1 and "is not the tip of main" in old.stderr, old.stderr


def test_python_is_the_one_running_the_tests() -> None:
    """hive-ci's tests use the `hive` console script: it must be this project's."""
    hive = shutil.which("hive")
    assert hive
    result = subprocess.run([hive, "--version"], capture_output=True, text=True)
    out = subprocess.run([sys.executable, "-m", "hive", "--version"], capture_output=True,
                         text=True)
    assert result.stdout == out.stdout
