"""`hive authorized-keys USER`: print a user's cached key lines for sshd. The login path.

It imports only `os` and `sys` and reads one file, which it trusts no further than sshd's
StrictModes would trust an AuthorizedKeysFile, and a little less: every component from `/`
to the file must be owned by root and not group- or world-writable, none may be a symlink
(the walk opens each folder with O_NOFOLLOW relative to the one before, so nothing can be
swapped in between check and use), and the file must be a regular, root-owned file of at
most MAX_BYTES, opened without blocking. The command runs as the AuthorizedKeysCommandUser
(nobody); a file that user, a repository user or anyone but root could change would let
them choose who logs in, so only root counts as an owner (sshd would also accept the
logging-in user, which for Hive is exactly the account that must not).

Outcomes, as sshd sees them:
- an unknown user, or no cache at all: nothing on stdout, exit 0 ("no keys");
- anything the rules above refuse, or a config it cannot read: nothing on stdout, one
  line on stderr, exit 1. sshd logs the failure and uses no keys: closed, and visible.
"""

import os
import sys

DEFAULT_CONFIG = "/etc/hive/hive.yaml"
DEFAULT_STATE_DIR = "/var/lib/hive"
USAGE = "usage: hive authorized-keys [-f FILE | --state-dir DIR] USER\n"
MAX_BYTES = 1 << 20  # a cache file larger than this is refused, never printed in part
MAX_CONFIG_BYTES = 1 << 20  # how far into hive.yaml the `server:` section may be
EXIT_REFUSED = 1

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_PATH: walking a folder needs only search permission (nobody may not read /var/lib).
_DIR_FLAGS = (getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW
              | _CLOEXEC)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
_S_IFMT, _S_IFDIR, _S_IFREG = 0o170000, 0o040000, 0o100000


class Refused(Exception):
    """The cache (or the way to it) is not one sshd's StrictModes would trust."""


def _valid_user(name: str) -> bool:
    if not name or len(name) > 32 or name[0] not in "abcdefghijklmnopqrstuvwxyz_":
        return False
    return all(c in "abcdefghijklmnopqrstuvwxyz0123456789_.-" for c in name)


def _trusted(info: os.stat_result, path: str, kind: int) -> None:
    """Root-owned, not group/world-writable, and the expected kind of file."""
    if info.st_mode & _S_IFMT != kind:
        what = "a folder" if kind == _S_IFDIR else "a regular file"
        raise Refused(f"{path} is not {what}")
    if info.st_uid != 0:
        raise Refused(f"{path} is owned by uid {info.st_uid}, not root")
    if info.st_mode & 0o022:
        raise Refused(f"{path} is group- or world-writable "
                      f"(mode {info.st_mode & 0o7777:04o})")


def _open_error(path: str, exc: OSError) -> Refused:
    if exc.errno in (getattr(os, "ELOOP", 40), getattr(os, "ENOTDIR", 20)):
        return Refused(f"{path} is a symlink or not a folder; give the real path")
    return Refused(f"{path}: {exc.strerror or exc}")


def cache_problem(state_dir: str) -> str | None:
    """Why this command would refuse every key under `state_dir` (a folder on the way is
    not root's, is writable by others, or is a symlink), or None. `hive plan` says it, so
    a cache nobody can log in with is not found out at the first failed backup. A folder
    that does not exist yet is no problem: `hive apply` makes it root's, mode 0755."""
    try:
        opened = _open_cache_dir(state_dir)
    except Refused as exc:
        return str(exc)
    if opened is not None:
        os.close(opened[0])
    return None


def _open_cache_dir(state_dir: str) -> tuple[int, str] | None:
    """A descriptor and the path of <state_dir>/authorized_keys, None if a folder on the
    way does not exist, or Refused. Walks from / with one folder descriptor at a time,
    checking each."""
    if not state_dir.startswith("/"):
        raise Refused(f"state dir {state_dir!r} is not an absolute path")
    names = [part for part in state_dir.split("/") if part not in ("", ".")]
    if ".." in names:
        raise Refused(f"state dir {state_dir!r} holds '..'; give the real path")
    names.append("authorized_keys")
    fd = os.open("/", _DIR_FLAGS)
    try:
        _trusted(os.fstat(fd), "/", _S_IFDIR)
        path = ""
        for name in names:
            path += "/" + name
            try:
                inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                return None
            except OSError as exc:
                raise _open_error(path, exc) from None
            os.close(fd)
            fd = inner
            _trusted(os.fstat(fd), path, _S_IFDIR)  # O_PATH|O_NOFOLLOW may open a link
    except BaseException:
        os.close(fd)
        raise
    return fd, path


def read_cache(state_dir: str, user: str) -> bytes | None:
    """The bytes of <state_dir>/authorized_keys/<user>, None if there is no such file, or
    Refused."""
    opened = _open_cache_dir(state_dir)
    if opened is None:
        return None
    fd, path = opened
    path += "/" + user
    try:
        try:
            file_fd = os.open(user, _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == getattr(os, "ELOOP", 40):
                raise Refused(f"{path} is a symlink") from None
            raise Refused(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        _trusted(os.fstat(file_fd), path, _S_IFREG)
        chunks = []
        size = 0
        while True:
            chunk = os.read(file_fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BYTES:
                raise Refused(f"{path} is larger than {MAX_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise Refused(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(file_fd)


# Line breaks to YAML 1.1 (PyYAML) that Python's readline does not end a line at.
_YAML_ONLY_BREAKS = ("\x85", "\u2028", "\u2029")
# What a state_dir may hold (schemas.models._SAFE_PATH, which the login path cannot import;
# test_login.py keeps the two equal): such a value reads the same
# plain or quoted, to YAML and to this reader.
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./+-")


def _leaves_open(line: str) -> bool:
    """Whether `line` opens a quoted scalar or a flow collection that it does not close.
    YAML then reads on into the next lines as text of that value, where a line reader
    would see keys: a `server:` and `state_dir:` inside a quoted description are not the
    ones the loader (and so `hive apply`) reads. Errs towards True: a refusal only sends
    the administrator to --state-dir."""
    quote = ""
    depth = 0
    start = True  # where a node may begin (after indentation, `- `, `: `, `[`, `,` ...)
    i, end = 0, len(line)
    while i < end:
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                if quote == "'" and line[i + 1:i + 2] == "'":
                    i += 1
                else:
                    quote = ""
            i += 1
            continue
        if c in " \t":
            i += 1
            continue
        if c == "#" and (i == 0 or line[i - 1] in " \t"):
            break
        if start and c in "&!":  # an anchor or a tag: the node itself comes after it
            while i < end and line[i] not in " \t":
                i += 1
            continue
        at_start, start = start, False
        if c in "\"'" and at_start:
            quote = c
        elif c in "[{" and (at_start or depth):
            depth += 1
            start = True
        elif c in "]}" and depth:
            depth -= 1
        elif (c in "-?:" and line[i + 1:i + 2] in ("", " ", "\t")) or (depth and c == ","):
            start = True
        i += 1
    return bool(quote) or depth > 0


def _path_value(text: str) -> str | None:
    """The value of `state_dir: VALUE [# comment]` when YAML reads it as this reader does:
    a path of the characters a state_dir may hold, plain or in quotes; None otherwise."""
    rest = text.strip(" \t\r\n")
    if rest[:1] in ("'", '"'):
        close = rest.find(rest[0], 1)
        if close < 0:
            return None
        value, tail = rest[1:close], rest[close + 1:]
    else:
        cut = next((i for i, c in enumerate(rest) if c in " \t"), len(rest))
        value, tail = rest[:cut], rest[cut:]
    if tail and (tail[0] not in " \t" or not tail.lstrip(" \t").startswith("#")):
        return None
    if not value or not _PATH_CHARS.issuperset(value):
        return None
    return value


def state_dir_from_config(path: str) -> str | None:
    """Find `server.state_dir` in hive.yaml without a YAML parser (too slow for a login).

    Reads block-style YAML as `hive.yaml.example` writes it: the `state_dir:` line indented
    under the top-level `server:` key, and nothing else: before it, no line may leave a
    quoted text or flow collection open (a `server:` inside one is text to the loader) or
    hold a line break only YAML sees; the value is a plain or quoted path of the characters
    a state_dir may hold. Relative paths are resolved against the real file's
    folder (through symlinks), as the full loader does. Returns None when it cannot tell
    (including a FIFO or device instead of a file: opened without blocking, read only up to
    MAX_CONFIG_BYTES); the caller then denies.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC)
    except OSError:
        return None
    try:
        handle = os.fdopen(fd, encoding="utf-8")
    except OSError:
        os.close(fd)
        return None
    try:
        with handle:
            if os.fstat(handle.fileno()).st_mode & _S_IFMT != _S_IFREG:
                return None
            in_server = False
            child = None  # the indentation of server:'s own keys
            budget = MAX_CONFIG_BYTES
            while budget > 0:
                line = handle.readline(budget)
                if not line:
                    return None
                budget -= len(line)
                if any(c in line for c in _YAML_ONLY_BREAKS):
                    return None  # YAML sees more lines here than this reader does
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if ('"' in line or "'" in line or "[" in line or "{" in line) \
                        and _leaves_open(line):
                    return None  # what follows is text of a value, not keys
                if not line[0].isspace():
                    if in_server:
                        return None
                    in_server = line.split("#", 1)[0].strip() == "server:"
                    continue
                if not in_server:
                    continue
                indent = len(line) - len(line.lstrip(" "))
                child = indent if child is None else child
                # only server:'s own key: a deeper line may be text inside a block scalar
                if indent == child and line.strip().startswith("state_dir:"):
                    value = _path_value(line.split(":", 1)[1])
                    if value is None:
                        return None
                    folder = os.path.dirname(os.path.realpath(path))
                    return os.path.join(folder, value)
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _refuse(message: str) -> int:
    sys.stderr.write(f"hive authorized-keys: {message}; printing no keys\n")
    return EXIT_REFUSED


def authorized_keys(args: list[str]) -> int:
    state_dir = config = None
    user = None
    it = iter(args)
    for arg in it:
        if arg in ("-f", "--file"):
            config = next(it, None)
        elif arg == "--state-dir":
            state_dir = next(it, None)
        elif arg.startswith("-") or user is not None:
            sys.stderr.write(USAGE)
            return 0
        else:
            user = arg
    if user is None or not _valid_user(user):
        return 0
    if state_dir is None:
        config = config or os.environ.get("HIVE_CONFIG") or DEFAULT_CONFIG
        if os.path.exists(config):
            state_dir = state_dir_from_config(config)
        elif config == DEFAULT_CONFIG:
            state_dir = DEFAULT_STATE_DIR
        if state_dir is None:
            return _refuse(f"no state_dir found in {config}; use --state-dir")
    try:
        data = read_cache(state_dir, user)
    except Refused as exc:
        return _refuse(str(exc))
    except OSError as exc:
        return _refuse(f"{state_dir}: {exc.strerror or exc}")
    if data:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        except OSError:
            return EXIT_REFUSED
    return 0
