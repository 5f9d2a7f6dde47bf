"""What reaches an authorized_keys line is what sshd will read there, and nothing more.

Three layers, each tested: validation refuses values sshd would read differently (with the
file's line and column), the renderer refuses to produce a line outside the strict grammar
even when validation is bypassed, and every line Hive writes is fed back through an
independent port of sshd's own option parser (tests/sshd_authopts.py) and `ssh-keygen -l`.
The real-sshd side (a hostile from= cannot widen access) is tests/test_e2e_key_options.py.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, hive, requires_root, write_config
from sshd_authopts import SshdRefuses, parse_line

import schemas
from reconciler import keylines
from reconciler.desired import Facts, desired_state
from reconciler.inventory import Inventory
from schemas.keyoptions import UnsafeKeyLine, check_key_line, command_option, from_entry_problem
from schemas.sshkeys import parse_public_key

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9rRXaF a"
BASE_OWNERS = "owners:\n  alice: {}\n"  # lines 9-10; keys: 11, k: 12, from: 15
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

HOSTILE_FROM = [
    "fe80::1%eth0,*",                                        # zone id hides a second entry
    'fe80::1%x",port-forwarding,permitopen="127.0.0.1:*',    # closes the quote: new options
    "fe80::1%lo",                                            # a zone id alone
    "10.0.0.1,*",
    "10.0.0.0/8,*",
    "*.example.org\"",
    "a\\b",
    "010.0.0.1",                                             # glibc: 8.0.0.1
    "192.168.1",                                             # glibc: 192.168.0.1
    "0x7f000001",                                            # glibc: 127.0.0.1
    "4294967295",                                            # glibc: 255.255.255.255
    "10.0.0.0/08",
    "host\tname",
    "!",
]


def key_body(value: str) -> str:
    quoted = "'" + value.replace("'", "''") + "'"
    return (BASE_OWNERS + f"keys:\n  k:\n    owner: alice\n    public_key: {ED}\n"
            f"    from: [{quoted}]\n")


@pytest.mark.parametrize("value", HOSTILE_FROM)
def test_validation_refuses_from_values_sshd_would_read_differently(
        tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path, key_body(value))
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    assert f"{path}:15:12: keys.k.from[0]: " in str(info.value), str(info.value)
    result = hive("validate", "-f", str(path))
    assert result.returncode != 0 and f"{path}:15:12:" in result.stdout + result.stderr


@pytest.mark.parametrize("value", ["127.0.0.1", "!10.0.0.1", "10.0.0.0/8", "2001:db8::/32",
                                   "::1", "*.example.org", "host?.example.org", "192.168.1.*",
                                   "*", "::ffff:192.0.2.1"])
def test_validation_keeps_the_forms_sshd_documents(tmp_path: Path, value: str) -> None:
    # a negated entry needs a positive one beside it (see test_e2e_key_options.py)
    body = key_body(value).replace("from: ['!", "from: ['*', '!")
    config = schemas.load(write_config(tmp_path, body))
    assert config.keys["k"].from_ == (["*", value] if value.startswith("!") else [value])


@pytest.mark.parametrize("value", ["LD_PRELOAD=/tmp/x.so", "-oProxyCommand", "borg\"",
                                   "borg\\", "b org"])
def test_validation_refuses_forced_command_programs_sh_would_misread(
        tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path, BASE_OWNERS)
    text = path.read_text().replace("  ssh_host: 127.0.0.1\n",
                                    "  ssh_host: 127.0.0.1\n  borg_command: "
                                    f"'{value}'\n")
    path.write_text(text)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    assert f"{path}:5:17: server.borg_command: " in str(info.value), str(info.value)


# --------------------------------------------------------------------------- the renderer


def _valid_config(tmp_path: Path) -> schemas.HiveConfig:
    body = (BASE_OWNERS + f"keys:\n  k: {{owner: alice, public_key: {ED}, "
            "from: [127.0.0.1]}\nrepositories:\n  r1: {owner: alice, keys: [k]}\n")
    return schemas.load(write_config(tmp_path, body))


def _bypass(config: schemas.HiveConfig, *, from_: list[str] | None = None,
            borg: str | None = None, root: str | None = None) -> schemas.HiveConfig:
    """The config as a validator bug would let it through: model_copy does not validate."""
    if from_ is not None:
        key = config.keys["k"].model_copy(update={"from_": from_})
        config = config.model_copy(update={"keys": {"k": key}})
    update = {"borg_command": borg} if borg is not None else {}
    if root is not None:
        update["repos_root"] = Path(root)
    if update:
        config = config.model_copy(update={"server": config.server.model_copy(update=update)})
    return config


@pytest.mark.parametrize(("from_", "borg", "root"), [
    *[([value], None, None) for value in HOSTILE_FROM],
    (["127.0.0.1", "fe80::1%eth0"], None, None),
    ([""], None, None),
    (None, 'borg" ssh-ed25519 AAAA', None),
    (None, "LD_PRELOAD=/tmp/x.so", None),
    (None, "borg serve; sh", None),
    (None, None, "/srv/my repos"),
    (None, None, '/srv/x",port-forwarding,command="sh'),
])
def test_the_renderer_refuses_a_line_outside_the_grammar_even_past_validation(
        tmp_path: Path, from_: list[str] | None, borg: str | None, root: str | None) -> None:
    config = _bypass(_valid_config(tmp_path), from_=from_, borg=borg, root=root)
    repo = config.repositories["r1"]
    with pytest.raises(UnsafeKeyLine, match="key k: refusing to write"):
        keylines.key_line(config, repo, config.repo_path("r1"), "k", config.keys["k"], False)
    plan = desired_state(config, Inventory(), Facts(), NOW)
    assert any("repository r1: key k: refusing" in e for e in plan.errors), plan.errors
    assert ("authorized_keys", "bh-r1") not in plan.resources


def test_check_key_line_is_an_allow_list() -> None:
    blob = ED.split()[1]
    good = ('restrict,command="borg serve --restrict-to-repository /r/bh-a/a" '
            f"ssh-ed25519 {blob} hive:k")
    assert check_key_line(good) == good
    for bad in (good.replace("restrict,", "restrict,port-forwarding,"),
                good.replace("restrict,", ""),
                good.replace(" hive:k", " hive:k extra"),
                good + "\n",
                good.replace("hive:k", "hive:K"),
                good.replace('command="', 'from="*",command="').replace('"*"', '"a,,b"'),
                good.replace("ssh-ed25519", "ssh-dss"),
                good.replace('/bh-a/a"', '/bh-a/a "'),      # an empty last word
                good.replace("serve --", "serve  --")):
        with pytest.raises(UnsafeKeyLine):
            check_key_line(bad)


@pytest.mark.parametrize("words", [
    [],
    [""],
    ["borg", ""],                                   # an empty word: two spaces in a row
    ["", "serve"],
    ["borg", "serve", "/srv/my repos"],             # one word that would read as two
    ["borg serve", "--restrict-to-repository", "/r"],
    ["borg", "serve", "/r\n"],
    ["borg", "serve", '/r"'],
    ["borg", "serve", "/r;sh"],
    ["A=b", "serve"],                              # sh reads a leading A=b as an assignment
    ["-borg", "serve"],
])
def test_command_option_refuses_every_word_outside_the_grammar(words: list[str]) -> None:
    with pytest.raises(UnsafeKeyLine, match="command="):
        command_option(words)


def test_command_option_joins_the_words_it_accepts() -> None:
    words = ["/usr/bin/borg", "serve", "--restrict-to-repository", "/r/bh-a/a",
             "--storage-quota", "5G"]
    assert command_option(words) == f'command="{" ".join(words)}"'
    assert command_option(["rrsync"]) == 'command="rrsync"'


def test_every_line_the_grammar_accepts_reads_to_sshd_as_hive_means() -> None:
    """Mutated lines near the grammar's edges (quotes, commas, spaces, '=', line breaks):
    whatever KEY_LINE accepts, sshd's own option parser (tests/sshd_authopts.py) reads as
    restrict, the allowed options and a forced command of single-spaced words. Debian 12's
    Python (3.11.2) got possessive repetitions wrong: KEY_LINE written with them accepted a
    command ending in a space, which this test caught there."""
    blob = ED.split()[1]
    seeds = [f'restrict,command="borg serve --restrict-to-repository /r/bh-a/a" '
             f"ssh-ed25519 {blob} hive:k",
             f'restrict,from="10.0.0.0/8,!10.1.2.3,*.example.org",expiry-time='
             f'"20270101000000Z",command="rrsync -wo -munge /r/bh-a/a" ssh-ed25519 {blob} '
             "hive:k.2"]
    alphabet = ' ",=:/+-.!*?a0Z_\n\r\t'
    rng = random.Random(7)
    accepted = 0
    for _ in range(20000):
        line = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(line) + 1)
            edit = rng.random()
            if edit < 0.4 and at < len(line):
                line[at] = rng.choice(alphabet)
            elif edit < 0.7:
                line.insert(at, rng.choice(alphabet))
            elif at < len(line):
                del line[at]
        text = "".join(line)
        try:
            check_key_line(text)
        except UnsafeKeyLine:
            continue
        accepted += 1
        read = parse_line(text)
        assert read is not None and read.flags == {"restrict": True}, text
        assert set(read.values) <= {"from", "expiry-time", "command"}, text
        (command,) = read.values["command"]
        assert all(command.split(" ")) and command.strip() == command, text
        assert read.comment.startswith("hive:") and " " not in read.comment, text
    assert 100 < accepted < 19900  # both verdicts were exercised


def test_the_key_line_grammar_has_no_possessive_repetition() -> None:
    """See schemas/keyoptions.py: Python 3.11.2's re module mis-reads them."""
    from schemas import keyoptions

    for pattern in (keyoptions.KEY_LINE.pattern, keyoptions.COMMAND_WORD,
                    keyoptions.COMMAND_PROGRAM, keyoptions._COMMAND.pattern):
        for form in ("*+", "++", "?+", "}+", "(?>"):
            assert form not in pattern, (form, pattern)


# --------------------------------------------------------------------------- every line, read back


def _all_modes_body(keys: dict[str, str]) -> str:
    """Every kind of line Hive writes: borg full, append-only, quota, import, export; with
    from= (v4, v6, network, pattern, negation) and expiry (date and time) or neither."""
    return f"""\
owners: {{alice: {{}}}}
keys:
  plain: {{owner: alice, public_key: {keys['plain']}}}
  limited:
    owner: alice
    public_key: {keys['limited']}
    from: [127.0.0.1, '::1', 10.0.0.0/8, '2001:db8::/32', '*.example.org', '!10.9.9.9']
  expiring: {{owner: alice, public_key: {keys['expiring']}, expires: 2999-01-02}}
  both:
    owner: alice
    public_key: {keys['both']}
    from: [192.0.2.0/24]
    expires: '2999-03-04T05:06:07+02:00'
repositories:
  full: {{owner: alice, keys: [plain, limited, expiring, both]}}
  appendonly: {{owner: alice, append_only_keys: [plain, limited, expiring, both]}}
  quota: {{owner: alice, keys: [both], append_only_keys: [limited], quota: 1.5T}}
  inbox: {{owner: alice, mode: import, keys: [plain, both]}}
  outbox: {{owner: alice, mode: export, keys: [limited, expiring]}}
  dormant: {{owner: alice, mode: disabled, keys: [plain]}}
"""


KEY_FROM = {"limited": "127.0.0.1,::1,10.0.0.0/8,2001:db8::/32,*.example.org,!10.9.9.9",
            "both": "192.0.2.0/24"}
KEY_EXPIRY = {"expiring": "29990102000000Z", "both": "29990304030607Z"}


def _expected_command(repo: str, path: Path, append_only: bool) -> str:
    """Written out here, not taken from keylines: what each mode must run."""
    return {
        "full": f"borg serve --restrict-to-repository {path}",
        "appendonly": f"borg serve --restrict-to-repository {path}"
                      + (" --append-only" if append_only else ""),
        "quota": f"borg serve --restrict-to-repository {path}"
                 + (" --append-only" if append_only else "") + " --storage-quota 1.5T",
        "inbox": f"rrsync -wo -munge {path}",
        "outbox": f"rrsync -ro {path}",
    }[repo]


@requires_root
def test_every_line_hive_writes_reads_back_as_exactly_the_intended_options(
        tmp_path: Path) -> None:
    from conftest import ssh_keygen
    keys = {name: ssh_keygen(tmp_path / name) for name in ("plain", "limited", "expiring",
                                                            "both")}
    config_path = write_config(tmp_path, _all_modes_body(keys))
    result = hive("apply", "-f", str(config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = schemas.load(config_path)
    cache = tmp_path / "state" / "authorized_keys"
    seen = 0
    for repo_name, repo in config.repositories.items():
        user, path = config.user_name(repo_name), config.repo_path(repo_name)
        file = cache / user
        if repo.mode == "disabled":
            assert not file.exists()
            continue
        want = {name: False for name in repo.keys} | {n: True for n in repo.append_only_keys}
        text = file.read_text()
        parsed = [parse_line(line) for line in text.splitlines()]
        assert [p.comment for p in parsed if p] == [f"hive:{n}" for n in want]
        for line, (name, append_only) in zip(parsed, want.items(), strict=True):
            assert line is not None
            public = parse_public_key(keys[name])
            assert (line.key_type, line.blob) == (public.type, public.blob)
            assert line.flags == {"restrict": True}
            expected = {"command": [_expected_command(repo_name, path, append_only)]}
            if name in KEY_FROM:
                expected["from"] = [KEY_FROM[name]]
            if name in KEY_EXPIRY:
                expected["expiry-time"] = [KEY_EXPIRY[name]]
            assert line.values == expected, f"{user}: {name}"
            seen += 1
        # ssh-keygen's own reader finds exactly these keys behind the options.
        listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(file)],
                                capture_output=True, text=True, check=True).stdout
        fingerprints = [row.split()[1] for row in listed.splitlines()]
        comments = [row.split()[2] for row in listed.splitlines()]
        assert fingerprints == [parse_public_key(keys[n]).fingerprint for n in want]
        assert comments == [f"hive:{n}" for n in want]
    assert seen == 14


def test_the_bench_fleet_reads_back_as_intended() -> None:
    """Thousands of lines of every kind (bench/generate.py) through sshd's parser."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from generate import generate
    finally:
        sys.path.remove(str(ROOT / "bench"))
    config = schemas.load_text(generate(600, 1200, seed=7), "bench.yaml", Path("/srv/hive"))
    kinds: set[tuple[str, bool, bool, bool]] = set()
    for name, repo in config.repositories.items():
        path = config.repo_path(name)
        lines, _ = keylines.repository_lines(config, repo, path, NOW)
        for key_name, text in lines.items():
            key = config.keys[key_name]
            append_only = key_name in repo.append_only_keys and key_name not in repo.keys
            line = parse_line(text)
            assert line is not None and line.flags == {"restrict": True}
            assert line.comment == f"hive:{key_name}"
            assert line.values["command"] == [keylines.forced_command(
                config, repo, path, append_only)]
            assert line.values.get("from") == ([",".join(key.from_)] if key.from_ else None)
            assert line.from_entries() == key.from_ if key.from_ else True
            assert set(line.values) <= {"command", "from", "expiry-time"}
            kinds.add((repo.mode, append_only, bool(key.from_), "expiry-time" in line.values))
    assert {m for m, *_ in kinds} == {"borg", "import", "export"}
    assert any(f and e for _, _, f, e in kinds), kinds


# --------------------------------------------------------------------------- fuzzing


def _glibc_address(text: str) -> str | None:
    """What sshd's addr_pton (getaddrinfo, AI_NUMERICHOST) makes of `text`, if anything."""
    try:
        info = socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return str(ipaddress.ip_address(info[0][4][0]))


def test_fuzzed_from_entries_accepted_mean_to_sshd_what_they_mean_to_hive() -> None:
    """Random entries (fixed seed): every one Hive accepts is one entry to sshd's parser, and
    glibc reads it as the address Hive thinks it is, or as no address at all."""
    rng = random.Random(13)
    alphabet = "0123456789abcdefx.:*?/!-%,\"\\ \tAZ"
    blob = ED.split()[1]
    accepted = 0
    for _ in range(30000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
        if from_entry_problem(value) is not None:
            continue
        accepted += 1
        line = f'restrict,from="{value}",command="borg serve" ssh-ed25519 {blob} hive:k'
        assert check_key_line(line) == line
        try:
            parsed = parse_line(line)
        except SshdRefuses as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"{value!r}: sshd refuses the line: {exc}") from None
        assert parsed is not None and parsed.from_entries() == [value]
        assert parsed.values["command"] == ["borg serve"] and parsed.flags == {"restrict": True}
        text = value.removeprefix("!")
        address = text.partition("/")[0]
        hive_reads = None
        try:
            hive_reads = str(ipaddress.ip_address(address))
        except ValueError:
            assert "/" not in text, value
        assert _glibc_address(address) == hive_reads, value
    assert accepted > 500, accepted
