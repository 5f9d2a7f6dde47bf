"""What Hive may write in front of a key on an authorized_keys line: sshd's grammar, strictly.

sshd (auth-options.c) reads the options as a comma-separated list up to the first space;
a quoted value ends at the first `"` not preceded by `\\`. `from="..."` is then split on
commas again (addrmatch.c, match.c): each entry is an address or CIDR network (getaddrinfo
with AI_NUMERICHOST) or else a host pattern with `*` and `?`, optionally negated with `!`.
So a comma, a quote, a backslash or a space inside any value changes what sshd reads, and
so does a value that a general-purpose parser reads differently from glibc: Python's
`ipaddress` accepts an IPv6 zone id (`fe80::1%anything`), and glibc reads `010.0.0.1` as
8.0.0.1 and `192.168.1` as 192.168.0.1 where Python sees a host name.

The rules here are allow-lists, not deny-lists. They are checked twice: when hive.yaml is
validated (schemas/models.py, with the file's line and column) and again on every line
reconciler/keylines.py renders, which refuses a line that does not match `KEY_LINE` in
full (fail closed: a bug or a bypassed validator cannot reach sshd).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from schemas.sshkeys import ACCEPTED_TYPES

#: Characters a from= entry may hold at all: no comma, quote, backslash, space or `%`.
_FROM_CHARS = re.compile(r"!?[A-Za-z0-9.:*?/-]{1,253}")
_HOST_PATTERN = re.compile(r"[A-Za-z0-9*?][A-Za-z0-9*?.-]*")
_PREFIX_LENGTH = re.compile(r"0|[1-9][0-9]{0,2}")
# A label glibc's inet_aton reads as a number: decimal, octal (leading 0) or hex (0x).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


@lru_cache(maxsize=1 << 16)   # every key line checks its entries again (check_key_line)
def from_entry_problem(value: str) -> str | None:
    """Why `value` may not be one entry of from="...", or None when sshd reads it as the
    address, network or host pattern it looks like."""
    if not value.isprintable() or " " in value:
        return f"{value!r} contains spaces, a newline or a control character"
    if not _FROM_CHARS.fullmatch(value):
        return (f"{value!r} may only hold letters, digits and . : * ? / - (after an optional "
                "leading !): no comma, quote, space, '%' zone id or other character, which "
                "sshd would read as more than one entry or option")
    text = value[1:] if value.startswith("!") else value
    if "/" in text:
        address, _, length = text.partition("/")
        if not _PREFIX_LENGTH.fullmatch(length):
            return f"{value!r}: the prefix length after '/' must be a number such as 24"
        try:
            ipaddress.ip_address(address)
            ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            return f"{value!r} is not a network: {exc}"
        return None
    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError as exc:
            return f"{value!r} is not an IPv6 address: {exc}"
        return None
    if all(_NUMERIC_LABEL.fullmatch(label) for label in text.split(".")):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return (f"{value!r} is not a dotted-quad address; sshd would read it as a "
                    "different one (a shortened form, or a leading 0 as octal): write all "
                    "four parts without leading zeros, a network such as 192.168.1.0/24 or "
                    "a pattern such as 192.168.1.*")
        return None
    if not _HOST_PATTERN.fullmatch(text):
        return (f"{value!r} is not an address, network (192.168.1.0/24) or host pattern "
                "(*.example.org)")
    return None


# No possessive repetition (*+, ++) or atomic group here, though each would match the same
# lines a third faster: the re module of Debian 12's Python (3.11.2) gets them wrong, and
# KEY_LINE written so accepted `command="... /r/bh-a/a "` (test_key_options.py).
#: One word of a forced command: shell-inert characters only (sh -c runs it), no quote.
COMMAND_WORD = r"[A-Za-z0-9_./+=:-]+"
#: The program: a name or absolute path; no `=` (sh would read `A=b` as an assignment).
COMMAND_PROGRAM = r"[A-Za-z0-9_./+:][A-Za-z0-9_./+:-]*"
_FROM_ENTRY_SHAPE = r"!?[A-Za-z0-9.:*?/-]{1,253}"
#: sshd's expiry-time as Hive writes it: YYYYMMDDHHMMSS in UTC.
EXPIRY_TIME = r"[0-9]{14}Z"
_TYPES = "|".join(re.escape(t) for t in sorted(ACCEPTED_TYPES))
#: A whole line: `restrict`, then from=, expiry-time= (each optional), then command=, the
#: key type, its base64 data and the `hive:<key name>` comment; single spaces, nothing else.
KEY_LINE = re.compile(
    r"restrict"
    rf'(?:,from="(?P<from>{_FROM_ENTRY_SHAPE}(?:,{_FROM_ENTRY_SHAPE})*)")?'
    rf'(?:,expiry-time="{EXPIRY_TIME}")?'
    rf',command="{COMMAND_PROGRAM}(?: {COMMAND_WORD})*"'
    rf" (?P<type>{_TYPES}) [A-Za-z0-9+/]+={{0,2}} hive:[a-z0-9][a-z0-9_.-]{{0,31}}")


_PROGRAM = re.compile(COMMAND_PROGRAM)
_WORD = re.compile(COMMAND_WORD)
_COMMAND = re.compile(f"{COMMAND_PROGRAM}(?: {COMMAND_WORD})*")


class UnsafeKeyLine(ValueError):
    """A rendered authorized_keys line that sshd might read differently from Hive."""


def from_option(entries: list[str]) -> str:
    """`from="a,b"`, checking each entry on its own (a comma inside an entry is not
    visible any more once the entries are joined)."""
    if not entries:
        raise UnsafeKeyLine("from= needs at least one entry")
    for entry in entries:
        problem = from_entry_problem(entry)
        if problem:
            raise UnsafeKeyLine(f"from=: {problem}")
    return 'from="{}"'.format(",".join(entries))


def command_option(words: list[str]) -> str:
    """`command="w1 w2 ..."`, checking each word on its own (a space inside a path would
    otherwise make two harmless-looking words): the joined words must read as exactly
    that many words of the grammar. One match for the whole command, not one per word:
    every repository's command is made on every plan."""
    command = " ".join(words)
    if words and _COMMAND.fullmatch(command) and command.count(" ") == len(words) - 1:
        return f'command="{command}"'
    if not words or not _PROGRAM.fullmatch(words[0]):
        raise UnsafeKeyLine(f"command=: {words[:1]!r} is not a program name or path")
    word = next((w for w in words[1:] if not _WORD.fullmatch(w)), command)
    raise UnsafeKeyLine(f"command=: {word!r} holds characters sh or sshd would read")


def check_key_line(line: str) -> str:
    """Return `line` if it is exactly what Hive means to write, else raise UnsafeKeyLine.

    The last line of defence: validation should already have refused anything that fails
    here, so a failure is a bug (or a bypassed validator) and the line is not written.
    """
    match = KEY_LINE.fullmatch(line)
    if match is None:
        raise UnsafeKeyLine("its options are not in the strict authorized_keys grammar")
    for entry in match["from"].split(",") if match["from"] else ():
        problem = from_entry_problem(entry)
        if problem:
            raise UnsafeKeyLine(f"from=: {problem}")
    return line
