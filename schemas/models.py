"""The hive.yaml file format: these pydantic models are its one definition.

`schemas/hive.schema.json` is generated from them (`hive schema`), `hive.yaml.example` is
checked against them, and every field's description below is what editors show. Rules that
need the whole file (references, key ownership, uid pins) live in `schemas/checks.py`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

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
_SAFE_COMMAND = re.compile(r"^[A-Za-z0-9_./+=:-]+$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
QUOTA_PATTERN = r"^[0-9]+(\.[0-9]+)?[KMGTP]?$"
_QUOTA_FACTORS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
# Field names that are secrets: hive.yaml is committed to git, so they are never accepted.
SECRET_FIELD = re.compile(r"(^|_)(password|passwd|secret|token|api_key|apikey)$")


class Strict(BaseModel):
    """Unknown fields are errors: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths mean 'next to hive.yaml', so an example runs from anywhere."""
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute():
        if base is None:
            raise ValueError("must be an absolute path")
        value = Path(base) / value
    text = str(value)
    if not _SAFE_PATH.match(text):
        raise ValueError("may only contain letters, digits and _ . / + - "
                         "(it is written into sshd forced commands unquoted)")
    return Path(*(part for part in value.parts if part != "."))


ResolvedPath = Annotated[Path, AfterValidator(_resolve_path)]


def _safe_command(value: str) -> str:
    if not _SAFE_COMMAND.match(value):
        raise ValueError("must be a program name or absolute path made of letters, digits "
                         "and _ . / + = : - (it is written into a forced command)")
    return value


SafeCommand = Annotated[str, AfterValidator(_safe_command)]


class UserSettings(Strict):
    """How repository users are named and numbered."""

    prefix: str = Field(
        "bh-", pattern=r"^[a-z_][a-z0-9_.-]{0,15}$",
        description="The unix user of repository R is <prefix><R>.")
    uid_range: tuple[int, int] = Field(
        (20000, 29999),
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
        if low < 1000:
            raise ValueError(f"starts at {low}: uids below 1000 belong to the system; "
                             "use a range such as [20000, 29999]")
        if high < low:
            raise ValueError(f"is empty: {high} is below {low}")
        if high > 2**31 - 2:
            raise ValueError(f"ends at {high}, beyond the largest portable uid {2**31 - 2}")
        return value


class FilesIdentity(Strict):
    """Users in passwd/group/shadow files in libnss-extrausers format: no server needed."""

    backend: Literal["files"] = "files"
    files_dir: ResolvedPath = Field(
        Path("/var/lib/extrausers"),
        description="Folder holding passwd, group and shadow; libnss-extrausers reads "
                    "/var/lib/extrausers.")


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
    rrsync_command: SafeCommand = Field("rrsync", description="Name or path of rrsync.")
    users: UserSettings = Field(default_factory=UserSettings)
    identity: FilesIdentity = Field(default_factory=FilesIdentity)

    @field_validator("ssh_host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError("must be a host name or IP address") from None
        return value


class Owner(Strict):
    """A person or team that owns repositories and keys."""

    email: str | None = Field(None, description="Where notifications about their "
                                                "repositories go.")
    description: str | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("is not an e-mail address")
        return value


class Group(Strict):
    """Owners who share access to repositories that name this group."""

    members: list[Name] = Field(default_factory=list)
    description: str | None = None


def _from_pattern(value: str) -> str:
    """One entry of sshd's from="..." list: an address, a CIDR network or a host pattern."""
    text = value[1:] if value.startswith("!") else value
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network: {exc}") from None
        return value
    try:
        ipaddress.ip_address(text)
        return value
    except ValueError:
        pass
    if not re.match(r"^[A-Za-z0-9*?][A-Za-z0-9*?.-]*$", text):
        raise ValueError(f"{value!r} is not an address, network (192.168.1.0/24) or host "
                         "pattern (*.example.org)")
    return value


FromPattern = Annotated[str, AfterValidator(_from_pattern)]


class Key(Strict):
    """One SSH public key, owned by one owner."""

    owner: Name
    public_key: str = Field(description="One OpenSSH public key line: 'type base64 comment', "
                                        "no options.")
    from_: list[FromPattern] = Field(
        default_factory=list, alias="from",
        description="Only accept the key from these addresses, networks or host patterns "
                    "(sshd from=\"...\").")
    expires: dt.date | dt.datetime | None = Field(
        None, description="The key stops working at this date (00:00 UTC) or time "
                          "(sshd expiry-time=\"...\"); an expired key is left out.")
    description: str | None = None

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
        if self.expires is None:
            return None
        if isinstance(self.expires, dt.datetime):
            if self.expires.tzinfo is None:
                return self.expires.replace(tzinfo=dt.UTC)
            return self.expires.astimezone(dt.UTC)
        return dt.datetime.combine(self.expires, dt.time(), tzinfo=dt.UTC)


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
                                                     "remove data (borg serve --append-only).")
    quota: str | None = Field(None, pattern=QUOTA_PATTERN,
                              description="Storage quota in decimal units as borg takes them: "
                                          "500G, 1.5T.")
    protected: bool = Field(False, description="A plan that would remove or purge this "
                                               "repository fails.")
    uid: int | None = Field(None, description="Pin the unix uid (and gid) of this "
                                              "repository's user.")
    description: str | None = None

    @property
    def quota_bytes(self) -> int | None:
        if self.quota is None:
            return None
        suffix = self.quota[-1]
        if suffix in _QUOTA_FACTORS:
            return int(float(self.quota[:-1]) * _QUOTA_FACTORS[suffix])
        return int(float(self.quota))

    @field_validator("quota")
    @classmethod
    def _quota(cls, value: str | None) -> str | None:
        if value is not None and float(value.rstrip("KMGTP")) <= 0:
            raise ValueError("must be above zero; leave it out for no quota")
        return value


class HiveConfig(Strict):
    """The whole desired state of one Hive server."""

    model_config = ConfigDict(title="hive.yaml", extra="forbid", populate_by_name=True,
                              frozen=True)

    version: Literal[1] = Field(description="Format version of this file.")
    server: Server
    owners: dict[Name, Owner] = Field(default_factory=dict)
    groups: dict[Name, Group] = Field(default_factory=dict)
    keys: dict[Name, Key] = Field(default_factory=dict)
    repositories: dict[Name, Repository] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """`owners:` with nothing under it is YAML null; it means 'none'."""
        if isinstance(data, dict):
            data = dict(data)
            for section in ("owners", "groups", "keys", "repositories"):
                if section in data and data[section] is None:
                    data[section] = {}
            for section in ("owners", "groups"):  # `bob:` alone means an owner with no fields
                if isinstance(data.get(section), dict):
                    data[section] = {k: ({} if v is None else v)
                                     for k, v in data[section].items()}
        return data

    def user_name(self, repository: str) -> str:
        return f"{self.server.users.prefix}{repository}"
