"""schemas/sshkeys.py: the one-regex path for the usual ed25519 key gives what the general
parser gives, for valid keys and for every near miss."""

from __future__ import annotations

import base64
import random
import re

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
