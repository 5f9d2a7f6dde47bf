"""The hive.yaml file format: these pydantic models are its one definition.

`schemas/hive.schema.json` is generated from them (`hive schema`), `hive.yaml.example` is
checked against them, and every field's description below is what editors show. Rules that
need the whole file (references, key ownership, uid pins) live in `schemas/checks.py`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import Strict as Strictness
from pydantic_core import PydanticCustomError

from schemas.keyoptions import COMMAND_PROGRAM, from_entry_problem
from schemas.sshkeys import BadKey, parse_public_key

FORMAT_VERSION = 1

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"
Name = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN),
    Field(description="Lowercase letters, digits, '_', '.', '-'; starts with a letter or "
                      "digit; at most 32 characters."),
]
# Characters that are safe inside command="..." and as path components, with no quoting.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")
_SAFE_COMMAND = re.compile(COMMAND_PROGRAM)
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
# The domain's labels cannot hold a dot, so the match is linear: `[^@\s]+\.[^@\s]+` took
# minutes on 100,000 dots. 254 characters is SMTP's limit for a whole address.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
MAX_EMAIL = 254
QUOTA_PATTERN = r"^[0-9]+(\.[0-9]+)?[KMGTP]?$"
DURATION_PATTERN = r"^[1-9][0-9]*[smhdw]$"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Ten years: past that, "stale after" means "never", and timedelta, DuckDB intervals and
# float seconds all stay far from their limits.
MAX_DURATION = 3650 * 86400


def _number(value: int) -> str:
    """An int for a message: a 4,000-digit one is not worth printing in full."""
    if abs(value) < 10**15:
        return str(value)
    return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"


def parse_duration(text: str) -> int:
    """'26h' -> 93600 seconds; ValueError, saying what to write, for anything else or more
    than MAX_DURATION (the one rule for hive.yaml and the command line alike)."""
    if not re.fullmatch(DURATION_PATTERN.strip("^$"), text):
        raise ValueError(f"{text[:40]!r} is not a duration: use a whole number and a unit, "
                         "90s, 30m, 26h, 3d, 2w")
    if len(text) > 12 or duration_seconds(text) > MAX_DURATION:
        raise ValueError(f"{text[:40]}{'...' if len(text) > 40 else ''} is longer than ten "
                         f"years; at most {MAX_DURATION // 86400}d")
    return duration_seconds(text)


def duration_seconds(text: str) -> int:
    """'26h' -> 93600. Only for strings that passed DURATION_PATTERN."""
    return int(text[:-1]) * _DURATION_UNITS[text[-1]]


def _bounded_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN),
                     AfterValidator(_bounded_duration),
                     Field(description="A duration: a whole number and a unit, s m h d w "
                                       "(90s, 26h, 3d, 2w), at most ten years (3650d).")]
_QUOTA_FACTORS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
MIN_QUOTA = 10 * 10**6  # borg 1.x: "quota is too small ... At least 10M are required"
# Bytes, not a float: a 5,000-digit quota is float infinity to everything that divides by it.
MAX_QUOTA = 999 * 10**15
MAX_QUOTA_TEXT = 20  # "999.999999999999999P"; the text goes into every forced command
# Unix ids Hive may give: below 1000 live system users (Debian's adduser policy); above
# 2**31 - 2 tools disagree (signed 32-bit overflow), and 2**32 - 1 is (uid_t)-1, which chown
# reads as "leave unchanged": an account would get it and its folder would keep root.
MIN_UID = 1000
MAX_UID = 2**31 - 2
# Field names that are secrets: hive.yaml is committed to git, so they are never accepted.
SECRET_FIELD = re.compile(r"(^|_)(password|passwd|secret|token|api_key|apikey)$")


# Strict types: a value must already be what its field holds. YAML types values itself
# (`2024-01-01` is a date, `yes` a bool, `'22'` text), and a lax model would quietly turn
# binary data into a name, 1 into true or 20000.0 into a uid; the loader reports each
# mismatch at its line instead. Only paths (from text) and dates (quoted or not) convert.
_LAX = Strictness(False)


class Strict(BaseModel):
    """Unknown fields are errors: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths mean 'next to hive.yaml', so an example runs from anywhere."""
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute():
        if base is None:
            raise ValueError("must be an absolute path")
        value = Path(base) / value
    text = str(value)
    if not _SAFE_PATH.fullmatch(text):
        raise ValueError("may only contain letters, digits and _ . / + - "
                         "(it is written into sshd forced commands unquoted)")
    return Path(*(part for part in value.parts if part != "."))


ResolvedPath = Annotated[Path, _LAX, AfterValidator(_resolve_path)]


def _safe_command(value: str) -> str:
    if not _SAFE_COMMAND.fullmatch(value):
        raise ValueError("must be a program name or absolute path made of letters, digits "
                         "and _ . / + : -, not starting with - (it is written into a forced "
                         "command that sh runs)")
    return value


SafeCommand = Annotated[str, AfterValidator(_safe_command)]


MAX_DESCRIPTION = 1000
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Entries of one key's from: list. sshd reads a key line of at most 8 KiB (longer ones
#: are skipped with only a log line: the key would silently stop working); 64 entries of
#: the longest network text keep a line far below that.
MAX_FROM_ENTRIES = 64


def _description(value: str) -> str:
    """Free text for people: reports and alerts show it, so bounded, and without the
    control characters that could rewrite a terminal or a log (newlines and tabs are
    fine)."""
    if len(value) > MAX_DESCRIPTION:
        raise ValueError(f"is {len(value):,} characters long; a description has at most "
                         f"{MAX_DESCRIPTION:,}")
    if _CONTROL_TEXT.search(value):
        raise ValueError("holds a control character (an escape sequence, say); write "
                         "plain text")
    return value


Description = Annotated[str, AfterValidator(_description),
                        Field(description=f"Free text, at most {MAX_DESCRIPTION} "
                                          "characters, no control characters.")]


class UserSettings(Strict):
    """How repository users are named and numbered."""

    prefix: str = Field(
        "bh-", pattern=r"^[a-z_][a-z0-9_.-]{0,15}$",
        description="The unix user of repository R is <prefix><R>.")
    uid_range: tuple[int, int] = Field(
        (20000, 29999), strict=False,  # a YAML list; its two items stay strict ints
        description="New users get the lowest free uid in this range (uid = gid: each user "
                    "has a private group). Existing users keep their uid.")
    shell: str = Field(
        "/bin/sh", pattern=r"^/[A-Za-z0-9_./+-]+$",
        description="Login shell. sshd runs the forced command through it, so it must be a "
                    "real shell such as /bin/sh, never /usr/sbin/nologin.")

    @field_validator("uid_range")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if low < MIN_UID:
            raise ValueError(f"starts at {low}: uids below {MIN_UID} belong to the system; "
                             "use a range such as [20000, 29999]")
        if high < low:
            raise ValueError(f"is empty: {high} is below {low}")
        if high > MAX_UID:
            raise ValueError(f"ends at {_number(high)}, beyond the largest portable uid "
                             f"{MAX_UID}")
        return value


class FilesIdentity(Strict):
    """Users in passwd/group/shadow files in libnss-extrausers format: no server needed."""

    backend: Literal["files"] = "files"
    files_dir: ResolvedPath = Field(
        Path("/var/lib/extrausers"),
        description="Folder holding passwd, group and shadow; libnss-extrausers reads "
                    "/var/lib/extrausers.")


_DN = r"^[A-Za-z][A-Za-z0-9-]*=[^,\x00-\x1f\x7f]+(,[A-Za-z][A-Za-z0-9-]*=[^,\x00-\x1f\x7f]+)*$"


class LdapSettings(Strict):
    """Where the directory is and how Hive binds to it. The password is never inline."""

    url: str = Field(pattern=r"^ldaps?://[A-Za-z0-9.:\[\]-]+/?$",
                     description="ldap://host:port or ldaps://host:port.")
    start_tls: bool = Field(False, description="Upgrade an ldap:// connection with StartTLS.")
    ca_file: ResolvedPath | None = Field(None, description="CA certificates (PEM) to trust; "
                                                           "default: the system's.")
    tls_verify: bool = Field(True, description="Verify the server's certificate. Turning it "
                                               "off is reported by every plan.")
    base_dn: str = Field(pattern=_DN, description="e.g. dc=example,dc=org")
    users_dn: str | None = Field(None, pattern=_DN,
                                 description="Default: ou=people,<base_dn>.")
    groups_dn: str | None = Field(None, pattern=_DN,
                                  description="Default: ou=groups,<base_dn>.")
    bind_dn: str = Field(pattern=_DN, description="The DN Hive binds as; it needs write access "
                                                  "to users_dn and groups_dn only.")
    bind_password_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the bind password.")
    bind_password_file: ResolvedPath | None = Field(
        None, description="File holding the bind password (first line).")
    timeout: int = Field(10, ge=1, le=300, description="Seconds to wait for the server.")

    @model_validator(mode="after")
    def _one_password_source(self) -> LdapSettings:
        if (self.bind_password_env is None) == (self.bind_password_file is None):
            raise ValueError("give exactly one of bind_password_env (a variable name) or "
                             "bind_password_file (a path); the password itself never goes in "
                             "hive.yaml")
        return self

    @property
    def people(self) -> str:
        return self.users_dn or f"ou=people,{self.base_dn}"

    @property
    def groups(self) -> str:
        return self.groups_dn or f"ou=groups,{self.base_dn}"

    def user_dn(self, user: str) -> str:
        """A repository user's entry: the one place its DN is built (plans show it)."""
        return f"uid={user},{self.people}"

    def group_dn(self, group: str) -> str:
        return f"cn={group},{self.groups}"


class LdapIdentity(Strict):
    """Users and groups in an OpenLDAP directory, shared by many sshd hosts via nslcd."""

    backend: Literal["ldap"]
    ldap: LdapSettings


class Server(Strict):
    """This host and where Hive keeps things on it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                      description="This host's name, as events and reports name it.")
    ssh_host: str = Field(description="Host name clients put in repository URLs.")
    ssh_port: int = Field(22, ge=1, le=65535)
    repos_root: ResolvedPath = Field(
        description="A repository lives at <repos_root>/<unix user>/<repository name>.")
    state_dir: ResolvedPath = Field(
        description="Authorized-keys cache, inventory, lock and journal. sshd reads keys "
                    "from here: it and its parents must be root-owned and not group- or "
                    "world-writable.")
    borg_command: SafeCommand = Field("borg", description="Name or path of borg on the server.")
    secrets_dir: ResolvedPath = Field(
        Path("/etc/hive/secrets"),
        description="{file:PATH} secrets in notification URLs must be files in this folder. "
                    "server: is the part of hive.yaml a proposal cannot change (plan "
                    "--server-from), so a channel cannot be pointed at /etc/shadow or the "
                    "LDAP password file.")
    rrsync_command: SafeCommand = Field("rrsync", description="Name or path of rrsync.")
    stale_after: Duration = Field(
        "26h", description="A repository whose last backup is older than this is stale "
                           "(each repository may set its own).")
    quota_warn: float = Field(
        90, gt=0, le=100, description="The quota alert fires when a repository uses this "
                                      "percentage of its quota or more (each repository may "
                                      "set its own).")
    users: UserSettings = Field(default_factory=UserSettings)
    identity: FilesIdentity | LdapIdentity = Field(
        default_factory=FilesIdentity, discriminator="backend",
        description="Where repository users live: files (libnss-extrausers) or ldap.")

    @field_validator("ssh_host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.fullmatch(value):
                raise ValueError("must be a host name or IP address") from None
        return value


class Owner(Strict):
    """A person or team that owns repositories and keys."""

    email: str | None = Field(None, description="Where notifications about their "
                                                "repositories go.")
    notify: list[Name] = Field(
        default_factory=list,
        description="Channels (under notifications.channels) that carry alerts about this "
                    "owner's repositories, for rules with notify_owner: true.")
    description: Description | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_EMAIL:
            raise ValueError(f"is {len(value):,} characters long; an e-mail address has at "
                             f"most {MAX_EMAIL}")
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError("is not an e-mail address")
        return value


class Group(Strict):
    """Owners who share access to repositories that name this group."""

    members: list[Name] = Field(default_factory=list)
    description: Description | None = None


def _from_pattern(value: str) -> str:
    """One entry of sshd's from="..." list, in the strict grammar of schemas/keyoptions.py."""
    problem = from_entry_problem(value)
    if problem:
        raise ValueError(problem)
    return value


FromPattern = Annotated[str, AfterValidator(_from_pattern)]

# sshd's expiry-time="YYYYMMDD[HHMM[SS]][Z]" takes a four-digit year and refuses instants
# before 1970 (OpenSSH misc.c parse_absolute_time); Python's calendar ends at 9999-12-31,
# so 9999-12-31T23:00-12:00 is already past it in UTC. Expiries must lie where all three
# agree, with room to spare.
EXPIRES_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EXPIRES_MAX = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def as_utc(value: dt.date) -> dt.datetime:
    """A date (midnight UTC) or a time (naive means UTC) as an aware UTC datetime. Total: an
    instant past either end of Python's calendar becomes that end instead of raising."""
    try:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                return value.replace(tzinfo=dt.UTC)
            return value.astimezone(dt.UTC)
        return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
    except OverflowError:
        edge = dt.datetime.max if value.year > 5000 else dt.datetime.min
        return edge.replace(tzinfo=dt.UTC)


def _date_or_text(value: Any) -> Any:
    """Dates come as YAML dates or times, or as quoted ISO text; a number is not a date
    (pydantic would read 1700000000 as seconds since 1970)."""
    if value is None or isinstance(value, (dt.date, str)):
        return value
    raise PydanticCustomError("date_type", "Input should be a valid date")


def _expiry_in_range(value: dt.date | None) -> dt.date | None:
    if value is not None and not EXPIRES_MIN <= as_utc(value) < EXPIRES_MAX:
        raise ValueError(f"{value.isoformat()} is outside the times sshd's expiry-time and "
                         "Hive can both handle: give one from 1970-01-01 to 8999-12-31 (UTC)")
    return value


Expiry = Annotated[
    Annotated[dt.date, _LAX] | Annotated[dt.datetime, _LAX] | None,
    BeforeValidator(_date_or_text), AfterValidator(_expiry_in_range)]


class Key(Strict):
    """One SSH public key, owned by one owner."""

    owner: Name
    public_key: str = Field(description="One OpenSSH public key line: 'type base64 comment', "
                                        "no options.")
    from_: list[FromPattern] = Field(
        default_factory=list, alias="from", max_length=MAX_FROM_ENTRIES,
        description="Only accept the key from these addresses, networks or host patterns "
                    "(sshd from=\"...\").")
    expires: Expiry = Field(
        None, description="The key stops working at this date (00:00 UTC) or time "
                          "(sshd expiry-time=\"...\"); an expired key is left out.")
    description: Description | None = None

    @field_validator("from_")
    @classmethod
    def _some_positive_entry(cls, value: list[str]) -> list[str]:
        """sshd admits a key only from an address a positive entry matches: negations
        alone read as "anywhere but" and admit it from nowhere."""
        if value and all(entry.startswith("!") for entry in value):
            raise ValueError("holds only negated ('!') entries, so sshd accepts the key "
                             "from nowhere; to allow every address but these, put '*' "
                             "first: ['*', " + repr(value[0]) + "]")
        return value

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        try:
            parse_public_key(value)
        except BadKey as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    def expires_at(self) -> dt.datetime | None:
        """The expiry as an aware UTC datetime; dates mean midnight UTC."""
        return None if self.expires is None else as_utc(self.expires)


Mode = Literal["borg", "import", "export", "disabled"]


class Repository(Strict):
    """One borg repository, with its own unix user and its own keys."""

    owner: Name
    groups: list[Name] = Field(default_factory=list,
                               description="Members of these groups may attach their keys.")
    mode: Mode = Field("borg", description="borg: borg serve; import: rsync may write "
                                           "(moving a repository in); export: rsync may read "
                                           "(moving it out); disabled: no access.")
    keys: list[Name] = Field(default_factory=list, description="Keys with full access.")
    append_only_keys: list[Name] = Field(default_factory=list,
                                         description="Keys that may add archives but not "
                                                     "remove data (borg serve --append-only). "
                                                     "None in mode import: rsync's writes "
                                                     "cannot be append-only.")
    quota: str | None = Field(None, pattern=QUOTA_PATTERN,
                              description="Storage quota in decimal units as borg takes them: "
                                          "500G, 1.5T. None in mode import: rsync's writes "
                                          "have no size limit.")
    protected: bool = Field(False, description="A plan that would remove or purge this "
                                               "repository fails.")
    uid: int | None = Field(None, description="Pin the unix uid (and gid) of this "
                                              "repository's user; it may lie outside "
                                              "uid_range (a user moved here with its uid).",
                            json_schema_extra={"minimum": MIN_UID, "maximum": MAX_UID})
    stale_after: Duration | None = Field(None, description="Stale when the last backup is "
                                                           "older; default server.stale_after.")
    quota_warn: float | None = Field(None, gt=0, le=100,
                                     description="Quota alert at this percentage of the "
                                                 "quota; default server.quota_warn.")
    description: Description | None = None

    @property
    def quota_bytes(self) -> int | None:
        return None if self.quota is None else int(quota_size(self.quota))

    @field_validator("uid")
    @classmethod
    def _uid(cls, value: int | None) -> int | None:
        """The bounds of uid_range hold for pins too; a pin may lie outside the range."""
        if value is not None and value < MIN_UID:
            raise ValueError(f"uid {_number(value)} is below {MIN_UID}, where system users "
                             "live")
        if value is not None and value > MAX_UID:
            raise ValueError(f"uid {_number(value)} is above {MAX_UID}, the largest uid every "
                             "tool handles (4294967295 even means 'no change' to chown)")
        return value

    @field_validator("quota")
    @classmethod
    def _quota(cls, value: str | None) -> str | None:
        problem = None if value is None else _quota_problem(value)
        if problem:
            raise ValueError(problem)
        return value


@lru_cache(maxsize=1024)   # a fleet repeats a few quotas on thousands of repositories
def _quota_problem(value: str) -> str | None:
    """Why a quota (that passed QUOTA_PATTERN) is refused, or None."""
    if len(value) > MAX_QUOTA_TEXT:
        return (f"{value[:MAX_QUOTA_TEXT]}... is {len(value):,} characters long; "
                "write it with a unit, e.g. 500G or 1.5T (at most 999P)")
    size = quota_size(value)
    if size > MAX_QUOTA:
        return f"{value} is above the largest quota Hive takes, 999P; leave it out for no quota"
    if size < MIN_QUOTA:
        # borg serve refuses to start with a smaller quota: every login would fail.
        return f"{value} is below borg's minimum storage quota of 10M; leave it out for no quota"
    return None


@lru_cache(maxsize=1024)
def quota_size(text: str) -> Decimal:
    """'1.5T' -> 1500000000000, exactly (only for text that passed QUOTA_PATTERN)."""
    suffix = text[-1] if text[-1] in _QUOTA_FACTORS else ""
    return Decimal(text.removesuffix(suffix)) * _QUOTA_FACTORS.get(suffix, 1)


Alert = Literal["stale", "never_backed_up", "locked", "missing", "corrupt", "quota",
                "key_expiring", "repokey_changed"]
ALERTS: tuple[Alert, ...] = ("stale", "never_backed_up", "locked", "missing", "corrupt",
                           "quota", "key_expiring", "repokey_changed")
# {env:NAME} or {file:/absolute/path}: the only way a secret enters a channel URL.
SECRET_PLACEHOLDER = re.compile(r"\{(env|file):([^{}]*)\}")


class Channel(Strict):
    """A named apprise URL. Secrets in it only as {env:NAME} or {file:PATH}, resolved
    when a message is sent, so hive.yaml (committed to git) never holds them."""

    url: str = Field(min_length=3, description="An apprise URL (mailtos://, ntfys://, "
                                               "pover://, json://, ...); secrets as "
                                               "{env:NAME} or {file:/path}.")
    owner: Name | None = Field(None, description="This channel may only carry alerts about "
                                                 "this owner's repositories.")
    groups: list[Name] = Field(default_factory=list,
                               description="This channel may only carry alerts about "
                                           "repositories of these groups (shared with the "
                                           "group or owned by a member).")
    description: Description | None = None

    @field_validator("url")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        for kind, arg in SECRET_PLACEHOLDER.findall(value):
            if kind == "env" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", arg):
                raise ValueError(f"{{env:{arg}}}: {arg!r} is not an environment variable name")
            if kind == "file" and not arg.startswith("/"):
                raise ValueError(f"{{file:{arg}}}: give an absolute path")
        rest = SECRET_PLACEHOLDER.sub("", value)
        if re.search(r"\{(env|file)\b", rest):
            raise ValueError("a secret placeholder is malformed; write {env:NAME} or "
                             "{file:/path}")
        if "://" not in value:
            raise ValueError("is not an apprise URL (schema://...), such as "
                             "mailtos://user:{env:SMTP_PASSWORD}@smtp.example.org")
        return value


class RuleMatch(Strict):
    """Which repositories a rule covers; every field given must match. {} matches all."""

    owner: Name | None = None
    group: Name | None = Field(None, description="Repositories shared with this group or "
                                                 "owned by one of its members.")
    repositories: list[Name] = Field(default_factory=list)
    mode: Mode | None = None


class Rule(Strict):
    """Who hears about which alerts, and how often."""

    name: Name
    match: RuleMatch = Field(default_factory=RuleMatch)
    channels: list[Name] = Field(default_factory=list,
                                 description="Channels under notifications.channels.")
    notify_owner: bool = Field(False, description="Also tell each repository's owner, "
                                                  "through owners.<owner>.notify.")
    alerts: list[Alert] = Field(default_factory=lambda: list(ALERTS),
                                description="Default: all of them.")
    repeat_every: Duration = Field("24h", description="Repeat an alert this often while it "
                                                      "lasts.")
    stop_after: Duration | None = Field(None, description="Stop repeating this long after "
                                                          "the first message; default never.")
    recovery: bool = Field(True, description="Say so once when an alert that was sent ends.")

    @model_validator(mode="after")
    def _someone(self) -> Rule:
        if not self.channels and not self.notify_owner:
            raise ValueError("names no channels and has no notify_owner: true; it would "
                             "tell nobody")
        return self


class Notifications(Strict):
    """`hive notify`: named apprise channels and the rules that use them."""

    report_url: str | None = Field(None, pattern=r"^https?://\S+$",
                                   description="Messages link here instead of naming the "
                                               "'hive status REPO' command.")
    channels: dict[Name, Channel] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


class HiveConfig(Strict):
    """The whole desired state of one Hive server."""

    model_config = ConfigDict(title="hive.yaml", extra="forbid", populate_by_name=True,
                              frozen=True, strict=True)

    version: Literal[1] = Field(description="Format version of this file.")

    @field_validator("version", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """Literal[1] compares with ==, and True == 1.0 == 1 in Python; YAML's are not."""
        if type(value) is not int:
            raise PydanticCustomError("int_type", "Input should be a valid integer")
        return value
    server: Server
    owners: dict[Name, Owner] = Field(default_factory=dict)
    groups: dict[Name, Group] = Field(default_factory=dict)
    keys: dict[Name, Key] = Field(default_factory=dict)
    repositories: dict[Name, Repository] = Field(default_factory=dict)
    include: list[str] = Field(
        default_factory=list,
        description="Glob patterns of more files (relative to this one, inside its folder) "
                    "that add owners, groups, keys and repositories; e.g. ['teams/*.yaml'].")
    #: The files this state was read from, the main file first (set by schemas.loader).
    _sources: tuple[str, ...] = PrivateAttr(default=())

    @property
    def source_files(self) -> tuple[str, ...]:
        """The main file and every included one, as named in messages."""
        return self._sources
    notifications: Notifications = Field(default_factory=Notifications)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """`owners:` with nothing under it is YAML null; it means 'none'."""
        if isinstance(data, dict):
            # Top-level `x-...` keys are free for YAML anchors (`x-defaults: &d {...}`),
            # as in docker compose files; Hive ignores them.
            data = {k: v for k, v in data.items() if not (isinstance(k, str)
                                                          and k.startswith("x-"))}
            for section in ("owners", "groups", "keys", "repositories", "notifications"):
                if section in data and data[section] is None:
                    data[section] = {}
            for section in ("owners", "groups"):  # `bob:` alone means an owner with no fields
                if isinstance(data.get(section), dict):
                    data[section] = {k: ({} if v is None else v)
                                     for k, v in data[section].items()}
        return data

    def user_name(self, repository: str) -> str:
        """The unix user (and private group) of a repository: <prefix><repository>."""
        return f"{self.server.users.prefix}{repository}"

    def repo_folder(self, repository: str, user: str | None = None) -> str:
        """Where a repository lives: <repos_root>/<unix user>/<repository>. The one home of
        this rule; everything that needs a repository's folder asks here (or repo_path).
        `user` is for a repository Hive made under another prefix (the inventory remembers
        its user). A string, because the planner compares thousands of them."""
        root = str(self.server.repos_root).rstrip("/")
        return f"{root}/{user or self.user_name(repository)}/{repository}"

    def repo_path(self, repository: str, user: str | None = None) -> Path:
        """repo_folder as a Path."""
        return Path(self.repo_folder(repository, user))

    def client_url(self, repository: str) -> str:
        """The URL a client gives borg (or BORG_REPO), exactly as README shows it."""
        server = self.server
        host = f"[{server.ssh_host}]" if ":" in server.ssh_host else server.ssh_host
        return (f"ssh://{self.user_name(repository)}@{host}:{server.ssh_port}"
                f"{self.repo_path(repository)}")

    def stale_after_seconds(self, repository: str) -> int:
        """How old a repository's last backup may be before it counts as stale."""
        own = self.repositories[repository].stale_after
        return duration_seconds(own or self.server.stale_after)

    def quota_warn(self, repository: str) -> float:
        """The share of its quota (0..1] at which a repository's quota alert fires."""
        own = self.repositories[repository].quota_warn
        return (own if own is not None else self.server.quota_warn) / 100
