"""Write a large, realistic hive.yaml for benchmarks: thousands of repositories and keys.

    python bench/generate.py OUT_DIR [--repos 5000] [--keys 10000] [--owners N] [--seed 1]

Writes OUT_DIR/hive.yaml. Every path in it is relative to the file (./data/repos,
./data/state, ./data/extrausers), so applying it touches nothing outside OUT_DIR.

The same arguments always give the same file, byte for byte: all randomness, including the
32 bytes of every ed25519 public key, comes from `random.Random(seed)`. The keys are real
OpenSSH public keys as far as any parser can tell (`ssh-keygen -lf` accepts them): the base64
blob is the SSH wire format, string "ssh-ed25519" then string <32 bytes>. Nobody holds the
private halves, which is exactly what a benchmark wants. `--seed random` takes the bytes
from os.urandom instead (not reproducible).

The mix, roughly: ~1 owner per 5 repositories, owners with 1 to a few dozen keys, a group
per ~10 owners; 90% borg repositories, the rest import/export/disabled; a quarter with
append-only keys, 40% with a quota, 5% protected, a few pinned uids; 10% of keys limited
with from=, 10% with an expiry (a fifth of those already past, so they are left out).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

FIRST_NAMES = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
    "xavier", "yvonne", "zoe", "amir", "bianca", "chen", "dmitri", "elena", "fatima",
    "gustav", "hiro", "ingrid", "jamal", "kofi", "lena", "mateo", "noor", "oskar", "priya",
    "quentin", "rosa", "sven", "tariq", "uma", "vera", "wen", "yusuf", "zainab",
)
TEAMS = ("ops", "web", "data", "infra", "ml", "qa", "sales", "hr", "finance", "legal")
DEVICES = (
    "laptop", "desktop", "nas", "phone", "tablet", "workstation", "server", "pi", "vm",
    "db01", "db02", "web01", "web02", "ci", "build", "mail", "vpn", "k8s", "backup",
    "media", "git", "wiki", "monitor", "proxy",
)
PURPOSES = (
    "laptop", "desktop", "photos", "documents", "music", "mail", "db", "web", "home",
    "projects", "archive", "nas", "vm", "etc", "git", "wiki", "media", "config", "logs",
    "scans", "finance", "code", "video", "misc",
)
DOMAINS = ("example.org", "example.com", "example.net")
QUOTAS = ("50G", "100G", "250G", "500G", "750G", "1T", "1.5T", "2T", "5T")
FROM_CHOICES = (
    ["192.168.1.0/24"], ["10.0.0.0/8"], ["192.0.2.17"], ["198.51.100.0/24", "203.0.113.5"],
    ["*.example.org"], ["2001:db8::/32"], ["10.20.0.0/16", "!10.20.99.0/24"],
)
UID_PIN_BASE = 60000  # pinned uids live outside uid_range, like users imported with theirs
ED25519_PREFIX = (len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519"
                  + (32).to_bytes(4, "big"))


def ed25519_public_key(raw: bytes) -> str:
    """The base64 blob of an ssh-ed25519 public key holding these 32 bytes."""
    if len(raw) != 32:
        raise ValueError("an ed25519 public key is 32 bytes")
    return base64.b64encode(ED25519_PREFIX + raw).decode("ascii")


@dataclass
class Owner:
    name: str
    email: str
    team: bool
    keys: list[str] = field(default_factory=list)
    repos: list[str] = field(default_factory=list)


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` items over `parts` buckets, at least one each, uneven like real life."""
    counts = [1] * parts
    weights = [min(rng.paretovariate(1.5), 20.0) for _ in range(parts)]
    for i in rng.choices(range(parts), weights=weights, k=total - parts):
        counts[i] += 1
    return counts


def _unique(base: str, taken: set[str], limit: int) -> str:
    name = base[:limit]
    n = 2
    while name in taken:
        suffix = f"-{n}"
        name = base[:limit - len(suffix)] + suffix
        n += 1
    taken.add(name)
    return name


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def generate(repos: int = 5000, keys: int = 10000, owners: int | None = None,
             seed: int | None = 1, prefix: str = "bh-") -> str:
    """The text of hive.yaml. `seed=None` takes key bytes from os.urandom."""
    owners = owners or max(1, repos // 5)
    if not 1 <= owners <= min(repos, keys):
        raise ValueError("need 1 <= owners <= min(repos, keys)")
    rng = random.Random(seed if seed is not None else 0)
    key_bytes = (rng.randbytes if seed is not None else os.urandom)
    name_limit = 32 - len(prefix)  # unix user names are at most 32 characters

    # Owners: people, and every ~25th a team.
    people: list[Owner] = []
    for i in range(owners):
        if i % 25 == 24:
            base = f"{TEAMS[(i // 25) % len(TEAMS)]}-{i:04d}"
            people.append(Owner(base, f"{base}@{rng.choice(DOMAINS)}", True))
        else:
            base = f"{FIRST_NAMES[i % len(FIRST_NAMES)]}-{i:04d}"
            people.append(Owner(base, f"{base}@{rng.choice(DOMAINS)}", False))

    key_taken: set[str] = set()
    repo_taken: set[str] = set()
    for owner, n_keys, n_repos in zip(people, _split(keys, owners, rng),
                                      _split(repos, owners, rng), strict=True):
        for j in range(n_keys):
            device = DEVICES[j % len(DEVICES)] if j < len(DEVICES) else rng.choice(DEVICES)
            owner.keys.append(_unique(f"{owner.name}-{device}", key_taken, 32))
        for j in range(n_repos):
            purpose = PURPOSES[j % len(PURPOSES)] if j < len(PURPOSES) else rng.choice(PURPOSES)
            owner.repos.append(_unique(f"{owner.name}-{purpose}", repo_taken, name_limit))

    # Groups of 2 to 6 owners; a group's repositories accept its members' keys.
    groups: dict[str, list[str]] = {}
    for g in range(max(1, owners // 10)):
        size = min(owners, rng.randint(2, 6))
        groups[f"group-{g:03d}"] = sorted(o.name for o in rng.sample(people, size))
    member_of: dict[str, list[str]] = {}
    for gname, members in groups.items():
        for m in members:
            member_of.setdefault(m, []).append(gname)
    by_name = {o.name: o for o in people}

    out = [
        "# Generated by bench/generate.py: "
        f"--repos {repos} --keys {keys} --owners {owners} --seed {seed}",
        "version: 1",
        "",
        "server:",
        "  name: bench1",
        "  ssh_host: backup.example.org",
        "  ssh_port: 22",
        "  repos_root: ./data/repos",
        "  state_dir: ./data/state",
        "  borg_command: /usr/bin/borg",
        "  rrsync_command: /usr/bin/rrsync",
        "  users:",
        f'    prefix: "{prefix}"',
        f"    uid_range: [20000, {20000 + max(10000, 2 * repos) - 1}]",
        "    shell: /bin/sh",
        "  identity:",
        "    backend: files",
        "    files_dir: ./data/extrausers",
        "",
        "owners:",
    ]
    for o in people:
        extra = ", description: " + _q(f"the {o.name.split('-')[0]} team") if o.team else ""
        out.append(f"  {o.name}: {{email: {o.email}{extra}}}")

    out += ["", "groups:"]
    for gname, members in groups.items():
        out.append(f"  {gname}:")
        out.append(f"    members: [{', '.join(members)}]")
        if rng.random() < 0.3:
            out.append(f"    description: {_q('shared backups of ' + members[0])}")

    out += ["", "keys:"]
    for o in people:
        for kname in o.keys:
            device = kname.rsplit("-", 1)[-1]
            blob = ed25519_public_key(key_bytes(32))
            out.append(f"  {kname}:")
            out.append(f"    owner: {o.name}")
            out.append(f"    public_key: ssh-ed25519 {blob} {o.name}@{device}")
            r = rng.random()
            if r < 0.10:
                froms = ", ".join(_q(f) for f in rng.choice(FROM_CHOICES))
                out.append(f"    from: [{froms}]")
            r = rng.random()
            if r < 0.02:  # already past: left out of authorized_keys, with a plan note
                out.append(f"    expires: 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
            elif r < 0.10:
                out.append(f"    expires: {rng.randint(2031, 2039)}-{rng.randint(1, 12):02d}-"
                           f"{rng.randint(1, 28):02d}")
            if rng.random() < 0.05:
                out.append(f"    description: {_q('rotated ' + str(rng.randint(2019, 2025)))}")

    out += ["", "repositories:"]
    pinned = 0
    for o in people:
        # Every key is used at least once: round-robin over the owner's repositories,
        # then leftover keys land on random ones.
        full: dict[str, list[str]] = {r: [] for r in o.repos}
        for i, kname in enumerate(o.keys):
            target = o.repos[i % len(o.repos)] if i < len(o.repos) else rng.choice(o.repos)
            full[target].append(kname)
        for i, rname in enumerate(o.repos):
            if not full[rname]:
                full[rname].append(o.keys[i % len(o.keys)])
        for rname in o.repos:
            lines = [f"  {rname}:", f"    owner: {o.name}"]
            if rng.random() < 0.2:
                purpose = rname.rsplit("-", 1)[-1]
                lines.append(f"    description: {_q(o.name + ' ' + purpose)}")
            m = rng.random()
            importing = m < 0.04
            if importing:
                lines.append("    mode: import")
            elif m < 0.07:
                lines.append("    mode: export")
            elif m < 0.10:
                lines.append("    mode: disabled")
            repo_groups = []
            if member_of.get(o.name) and rng.random() < 0.3:
                repo_groups = [rng.choice(member_of[o.name])]
            elif rng.random() < 0.1:
                repo_groups = [rng.choice(list(groups))]
            if repo_groups:
                lines.append(f"    groups: [{', '.join(repo_groups)}]")
            lines.append(f"    keys: [{', '.join(full[rname])}]")
            if rng.random() < 0.25:
                candidates = [k for k in o.keys if k not in full[rname]]
                for g in repo_groups:
                    for member in groups[g]:
                        if member != o.name:
                            candidates.extend(by_name[member].keys[:2])
                if candidates:
                    picks = rng.sample(candidates, min(len(candidates), rng.randint(1, 3)))
                    if not importing:  # rsync's write access cannot be append-only
                        lines.append(f"    append_only_keys: [{', '.join(picks)}]")
            if rng.random() < 0.4 and not importing:  # nor can rsync's write a quota
                lines.append(f'    quota: "{rng.choice(QUOTAS)}"')
            if rng.random() < 0.05:
                lines.append("    protected: true")
            if pinned < max(1, repos // 500) and rng.random() < 0.01:
                lines.append(f"    uid: {UID_PIN_BASE + pinned}")
                pinned += 1
            out.extend(lines)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for hive.yaml (and, once "
                        "applied, its ./data)")
    parser.add_argument("--repos", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--owners", type=int, default=None,
                        help="default: one per 5 repositories")
    parser.add_argument("--seed", default="1",
                        help="integer seed (default 1), or 'random' for os.urandom keys")
    args = parser.parse_args(argv)
    seed = None if args.seed == "random" else int(args.seed)
    text = generate(args.repos, args.keys, args.owners, seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "hive.yaml"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}: {len(text) / 1e6:.1f} MB, {text.count(chr(10))} lines",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
