"""Every validation rule, with the exact line and column it reports.

The server block written by `write_config` takes lines 1-8, so the body starts at line 9.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import hive, ssh_keygen, write_config

import schemas

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9rRXaF a"
ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrsAxFVn9PPclOZg1k/6yW6CYdqDmWmp/VFQjW6VPXp b"


def problems(folder: Path, body: str, **kwargs: str) -> list[str]:
    path = write_config(folder, body, **kwargs)
    try:
        schemas.load(path)
    except schemas.ConfigError as exc:
        return [str(p).removeprefix(f"{path}:") for p in exc.problems]
    return []


def expect(found: list[str], line: int, col: int, path: str, fragment: str) -> None:
    prefix = f"{line}:{col}: {path}: " if path else f"{line}:{col}: "
    matches = [p for p in found if p.startswith(prefix) and fragment in p]
    assert matches, f"no problem {prefix}...{fragment!r} in:\n" + "\n".join(found)


BASE_OWNERS = "owners:\n  alice: {}\n  bob: {}\n"  # lines 9-11

CASES = [
    # (id, body, line, column, path, message fragment)
    ("unknown-field", BASE_OWNERS + "repositories:\n  r1: {owner: alice, colour: red}\n",
     13, 22, "repositories.r1.colour", "unknown field 'colour'; expected one of: owner"),
    ("unknown-owner", BASE_OWNERS + "repositories:\n  r1: {owner: carol}\n",
     13, 15, "repositories.r1.owner", "unknown owner 'carol'"),
    ("unknown-group", BASE_OWNERS + "repositories:\n  r1:\n    owner: alice\n"
     "    groups: [family]\n", 15, 14, "repositories.r1.groups[0]", "unknown group 'family'"),
    ("unknown-key", BASE_OWNERS + "repositories:\n  r1: {owner: alice, keys: [nope]}\n",
     13, 29, "repositories.r1.keys[0]", "unknown key 'nope'"),
    ("unknown-member", BASE_OWNERS + "groups:\n  g: {members: [alice, zed]}\n",
     13, 24, "groups.g.members[1]", "unknown owner 'zed'"),
    ("duplicate-name", BASE_OWNERS + "repositories:\n  r1: {owner: alice}\n"
     "  r1: {owner: bob}\n", 14, 3, "", "duplicate key 'r1' (first defined on line 13)"),
    ("bad-name-upper", BASE_OWNERS + "repositories:\n  Photos: {owner: alice}\n",
     13, 3, "repositories.Photos", "use lowercase letters"),
    ("bad-name-path", BASE_OWNERS + "repositories:\n  ../etc: {owner: alice}\n",
     13, 3, "repositories.../etc", "use lowercase letters"),
    ("bad-name-inject", BASE_OWNERS + "keys:\n  'a\" b':\n    owner: alice\n"
     f"    public_key: {ED}\n", 13, 3, "keys.a\" b", "use lowercase letters"),
    ("user-too-long", BASE_OWNERS + "repositories:\n"
     "  abcdefghijklmnopqrstuvwxyz0123: {owner: alice}\n",
     13, 3, "repositories.abcdefghijklmnopqrstuvwxyz0123", "over the limit of 32"),
    ("key-options", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     f"    public_key: 'command=\"sh\" {ED}'\n", 15, 17, "keys.k.public_key",
     "starts with options"),
    ("key-newline", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     f'    public_key: "{ED}\\nssh-ed25519 AAAA x"\n', 15, 17, "keys.k.public_key",
     "newline or control character"),
    ("key-garbage", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     "    public_key: ssh-ed25519 not-base64!!\n", 15, 17, "keys.k.public_key",
     "not valid base64"),
    ("key-type-mismatch", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     "    public_key: ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9r"
     "RXaF\n", 15, 17, "keys.k.public_key", "is a 'ssh-ed25519' key but the line says"),
    ("key-dsa", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     "    public_key: ssh-dss AAAAB3NzaC1kc3MAAACBAP x\n", 15, 17, "keys.k.public_key",
     "DSA keys are broken"),
    ("key-duplicate", BASE_OWNERS + f"keys:\n  k1: {{owner: alice, public_key: {ED}}}\n"
     f"  k2: {{owner: alice, public_key: {ED.replace(' a', ' other')}}}\n",
     14, 34, "keys.k2.public_key", "already defined as 'k1'"),
    ("key-owner-not-covered", BASE_OWNERS + f"keys:\n  bobkey: {{owner: bob, public_key: {ED}}}\n"
     "repositories:\n  r1: {owner: alice, keys: [bobkey]}\n",
     15, 29, "repositories.r1.keys[0]", "belongs to 'bob', who is neither the owner"),
    ("key-in-both", BASE_OWNERS + f"keys:\n  k: {{owner: alice, public_key: {ED}}}\n"
     "repositories:\n  r1: {owner: alice, keys: [k], append_only_keys: [k]}\n",
     15, 52, "repositories.r1.append_only_keys[0]", "in both 'keys' and 'append_only_keys'"),
    ("append-only-import", BASE_OWNERS + f"keys:\n  k: {{owner: alice, public_key: {ED}}}\n"
     "repositories:\n  r1: {owner: alice, mode: import, append_only_keys: [k]}\n",
     15, 54, "repositories.r1.append_only_keys", "cannot be append-only"),
    ("quota-import", BASE_OWNERS + f"keys:\n  k: {{owner: alice, public_key: {ED}}}\n"
     "repositories:\n  r1: {owner: alice, mode: import, keys: [k], quota: 20G}\n",
     15, 54, "repositories.r1.quota", "no quota limits"),
    ("quota-syntax", BASE_OWNERS + "repositories:\n  r1: {owner: alice, quota: 500GB}\n",
     13, 29, "repositories.r1.quota", "500G, 1.5T"),
    ("quota-zero", BASE_OWNERS + "repositories:\n  r1: {owner: alice, quota: '0'}\n",
     13, 29, "repositories.r1.quota", "below borg's minimum storage quota of 10M"),
    ("quota-small", BASE_OWNERS + "repositories:\n  r1: {owner: alice, quota: 9.5M}\n",
     13, 29, "repositories.r1.quota", "below borg's minimum storage quota of 10M"),
    ("duration", BASE_OWNERS + "repositories:\n  r1: {owner: alice, stale_after: 2 days}\n",
     13, 35, "repositories.r1.stale_after", "90s, 30m, 26h, 3d, 2w"),
    ("mode", BASE_OWNERS + "repositories:\n  r1: {owner: alice, mode: rw}\n",
     13, 28, "repositories.r1.mode", "'borg', 'import', 'export' or 'disabled'"),
    ("pin-low", BASE_OWNERS + "repositories:\n  r1: {owner: alice, uid: 999}\n",
     13, 27, "repositories.r1.uid", "below 1000"),
    ("pin-twice", BASE_OWNERS + "repositories:\n  r1: {owner: alice, uid: 25000}\n"
     "  r2: {owner: alice, uid: 25000}\n", 14, 27, "repositories.r2.uid",
     "already pinned by repository 'r1'"),
    ("from-host-bits", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     f"    public_key: {ED}\n    from: [10.0.0.1/8]\n", 16, 12, "keys.k.from[0]",
     "has host bits set"),
    ("from-newline", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     f"    public_key: {ED}\n    from: [\"10.0.0.1\\n\"]\n", 16, 12, "keys.k.from[0]",
     "a newline or a control character"),
    ("from-network-newline", BASE_OWNERS + "keys:\n  k:\n    owner: alice\n"
     f"    public_key: {ED}\n    from: [\"10.0.0.0/8\\n\"]\n", 16, 12, "keys.k.from[0]",
     "a newline or a control character"),
    ("unknown-section", "owners:\n  alice: {}\nnotify:\n  smtp_password_env: X\n",
     11, 1, "notify", "unknown field 'notify'"),
]


@pytest.mark.parametrize(("body", "line", "col", "path", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule(tmp_path: Path, body: str, line: int, col: int, path: str, fragment: str) -> None:
    expect(problems(tmp_path, body), line, col, path, fragment)


def test_uid_range_below_1000(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE_OWNERS, uid_range="[500, 600]")
    expect(found, 7, 37, "server.users.uid_range", "uids below 1000 belong to the system")


def test_secret_in_server_block_is_refused_with_advice(tmp_path: Path) -> None:
    path = write_config(tmp_path, BASE_OWNERS)
    text = path.read_text().replace("  ssh_host: 127.0.0.1\n",
                                    "  ssh_host: 127.0.0.1\n  bind_password: hunter2\n")
    path.write_text(text)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    message = str(info.value)
    assert f"{path}:5:3: server.bind_password: 'bind_password' looks like a secret" in message
    assert "bind_password_env" in message and "hunter2" not in message


def test_rsa_policy(tmp_path: Path) -> None:
    small = ssh_keygen(tmp_path / "small", "rsa", 2048)
    big = ssh_keygen(tmp_path / "big", "rsa", 3072)
    body = BASE_OWNERS + f"keys:\n  small: {{owner: alice, public_key: {small}}}\n" \
                         f"  big: {{owner: alice, public_key: {big}}}\n"
    found = problems(tmp_path, body)
    expect(found, 13, 37, "keys.small.public_key", "RSA key of 2048 bits is below")
    assert not any("keys.big" in p for p in found)


def test_a_key_in_another_text_than_openssh_writes_is_refused_where_it_stands(
        tmp_path: Path) -> None:
    """bob's key is alice's with a zero byte before the RSA exponent: sshd takes it as the
    same key, Hive compares texts (the listed-twice check, which connections a revocation
    ends). Refused at its own position, so the two are never both in a valid file."""
    kind, blob, _ = ssh_keygen(tmp_path / "big", "rsa", 3072).split(" ", 2)
    raw = base64.b64decode(blob)
    name_end = 4 + int.from_bytes(raw[:4], "big")
    exponent = int.from_bytes(raw[name_end:name_end + 4], "big")
    padded = raw[:name_end] + (exponent + 1).to_bytes(4, "big") + b"\0" + raw[name_end + 4:]
    body = BASE_OWNERS + f"keys:\n  alice-rsa: {{owner: alice, public_key: {kind} {blob}}}\n" \
                         f"  bob-rsa: {{owner: bob, public_key: {kind} " \
                         f"{base64.b64encode(padded).decode()}}}\n"
    found = problems(tmp_path, body)
    expect(found, 14, 37, "keys.bob-rsa.public_key", "as ssh-keygen wrote it")
    assert len(found) == 1, found


def test_a_key_with_a_newline_or_escape_is_shown_escaped(tmp_path: Path) -> None:
    """Problems name the path of mapping keys; a key holding a newline, a code fence or a
    terminal escape must not print lines of its own in a plan a pull request shows."""
    key = "x\n```\n\nNo changes. The server matches hive.yaml.\n\u001b[2K<!--"
    found = problems(tmp_path, BASE_OWNERS + "repositories:\n  " + json.dumps(key)
                     + ": {owner: alice}\n")
    assert len(found) == 1 and "\n" not in found[0] and "\x1b" not in found[0], found
    assert found[0].startswith(f"13:3: repositories.{json.dumps(key)}: "), found


def test_accepted_key_types(tmp_path: Path) -> None:
    ecdsa = ssh_keygen(tmp_path / "ec", "ecdsa", 384)

    def wire(*fields: bytes) -> str:
        return base64.b64encode(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).decode()

    sk = "sk-ssh-ed25519@openssh.com " + wire(b"sk-ssh-ed25519@openssh.com", b"k" * 32,
                                               b"ssh:") + " yubikey"
    body = BASE_OWNERS + f"keys:\n  ec: {{owner: alice, public_key: {ecdsa}}}\n" \
                         f"  sk: {{owner: alice, public_key: {sk}}}\n" \
                         f"  ed: {{owner: alice, public_key: {ED}}}\n"
    assert problems(tmp_path, body) == []


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    body = BASE_OWNERS + "repositories:\n  r1: {owner: carol, keys: [x]}\n" \
                         "  r2: {owner: dave, groups: [nope]}\n"
    found = problems(tmp_path, body)
    assert len(found) == 4, found


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    found = problems(tmp_path, "owners:\n  alice: {\n")
    assert found and found[0].startswith("11:1: YAML syntax:"), found


def test_group_members_cover_keys(tmp_path: Path) -> None:
    body = BASE_OWNERS + "groups:\n  fam: {members: [alice, bob]}\n" \
        f"keys:\n  bobkey: {{owner: bob, public_key: {ED2}}}\n" \
        "repositories:\n  r1: {owner: alice, groups: [fam], append_only_keys: [bobkey]}\n"
    assert problems(tmp_path, body) == []


@pytest.mark.parametrize("name", ["hive.yaml.example", "deploy/hive.yaml"])
def test_example_files_validate(name: str) -> None:
    root = Path(__file__).resolve().parent.parent
    result = hive("validate", "-f", str(root / name))
    assert result.returncode == 0, result.stderr
    assert "valid (4 repositories" in result.stdout


def test_validate_cli_exit_code_and_json(tmp_path: Path) -> None:
    path = write_config(tmp_path, BASE_OWNERS + "repositories:\n  r1: {owner: carol}\n")
    text = hive("validate", "-f", str(path))
    assert text.returncode == 1
    assert f"{path}:13:15: repositories.r1.owner: unknown owner 'carol'" in text.stderr
    as_json = hive("validate", "-f", str(path), "--output", "json")
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.returncode == 1
    assert lines[0]["type"] == "version" and lines[-1] == {
        "type": "summary", "valid": False, "problems": 1, "add": 0, "change": 0, "remove": 0,
        "errors": 1}
    assert lines[1]["line"] == 13 and lines[1]["path"] == "repositories.r1.owner"


def test_schema_file_is_not_stale() -> None:
    root = Path(__file__).resolve().parent.parent
    result = hive("schema", "--check", str(root / "schemas" / "hive.schema.json"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = hive("plan", "-f", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "file not found" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_1_not_2(tmp_path: Path) -> None:
    result = hive("plan", "--no-such-option")
    assert result.returncode == 1
    assert "No such option" in result.stderr


def test_production_example_differs_from_the_example_only_in_paths() -> None:
    root = Path(__file__).resolve().parent.parent
    example = schemas.load(root / "hive.yaml.example").model_dump()
    production = schemas.load(root / "deploy" / "hive.yaml").model_dump()
    for data in (example, production):
        for field in ("repos_root", "state_dir"):
            data["server"].pop(field)
        data["server"]["identity"].pop("files_dir")
    assert example == production


@pytest.mark.parametrize(("field", "value"), [("borg_command", '"borg\\n"'),
                                              ("rrsync_command", '"rrsync -x"'),
                                              ("repos_root", '"/srv/repos\\n"')])
def test_values_written_into_forced_commands_refuse_newlines_and_spaces(
        tmp_path: Path, field: str, value: str) -> None:
    path = write_config(tmp_path, BASE_OWNERS)
    text = path.read_text()
    if field == "repos_root":
        text = text.replace("  repos_root: ./repos\n", f"  repos_root: {value}\n")
    else:
        text = text.replace("  ssh_host: 127.0.0.1\n",
                            f"  ssh_host: 127.0.0.1\n  {field}: {value}\n")
    path.write_text(text)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    assert f"server.{field}: " in str(info.value)



def test_anchors_merge_keys_and_yaml_booleans(tmp_path: Path) -> None:
    body = BASE_OWNERS + ("x-defaults: &d {owner: alice, quota: 100G}\n"  # line 12
                          "repositories:\n"
                          "  r1:\n"
                          "    <<: *d\n"
                          "    owner: bob\n"                             # overrides, no dup
                          "  yes: {owner: alice}\n")                     # line 17
    found = problems(tmp_path, body)
    assert found == ["17:3: repositories.true: YAML reads this as true (bool), not a name "
                     "or text: put it in quotes"]
    config = schemas.load_text(write_config(tmp_path, body.replace("  yes:", "  'yes':"))
                               .read_text(), "hive.yaml", tmp_path)
    assert config.repositories["r1"].owner == "bob"
    assert config.repositories["r1"].quota == "100G"


def test_a_bad_date_is_reported_once(tmp_path: Path) -> None:
    body = BASE_OWNERS + f"keys:\n  k: {{owner: alice, public_key: {ED}, expires: soon}}\n"
    found = problems(tmp_path, body)
    assert len(found) == 1 and found[0].startswith("13:")


def test_alias_bomb_is_refused_not_expanded(tmp_path: Path) -> None:
    """Nine levels of nine aliases would be 387 million values: refuse, in bounded time."""
    lines = ['x-a0: &a0 "lol"']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"x-a{level}: &a{level} [{refs}]")
    found = problems(tmp_path, BASE_OWNERS + "\n".join(lines) + "\n")
    assert len(found) == 1 and "aliases (*name) expanding each other" in found[0], found



def test_descriptions_and_from_lists_are_bounded(tmp_path: Path) -> None:
    """A description reaches reports, alerts and terminals: bounded, and no escape
    sequences (newlines are fine); a from: list long enough to push the key line past
    what sshd reads would silently disable the key."""
    froms = ", ".join(f"10.0.{i}.1" for i in range(65))
    path = write_config(tmp_path, f"""\
        owners:
          alice: {{description: "a\\u001b[2Jb"}}
          bob: {{description: "line one\\nline two"}}
        keys:
          k: {{owner: alice, public_key: {ED}, from: [{froms}]}}
        repositories:
          r: {{owner: alice, description: {"x" * 1001}}}
        """)
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    found = [str(p).removeprefix(f"{path}:") for p in info.value.problems]
    assert found == [
        "10:24: owners.alice.description: holds a control character (an escape sequence, "
        "say); write plain text",
        "13:123: keys.k.from: has 65 entries; at most 64 are allowed here (for from:, a "
        "network such as 192.168.1.0/24 covers many addresses)",
        "15:34: repositories.r.description: is 1,001 characters long; a description has "
        "at most 1,000"], found
    fixed = path.read_text().replace("\\u001b", "").replace("x" * 1001, "x" * 1000)
    path.write_text(fixed.replace(froms, froms.rsplit(", ", 1)[0]))
    config = schemas.load(path)
    assert config.owners["bob"].description == "line one\nline two"


def test_a_dn_holds_no_line_break(tmp_path: Path) -> None:
    """A DN is one line: a newline in it is never what LDAP means, and a block scalar
    that holds one could carry text that looks like a key to a line scanner."""
    identity = ("{backend: ldap, ldap: {url: 'ldap://127.0.0.1', base_dn: \"dc=x\\n  "
                "state_dir: /old\", bind_dn: 'cn=h,dc=x', bind_password_env: PW}}")
    found = problems(tmp_path, "owners: {}\n", identity=identity)
    assert [p for p in found if "server.identity.ldap.base_dn" in p], found


@pytest.mark.parametrize("where", ["comment", "value"])
def test_a_bidi_control_character_is_refused_where_it_stands(tmp_path: Path,
                                                              where: str) -> None:
    """U+202E in a comment or a plain value makes a review show other text than Hive
    reads (Trojan Source): refused at its line and column, like any YAML error."""
    rlo = "\u202e"
    owner = (f"  alice: {{}}  # ok {rlo}\n" if where == "comment"
             else f"  alice: {{description: x{rlo}y}}\n")
    path = write_config(tmp_path, "owners:\n" + owner + "repositories: {}\n")
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    [problem] = info.value.problems
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if rlo in text)
    column = path.read_text().splitlines()[line - 1].index(rlo) + 1
    assert (problem.line, problem.column) == (line, column), str(problem)
    assert "U+202E" in str(problem) and "review" in str(problem)
    path.write_text(path.read_text().replace(rlo, ""))
    assert schemas.load(path).owners["alice"] is not None
