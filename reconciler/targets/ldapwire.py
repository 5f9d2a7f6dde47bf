"""Reading LDAP search result entries straight from their BER bytes, and writing add
requests the same way.

Observing the directory reads every posixAccount and posixGroup in it: at 5,000
repositories 10,000 entries, at 50,000 a hundred thousand. ldap3 (the library Hive talks
LDAP with) turns each received message into a generic decoded tree and then into its
formatted response dict -- a case-insensitive dict per entry, every value run through its
encoding guesser -- and that pure-Python work was nearly all of an LDAP plan's extra cost.

So for the one search that reads the whole directory, ldap3 still builds and sends the
request (filter encoding, paging control), owns the socket, TLS and timeouts, and splits
the byte stream into messages; this module only decodes a SearchResultEntry (RFC 4511
4.5.2), the single message shape that comes back by the thousand, into `(dn, {attribute:
[values]})`. Every other message (the final SearchResultDone with its paging cookie and
result code, references, notices of disconnection) still goes through ldap3's decoder.

A first apply writes two entries per repository, 100,000 adds at 50,000 repositories, and
ldap3 spends most of an add's CPU copying the attributes and building and encoding pyasn1
objects. add_request() encodes the same AddRequest (RFC 4511 4.7) directly; the bytes are
the ones ldap3 sends, byte for byte (tests/test_ldapwire.py compares them), and the answer
is still decoded by ldap3.

Decoding fails closed: a length that runs past its container or an unexpected tag raises
WireError instead of yielding a partial entry, since a missing attribute could make a used
uid look free. Values are read as ldap3 reads them: UTF-8 (what RFC 4517 directory strings
are), and a value that is not falls back to latin-1, so a foreign entry with an old gecos
does not stop a plan and the text shown is the one ldap3 showed.
"""

from __future__ import annotations

from typing import Any

SEQUENCE, SET, OCTET_STRING, INTEGER = 0x30, 0x31, 0x04, 0x02
SEARCH_RESULT_ENTRY = 0x64  # [APPLICATION 4], constructed
ADD_REQUEST = 0x68  # [APPLICATION 8], constructed


class WireError(ValueError):
    """A message that is not well-formed BER for what it claims to be."""


def _header(data: bytes, pos: int, tag: int, limit: int) -> tuple[int, int]:
    """Check the tag at pos, read its definite length; return (content start, end)."""
    if pos + 2 > limit or data[pos] != tag:
        raise WireError(f"expected tag 0x{tag:02x} at byte {pos}")
    first = data[pos + 1]
    if first < 0x80:
        start = pos + 2
        end = start + first
    else:
        size = first & 0x7F
        if not 1 <= size <= 4:  # 0 is the indefinite form, which LDAP forbids (RFC 4511 5.1)
            raise WireError(f"unsupported length form at byte {pos + 1}")
        start = pos + 2 + size
        end = start + int.from_bytes(data[pos + 2:start], "big")
    if end > limit:
        raise WireError(f"a length at byte {pos + 1} runs past its container")
    return start, end


def message_id(data: bytes) -> tuple[int, int]:
    """(messageID, where protocolOp starts) of one complete LDAPMessage."""
    start, end = _header(data, 0, SEQUENCE, len(data))
    if end != len(data):
        raise WireError("trailing bytes after the message")
    id_start, id_end = _header(data, start, INTEGER, end)
    if not 1 <= id_end - id_start <= 4:
        raise WireError("bad messageID")
    return int.from_bytes(data[id_start:id_end], "big"), id_end


def search_entry(data: bytes, op: int,
                 names: dict[str, str]) -> tuple[str, dict[str, list[str]]] | None:
    """The (dn, attributes) of the SearchResultEntry at `op`, or None for another message.

    `names` maps attribute types to how the caller spells them: servers may answer in any
    case (LDAP attribute types are case-insensitive), the caller looks up one spelling;
    it holds both the lower-cased and the caller's spelling, so the usual answer needs no
    lower(). Types not in `names` keep the server's spelling.

    The inner loops read short-form lengths inline (every value of a posix entry is
    shorter than 128 bytes) and leave every other form to _header: this function runs
    for every entry of the directory.
    """
    try:
        if data[op] != SEARCH_RESULT_ENTRY:
            return None
        start, entry_end = _header(data, op, SEARCH_RESULT_ENTRY, len(data))
        dn_start, dn_end = _header(data, start, OCTET_STRING, entry_end)
        pos, list_end = _header(data, dn_end, SEQUENCE, entry_end)
        if list_end != entry_end:
            raise WireError("bytes after the attribute list of an entry")
        attributes: dict[str, list[str]] = {}
        dn = _text(data[dn_start:dn_end])
        while pos < list_end:
            if (data[pos] == SEQUENCE and data[pos + 1] < 0x80
                    and data[pos + 2] == OCTET_STRING and data[pos + 3] < 0x80):
                # the usual short attribute, read inline
                attr_end = pos + 2 + data[pos + 1]
                type_start = pos + 4
                type_end = type_start + data[pos + 3]
                if attr_end > list_end or type_end > attr_end:
                    raise WireError(f"a length at byte {pos + 1} runs past its container")
            else:
                pos, attr_end = _header(data, pos, SEQUENCE, list_end)
                type_start, type_end = _header(data, pos, OCTET_STRING, attr_end)
            name = _text(data[type_start:type_end])
            pos, set_end = _header(data, type_end, SET, attr_end)
            if set_end != attr_end:
                raise WireError("bytes after the values of an attribute")
            values = []
            while pos < set_end:
                length = data[pos + 1]
                if data[pos] == OCTET_STRING and length < 0x80:
                    value_start = pos + 2
                    pos = value_start + length
                    if pos > set_end:
                        raise WireError(f"a length at byte {value_start - 1} runs past its "
                                        "container")
                else:
                    value_start, pos = _header(data, pos, OCTET_STRING, set_end)
                raw = data[value_start:pos]
                try:
                    values.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    values.append(raw.decode("latin-1"))  # as _text
            canonical = names.get(name)
            attributes[canonical or names.get(name.lower(), name)] = values
        return dn, attributes
    except IndexError:  # a length that points past the message (the checks make it rare)
        raise WireError("a length runs past the end of the message") from None


def spellings(attributes: list[str]) -> dict[str, str]:
    """The `names` argument of search_entry for these attribute types."""
    return {**{a.lower(): a for a in attributes}, **{a: a for a in attributes}}


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # ldap3's first fallback encoding, which never fails


def add_request(number: int, dn: str, attributes: dict[str, Any]) -> bytes:
    """The LDAPMessage of an AddRequest, as ldap3's Connection.add encodes it.

    Values are what ldap3 accepts and converts the same way (ldap3.utils.conv.to_raw):
    str as UTF-8, int as its decimal text, bytes as they are; a single value or a list.
    """
    parts = []
    for name, given in attributes.items():
        values = given if isinstance(given, (list, tuple)) else [given]
        encoded = b"".join(_tlv(OCTET_STRING, _raw(value)) for value in values)
        parts.append(_tlv(SEQUENCE, _tlv(OCTET_STRING, name.encode("utf-8"))
                          + _tlv(SET, encoded)))
    request = _tlv(ADD_REQUEST, _tlv(OCTET_STRING, dn.encode("utf-8"))
                   + _tlv(SEQUENCE, b"".join(parts)))
    if not 0 < number < 2**31:
        raise ValueError(f"messageID {number} out of range")
    return _tlv(SEQUENCE, _tlv(INTEGER, number.to_bytes(number.bit_length() // 8 + 1, "big"))
                + request)


def _raw(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"an LDAP value must be str, int or bytes, not {type(value).__name__}")
    return str(value).encode("utf-8")


def _tlv(tag: int, body: bytes) -> bytes:
    """Tag, definite length in its shortest form, body."""
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body
