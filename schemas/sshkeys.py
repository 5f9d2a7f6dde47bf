"""Parse and police OpenSSH public keys before they reach an authorized_keys line.

A public key in hive.yaml ends up on a line sshd trusts, so it is decoded, not just matched
with a regex: the base64 blob must carry the same type name as the text, RSA keys are
measured, and anything that could add options or a second line is refused.

A key must also be in the one text OpenSSH writes for it (the end of parse_public_key).
sshd reads an RSA key whose numbers carry leading zero bytes as the same key, but names a
connection's key in its own form (ExposeAuthInfo), and Hive compares texts: the blob
decides which open connections a revocation ends (reconciler/sessions.py), whether a key
is listed twice (schemas/checks.py) and the fingerprint the report shows. Another text of
one key would slip past all three. Other odd texts (a compressed ECDSA point, bytes after
the key, stray base64 bits) sshd refuses, so they would never log in: refused here too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

# Types Hive accepts, with the human reason for the ones it refuses.
ACCEPTED_TYPES = {
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
}
REFUSED_TYPES = {
    "ssh-dss": "DSA keys are broken and disabled in OpenSSH; generate an ed25519 key "
               "(ssh-keygen -t ed25519)",
}
MIN_RSA_BITS = 3072

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadKey(ValueError):
    """A public key that must not reach authorized_keys; the message says why."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    type: str
    blob: str  # base64 text, exactly as OpenSSH prints it
    comment: str
    bits: int | None

    @property
    def fingerprint(self) -> str:
        """SHA256 fingerprint as `ssh-keygen -lf` prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _read_string(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise BadKey("the key data is truncated")
    length = int.from_bytes(data[offset:offset + 4], "big")
    end = offset + 4 + length
    if end > len(data):
        raise BadKey("the key data is truncated")
    return data[offset + 4:end], end


# The usual key, `ssh-ed25519 <68 base64 characters> comment`, read with one regex: the
# blob of every ed25519 key starts with the same 25 characters (the length-prefixed type
# name and the point's length, 32), and its 26th carries two zero bits of that length, so
# exactly the blobs the general path below accepts with nothing after the point match.
# The comment is printable ASCII without leading or trailing spaces, so it is the third
# part the general path would split off. Anything else takes the general path.
_ED25519 = re.compile(r"ssh-ed25519 (AAAAC3NzaC1lZDI1NTE5AAAAI[A-P][A-Za-z0-9+/]{42})"
                      r"(?: ([!-~](?:[ -~]*[!-~])?))?")


# Large enough for every key of a 100,000-key hive.yaml: validation, the whole-file checks,
# the key lines and the report ask for the same keys, and a smaller cache would be emptied
# by its own first pass before the second one comes.
@lru_cache(maxsize=2**18)
def parse_public_key(text: str) -> PublicKey:
    """Parse one `type base64 [comment]` key, or raise BadKey saying what is wrong."""
    usual = _ED25519.fullmatch(text)
    if usual is not None:
        if usual[1] in _SMALL_ORDER_TEXTS:
            raise BadKey(_SMALL_ORDER_REASON)
        return PublicKey("ssh-ed25519", usual[1], usual[2] or "", None)
    if _CONTROL.search(text):
        raise BadKey("the key contains a newline or control character; "
                        "paste exactly one key on one line")
    parts = text.strip().split(None, 2)
    if not parts:
        raise BadKey("the key is empty")
    key_type = parts[0]
    if key_type in REFUSED_TYPES:
        raise BadKey(f"{key_type} is not allowed: {REFUSED_TYPES[key_type]}")
    if key_type not in ACCEPTED_TYPES:
        if key_type.endswith("-cert-v01@openssh.com"):
            raise BadKey("certificates are not supported; give the plain public key")
        if "=" in key_type or "," in key_type or '"' in text.split(" ssh-")[0]:
            raise BadKey("the key starts with options; give only 'type base64 comment' "
                            "and use the key's 'from:' and 'expires:' fields instead")
        raise BadKey(f"unknown key type {key_type!r}; use ssh-ed25519, ecdsa-sha2-nistp*, "
                        "sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com "
                        f"or ssh-rsa of at least {MIN_RSA_BITS} bits")
    if len(parts) < 2:
        raise BadKey("the key has a type but no key data")
    blob_text = parts[1]
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("the key data is not valid base64; copy the whole .pub file line") \
            from None
    inner_type, offset = _read_string(blob, 0)
    if inner_type.decode("ascii", "replace") != key_type:
        raise BadKey(f"the key data is a {inner_type.decode('ascii', 'replace')!r} key "
                        f"but the line says {key_type!r}")
    bits = None
    if key_type == "ssh-rsa":
        exponent, offset = _read_string(blob, offset)
        modulus, offset = _read_string(blob, offset)
        if _mpint(exponent) != exponent or _mpint(modulus) != modulus:
            raise BadKey("the RSA key's numbers are not written as OpenSSH writes them "
                         "(extra leading zero bytes, or a negative number); "
                         + _AS_WRITTEN)
        e = int.from_bytes(exponent, "big")
        if e < 3 or e % 2 == 0 or e.bit_length() > 64:
            # e = 1: any padded hash is its own signature, and sshd checks no more
            raise BadKey(f"RSA key with public exponent {e}: with it, signatures can be "
                         "made without the private key; generate a new key (ssh-keygen "
                         "-t ed25519)")
        bits = int.from_bytes(modulus, "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise BadKey(f"RSA key of {bits} bits is below the policy of {MIN_RSA_BITS}; "
                            "generate an ed25519 key (ssh-keygen -t ed25519)")
    elif key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        point, offset = _read_string(blob, offset)
        if len(point) != 32:
            raise BadKey("the ed25519 key data has the wrong length")
        if point[:31] + bytes([point[31] & 0x7F]) in _SMALL_ORDER:
            raise BadKey(_SMALL_ORDER_REASON)
    else:  # ecdsa-sha2-nistpN, sk-ecdsa-sha2-nistp256@openssh.com
        curve, offset = _read_string(blob, offset)
        point, offset = _read_string(blob, offset)
        if curve != _EC_CURVES[key_type]:
            raise BadKey(f"the key data names curve {curve.decode('ascii', 'replace')!r} "
                         f"but the line says {key_type!r}")
        if len(point) != _EC_POINT_SIZES[curve] or point[:1] != b"\x04":
            raise BadKey("the ECDSA point is not in the uncompressed form OpenSSH writes; "
                         + _AS_WRITTEN)
    if key_type.startswith("sk-"):
        _application, offset = _read_string(blob, offset)  # "ssh:" usually
    if offset != len(blob):
        raise BadKey(f"the key data has {len(blob) - offset} bytes after the key, which "
                     f"sshd refuses; {_AS_WRITTEN}")
    if base64.b64encode(blob).decode("ascii") != blob_text:
        raise BadKey("the key's base64 is not in its standard form (stray bits at the "
                     f"end); {_AS_WRITTEN}")
    return PublicKey(key_type, blob_text, parts[2] if len(parts) > 2 else "", bits)


_AS_WRITTEN = "paste the .pub file's line as ssh-keygen wrote it"
_EC_CURVES = {"ecdsa-sha2-nistp256": b"nistp256", "ecdsa-sha2-nistp384": b"nistp384",
              "ecdsa-sha2-nistp521": b"nistp521",
              "sk-ecdsa-sha2-nistp256@openssh.com": b"nistp256"}
# curve name in an ECDSA blob -> size of its point: 0x04, then x and y
_EC_POINT_SIZES = {b"nistp256": 1 + 2 * 32, b"nistp384": 1 + 2 * 48, b"nistp521": 1 + 2 * 66}


# The ed25519 points of small order, compared without the sign bit (libsodium's list,
# checked by multiplying each by 8): OpenSSH 9.2 takes such a point as a public key, and
# then a signature anyone can write (R, the identity, and S = 0 for the point 1) verifies
# for any message. tests/test_sshkeys.py shows ssh-keygen accepting one.
_SMALL_ORDER = frozenset(bytes.fromhex(point) for point in (
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0100000000000000000000000000000000000000000000000000000000000000",  # 1, the identity
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1, order 2
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p = 0
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p + 1 = 1
))
# ... as the blob texts the one-regex path reads: with the sign bit clear and set
_SMALL_ORDER_TEXTS = frozenset(
    base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + point[:31]
                     + bytes([point[31] | sign])).decode("ascii")
    for point in _SMALL_ORDER for sign in (0, 0x80))
_SMALL_ORDER_REASON = ("this ed25519 key is a point of small order, for which signatures "
                       f"can be made without any private key; it is no real key: {_AS_WRITTEN}")


def _mpint(number: bytes) -> bytes:
    """An SSH mpint as OpenSSH writes a positive number: no leading zero bytes, but one
    where the first byte's high bit would make it negative."""
    number = number.lstrip(b"\x00")
    return b"\x00" + number if number[:1] >= b"\x80" else number
