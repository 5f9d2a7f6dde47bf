"""metrics.prom: Prometheus text format for node_exporter's textfile collector.

Every sample carries `host`, `repository` and `owner`, so files from several Hive hosts
can be collected side by side. A repository never backed up (or never measured) has no
last-backup (or size) sample rather than a made-up 0.
"""

from __future__ import annotations

from reports.model import SEVERITY, Report

HELP = {
    "hive_repository_last_backup_timestamp_seconds":
        "Unix time of the repository's last backup (last commit that was not borg init's).",
    "hive_repository_size_bytes": "Disk space the repository uses, as hive stats last "
                                  "measured it (like du).",
    "hive_repository_quota_bytes": "The repository's storage quota from hive.yaml.",
    "hive_repository_state": "1 for the repository's current state (as hive status says), "
                             "0 for the others.",
    "hive_report_generated_timestamp_seconds": "Unix time hive report wrote these metrics.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def render(report: Report) -> str:
    host = report.summary.host
    samples: dict[str, list[str]] = {name: [] for name in HELP}
    for row in report.rows:
        s = row.status
        base = {"host": host, "repository": s.repository, "owner": s.owner}
        if s.last_backup is not None:
            samples["hive_repository_last_backup_timestamp_seconds"].append(
                f"{_labels(**base)} {s.last_backup.timestamp():.3f}")
        if s.size_bytes is not None:
            samples["hive_repository_size_bytes"].append(f"{_labels(**base)} {s.size_bytes}")
        if s.quota_bytes:
            samples["hive_repository_quota_bytes"].append(f"{_labels(**base)} {s.quota_bytes}")
        for state in SEVERITY:
            samples["hive_repository_state"].append(
                f"{_labels(**base, state=state)} {int(s.state == state)}")
    samples["hive_report_generated_timestamp_seconds"].append(
        f"{_labels(host=host)} {report.summary.generated.timestamp():.3f}")
    lines = []
    for name, help_text in HELP.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [name + sample for sample in samples[name]]
    return "\n".join(lines) + "\n"
