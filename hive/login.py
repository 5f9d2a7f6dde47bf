"""`hive authorized-keys USER`: print a user's cached key lines for sshd. The login path.

It imports only `os` and `sys`, reads one file and never fails loudly: for an unknown user,
a missing cache or any surprise it prints nothing and exits 0, which sshd takes as "no
keys" (fail closed). A non-zero exit would make sshd log noise and discard keys anyway.
"""

import os
import sys

DEFAULT_CONFIG = "/etc/hive/hive.yaml"
DEFAULT_STATE_DIR = "/var/lib/hive"
USAGE = "usage: hive authorized-keys [-f FILE | --state-dir DIR] USER\n"


def _valid_user(name: str) -> bool:
    if not name or len(name) > 32 or name[0] not in "abcdefghijklmnopqrstuvwxyz_":
        return False
    return all(c in "abcdefghijklmnopqrstuvwxyz0123456789_.-" for c in name)


def state_dir_from_config(path: str) -> str | None:
    """Find `server.state_dir` in hive.yaml without a YAML parser (too slow for a login).

    Reads block-style YAML as `hive.yaml.example` writes it: the `state_dir:` line indented
    under the top-level `server:` key. Relative paths are resolved against the real file's
    folder (through symlinks), as the full loader does. Returns None when it cannot tell;
    the caller then denies.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            in_server = False
            for line in handle:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if not line[0].isspace():
                    if in_server:
                        return None
                    in_server = line.split("#", 1)[0].strip() == "server:"
                    continue
                if in_server and line.strip().startswith("state_dir:"):
                    value = line.split(":", 1)[1].split(" #", 1)[0].strip().strip("'\"")
                    if not value:
                        return None
                    folder = os.path.dirname(os.path.realpath(path))
                    return os.path.join(folder, value)
    except (OSError, UnicodeDecodeError):
        return None
    return None


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
            sys.stderr.write(f"hive authorized-keys: no state_dir found in {config}; "
                             "use --state-dir\n")
            return 0
    try:
        fd = os.open(os.path.join(state_dir, "authorized_keys", user),
                     os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(1 << 20)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except OSError:
        return 0
    return 0
