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
import signal
import subprocess
import sys
import time
from pathlib import Path

import nsswitch_edit
import pytest
import yaml
from conftest import requires_root, write_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
CHART = DEPLOY / "helm" / "hive"
HIVE_CI = DEPLOY / "ci" / "hive-ci"
#: hive commands named by units or the entrypoint that another issue is still adding (none now).
PENDING_COMMANDS: set[str] = set()


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


def test_gitlab_scripts_are_lists_of_strings() -> None:
    """GitLab refuses the whole file when a script item is anything else: an unquoted
    line holding `: ` is a YAML mapping, and then no pipeline runs at all."""
    gitlab = yaml.safe_load((DEPLOY / "ci" / "gitlab-ci.yml").read_text())

    def strings(items: object) -> bool:
        return isinstance(items, list) and all(
            isinstance(x, str) or strings(x) for x in items)

    for name, job in gitlab.items():
        for part in ("before_script", "script", "after_script"):
            if isinstance(job, dict) and part in job:
                assert strings(job[part]), (name, part, job[part])


def test_ci_examples_have_the_three_steps() -> None:
    github = yaml.safe_load((DEPLOY / "ci" / "github-actions.yml").read_text())
    assert set(github["jobs"]) == {"validate", "plan", "apply"}
    # no path filter: a change to an included team file alone must plan and apply too
    triggers = github[True]  # (YAML 1.1 reads the key `on` as true)
    assert triggers["push"] == {"branches": ["main"]} and not triggers["pull_request"]
    gitlab = yaml.safe_load((DEPLOY / "ci" / "gitlab-ci.yml").read_text())
    assert gitlab["stages"] == ["validate", "plan", "apply"]
    for path in (DEPLOY / "ci" / "github-actions.yml", DEPLOY / "ci" / "gitlab-ci.yml"):
        text = " ".join(path.read_text().replace("\\\n", " ").split())
        assert "hive validate -f hive.yaml" in text
        assert "git archive --format=tar HEAD | ssh " in text and " plan > plan.txt" in text
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


def _hive_ci(command: str, stdin: str = "", env: dict[str, str] | None = None,
             mode: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """hive-ci as sshd runs it for a key whose command= is `hive-ci MODE...`."""
    hive = shutil.which("hive")
    assert hive, "the hive console script is not on PATH (pip install -e .)"
    full = {**os.environ, "SSH_ORIGINAL_COMMAND": command, "HIVE_BIN": hive, **(env or {})}
    return subprocess.run([str(HIVE_CI), *mode], input=stdin, capture_output=True,
                          text=True, env=full, timeout=120)


def test_the_plan_key_cannot_apply(tmp_path: Path) -> None:
    """Pull requests' jobs hold the plan key (`hive-ci plan-only`): it validates and
    plans, and never applies, whatever the job sends."""
    trusted = write_config(tmp_path, "owners: {alice: {}}\nrepositories:\n"
                                     "  r1: {owner: alice}\n")
    env = {"HIVE_CHECKOUT": str(tmp_path)}
    plan_only = ("plan-only",)
    assert _hive_ci("validate", trusted.read_text(), env, plan_only).returncode == 0
    assert _hive_ci("plan", trusted.read_text(), env, plan_only).returncode == 2
    refused = _hive_ci(f"apply {'a' * 40} ci", "", env, plan_only)
    assert refused.returncode == 1
    assert refused.stderr == "hive-ci: this key may validate and plan, not apply\n"
    odd = _hive_ci("validate", trusted.read_text(), env, ("apply-too",))
    assert odd.returncode == 1 and "unknown mode 'apply-too'" in odd.stderr
    # the examples give pull requests' jobs the plan key, and only main's the apply key
    github = yaml.safe_load((DEPLOY / "ci" / "github-actions.yml").read_text())["jobs"]
    keys = {job: [step["env"]["HIVE_SSH_KEY"] for step in github[job]["steps"]
                  if "HIVE_SSH_KEY" in step.get("env", {})] for job in ("plan", "apply")}
    assert keys == {"plan": ["${{ secrets.HIVE_PLAN_SSH_KEY }}"],
                    "apply": ["${{ secrets.HIVE_APPLY_SSH_KEY }}"]}
    assert github["apply"]["environment"] == "production"
    gitlab = yaml.safe_load((DEPLOY / "ci" / "gitlab-ci.yml").read_text())
    for job, key in (("plan", "HIVE_PLAN_SSH_KEY"), ("apply", "HIVE_APPLY_SSH_KEY")):
        lines = [x for x in gitlab[job]["before_script"] if isinstance(x, str)]
        assert lines == [f'install -m 600 "${key}" ~/.ssh/hive_ci'], lines


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


def test_hive_ci_reads_the_servers_environment_file(tmp_path: Path) -> None:
    """The LDAP password as the systemd units get it (EnvironmentFile=, README's
    bind_password_env): CI's plans and applies need it too. A real slapd checks it."""
    from slapd import HIVE_DN, HIVE_PW, SUFFIX, Slapd

    (tmp_path / "slapd").mkdir()
    server = Slapd(tmp_path / "slapd").start()
    try:
        trusted = write_config(tmp_path, "owners: {alice: {}}\nrepositories:\n"
                                         "  r1: {owner: alice}\n", identity=(
            f"{{backend: ldap, ldap: {{url: '{server.url}', base_dn: '{SUFFIX}', "
            f"bind_dn: '{HIVE_DN}', bind_password_env: HIVE_LDAP_PASSWORD}}}}"))
        environment = tmp_path / "environment"
        # written on Windows, with spaces, and with lines that would change the script
        environment.write_bytes(
            b"# the server's secrets\r\n; NOT A LINE\r\n  HIVE = /bin/false \r\n"
            b"IFS=x\r\nHIVE_LDAP_PASSWORD = \"" + HIVE_PW.encode() + b"\"  \r\n")
        environment.chmod(0o600)
        env = {"HIVE_CHECKOUT": str(tmp_path), "HIVE_ENVIRONMENT": str(environment)}
        assert "HIVE_LDAP_PASSWORD" not in os.environ
        planned = _hive_ci("plan", trusted.read_text(), env)
        assert planned.returncode == 2, planned.stdout + planned.stderr
        assert "uid=bh-r1,ou=people" in planned.stdout
        environment.unlink()
        unset = _hive_ci("plan", trusted.read_text(), env)
        assert unset.returncode == 1 and "HIVE_LDAP_PASSWORD" in unset.stderr, unset.stderr
    finally:
        server.stop()


def test_hive_ci_reads_a_proposal_as_nobody(tmp_path: Path) -> None:
    """validate and plan parse a pull request's files: as nobody, with only the capability
    to read (CAP_DAC_READ_SEARCH, bit 2), so the plan still sees all a root plan sees. The
    `hive` run is the real one; a shell in front of it notes its credentials."""
    hive = shutil.which("hive")
    assert hive
    seen = tmp_path / "seen"
    seen.mkdir(mode=0o777)
    seen.chmod(0o777)
    wrapper = tmp_path / "hive-noting-its-credentials"
    wrapper.write_text(f"#!/bin/sh\ngrep -E '^(Uid|CapEff):' /proc/self/status "
                       f"> {seen}/$1\nexec {hive} \"$@\"\n")
    wrapper.chmod(0o755)
    trusted = write_config(tmp_path, "owners: {alice: {}}\nrepositories:\n"
                                     "  r1: {owner: alice}\n")
    root_plan = subprocess.run([hive, "plan", "-f", str(trusted), "--detailed-exitcode"],
                               capture_output=True, text=True)
    env = {"HIVE_CHECKOUT": str(tmp_path), "HIVE_BIN": str(wrapper)}
    for action, code in (("validate", 0), ("plan", 2)):
        result = _hive_ci(action, trusted.read_text(), env)
        assert result.returncode == code, result.stdout + result.stderr
        status = dict(line.split(":\t", 1) for line in
                      (seen / action).read_text().splitlines())
        assert status["Uid"].split()[:2] == ["65534", "65534"], status
        assert int(status["CapEff"], 16) == 1 << 2, status  # CAP_DAC_READ_SEARCH alone
    planned = _hive_ci("plan", trusted.read_text(), {**env, "HIVE_BIN": hive})
    checksum = re.compile(r"Plan checksum: (\w+)")
    assert checksum.findall(planned.stdout) == checksum.findall(root_plan.stdout) != []


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


def _hive_ci_bytes(command: str, stdin: bytes, env: dict[str, str]
                  ) -> subprocess.CompletedProcess[bytes]:
    hive = shutil.which("hive")
    assert hive, "the hive console script is not on PATH (pip install -e .)"
    full = {**os.environ, "SSH_ORIGINAL_COMMAND": command, "HIVE_BIN": hive, **env}
    return subprocess.run([str(HIVE_CI)], input=stdin, capture_output=True, env=full,
                          timeout=120)


def _proposal_repository(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A trusted server checkout, and a proposal: a git repository whose hive.yaml
    includes a team file (as a configuration repository split per team is)."""
    trusted = write_config(tmp_path, "owners: {alice: {}}\nrepositories:\n"
                                     "  r0: {owner: alice}\n")
    proposal = tmp_path / "proposal"
    (proposal / "teams").mkdir(parents=True)
    _git(proposal, "init", "-q", "-b", "main")
    write_config(proposal, "owners: {alice: {}}\ninclude: [teams/*.yaml]\n")
    (proposal / "teams" / "web.yaml").write_text(
        "repositories:\n  r0: {owner: alice}\n  web1: {owner: alice}\n")
    _git(proposal, "add", ".")
    _git(proposal, "commit", "-q", "-m", "split per team")
    return proposal, {"HIVE_CHECKOUT": str(trusted.parent)}


def _archive(folder: Path) -> bytes:
    return subprocess.run(["git", "-C", str(folder), "archive", "--format=tar", "HEAD"],
                          capture_output=True, check=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_hive_ci_plans_a_tar_of_a_hive_yaml_with_includes(tmp_path: Path) -> None:
    """`git archive HEAD | ssh ... plan`: a proposal split into included team files is
    validated and planned whole, and problems name the files as the repository does."""
    proposal, env = _proposal_repository(tmp_path)
    tar = _archive(proposal)
    assert tar[257:262] == b"ustar"
    valid = _hive_ci_bytes("validate", tar, env)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert b"2 repositories" in valid.stdout
    planned = _hive_ci_bytes("plan", tar, env)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert b"bh-web1" in planned.stdout and b"\n  - " not in planned.stdout  # no removal
    (proposal / "teams" / "web.yaml").write_text(
        "repositories:\n  r0: {owner: alice}\n  web1: {owner: bob}\n")
    _git(proposal, "commit", "-q", "-am", "unknown owner")
    bad = _hive_ci_bytes("validate", _archive(proposal), env)
    assert bad.returncode == 1
    assert re.search(rb"^teams/web\.yaml:3:\d+: repositories\.web1\.owner: unknown owner",
                     bad.stdout + bad.stderr, re.M), bad.stdout + bad.stderr


def test_hive_ci_ends_a_proposal_that_takes_too_long(tmp_path: Path) -> None:
    """A tree made for `**` to wander (tests/test_include_bounds.py: seconds before the
    bound refuses it), with the time allowed cut to 1 s: ended, and said so."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        def add(name: str, text: str | None = None) -> None:
            info = tarfile.TarInfo(name)
            if text is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(text), 0o644
                archive.addfile(info, io.BytesIO(text.encode()))
        add("hive.yaml", "include: ['**/**/**/**/**/t.yaml']\nowners: {alice: {}}\n")
        for depth in range(1, 201):
            add("/".join(["d"] * depth))
        add("d/t.yaml", "owners: {bob: {}}\n")
    trusted = write_config(tmp_path, "owners: {alice: {}}\n")
    result = _hive_ci_bytes("validate", buffer.getvalue(), {
        "HIVE_CHECKOUT": str(trusted.parent), "HIVE_CI_TIMEOUT": "1"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert b"hive-ci: validate took longer than 1 s and was ended" in result.stderr


def test_hive_ci_never_decompresses_what_it_lists(tmp_path: Path) -> None:
    """A gzip file whose header holds `ustar` where a tar header has it (in its FEXTRA
    field) passes the tar sniff; listed from a file, GNU tar would decompress it (a
    small upload, a thousand times its size written out). From a pipe it refuses."""
    import io
    import tarfile
    import zlib

    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("x" * 200_000)  # a long name, the bomb's unit
        archive.addfile(info, io.BytesIO(b""))
    data = payload.getvalue()
    extra = bytearray(300)
    extra[257 - 12:257 - 12 + 5] = b"ustar"
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    bomb = (b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\x03" + len(extra).to_bytes(2, "little")
            + bytes(extra) + body + zlib.crc32(data).to_bytes(4, "little")
            + (len(data) % 2**32).to_bytes(4, "little"))
    assert bomb[257:262] == b"ustar"
    trusted = write_config(tmp_path, "owners: {alice: {}}\n")
    result = _hive_ci_bytes("validate", bomb, {"HIVE_CHECKOUT": str(trusted.parent)})
    assert result.returncode == 1
    assert b"hive-ci: stdin is not a readable tar archive" in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("member", ["link", "dotdot", "hardlink", "no-hive-yaml"])
def test_hive_ci_refuses_an_archive_that_reaches_outside(tmp_path: Path, member: str
                                                         ) -> None:
    """A symlink or hard link could make an include read the server's own files, and
    `../x` could write beside the temporary folder: the whole archive is refused."""
    import io
    import tarfile

    proposal, env = _proposal_repository(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(_archive(proposal))) as original:
        members = [(m, original.extractfile(m)) for m in original.getmembers()]
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for info, data in members:
                if member == "no-hive-yaml" and info.name == "hive.yaml":
                    continue
                tar.addfile(info, data)
            if member in ("link", "hardlink"):
                evil = tarfile.TarInfo("teams/evil.yaml")
                evil.type = tarfile.SYMTYPE if member == "link" else tarfile.LNKTYPE
                evil.linkname = "/etc/shadow" if member == "link" else "../../etc/shadow"
                tar.addfile(evil)
            if member == "dotdot":
                data = b"repositories: {}\n"
                info = tarfile.TarInfo("teams/../../escaped.yaml")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    for action in ("validate", "plan"):
        result = _hive_ci_bytes(action, out.getvalue(), env)
        assert result.returncode == 1, result.stdout + result.stderr
        why = {"link": b"only files and folders", "hardlink": b"only files and folders",
               "dotdot": b"a name that leaves its folder",
               "no-hive-yaml": b"no hive.yaml at its top"}[member]
        assert result.stderr.startswith(b"hive-ci: ") and why in result.stderr, result.stderr
        assert b"shadow" not in result.stdout
    assert not (tmp_path / "escaped.yaml").exists()


def test_hive_ci_refuses_a_hive_yaml_larger_than_it_reads(tmp_path: Path) -> None:
    """Cut at the limit, a hive.yaml can still be valid YAML with thousands of
    repositories missing (a plan to remove them all): too large is refused instead."""
    text = write_config(tmp_path, "owners: {alice: {}}\n").read_text()
    big = text.encode() + b"# " + b"x" * (64 * 2**20) + b"\n"
    result = _hive_ci_bytes("validate", big, {"HIVE_CHECKOUT": str(tmp_path)})
    assert result.returncode == 1
    assert b"larger than 67108864 bytes" in result.stderr
    fits = _hive_ci_bytes("validate", text.encode(), {"HIVE_CHECKOUT": str(tmp_path)})
    assert fits.returncode == 0, fits.stdout + fits.stderr


@pytest.mark.parametrize("command", ["", "sh", "plan extra", "apply 1234 alice",
                                     "apply " + "a" * 40 + " 'al ice'", "validate; id",
                                     "apply $(id) x y", "history",
                                     "apply " + "a" * 40 + " alice " + "g" * 64,
                                     "apply " + "a" * 40 + " alice " + "a" * 64 + " x"])
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


@requires_root
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_hive_ci_applies_only_the_reviewed_plan(tmp_path: Path) -> None:
    """The flow of deploy/ci/: the pull request's `plan` shows a checksum; `apply COMMIT
    ACTOR SUM` applies that plan, or nothing (exit 3) when the plan computed now differs."""
    origin, checkout = tmp_path / "origin", tmp_path / "checkout"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    write_config(origin, "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n",
                 uid_range="[23100, 23199]")
    _git(origin, "add", "hive.yaml")
    _git(origin, "commit", "-q", "-m", "r1")
    commit = _git(origin, "rev-parse", "HEAD")
    subprocess.run(["git", "clone", "-q", str(origin), str(checkout)], check=True)
    env = {"HIVE_CHECKOUT": str(checkout)}
    planned = _hive_ci("plan", (origin / "hive.yaml").read_text(), env)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    (reviewed,) = re.findall(r"^Plan checksum: ([0-9a-f]{64})$", planned.stdout, re.M)

    # Someone changed the server since the review (here: a folder Hive would create).
    (checkout / "repos" / "bh-r1").mkdir(parents=True)
    (checkout / "repos" / "bh-r1").chmod(0o700)
    refused = _hive_ci(f"apply {commit} alice {reviewed}", env=env)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "differs from the reviewed one" in refused.stderr
    assert not (checkout / "repos" / "bh-r1" / "r1").exists()
    assert not (checkout / "state" / "journal.jsonl").exists()

    shutil.rmtree(checkout / "repos")   # back to the state the plan was made on
    applied = _hive_ci(f"apply {commit} alice {reviewed}", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (checkout / "repos" / "bh-r1" / "r1").is_dir()


def test_python_is_the_one_running_the_tests() -> None:
    """hive-ci's tests use the `hive` console script: it must be this project's."""
    hive = shutil.which("hive")
    assert hive
    result = subprocess.run([hive, "--version"], capture_output=True, text=True)
    out = subprocess.run([sys.executable, "-m", "hive", "--version"], capture_output=True,
                         text=True)
    assert result.stdout == out.stdout


# --------------------------------------------------------------------------- sshd drop-in

LAN_DROP_IN = """\
# an administrator's own drop-in for a trusted network
Match Address 192.0.2.0/24
    AuthorizedKeysFile .ssh/authorized_keys
    PasswordAuthentication yes
    PermitTTY yes
    AllowTcpForwarding yes
"""


@pytest.mark.parametrize(("name", "decides"), [("00-hive.conf", True),
                                                ("60-hive.conf", False)])
def test_the_drop_in_decides_only_when_it_sorts_first(tmp_path: Path, name: str,
                                                      decides: bool) -> None:
    """sshd keeps the first value it reads, across Match blocks: installed as README says
    (00-hive.conf), Hive's settings hold for a repository user coming from a network
    another drop-in (50-lan.conf) matches; sorted after it, they would not."""
    dropins = tmp_path / "sshd_config.d"
    dropins.mkdir()
    shutil.copy(DEPLOY / "sshd" / "hive.conf", dropins / name)
    (dropins / "50-lan.conf").write_text(LAN_DROP_IN)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(tmp_path / "host_key")], check=True)
    config = tmp_path / "sshd_config"  # as Debian's: the drop-ins first
    config.write_text(f"Include {dropins}/*.conf\nHostKey {tmp_path / 'host_key'}\n"
                      "KbdInteractiveAuthentication no\nUsePAM yes\n")
    result = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(config), "-C",
                             "user=bh-example,host=client,addr=192.0.2.1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    found = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    hive = {"authorizedkeysfile": "/var/lib/hive/authorized_keys/%u",
            "passwordauthentication": "no", "permittty": "no"}
    assert ({k: found[k] for k in hive} == hive) is decides, found


# --------------------------------------------------------------------------- nsswitch


@pytest.mark.parametrize(("shipped", "module"), [(nsswitch_edit.EXTRAUSERS_EDIT, "extrausers"),
                                                 (nsswitch_edit.LDAP_EDIT, "ldap")],
                         ids=["extrausers", "ldap"])
def test_nsswitch_edit_adds_after_files_and_keeps_the_rest(shipped: Path, module: str) -> None:
    """The shipped edit, run by sed on Debian 12's file: `module` right after `files` in
    passwd/group/shadow, `systemd` and every other line kept, a second run changes nothing,
    and the file says what the result is."""
    debian = nsswitch_edit.DEBIAN12
    once = nsswitch_edit.edited(shipped, debian)
    assert nsswitch_edit.edited(shipped, once) == once
    before, after = debian.splitlines(), once.splitlines()
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        name = old.split(":")[0]
        if name in ("passwd", "group", "shadow"):
            assert new.split() == [old.split()[0], "files", module, *old.split()[2:]], new
        else:
            assert new == old
    # Without systemd (the libc-bin default, a slim image), the same edit.
    bare = debian.replace(" systemd", "")
    shown = [line for line in nsswitch_edit.edited(shipped, bare).splitlines()
             if line.startswith(("passwd:", "group:", "shadow:"))]
    assert [" ".join(x.split()) for x in shown] == [
        f"{n}: files {module}" for n in ("passwd", "group", "shadow")]
    # What the file says Debian 12 ends with (its shadow line has no `systemd` there).
    documented = nsswitch_edit.documented_result(shipped)
    assert documented == [f"passwd: files {module} systemd", f"group: files {module} systemd",
                          f"shadow: files {module}"]
    assert documented == [" ".join(x.split()) for x in nsswitch_edit.edited(
        shipped, debian.replace("shadow:         files systemd", "shadow:         files")
    ).splitlines() if x.startswith(("passwd:", "group:", "shadow:"))]
    # No line in the shipped file that a copy would put in force.
    assert not [x for x in shipped.read_text().splitlines() if x and not x.startswith("#")]


@requires_root
def test_nsswitch_edit_makes_glibc_find_extrausers_users(tmp_path: Path) -> None:
    """Real glibc: in a private mount namespace, Debian 12's nsswitch.conf with the shipped
    edit over /etc/nsswitch.conf and a temporary /var/lib/extrausers: `getent` finds a
    user Hive would write, and root still comes from /etc/passwd."""
    (tmp_path / "passwd").write_text("bh-nsstest:x:29999:29999:Hive:/nonexistent:/bin/sh\n")
    (tmp_path / "group").write_text("bh-nsstest:x:29999:\n")
    (tmp_path / "shadow").write_text("bh-nsstest:*:20000::::::\n")
    conf = tmp_path / "nsswitch.conf"
    conf.write_text(nsswitch_edit.edited(nsswitch_edit.EXTRAUSERS_EDIT))
    empty = tmp_path / "nscd"
    empty.mkdir()
    script = (f"mount --bind {conf} /etc/nsswitch.conf && "
              f"mount --bind {tmp_path} /var/lib/extrausers && "
              f"{{ [ ! -d /run/nscd ] || mount --bind {empty} /run/nscd; }} && "
              "getent passwd bh-nsstest root && getent group bh-nsstest && "
              "getent shadow bh-nsstest")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bh-nsstest:x:29999:29999:")
    assert lines[1].startswith("root:x:0:0:")
    assert lines[2] == "bh-nsstest:x:29999:" and lines[3].startswith("bh-nsstest:*:")
    assert "bh-nsstest" not in subprocess.run(["getent", "passwd"], capture_output=True,
                                              text=True).stdout  # the host is untouched


def test_image_makes_the_shipped_nsswitch_edits() -> None:
    """The image edits nsswitch.conf as an operator does: the same sed expressions."""
    extrausers = nsswitch_edit.sed_argv(nsswitch_edit.EXTRAUSERS_EDIT)[3]
    ldap = nsswitch_edit.sed_argv(nsswitch_edit.LDAP_EDIT)[3]
    assert f"sed -i -E '{extrausers}' /etc/nsswitch.conf" in DOCKERFILE.read_text()
    entrypoint = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    assert f"sed -i -E '{ldap}' /etc/nsswitch.conf" in entrypoint


def test_one_path_for_hive_and_documentation_that_exists_after_install() -> None:
    """README's install puts the command at /opt/hive/bin/hive and the release's files in
    /opt/hive/src (a clone of the tag): every unit's Documentation= is one of those files,
    the image has the same layout, and no deploy file or README names another command."""
    for service in SYSTEMD.glob("*.service"):
        (doc,) = _settings(service)["Documentation"]
        assert doc.startswith("file:///opt/hive/src/"), (service, doc)
        assert (ROOT / doc.removeprefix("file:///opt/hive/src/")).is_file(), (service, doc)
    assert "cp /usr/src/hive/README.md /opt/hive/src/README.md" in DOCKERFILE.read_text()
    readme = (ROOT / "README.md").read_text()
    assert "git clone --depth 1 --branch v0.1.0" in readme
    for path in [ROOT / "README.md", *(p for p in DEPLOY.rglob("*") if p.is_file())]:
        text = path.read_text()
        assert "/usr/local/bin/hive" not in text, path
        assert "/path/to/hive" not in text, path


def test_ci_examples_pass_the_reviewed_plans_checksum(tmp_path: Path) -> None:
    """The plan job's sed finds the checksum in real `hive plan` output, puts it in the
    marker, and the apply job hands a checksum to hive-ci (deploy/ci/hive-ci)."""
    cfg = write_config(tmp_path, "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n")
    plan = subprocess.run([sys.executable, "-m", "hive", "plan", "-f", str(cfg)],
                          capture_output=True, text=True)
    (tmp_path / "plan.txt").write_text(plan.stdout)
    json_sum = json.loads(subprocess.run(
        [sys.executable, "-m", "hive", "plan", "-f", str(cfg), "-o", "json"],
        capture_output=True, text=True).stdout.splitlines()[-1])["checksum"]
    for path, apply_tail in ((DEPLOY / "ci" / "github-actions.yml", "$HIVE_PLAN_CHECKSUM"),
                             (DEPLOY / "ci" / "gitlab-ci.yml", "$sum")):
        text = path.read_text()
        (line,) = [x.strip().removeprefix("- ") for x in text.splitlines()
                   if x.strip().removeprefix("- ").startswith("sum=$(sed -n")]
        found = subprocess.run(["sh", "-c", f'{line}; printf %s "$sum"'], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout
        assert found == json_sum
        assert "<!-- hive-plan tree=" in text and "HEAD^{tree}" in text
        joined = " ".join(text.replace("\\\n", " ").split())
        assert 'apply "$' in joined and joined.count(apply_tail) >= 1
        assert re.search(r'apply "\$\w+" "\$\w+" ' + re.escape(apply_tail), joined), path


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("example", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_examples_archive_the_tree_as_committed(tmp_path: Path, example: str) -> None:
    """A pull request's .gitattributes could leave a team file out of `git archive`
    (export-ignore) or rewrite one (export-subst): the server would plan another tree
    than the one reviewed. The example's own lines undo both before it archives."""
    repo = tmp_path / "proposal"
    (repo / "teams").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "teams" / "b.yaml").write_text("repositories: {evil: {owner: alice}}\n")
    (repo / "hive.yaml").write_text("x-note: $Format:%H$\n")
    (repo / ".gitattributes").write_text(
        "teams/b.yaml export-ignore\nhive.yaml export-subst\n.gitattributes export-ignore\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "hide a team file")
    assert "teams/b.yaml" not in _archive_names(repo)  # what git archive alone sends
    text = (DEPLOY / "ci" / example).read_text()
    lines = [x.strip().removeprefix("- ") for x in text.splitlines()
             if "info/attributes" in x and not x.strip().startswith("#")]
    assert lines, example
    subprocess.run(["sh", "-ec", "\n".join(lines)], cwd=repo, check=True)
    assert {"teams/b.yaml", "hive.yaml", ".gitattributes"} <= _archive_names(repo)
    archived = subprocess.run(["sh", "-c", "git archive --format=tar HEAD | tar -xO hive.yaml"],
                              cwd=repo, capture_output=True, text=True, check=True).stdout
    assert archived == "x-note: $Format:%H$\n"


def _archive_names(repo: Path) -> set[str]:
    listing = subprocess.run(["sh", "-c", "git archive --format=tar HEAD | tar -t"], cwd=repo,
                             capture_output=True, text=True, check=True).stdout
    return set(listing.split())


@requires_root
def test_entrypoint_seeds_slapd_so_that_echo_written_secrets_bind(tmp_path: Path) -> None:
    """The image's `slapd` start, without a container engine: deploy/docker/entrypoint.sh
    runs in private mount and network namespaces over the paths the Dockerfile makes
    (/opt/hive/src/deploy/ldap, /run/secrets, /var/lib/ldap), with the real slapd. The
    secrets are written by `echo` (a trailing newline): the service accounts must bind
    with the password as Hive reads bind_password_file (first line, no newline)."""
    secrets = {"admin": "a-Secret-1", "hive": "h-Secret-2", "nslcd": "n-Secret-3"}
    script = "\n".join([
        "set -e",
        "ip link set lo up",
        "mount -t tmpfs none /run && mkdir -p /run/secrets",
        *(f"echo '{pw}' > /run/secrets/ldap_{name}_password" for name, pw in secrets.items()),
        "mount -t tmpfs none /var/lib/ldap",
        "mount -t tmpfs none /opt && mkdir -p /opt/hive/src/deploy/ldap",
        f"mount --bind {DEPLOY / 'ldap'} /opt/hive/src/deploy/ldap",
        f"LDAP_SUFFIX=dc=example,dc=org {DEPLOY / 'docker' / 'entrypoint.sh'} slapd "
        f"> {tmp_path}/slapd.log 2>&1 &",
        "for i in $(seq 100); do ldapwhoami -x -H ldap:/// >/dev/null 2>&1 && break; "
        "sleep 0.1; done",
        *(f"ldapwhoami -x -H ldap:/// -D {dn} -w '{secrets[name]}' && "
          f"! ldapwhoami -x -H ldap:/// -D {dn} -y /run/secrets/ldap_{name}_password "
          "2>/dev/null"
          for name, dn in (("admin", "cn=admin,dc=example,dc=org"),
                           ("hive", "cn=hive,ou=services,dc=example,dc=org"),
                           ("nslcd", "cn=nslcd,ou=services,dc=example,dc=org"))),
        # Hive may write people; nobody may read them anonymously.
        "ldapsearch -x -H ldap:/// -b ou=people,dc=example,dc=org -s base dn "
        "-D cn=hive,ou=services,dc=example,dc=org -w h-Secret-2 | grep -c '^dn:'",
        "kill $(cat /run/slapd/slapd.pid)",
    ])
    result = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                             "sh", "-c", script], capture_output=True, text=True, timeout=120)
    log = (tmp_path / "slapd.log").read_text() if (tmp_path / "slapd.log").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + log
    lines = result.stdout.splitlines()
    assert lines[:3] == ["dn:cn=admin,dc=example,dc=org",
                         "dn:cn=hive,ou=services,dc=example,dc=org",
                         "dn:cn=nslcd,ou=services,dc=example,dc=org"], result.stdout
    assert lines[3] == "1"


def test_entrypoint_waits_for_a_missing_hive_yaml_then_starts(tmp_path: Path) -> None:
    """A first start before hive.yaml exists (compose's ./config is empty) says what to do
    and waits, instead of exiting and being restarted for ever; once the file is there,
    the container's command (here `hive watch`) starts."""
    config = tmp_path / "config" / "hive.yaml"
    config.parent.mkdir()
    env = {**os.environ, "HIVE_CONFIG": str(config), "HIVE_WAIT_SECONDS": "0.1"}
    log = tmp_path / "entrypoint.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(DEPLOY / "docker" / "entrypoint.sh"), "watch"],
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "waiting for it" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()      # still there: no restart loop
        text = log.read_text()
        assert f"no {config} yet" in text and "deploy/docker/config/" in text
        assert text.count("waiting for it") == 1          # said once, not every 0.1 s
        write_config(config.parent, "owners: {alice: {}}\nrepositories:\n"
                                    "  r1: {owner: alice}\n")
        (config.parent / "repos").mkdir()
        (config.parent / "state").mkdir()
        while "hive watch: watching" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "found" in log.read_text() and "hive watch: watching" in log.read_text(), \
            log.read_text()
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_compose_ldap_variant_gives_each_service_the_secrets_its_start_reads() -> None:
    """compose.ldap.yaml over compose.yaml: the hive service gets the secrets that
    `start_nslcd` and Hive's bind_password_file read, waits for a healthy slapd, and the
    ldap service gets every secret `seed_slapd` hashes."""
    base = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    ldap = yaml.safe_load((DEPLOY / "docker" / "compose.ldap.yaml").read_text())
    assert "ldap" not in base["services"] and "secrets" not in base  # files: no secrets
    entrypoint = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    body = {name: entrypoint.split(f"{name}() {{", 1)[1].split("\n}\n", 1)[0]
            for name in ("start_nslcd", "seed_slapd")}
    used = {name: set(re.findall(r"(?:secret|hash) (ldap_\w+_password)", text))
            for name, text in body.items()}
    hive = ldap["services"]["hive"]
    assert used["start_nslcd"] | {"ldap_hive_password"} == set(hive["secrets"])
    assert hive["depends_on"]["ldap"]["condition"] == "service_healthy"
    assert hive["environment"]["HIVE_NSLCD_URI"].startswith("ldap://ldap")
    assert used["seed_slapd"] == set(ldap["services"]["ldap"]["secrets"])
    assert set(ldap["secrets"]) == used["seed_slapd"]
    assert "bind_password_file: /run/secrets/ldap_hive_password" in \
        (DEPLOY / "docker" / "compose.ldap.yaml").read_text()
    assert {v.split(":")[0] for v in ldap["services"]["ldap"]["volumes"]} <= set(ldap["volumes"])


def test_readme_runtime_packages_are_ones_the_tests_run_with() -> None:
    """README's per-backend `apt-get install` lines: only packages .ci/run installs (the
    tests prove them), without the test-only ones, and each backend's NSS module."""
    _, ci_packages = _apt_install((ROOT / ".ci" / "run").read_text())
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    lines = re.findall(r"^\s*apt-get install --no-install-recommends ([^\n]*)", readme, re.M)
    assert len(lines) == 2, lines
    files, ldap = (set(line.split()) for line in lines)
    for packages in (files, ldap):
        assert packages - {"ca-certificates"} <= set(ci_packages), packages - set(ci_packages)
        assert {"openssh-server", "borgbackup", "rsync", "python3-venv"} <= packages
        assert not packages & {"slapd", "build-essential", "libacl1-dev", "inotify-tools"}
    assert "libnss-extrausers" in files and "libnss-extrausers" not in ldap
    assert {"nslcd", "libnss-ldapd"} <= ldap and "nslcd" not in files
