"""The click command `hive notify`. Imports only click and hive.common (what every
command shares) at module level: `hive` loads this module on every call, and apprise
(half a second) is imported only when sending."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from hive.common import EXIT_ERROR, EXIT_OK, Seconds, duration, file_option


@click.command()
@file_option
@click.option("--dry-run", is_flag=True,
              help="Show who would get what; send nothing and record nothing.")
@click.option("--test", "test_channel", metavar="CHANNEL",
              help="Send one test message through this channel (and nothing else).")
@click.option("--lock-stale-after", default="24h", show_default=True, callback=duration,
              help="As for 'hive status': when a lock left behind counts as 'locked'.")
@click.option("--wait", "lock_timeout", type=Seconds(0, 3600), default=120.0,
              show_default=True,
              help="Seconds to wait for another running 'hive notify' to finish.")
@click.option("--output", "-o", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: one JSON object per line: 'version' first, one 'message' each, "
                   "'summary' last.")
def notify(config_file: str | None, dry_run: bool, test_channel: str | None,
           lock_stale_after: float, lock_timeout: float, fmt: str) -> int:
    """Tell people about repositories in trouble, through the channels in hive.yaml.

    \b
    Alerts: stale, never_backed_up, locked, missing, corrupt, quota, key_expiring,
    repokey_changed, each judged as 'hive status' judges it. Each channel gets one message per run
    grouping its repositories; an alert repeats every repeat_every while it lasts,
    stops after stop_after, and its end is announced once (recovery: true).
    Every attempt is a row in <state_dir>/events.duckdb (notify_attempts); the
    alerts sent live there too (notify_state), so runs from a timer remember.
    A channel that fails is tried again next run; the others still get theirs.
    Exit codes: 0 all delivered (or nothing to send), 1 a channel failed or error.

    \b
      hive notify --dry-run          who would get what now
      hive notify --test ops-mail    check a channel's URL and secrets
    """
    from hive import output
    from hive.common import load as _load
    from notifications.state import NotifyBusy
    from watcher import store

    if fmt == "json":
        output.emit_version()
    # apprise's own look at each URL happens when its channel sends (send.deliver): one
    # broken channel must not silence the others, and a dry run needs no apprise at all.
    config, _path = _load(config_file, fmt)
    try:
        if test_channel is not None:
            if test_channel not in config.notifications.channels:
                known = ", ".join(config.notifications.channels) or "none"
                return _error(f"no channel {test_channel!r} in notifications.channels "
                              f"(known: {known})", fmt)
            return _test(config, test_channel, lock_timeout, fmt)
        return _run(config, dry_run, lock_stale_after, lock_timeout, fmt)
    except (store.StoreError, NotifyBusy, OSError) as exc:
        return _error(str(exc), fmt)


def _error(message: str, fmt: str) -> int:
    if fmt == "json":
        from hive import output

        output.emit("error", message=message)
        output.emit("summary", messages=0, sent=0, failed=0, errors=1)
    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)
    return EXIT_ERROR


def _test(config: Any, channel: str, lock_timeout: float, fmt: str) -> int:
    from notifications import render, send, state
    from schemas.placeholders import policy_of

    now = datetime.now(UTC)
    message = render.test_message(config, channel, now)
    with state.run_lock(config.server.state_dir, lock_timeout):
        error = send.deliver(config.notifications.channels[channel].url, message.title,
                             message.body, message.notify_type, policy_of(config))
        state.record(config.server.state_dir, config.server.name, now,
                     [state.Attempt(channel, "test", [], error)], [])
    return _report(config, [(message, error)], dry_run=False, fmt=fmt)


def _run(config: Any, dry_run: bool, lock_stale_after: float, lock_timeout: float,
         fmt: str) -> int:
    import contextlib

    from notifications import alerts, render, send, state
    from schemas.placeholders import policy_of
    from watcher import status

    if not config.notifications.rules:
        if fmt == "json":
            from hive import output

            output.emit("summary", messages=0, sent=0, failed=0, errors=0, dry_run=dry_run)
        else:
            click.echo("No notifications.rules in the file: nobody to tell.")
        return EXIT_OK
    state_dir = config.server.state_dir
    lock = (contextlib.nullcontext() if dry_run
            else state.run_lock(state_dir, lock_timeout))
    with lock:
        now = datetime.now(UTC)
        statuses = status.gather(config, lock_stale_after=lock_stale_after, now=now)
        active = alerts.conditions(config, statuses, state.created_times(state_dir), now)
        sent = state.load_sent(state_dir, config.server.name)
        deliveries = alerts.decide(config, active, sent, now)
        by_name = {s.repository: s for s in statuses}
        messages = render.messages(config, deliveries, by_name, now)
        results: list[tuple[render.Message, str | None]] = []
        if dry_run:
            return _report(config, [(m, None) for m in messages], dry_run=True, fmt=fmt)
        channels = config.notifications.channels
        for message in messages:
            error = send.deliver(channels[message.channel].url, message.title,
                                 message.body, message.notify_type, policy_of(config))
            results.append((message, error))
        cleared = [d for d in deliveries if d.kind == "clear"]
        if results or cleared:
            state.record(state_dir, config.server.name, now,
                         [state.Attempt(m.channel, m.kind, m.deliveries, e)
                          for m, e in results], cleared)
    return _report(config, results, dry_run=False, fmt=fmt)


def _report(config: Any, results: list[tuple[Any, str | None]], dry_run: bool,
            fmt: str) -> int:
    failed = sorted({m.channel for m, e in results if e is not None})
    sent = sum(1 for _, e in results if e is None) if not dry_run else 0
    if fmt == "json":
        from hive import output

        for m, error in results:
            output.emit("message", channel=m.channel, kind=m.kind, title=m.title, body=m.body,
                        notify_type=m.notify_type,
                        rules=sorted({d.rule for d in m.deliveries}),
                        items=[{"repository": d.repository, "alert": d.alert, "kind": d.kind,
                                "rule": d.rule} for d in m.deliveries],
                        result="dry-run" if dry_run else ("sent" if error is None
                                                          else "failed"),
                        error=error)
        output.emit("summary", messages=len(results), sent=sent, failed=len(failed),
                    errors=len(failed), dry_run=dry_run)
    else:
        host = config.server.name
        if not results:
            click.echo(f"hive notify on {host}: nothing to send.")
        else:
            verb = "would send" if dry_run else "sent"
            click.echo(f"hive notify on {host}: {len(results)} message"
                       f"{'s' if len(results) != 1 else ''}{' (dry run)' if dry_run else ''}")
        for m, error in results:
            colour = "green" if m.kind == "recovery" else "yellow"
            click.echo(click.style(f"  > {m.channel}", fg=colour, bold=True)
                       + f" [{m.notify_type}] {m.title}")
            for d in m.deliveries:
                click.echo(f"      {d.repository}: {d.alert} ({d.kind}, rule {d.rule})")
            if dry_run:
                continue
            if error is None:
                click.echo(click.style(f"      {verb}", fg="green"))
            else:
                click.echo(click.style(f"      FAILED: {error}", fg="red"))
    if failed:
        click.echo(click.style("Error: ", fg="red", bold=True)
                   + f"delivery failed on channel{'s' if len(failed) > 1 else ''} "
                   + ", ".join(failed) + "; tried again on the next run.", err=True)
        return EXIT_ERROR
    return EXIT_OK
