"""How OpenSSH reads one authorized_keys line: a port of its parser, for tests only.

Hive's own check (schemas/keyoptions.py) is an allow-list; this module is the other side,
written from OpenSSH 9.2's authfile/auth2-pubkey.c (`auth_check_authkey_line`),
sshkey.c (`sshkey_advance_past_options`), auth-options.c (`sshauthopt_parse`,
`opt_flag`, `opt_match`, `opt_dequote`) and addrmatch.c/match.c (how from= is split). It
shares no code with Hive, so a test can render lines with Hive and ask "what would sshd
see?" and compare with what Hive meant. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Key types sshkey_read knows by name (enough to find where the key starts).
KEY_TYPES = {
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-xmss@openssh.com",
}
FLAGS = ("restrict", "cert-authority", "port-forwarding", "agent-forwarding",
         "x11-forwarding", "touch-required", "verify-required", "pty", "user-rc")
NEGATABLE = set(FLAGS) - {"restrict", "cert-authority"}
VALUED = ("command", "principals", "from", "expiry-time", "environment", "permitopen",
          "permitlisten", "tunnel")
SINGLE = {"command", "principals", "from", "expiry-time", "tunnel"}


class SshdRefuses(ValueError):
    """sshd would log this line as bad and ignore it."""


@dataclass
class ParsedLine:
    key_type: str
    blob: str
    comment: str
    flags: dict[str, bool] = field(default_factory=dict)       # name -> on/off
    values: dict[str, list[str]] = field(default_factory=dict)  # name -> dequoted values

    def from_entries(self) -> list[str]:
        """from= as addr_match_list/match_pattern_list split it: on every comma."""
        (value,) = self.values["from"]
        return value.split(",")


def _advance_past_options(text: str) -> int:
    """sshkey_advance_past_options: index of the first unquoted space or tab."""
    i, quoted = 0, False
    while i < len(text) and (quoted or text[i] not in " \t"):
        if text[i] == "\\" and text[i + 1:i + 2] == '"':
            i += 1
        elif text[i] == '"':
            quoted = not quoted
        i += 1
    if i == len(text) and quoted:
        raise SshdRefuses("invalid key option string (unterminated quote)")
    return i


def _dequote(text: str, i: int) -> tuple[str, int]:
    """opt_dequote: a value in double quotes, where only \\" is an escape."""
    if text[i:i + 1] != '"':
        raise SshdRefuses("missing start quote")
    i += 1
    out = []
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and text[i + 1:i + 2] == '"':
            i += 1
        out.append(text[i])
        i += 1
    if i >= len(text):
        raise SshdRefuses("missing end quote")
    return "".join(out), i + 1


def parse_options(opts: str) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """sshauthopt_parse on the option text (everything before the key)."""
    flags: dict[str, bool] = {}
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(opts) and opts[i] not in " \t":
        rest = opts[i:].lower()
        for name in FLAGS:  # opt_flag: prefix match, "no-" where allowed
            negate = name in NEGATABLE and rest.startswith("no-")
            if rest[3 if negate else 0:].startswith(name):
                flags[name] = not negate
                i += len(name) + (3 if negate else 0)
                break
        else:
            for name in VALUED:  # opt_match: `name=` then a quoted value
                if rest.startswith(name + "="):
                    if name in SINGLE and name in values:
                        raise SshdRefuses(f"multiple {name} clauses")
                    value, i = _dequote(opts, i + len(name) + 1)
                    values.setdefault(name, []).append(value)
                    break
            else:
                raise SshdRefuses(f"unsupported option at {opts[i:]!r}")
        if i >= len(opts) or opts[i] in " \t":
            break
        if opts[i] != ",":
            raise SshdRefuses(f"unknown key option at {opts[i:]!r}")
        i += 1
        if i >= len(opts):
            raise SshdRefuses("unexpected end-of-options")
    return flags, values


def parse_line(line: str) -> ParsedLine | None:
    """One authorized_keys line as sshd reads it; None for blank and comment lines."""
    text = line.lstrip(" \t").rstrip("\n")
    if not text or text.startswith("#"):
        return None
    options = ""
    if text.split(None, 1)[0] not in KEY_TYPES:  # sshkey_read failed: options come first
        end = _advance_past_options(text)
        options, text = text[:end], text[end:].lstrip(" \t")
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise SshdRefuses(f"no key after the options: {text[:60]!r}")
    flags, values = parse_options(options)
    return ParsedLine(parts[0], parts[1], parts[2] if len(parts) > 2 else "", flags, values)
