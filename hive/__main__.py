"""Entry point of the `hive` command.

`hive authorized-keys` is dispatched here, before click (or anything else heavy) is
imported: sshd runs it twice per login, so it must cost little more than Python's start.
"""

import sys


def main() -> None:
    if sys.argv[1:2] == ["authorized-keys"] and "--help" not in sys.argv:
        from hive.login import authorized_keys

        sys.exit(authorized_keys(sys.argv[2:]))
    from hive.cli import run

    run()


if __name__ == "__main__":
    main()
