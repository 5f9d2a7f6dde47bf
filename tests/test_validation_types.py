"""Values of the wrong YAML type, and numbers and dates out of range, are located errors.

YAML types every unquoted value itself (`2024-01-01` is a date, `yes` a bool, `!!binary`
bytes) and can hold numbers no later code expects (a 5,000-digit quota, uid 4294967295,
an expiry past the end of Python's calendar). Each must stop at validation with
FILE:LINE:COL and what to write instead, never crash a later command or half-apply.
The server block written by `write_config` takes lines 1-8, so the body starts at line 9.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import hive, write_config

import schemas
from schemas.models import EXPIRES_MAX, EXPIRES_MIN, as_utc

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9rRXaF a"
OWNERS = "owners:\n  alice: {}\n"  # lines 9-10
BIG = "9" * 5000


def problems(folder: Path, body: str) -> list[str]:
    path = write_config(folder, body)
    try:
        schemas.load(path)
    except schemas.ConfigError as exc:
        return [str(p).removeprefix(f"{path}:") for p in exc.problems]
    return []


def expect_one(found: list[str], prefix: str, *fragments: str) -> None:
    assert len(found) == 1 and found[0].startswith(prefix), found
    for fragment in fragments:
        assert fragment in found[0], found


def repo(fields: str) -> str:
    return OWNERS + "repositories:\n  r1: {owner: alice, " + fields + "}\n"  # line 12


WRONG_TYPES = [
    # (id, body, "line:col: path: ", fragments)
    ("date-as-text", repo("description: 2024-01-01"), "12:35: repositories.r1.description: ",
     ["YAML reads this as 2024-01-01 (date)", "put it in quotes"]),
    ("timestamp-as-text", repo("description: 2024-01-01T10:00:00Z"),
     "12:35: repositories.r1.description: ", ["(timestamp)", "put it in quotes"]),
    ("date-as-repository-name", OWNERS + "repositories:\n  2024-01-01: {owner: alice}\n",
     "12:3: repositories.2024-01-01: ", ["(date)", "put it in quotes"]),
    ("date-as-owner-name", "owners:\n  2024-01-01: {}\n", "10:3: owners.2024-01-01: ",
     ["(date)"]),
    ("date-as-key-name", OWNERS + f"keys:\n  2024-01-01: {{owner: alice, public_key: {ED}}}\n",
     "12:3: keys.2024-01-01: ", ["(date)"]),
    ("date-as-group-member", OWNERS + "groups:\n  g: {members: [2024-01-01]}\n",
     "12:17: groups.g.members[0]: ", ["(date)"]),
    ("date-as-owner", repo("owner: 2024-01-01").replace("owner: alice, ", ""),
     "12:15: repositories.r1.owner: ", ["(date)"]),
    ("date-as-email", "owners:\n  alice: {email: 2024-01-01}\n", "10:18: owners.alice.email: ",
     ["(date)"]),
    ("int-as-repository-name", OWNERS + "repositories:\n  1: {owner: alice}\n",
     "12:3: repositories.1: ", ["YAML reads this as 1 (int), not a name or text: put it in "
                                "quotes"]),
    ("binary-as-text", repo("description: !!binary aGVsbG8="),
     "12:35: repositories.r1.description: ", ["5 bytes (binary)"]),
    ("binary-as-name", OWNERS + "repositories:\n  !!binary cjE=: {owner: alice}\n",
     "12:3: repositories.2 bytes: ", ["(binary)"]),
    ("set-as-text", repo("description: !!set {a, b}"), "12:35: repositories.r1.description: ",
     ["a set of 2 entries (set)"]),
    ("int-as-bool", repo("protected: 1"), "12:33: repositories.r1.protected: ",
     ["1 (int), not true or false"]),
    ("text-as-int", repo("uid: '25000'"), "12:27: repositories.r1.uid: ",
     ['"25000" (text), not a whole number: write it without quotes']),
    ("float-as-int", repo("uid: 25000.0"), "12:27: repositories.r1.uid: ",
     ["25000.0 (float), not a whole number"]),
    ("bool-as-int", repo("uid: true"), "12:27: repositories.r1.uid: ",
     ["true (bool), not a whole number"]),
    ("null-as-name", OWNERS + "repositories:\n  r1: {owner: ~}\n",
     "12:15: repositories.r1.owner: ", ["null (null)"]),
    ("number-as-expiry", OWNERS + f"keys:\n  k: {{owner: alice, public_key: {ED}, "
     "expires: 1700000000}\n", "12:", ["keys.k.expires: ", "1700000000 (int), not a date"]),
    ("mapping-as-list", repo("keys: {a: b}"), "12:28: repositories.r1.keys: ",
     ["a mapping of 1 entries (mapping), not a list"]),
]


@pytest.mark.parametrize(("body", "prefix", "fragments"), [c[1:] for c in WRONG_TYPES],
                         ids=[c[0] for c in WRONG_TYPES])
def test_a_value_of_the_wrong_yaml_type_is_a_located_error(
        tmp_path: Path, body: str, prefix: str, fragments: list[str]) -> None:
    expect_one(problems(tmp_path, body), prefix, *fragments)


@pytest.mark.parametrize(("version", "fragment"), [
    ("true", "true (bool), not a whole number"), ("1.0", "1.0 (float), not a whole number"),
    ("'1'", '"1" (text), not a whole number: write it without quotes')])
def test_the_format_version_is_the_number_1(tmp_path: Path, version: str,
                                            fragment: str) -> None:
    path = write_config(tmp_path, OWNERS)
    path.write_text(path.read_text().replace("version: 1\n", f"version: {version}\n"))
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    assert str(info.value) == f"{path}:1:10: version: YAML reads this as {fragment}"


def test_a_single_value_where_a_list_belongs_says_how_to_write_it(tmp_path: Path) -> None:
    body = OWNERS + f"keys:\n  k: {{owner: alice, public_key: {ED}, from: 10.0.0.0/8}}\n"
    expect_one(problems(tmp_path, body), "12:", "keys.k.from: YAML reads this as "
               '"10.0.0.0/8" (text), not a list: write it as a list, [10.0.0.0/8]')


def test_ssh_port_as_text_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, OWNERS)
    path.write_text(path.read_text().replace("  ssh_host: 127.0.0.1\n",
                                             "  ssh_host: 127.0.0.1\n  ssh_port: '22'\n"))
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    assert str(info.value).startswith(f"{path}:5:13: server.ssh_port: YAML reads this as "
                                      '"22" (text), not a whole number')


YAML_VALUES = [
    # values PyYAML itself cannot build: they used to escape as ValueError/KeyError
    ("no-such-day", "x-a: 2024-02-30\n", "11:6: YAML: ", "day is out of range for month"),
    ("year-zero", "x-a: 0000-01-01\n", "11:6: YAML: ", "year 0 is out of range"),
    ("huge-int", f"x-a: {BIG}\n", "11:6: YAML: ", "Exceeds the limit (4300 digits)"),
    ("huge-int-as-quota", repo(f"quota: {BIG}"), "12:29: YAML: ", "(int)"),
    ("bad-offset", "x-a: 2001-12-14t21:59:43.10-99:00\n", "11:6: YAML: ", "offset"),
    ("bad-bool-tag", "x-a: !!bool maybe\n", "11:6: YAML: ", "'maybe' (bool)"),
    ("bad-int-tag", "x-a: !!int twelve\n", "11:6: YAML: ", "'twelve' (int)"),
    ("bad-float-tag", "x-a: !!float x\n", "11:6: YAML: ", "(float)"),
    ("bad-timestamp-tag", "x-a: !!timestamp soon\n", "11:6: YAML: ", "(timestamp)"),
    ("control-character", "x-a: a\x01b\n", "11:7: YAML syntax: ", "U+0001"),
    ("deep-nesting", "x-a: " + "[" * 300 + "]" * 300 + "\n", "11:69: YAML: ",
     "nested more than 64 levels"),
    # PyYAML 6.0.4's libyaml stops at 1,000 levels by itself (its own located message,
    # "exceeded maximum nesting depth"); 6.0.3 has no limit and segfaulted before Hive's.
    ("very-deep-nesting", "x-a: " + "[" * 30000 + "]" * 30000 + "\n", "11:", "nest"),
    ("alias-chain", "x-a0: &a0 [x]\n" + "".join(f"x-a{i}: &a{i} [*a{i - 1}]\n"
                                                 for i in range(1, 100)),
     "11:7: YAML: ", "counting what aliases (*name) expand to"),
]


@pytest.mark.parametrize(("body", "prefix", "fragment"), [c[1:] for c in YAML_VALUES],
                         ids=[c[0] for c in YAML_VALUES])
def test_a_value_yaml_cannot_build_is_a_located_error(
        tmp_path: Path, body: str, prefix: str, fragment: str) -> None:
    found = problems(tmp_path, OWNERS + body if body.startswith("x-") else body)
    expect_one(found, prefix, fragment)


def test_the_cli_reports_a_date_as_a_located_problem_not_an_unexpected_error(
        tmp_path: Path) -> None:
    path = write_config(tmp_path, repo("description: 2024-01-01"))
    text = hive("validate", "-f", str(path))
    assert text.returncode == 1
    assert text.stderr.startswith(f"{path}:12:35: repositories.r1.description: YAML reads "
                                  "this as 2024-01-01 (date)"), text.stderr
    as_json = hive("plan", "-f", str(path), "-o", "json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.returncode == 1 and "unexpected" not in as_json.stderr
    assert [(r["line"], r["column"]) for r in records if r["type"] == "problem"] == [(12, 35)]


# --- expires: what sshd's expiry-time and Python's calendar can both hold -------------------

def key_expiring(value: str) -> str:
    return OWNERS + f"keys:\n  k:\n    owner: alice\n    public_key: {ED}\n" \
                    f"    expires: {value}\n"  # line 15, column 14


@pytest.mark.parametrize("value", ["9999-12-31T23:00:00-12:00", "0001-01-01T00:00:00+05:00",
                                   "1969-12-31", "9000-01-01", "8999-12-31T23:59:59-12:00",
                                   "'9999-12-31T23:00:00-12:00'"])
def test_an_expiry_outside_sshds_range_is_refused(tmp_path: Path, value: str) -> None:
    expect_one(problems(tmp_path, key_expiring(value)), "15:14: keys.k.expires: ",
               "from 1970-01-01 to 8999-12-31 (UTC)")


def test_a_text_expiry_that_is_no_date_says_why(tmp_path: Path) -> None:
    expect_one(problems(tmp_path, key_expiring("'2027-13-01'")), "15:14: keys.k.expires: ",
               '"2027-13-01" is not a date or time (month value is outside')


def test_the_utc_conversion_is_total() -> None:
    aware = dt.timezone(dt.timedelta(hours=-12))
    assert as_utc(dt.datetime(9999, 12, 31, 23, tzinfo=aware)) == \
        dt.datetime.max.replace(tzinfo=dt.UTC)
    assert as_utc(dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))) == \
        dt.datetime.min.replace(tzinfo=dt.UTC)
    assert as_utc(dt.date(2027, 6, 30)) == dt.datetime(2027, 6, 30, tzinfo=dt.UTC)
    assert EXPIRES_MIN.year == 1970 and EXPIRES_MAX.year == 9000


def test_plan_writes_expiries_at_both_ends_of_the_range(tmp_path: Path) -> None:
    body = OWNERS + (f"keys:\n  k1: {{owner: alice, public_key: {ED}, "
                     "expires: 8999-12-31T12:00:00-11:00}\n"
                     "repositories:\n  r1: {owner: alice, keys: [k1]}\n")
    path = write_config(tmp_path, body)
    result = hive("plan", "-f", str(path), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert 'expiry-time=\\"89991231230000Z\\"' in result.stdout


# --- uid pins: the bounds of uid_range -------------------------------------------------------

@pytest.mark.parametrize(("uid", "fragment"), [
    ("4294967295", "above 2147483646"), ("99999999999999", "above 2147483646"),
    ("2147483647", "above 2147483646"), ("999", "below 1000"), ("-1", "below 1000")])
def test_a_pinned_uid_has_the_bounds_of_uid_range(tmp_path: Path, uid: str,
                                                  fragment: str) -> None:
    expect_one(problems(tmp_path, repo(f"uid: {uid}")), "12:27: repositories.r1.uid: ",
               fragment)


def test_pins_at_the_bounds_and_outside_uid_range_are_accepted(tmp_path: Path) -> None:
    body = OWNERS + "repositories:\n  r1: {owner: alice, uid: 2147483646}\n" \
                    "  r2: {owner: alice, uid: 1000}\n  r3: {owner: alice, uid: 60000}\n"
    assert problems(tmp_path, body) == []


# --- every number bounded ------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "prefix", "fragment"), ids=[
    "quota-5000-digits", "quota-1000P", "quota-huge", "quota-padded", "duration-5000-digits",
    "duration-huge", "duration-3651d"], argvalues=[
    (f"quota: '{BIG}'", "12:29: repositories.r1.quota: ", "5,000 characters long"),
    ("quota: 1000P", "12:29: repositories.r1.quota: ", "above the largest quota Hive takes, 999P"),
    ("quota: 999999999999999999G", "12:29: repositories.r1.quota: ", "above the largest"),
    ("quota: '0000000000000000000000001G'", "12:29: repositories.r1.quota: ",
     "characters long"),
    (f"stale_after: {BIG}w", "12:35: repositories.r1.stale_after: ", "longer than ten years"),
    ("stale_after: 99999999999999999999w", "12:35: repositories.r1.stale_after: ",
     "at most 3650d"),
    ("stale_after: 3651d", "12:35: repositories.r1.stale_after: ", "longer than ten years"),
])
def test_numbers_are_bounded_at_validation(tmp_path: Path, fields: str, prefix: str,
                                           fragment: str) -> None:
    expect_one(problems(tmp_path, repo(fields)), prefix, fragment)


def test_the_largest_quota_and_duration_are_exact(tmp_path: Path) -> None:
    body = OWNERS + "repositories:\n  r1: {owner: alice, quota: 999P, stale_after: 3650d}\n" \
                    "  r2: {owner: alice, quota: 1.1T}\n"
    path = write_config(tmp_path, body)
    config = schemas.load(path)
    assert config.repositories["r1"].quota_bytes == 999 * 10**15
    assert config.repositories["r2"].quota_bytes == 1_100_000_000_000
    assert config.stale_after_seconds("r1") == 3650 * 86400
    status = hive("status", "-f", str(path), "-o", "json")
    assert "unexpected" not in status.stderr and "Traceback" not in status.stderr, status.stderr


def test_server_numbers_are_bounded(tmp_path: Path) -> None:
    path = write_config(tmp_path, OWNERS)
    path.write_text(path.read_text().replace(
        "  ssh_host: 127.0.0.1\n",
        f"  ssh_host: 127.0.0.1\n  ssh_port: 65536\n  stale_after: {BIG}h\n"))
    with pytest.raises(schemas.ConfigError) as info:
        schemas.load(path)
    found = [str(p).removeprefix(f"{path}:") for p in info.value.problems]
    assert found[0] == "5:13: server.ssh_port: 65536 is out of range: it must be at most 65535"
    assert found[1].startswith("6:16: server.stale_after: 9999") and "ten years" in found[1]


def test_a_huge_duration_on_the_command_line_is_a_usage_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, OWNERS)
    result = hive("status", "-f", str(path), "--lock-stale-after", f"{BIG}w")
    assert result.returncode == 1 and "unexpected" not in result.stderr
    assert "--lock-stale-after" in result.stderr and "longer than ten years" in result.stderr


@pytest.mark.parametrize(("command", "option"), [
    (["apply"], "--lock-timeout"), (["rollback", "r1"], "--lock-wait"),
    (["notify"], "--wait"), (["watch"], "--flush-interval"),
    (["watch"], "--lock-check-interval")])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "-1", "ten"])
def test_seconds_options_refuse_nan_infinity_and_out_of_range(
        tmp_path: Path, command: list[str], option: str, value: str) -> None:
    """A wait of nan or inf never ends (or never starts); click's FloatRange lets nan
    through, so each such option is a usage error naming itself, before any work."""
    path = write_config(tmp_path, OWNERS)
    result = hive(*command, "-f", str(path), option, value)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Invalid value for '{option}'" in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()   # nothing ran


# --- the file itself -------------------------------------------------------------------------

def test_a_directory_as_file_is_a_located_error_with_a_hint(tmp_path: Path) -> None:
    write_config(tmp_path, OWNERS)
    for command in (["validate"], ["plan"], ["status"]):
        result = hive(*command, "-f", str(tmp_path))
        assert result.returncode == 1
        assert result.stderr.startswith(f"{tmp_path}:1:1: is a directory, not a hive.yaml "
                                        f"file; did you mean -f {tmp_path / 'hive.yaml'}?"), \
            result.stderr
    as_json = hive("validate", "-f", str(tmp_path / "repos"), "-o", "json") \
        if (tmp_path / "repos").mkdir() is None else None
    assert as_json is not None and as_json.returncode == 1
    problem = json.loads(as_json.stdout.splitlines()[1])
    assert problem["line"] == 1 and "give the file itself" in problem["message"]


def test_an_endless_or_binary_file_is_refused(tmp_path: Path) -> None:
    result = hive("validate", "-f", "/dev/zero")
    assert result.returncode == 1 and "is larger than 64 MB" in result.stderr
    latin = tmp_path / "hive.yaml"
    latin.write_bytes(b"version: 1\nx-a: caf\xe9\n")
    result = hive("validate", "-f", str(latin))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{latin}:2:9: not UTF-8 text (byte 0xe9)"), result.stderr


def test_an_email_is_at_most_254_characters(tmp_path: Path) -> None:
    """SMTP's limit; it also keeps the address pattern's work small on hostile input."""
    long = "a@" + "b." * 150 + "org"
    expect_one(problems(tmp_path, f"owners:\n  alice: {{email: '{long}'}}\n"),
               "10:18: owners.alice.email: ", "305 characters long; an e-mail address has at "
               "most 254")
    fits = "a@" + "b." * 124 + "org"
    assert problems(tmp_path, f"owners:\n  alice: {{email: '{fits}'}}\n") == []
    expect_one(problems(tmp_path, "owners:\n  alice: {email: 'a@b..org'}\n"),
               "10:18: owners.alice.email: ", "is not an e-mail address")
