"""borg's on-disk format, as far as the server reads it: repository layouts (1.x and 2),
locks and their holders, the transactions log, segments, index and hints.

Everything here reads files a repository's user controls, possibly as root: bounded
reads, no symlinks followed, no blocking on FIFOs, every number range-checked.
"""
