"""Hive's own decoding of search result entries (reconciler/targets/ldapwire.py), checked
against ldap3's decoder: on the bytes a real slapd sends, and on every corruption of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from conftest import write_config
from ldap3.operation.add import add_operation
from ldap3.operation.search import search_result_entry_response_to_dict_fast
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.utils.asn1 import decode_message_fast
from slapd import ADMIN_DN, ADMIN_PW, GROUPS, HIVE_DN, HIVE_PW, PEOPLE, SUFFIX, Slapd

from reconciler.desired import Facts
from reconciler.inventory import Inventory
from reconciler.targets import TargetError, ldap_identity
from reconciler.targets.ldap_identity import (
    ATTRIBUTE_NAMES,
    SEARCH_ATTRIBUTES,
    SEARCH_FILTER,
    LdapIdentity,
    marker,
    parse_entries,
)
from reconciler.targets.ldapwire import (
    WireError,
    _text,
    add_request,
    message_id,
    search_entry,
)
from schemas.loader import load


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd holding every shape of entry the observe search meets."""
    root = tmp_path_factory.mktemp("wire") / "slapd"
    root.mkdir()
    server = Slapd(root).start()
    try:  # a failed setup must not leave slapd running
        add = server.add
        add(f"ou=other,{SUFFIX}", objectClass=["organizationalUnit"], ou="other")
        for i in range(7):  # Hive's own: user + private group
            name = f"bh-r{i}"
            add(f"uid={name},{PEOPLE}", objectClass=["account", "posixAccount", "shadowAccount"],
                uid=name, cn=name, uidNumber=20000 + i, gidNumber=20000 + i,
                homeDirectory=f"/srv/{name}", loginShell="/bin/sh", gecos=f"Hive repository r{i}",
                description=marker("test1", f"r{i}"), **({"shadowExpire": 1} if i == 3 else {}))
            add(f"cn={name},{GROUPS}", objectClass=["posixGroup"], cn=name,
                gidNumber=20000 + i, description=marker("test1", f"r{i}"))
        # long values: lengths in the long form (one and two length bytes)
        add(f"uid=long,ou=other,{SUFFIX}", objectClass=["account", "posixAccount"], uid="long",
            cn=["long", "x" * 200], uidNumber=31000, gidNumber=31000,
            homeDirectory="/" + "h" * 300, gecos="g" * 130,
            description=["caf\u00e9 \u00fc\u00df \u2603 " * 40, "second value"])
        add(f"uid=bh-other,{PEOPLE}", objectClass=["account", "posixAccount"], uid="bh-other",
            cn="bh-other", uidNumber=31001, gidNumber=31001, homeDirectory="/h",
            description=marker("test2", "other"))
        add(f"cn=both,ou=other,{SUFFIX}", objectClass=["posixGroup", "posixAccount"],
            uid="both-u", cn="both", uidNumber=31002, gidNumber=31003, homeDirectory="/h")
        add(f"cn=nogid,ou=other,{SUFFIX}", objectClass=["posixGroup"], cn="nogid", gidNumber=31004,
            memberUid=["a", "b"])
        yield server
    finally:
        server.stop()


def ldap3_entries(server: Slapd) -> list[dict[str, Any]]:
    """The same search through ldap3's own decoding (what observe used before)."""
    conn = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), HIVE_DN, HIVE_PW,
                            client_strategy=ldap3.SYNC, auto_bind=True, check_names=False)
    entries = []
    for entry in conn.extend.standard.paged_search(
            SUFFIX, SEARCH_FILTER, ldap3.SUBTREE, attributes=SEARCH_ATTRIBUTES, paged_size=3):
        if entry["type"] == "searchResEntry":
            entries.append({"dn": entry["dn"], "attributes": entry["attributes"]})
    conn.unbind()
    return entries


def identity(tmp_path: Path, server: Slapd, monkeypatch: pytest.MonkeyPatch) -> LdapIdentity:
    monkeypatch.setenv("HIVE_TEST_LDAP_PW", HIVE_PW)
    cfg = write_config(tmp_path, "owners: {}\n", identity=(
        f"{{backend: ldap, ldap: {{url: '{server.url}', base_dn: '{SUFFIX}', "
        f"bind_dn: '{HIVE_DN}', bind_password_env: HIVE_TEST_LDAP_PW}}}}"))
    return LdapIdentity(load(cfg))


def canonical(entries: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """DN -> attributes, names lower-cased; ldap3 lists a requested attribute the entry
    lacks as [] (return_empty_attributes), ldapwire leaves it out: both read as absent."""
    return {e["dn"]: {k.lower(): sorted(v) for k, v in e["attributes"].items() if v}
            for e in entries}


def test_observe_reads_what_ldap3_reads(tmp_path: Path, directory: Slapd,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ldap_identity, "PAGE_SIZE", 4)  # several pages, several cookies
    target = identity(tmp_path, directory, monkeypatch)
    ours = target._paged_search(target.connect(), SUFFIX)
    theirs = ldap3_entries(directory)
    assert len(ours) == 18 and target.requests == 5
    assert canonical(ours) == canonical(theirs)
    # and the facts a plan is made from are the same
    facts_ours, facts_theirs = Facts(), Facts()
    parse_entries(ours, PEOPLE, GROUPS, "test1", facts_ours)
    parse_entries(theirs, PEOPLE, GROUPS, "test1", facts_theirs)
    assert facts_ours == facts_theirs
    assert set(facts_ours.accounts) == {f"bh-r{i}" for i in range(7)}
    assert facts_ours.accounts["bh-r3"]["locked"] is True
    assert {31000, 31001, 31002, 31003, 31004} <= set(facts_ours.ids_in_use)
    # the whole observe, through the public interface
    facts = Facts()
    target.observe(facts, Inventory())
    assert facts.accounts == facts_ours.accounts and facts.marked == facts_ours.marked


def test_a_capped_page_size_falls_back_to_small_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenLDAP refuses a page larger than size.pr (adminLimitExceeded): the search
    starts over with the small pages, and reads everything."""
    root = tmp_path / "slapd"
    root.mkdir()
    server = Slapd(root, hive_size="unlimited size.pr=3").start()
    try:
        for i in range(7):
            server.add(f"cn=g{i},{GROUPS}", objectClass=["posixGroup"], cn=f"g{i}",
                       gidNumber=30000 + i)
        monkeypatch.setattr(ldap_identity, "PAGE_SIZE", 5)
        monkeypatch.setattr(ldap_identity, "SMALL_PAGE_SIZE", 2)
        target = identity(tmp_path, server, monkeypatch)
        found = target._paged_search(target.connect(), SUFFIX)
        assert sorted(e["dn"] for e in found) == [f"cn=g{i},{GROUPS}" for i in range(7)]
        assert target.requests == 1 + 4  # the refused page, then four pages of two
        monkeypatch.setattr(ldap_identity, "SMALL_PAGE_SIZE", 4)  # refused too: an error
        with pytest.raises(TargetError, match="adminLimitExceeded"):
            target._paged_search(target.connect(), SUFFIX)
    finally:
        server.stop()


def test_a_server_that_drops_the_connection_is_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "slapd"
    root.mkdir()
    server = Slapd(root).start()
    try:
        target = identity(tmp_path, server, monkeypatch)
        conn = target.connect()
        server._terminate()
        with pytest.raises(TargetError, match=r"^LDAP: ") as failure:
            target._paged_search(conn, SUFFIX)
        assert "Traceback" not in str(failure.value)
    finally:
        server.stop()


def raw_entries(server: Slapd) -> list[bytes]:
    """The raw bytes of every message of one search, as ldap3's receiving() splits them."""
    conn = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), ADMIN_DN,
                            ADMIN_PW, client_strategy=ldap3.SYNC, auto_bind=True)
    raws: list[bytes] = []
    receiving = conn.strategy.receiving

    def keep() -> list[bytes]:
        messages = receiving()
        raws.extend(messages)
        return messages

    conn.strategy.receiving = keep
    conn.search(SUFFIX, SEARCH_FILTER, ldap3.SUBTREE, attributes=SEARCH_ATTRIBUTES)
    conn.unbind()
    return [raw for raw in raws if raw[message_id(raw)[1]] == 0x64]


def test_corrupt_entries_fail_closed_or_decode_as_ldap3_does(directory: Slapd) -> None:
    """Every single-byte change of real entries: WireError, or exactly ldap3's reading --
    never a partial entry, never another exception."""
    checked = 0
    for raw in raw_entries(directory)[-4:]:  # the long-valued, foreign and odd ones
        for pos in range(len(raw)):
            for delta in (1, 0x7F, 0x80):
                data = bytearray(raw)
                data[pos] = (data[pos] + delta) % 256
                data = bytes(data)
                try:
                    _, op = message_id(data)
                    ours = search_entry(data, op, ATTRIBUTE_NAMES)
                except WireError:
                    continue
                if ours is None:
                    continue
                theirs = search_result_entry_response_to_dict_fast(
                    decode_message_fast(data)["payload"], None, None, False)
                assert ours[0] == theirs["dn"]
                assert canonical([{"dn": "", "attributes": ours[1]}]) == canonical(
                    [{"dn": "", "attributes": {name: [_text(v) for v in values] for name, values
                                               in theirs["raw_attributes"].items()}}])
                checked += 1
    assert checked > 0  # some changes (inside values) still decode


def test_truncated_and_indefinite_lengths_are_errors() -> None:
    entry = (b"\x30\x1d\x02\x01\x02\x64\x18\x04\x03a=b\x30\x11"
             b"\x30\x0f\x04\x03uid\x31\x08\x04\x02u1\x04\x02u2")
    assert search_entry(entry, message_id(entry)[1], ATTRIBUTE_NAMES) == (
        "a=b", {"uid": ["u1", "u2"]})
    for cut in range(1, len(entry)):
        with pytest.raises(WireError):
            search_entry(entry[:cut], message_id(entry[:cut])[1], ATTRIBUTE_NAMES)
    inner = entry[:-7] + b"\x31\x09" + entry[-5:]  # the set claims a byte more than it has
    with pytest.raises(WireError, match="runs past"):
        search_entry(inner, message_id(inner)[1], ATTRIBUTE_NAMES)
    indefinite = entry[:5] + b"\x64\x80" + entry[7:]
    with pytest.raises(WireError, match="length form"):
        search_entry(indefinite, message_id(indefinite)[1], ATTRIBUTE_NAMES)
    done = b"\x30\x0c\x02\x01\x02\x65\x07\x0a\x01\x00\x04\x00\x04\x00"
    assert search_entry(done, message_id(done)[1], ATTRIBUTE_NAMES) is None


def ldap3_add(number: int, dn: str, attributes: dict[str, Any]) -> bytes:
    """The bytes ldap3's Connection.add sends (check_names=False, as Hive connects)."""
    from pyasn1.codec.ber import encoder

    message = LDAPMessage()
    message["messageID"] = MessageID(number)
    message["protocolOp"] = ProtocolOp().setComponentByName(
        "addRequest", add_operation(dn, attributes, True, None, validator=None,
                                    check_names=False))
    return bytes(encoder.encode(message))


@pytest.mark.parametrize("attributes", [
    {"objectClass": ["account", "posixAccount", "shadowAccount"], "uid": "bh-r1",
     "cn": "bh-r1", "uidNumber": 20000, "gidNumber": 20000, "homeDirectory": "/srv/bh-r1",
     "loginShell": "/bin/sh", "gecos": "Hive repository r1 (alice)",
     "description": marker("s1", "r1"), "shadowExpire": 1},
    {"objectClass": ["posixGroup"], "cn": "bh-r1", "gidNumber": 4294967295,
     "description": marker("s1", "caf\u00e9-\u2603" * 30)},  # long and non-ASCII
    {"objectClass": "posixGroup", "cn": ["a", "b" * 200], "memberUid": [],
     "gidNumber": 0, "x": b"\x00\xff", "y": "x" * 70000},  # 3-byte lengths
])
@pytest.mark.parametrize("number", [1, 127, 128, 255, 256, 65536, 2**31 - 1])
def test_add_requests_are_the_bytes_ldap3_sends(attributes: dict[str, Any],
                                                 number: int) -> None:
    dn = "uid=bh-r1,ou=people,dc=example,dc=org"
    assert add_request(number, dn, attributes) == ldap3_add(number, dn, attributes)


def test_add_values_of_another_type_are_refused() -> None:
    with pytest.raises(TypeError):
        add_request(1, "cn=x", {"flag": True})
    with pytest.raises(ValueError):
        add_request(2**31, "cn=x", {"cn": "x"})
