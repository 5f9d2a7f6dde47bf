"""schemas/sshkeys.py: the one-regex path for the usual ed25519 key gives what the general
parser gives, for valid keys and for every near miss."""

from __future__ import annotations

import base64
import hashlib
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas import sshkeys

USUAL = sshkeys._ED25519
PREFIX = b"\x00\x00\x00\x0bssh-ed25519"


def outcome(text: str) -> object:
    try:
        return sshkeys.parse_public_key.__wrapped__(text)
    except sshkeys.BadKey as exc:
        return ("refused", str(exc))


def variants(rng: random.Random) -> str:
    length = rng.choice([32, 32, 32, 31, 33, 0])
    blob = PREFIX + length.to_bytes(4, "big") + rng.randbytes(length) \
        + rng.randbytes(rng.choice([0, 0, 0, 1, 3]))
    text = base64.b64encode(blob).decode()
    if rng.random() < 0.1:
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice("A/+=- .\x00é") + text[i + 1:]
    kind = rng.choice(["ssh-ed25519 ", "ssh-ed25519 ", "ssh-ed25519  ", " ssh-ed25519 ",
                       "ssh-rsa ", "ssh-ed25519\t"])
    comment = rng.choice(["", " c", " a@b", "  two", " x ", " é", " a\tb", " a  b", "\t c",
                          " ", " a b c", " ~!", " #"])
    return kind + text + comment


def test_the_usual_ed25519_key_is_read_as_the_general_parser_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    texts = [variants(rng) for _ in range(20000)]
    fast = [outcome(t) for t in texts]
    monkeypatch.setattr(sshkeys, "_ED25519", re.compile(r"(?!)"))   # the general path only
    general = [outcome(t) for t in texts]
    assert fast == general
    took_fast = sum(bool(USUAL.fullmatch(t)) for t in texts)
    assert took_fast > 300   # both paths were exercised
    assert sum(isinstance(o, tuple) for o in general) > 1000


# -- one key, one text ------------------------------------------------------------------
# OpenSSH reads some other texts of a key as the same key, but names a connection's key
# (ExposeAuthInfo), and fingerprints it, in the form it writes. Hive compares the text:
# another text of one key would keep a revoked key's connection open
# (reconciler/sessions.py) and pass the listed-twice check. So only OpenSSH's form passes.


def wire(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def fields(blob: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(blob):
        length = int.from_bytes(blob[offset:offset + 4], "big")
        out.append(blob[offset + 4:offset + 4 + length])
        offset += 4 + length
    return out


def keygen(tmp_path: Path, kind: str, bits: int) -> tuple[str, bytes]:
    path = tmp_path / f"{kind}{bits}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-b", str(bits), "-N", "", "-C", "c",
                    "-f", str(path)], check=True)
    kind_text, blob, _ = path.with_suffix(".pub").read_text().split(" ", 2)
    return kind_text, base64.b64decode(blob)


def fingerprint(tmp_path: Path, text: str) -> str:
    path = tmp_path / "other.pub"
    path.write_text(text + "\n")
    result = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True)
    return result.stdout.split(" ")[1] if result.returncode == 0 else result.stderr


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_only_the_form_openssh_writes_passes(tmp_path: Path) -> None:
    rsa_type, rsa = keygen(tmp_path, "rsa", 3072)
    ec_type, ec = keygen(tmp_path, "ecdsa", 256)
    name, exponent, modulus = fields(rsa)
    _, curve, point = fields(ec)
    compressed = bytes([2 + (point[-1] & 1)]) + point[1:33]
    for kind, blob in ((rsa_type, rsa), (ec_type, ec)):  # the standard forms pass
        parsed = sshkeys.parse_public_key(f"{kind} {b64(blob)} c")
        assert parsed.fingerprint == fingerprint(tmp_path, f"{kind} {b64(blob)}")
    same_key = {  # other texts OpenSSH reads as the very same key
        "RSA exponent with a leading zero": (rsa_type, wire(name, b"\0" + exponent, modulus)),
        "RSA modulus with two": (rsa_type, wire(name, exponent, b"\0\0" + modulus)),
    }
    for what, (kind, blob) in same_key.items():
        standard = rsa if kind == rsa_type else ec
        assert fingerprint(tmp_path, f"{kind} {b64(blob)}") == \
            fingerprint(tmp_path, f"{kind} {b64(standard)}"), what
        with pytest.raises(sshkeys.BadKey, match="as ssh-keygen wrote it"):
            sshkeys.parse_public_key.__wrapped__(f"{kind} {b64(blob)} c")
    stray = b64(ec)  # 104 bytes: the last character before "=" carries two unused bits
    assert stray.endswith("=") and not stray.endswith("==")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(stray[-2])
    stray = stray[:-2] + b64(bytes([0, 0, last | 1]))[-1] + "="
    assert base64.b64decode(stray) == ec
    refused = {
        "stray base64 bits": f"{ec_type} {stray}",
        "bytes after an RSA key": f"{rsa_type} {b64(rsa + wire(b'x'))}",
        "bytes after an ed25519 key": f"ssh-ed25519 {b64(wire(b'ssh-ed25519', b'k' * 32, b''))}",
        "a negative RSA modulus": f"{rsa_type} {b64(wire(name, exponent, modulus[1:]))}",
        "an ECDSA point of another curve":
            f"{ec_type} {b64(wire(ec_type.encode(), b'nistp384', point))}",
        "an ECDSA point compressed (sshd refuses it)":
            f"{ec_type} {b64(wire(ec_type.encode(), curve, compressed))}",
        "an sk key without its application": "sk-ssh-ed25519@openssh.com "
                                             + b64(wire(b"sk-ssh-ed25519@openssh.com", b"k" * 32)),
    }
    for what, text in refused.items():
        with pytest.raises(sshkeys.BadKey):
            sshkeys.parse_public_key.__wrapped__(text)
            pytest.fail(f"{what} passed")
    sk_ecdsa = "sk-ecdsa-sha2-nistp256@openssh.com"
    sk_blob = wire(sk_ecdsa.encode(), curve, point, b"ssh:")
    assert sshkeys.parse_public_key(f"{sk_ecdsa} {b64(sk_blob)}").type == sk_ecdsa


# -- keys anyone can sign for ----------------------------------------------------------
# OpenSSH verifies a signature against the public key it is given and asks nothing more of
# the key: with an RSA exponent of 1, or an ed25519 point of small order, a signature can
# be written without any private key. ssh-keygen -Y check-novalidate runs the same
# verification sshd runs for a login; the forged signatures below pass it.


def sshsig(public: bytes, algorithm: bytes, signature: bytes, message: bytes) -> str:
    """An armored SSHSIG (OpenSSH's PROTOCOL.sshsig) of `message`, namespace "file"."""
    blob = b"SSHSIG" + (1).to_bytes(4, "big") + wire(public) + wire(b"file") + wire(b"") \
        + wire(b"sha512") + wire(wire(algorithm, signature))
    text = b64(blob)
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    return "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) \
        + "\n-----END SSH SIGNATURE-----\n"


def openssh_verifies(tmp_path: Path, signature: str, message: bytes) -> bool:
    (tmp_path / "message.sig").write_text(signature)
    result = subprocess.run(["ssh-keygen", "-Y", "check-novalidate", "-n", "file", "-s",
                             str(tmp_path / "message.sig")], input=message,
                            capture_output=True)
    return result.returncode == 0 and b"Good" in result.stdout


def signed_data(message: bytes) -> bytes:
    return b"SSHSIG" + wire(b"file") + wire(b"") + wire(b"sha512") \
        + wire(hashlib.sha512(message).digest())


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_keys_anyone_can_sign_for_are_refused(tmp_path: Path) -> None:
    message = b"any message at all\n"
    # RSA, e = 1: the PKCS#1 v1.5 block of the hash is its own signature
    modulus = b"\0\xc3" + bytes(range(1, 256)) + b"\x07" * 128  # 3072 bits, odd
    assert int.from_bytes(modulus, "big").bit_length() == 3072
    digest_info = bytes.fromhex("3051300d060960864801650304020305000440")
    digest = hashlib.sha512(signed_data(message)).digest()
    block = b"\0\1" + b"\xff" * (384 - 3 - len(digest_info) - 64) + b"\0" + digest_info \
        + digest
    rsa_e1 = wire(b"ssh-rsa", b"\1", modulus)
    assert openssh_verifies(tmp_path, sshsig(rsa_e1, b"rsa-sha2-512", block, message),
                            message)
    with pytest.raises(sshkeys.BadKey, match="public exponent 1"):
        sshkeys.parse_public_key.__wrapped__(f"ssh-rsa {b64(rsa_e1)} x")
    for e in (b"\2", b""):  # even, or 0 (no bytes, as an mpint)
        with pytest.raises(sshkeys.BadKey, match="public exponent"):
            sshkeys.parse_public_key.__wrapped__(f"ssh-rsa {b64(wire(b'ssh-rsa', e, modulus))}")
    assert sshkeys.parse_public_key.__wrapped__(
        f"ssh-rsa {b64(wire(b'ssh-rsa', bytes([1, 0, 1]), modulus))}").bits == 3072
    # ed25519, the identity point: R = the identity, S = 0 verifies for any message
    identity = b"\1" + bytes(31)
    ed_identity = wire(b"ssh-ed25519", identity)
    assert openssh_verifies(tmp_path, sshsig(ed_identity, b"ssh-ed25519",
                                             identity + bytes(32), message), message)
    for point in sshkeys._SMALL_ORDER:
        for sign in (0, 0x80):
            blob = wire(b"ssh-ed25519", point[:31] + bytes([point[31] | sign]))
            for text in (f"ssh-ed25519 {b64(blob)} c", f"ssh-ed25519  {b64(blob)}  c",
                         f"sk-ssh-ed25519@openssh.com "
                         f"{b64(wire(b'sk-ssh-ed25519@openssh.com', fields(blob)[1], b'ssh:'))}"):
                with pytest.raises(sshkeys.BadKey, match="small order"):
                    sshkeys.parse_public_key.__wrapped__(text)
