"""`herald outbox status|failed|show|rate|retry|prune` and `herald nodes`: what /ops shows
and does, from a terminal. Tables for people (last errors whole), --json for scripts."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.cli.common import Failure, UsageError, open_database, stream_name
from app.core.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from app.core.settings import Settings


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to fit; the last one is never cut: a value of several lines goes on
    in the same column on the next lines."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    last = len(headers) - 1
    widths = [max(len(row[i]) for row in cells) for i in range(last)]
    indent = " " * (sum(widths) + 2 * last)
    lines = []
    for row in cells:
        head = "".join(c.ljust(w) + "  " for c, w in zip(row[:last], widths, strict=True))
        first, *more = row[last].splitlines() or [""]
        lines.append((head + first).rstrip())
        lines.extend((indent + line).rstrip() for line in more)
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _error(text: str | None) -> str:
    return text.strip() if text and text.strip() else "-"


def duration_words(span: timedelta) -> str:
    """'7 days', '1 day 12 hours', '30 minutes', '45 seconds': at most two units."""
    seconds = span.total_seconds()
    if seconds < 60:
        return f"{seconds:g} second{'' if seconds == 1 else 's'}"
    parts = []
    rest = int(seconds)
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts[:2])


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import ops

    with open_database(settings)() as session:
        state = ops.status(session, search=args.filter)
    summary = "\n".join(f"{label:<18}{value}" for label, value in [
        ("events pending", state.events_pending),
        ("streams behind", state.streams_behind),
        ("oldest pending", _age(state.oldest_pending_age)),
        ("failed streams", state.failed_streams),
        ("retrying streams", state.retrying_streams),
    ])
    lines = [summary]
    if state.streams:
        lines += ["", _table(
            ["STREAM", "STATE", "PENDING", "DISPATCHED", "HEAD", "ATTEMPTS", "OLDEST",
             "NEXT ATTEMPT", "LAST ERROR"],
            [[s.stream, s.state, s.pending, s.dispatched, s.head, s.attempts,
              _age(s.oldest_pending_age), s.next_attempt_at, _error(s.last_error)]
             for s in state.streams])]
    elif args.filter:
        lines += ["", f"no stream behind or failed matches {args.filter!r}"]
    _emit(args, state.to_dict(), "\n".join(lines))
    return 0


def cmd_failed(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import ops

    with open_database(settings)() as session:
        rows = ops.failed(session)
    text = "no failed streams" if not rows else _table(
        ["STREAM", "ATTEMPTS", "FAILED AT", "PENDING", "LAST ERROR"],
        [[r.stream, r.attempts, r.failed_at, r.pending, _error(r.last_error)] for r in rows])
    _emit(args, {"streams": [r.to_dict() for r in rows]}, text)
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import ops

    try:
        with open_database(settings)() as session:
            detail = ops.detail(session, args.stream, events=args.events)
    except NotFound as exc:
        raise Failure(exc.message) from None
    except InvalidInput as exc:
        raise UsageError(exc.message) from None
    summary = "\n".join(f"{label:<18}{'-' if value is None else value}" for label, value in [
        ("stream", detail.stream), ("state", detail.state), ("head", detail.head),
        ("dispatched", detail.dispatched), ("pending", detail.pending),
        ("oldest pending", _age(detail.oldest_pending_age)), ("attempts", detail.attempts),
        ("next attempt", detail.next_attempt_at), ("failed at", detail.failed_at),
        ("pruned through", detail.pruned_through), ("epoch", detail.epoch),
    ])
    error = "\n".join(f"  {line}" for line in _error(detail.last_error).splitlines())
    lines = [summary, "last error", error]
    if detail.events:
        lines += ["", _table(["OFFSET", "CREATED", "PUBLISHED", "TYPE", "PAYLOAD"],
                             [[e.offset, e.created_at, "yes" if e.published else "no", e.type,
                               json.dumps(e.payload, ensure_ascii=False)]
                              for e in detail.events])]
    _emit(args, detail.to_dict(), "\n".join(lines))
    return 0


def _redis(settings: Settings) -> Any:
    from app.core.redisclients import quick_redis

    return quick_redis(settings.sio_redis_url)


def cmd_rate(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import liveness

    client = _redis(settings)
    try:
        data = liveness.rate(client, settings.socketio_channel)
    finally:
        client.close()
    minutes: dict[int, list[dict[str, Any]]] = {}
    for sample in data["samples"]:
        minutes.setdefault(sample["at"] // 60, []).append(sample)
    rows = []
    for minute, samples in sorted(minutes.items()):
        pending = [s["pending"] for s in samples if s["pending"] is not None]
        rows.append([datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M"),
                     sum(s["published"] for s in samples), sum(s["rejected"] for s in samples),
                     pending[-1] if pending else None])
    text = (f"published in the last {duration_words(timedelta(seconds=data['windowSeconds']))}:"
            f" {data['published']} ({data['perSecond']}/s)\n\n"
            + _table(["MINUTE (UTC)", "PUBLISHED", "REFUSED", "PENDING"], rows))
    _emit(args, data, text)
    return 0


def cmd_nodes(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import liveness

    client = _redis(settings)
    try:
        data = liveness.nodes(liveness.Heartbeats(client, settings.socketio_channel))
    finally:
        client.close()
    now = time.time()
    workers = _table(["WORKER", "QUEUE", "RELAY THREAD", "LAST SWEEP", "SEEN"],
                     [[w["id"], w.get("queue"), "alive" if w.get("relayThread") else "stopped",
                       f"{_age(w.get('sweepAgeSeconds'))} ago" if w.get("lastSweepAt")
                       else "never", f"{_age(now - w['seenAt'])} ago"]
                      for w in data["workers"]]) if data["workers"] else "no live workers"
    webs = _table(["WEB NODE", "SOCKETS", "ROOMS", "MEMBERSHIPS", "SEEN"],
                  [[n["id"], n.get("sockets"), n.get("rooms"), n.get("memberships"),
                    f"{_age(now - n['seenAt'])} ago"]
                   for n in data["webNodes"]]) if data["webNodes"] else "no live web nodes"
    _emit(args, data, f"{workers}\n\n{webs}")
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import ops

    if not args.streams and not args.all:
        raise UsageError("retry needs stream names (e.g. herald outbox retry project-1) or --all")
    if args.streams and args.all:
        raise UsageError("retry takes stream names or --all, not both")
    try:
        done = ops.retry(open_database(settings, nudge=True), streams=args.streams or None,
                         all_failed=bool(args.all), actor="cli")
    except InvalidInput as exc:
        raise UsageError(exc.message) from None
    except NotFound as exc:
        raise Failure(exc.message) from None
    lines = []
    if done.retried:
        lines.append(f"retried {len(done.retried)} stream(s): {_some(done.retried)}")
    if done.healthy:
        lines.append(f"already healthy, left unchanged: {_some(done.healthy)}")
    _emit(args, done.to_dict(), "\n".join(lines) or "nothing to retry")
    return 0


NAMED = 20  # stream names a line shows (--json lists them all)


def _some(names: list[str]) -> str:
    """`names`, the first NAMED of them: `retry --all` after an outage may retry 70,000."""
    shown = ", ".join(names[:NAMED])
    more = len(names) - NAMED
    return f"{shown} and {more:,} more (--json lists them all)" if more > 0 else shown


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from app.core.settings import parse_duration
    from app.outbox import ops

    try:
        retention = parse_duration(args.older_than) if args.older_than else settings.retention
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    age = duration_words(retention)
    if args.dry_run:
        with open_database(settings)() as session:
            would = ops.prunable(session, retention=retention)
        _emit(args, {"dryRun": True, "wouldPrune": would.events, "streams": would.streams,
                     "olderThanSeconds": retention.total_seconds(), "cutoff": would.cutoff},
              f"would prune {would.events} published event(s) in {would.streams} stream(s) "
              f"older than {age} (created before {would.cutoff}); nothing deleted")
        return 0
    pruned = ops.prune(open_database(settings), retention=retention)
    _emit(args, {"pruned": pruned, "olderThanSeconds": retention.total_seconds()},
          f"pruned {pruned} published event(s) older than {age}")
    return 0


def _events(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError("0 to 100")
    return number


def register(sub: Any) -> None:
    outbox = sub.add_parser("outbox", help="the outbox: status, a stream, retry, prune")
    cmds = outbox.add_subparsers(dest="outbox_cmd", required=True)

    def add(name: str, help: str, fn: Any, where: Any = cmds) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = where.add_parser(name, help=help)
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
        parser.set_defaults(fn=fn)
        return parser

    status = add("status", "events pending, streams behind, oldest pending age, failed, lag",
                 cmd_status)
    status.add_argument("--filter", metavar="TEXT",
                        help="list only streams whose name or last error holds TEXT")
    add("failed", "failed streams with attempts, last error and since when", cmd_failed)
    show = add("show", "one stream: cursor, head, attempts, last error, last events", cmd_show)
    show.add_argument("stream", metavar="STREAM", type=stream_name, help="e.g. project-1")
    show.add_argument("--events", type=_events, default=20,
                      help="how many of its last events to show (0-100, default 20)")
    add("rate", "events published and refused per minute over the last 15 minutes", cmd_rate)
    retry = add("retry", "give failed or backing-off streams back to the relay now", cmd_retry)
    retry.add_argument("streams", nargs="*", metavar="STREAM", type=stream_name,
                       help="a stream to give back to the relay (e.g. project-1); repeatable")
    retry.add_argument("--all", action="store_true",
                       help="every failed stream and every stream waiting on a backoff")
    prune = add("prune", "drop published events older than the retention", cmd_prune)
    prune.add_argument("--older-than", help="a duration (e.g. 7d); default HERALD_RETENTION")
    prune.add_argument("--dry-run", action="store_true",
                       help="say what would be dropped; drop nothing")
    add("nodes", "live workers (last sweep) and web nodes (sockets, rooms)", cmd_nodes,
        where=sub)
