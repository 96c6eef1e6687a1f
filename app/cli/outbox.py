"""`herald outbox status|failed|retry STREAM…|retry --all|prune`: tables for people, --json."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.cli.common import Failure, UsageError, open_database, stream_name
from app.core.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from app.core.settings import Settings


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    line = text.splitlines()[0] if text.splitlines() else text
    return line if len(line) <= width else line[: width - 1] + "…"


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import ops

    with open_database(settings)() as session:
        state = ops.status(session)
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
              _age(s.oldest_pending_age), s.next_attempt_at, _short(s.last_error, 40)]
             for s in state.streams])]
    _emit(args, state.to_dict(), "\n".join(lines))
    return 0


def cmd_failed(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import ops

    with open_database(settings)() as session:
        rows = ops.failed(session)
    text = "no failed streams" if not rows else _table(
        ["STREAM", "ATTEMPTS", "FAILED AT", "PENDING", "LAST ERROR"],
        [[r.stream, r.attempts, r.failed_at, r.pending, _short(r.last_error)] for r in rows])
    _emit(args, {"streams": [r.to_dict() for r in rows]}, text)
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from app.outbox import ops

    if not args.streams and not args.all:
        raise UsageError("retry needs stream names (e.g. herald outbox retry project-1) or --all")
    if args.streams and args.all:
        raise UsageError("retry takes stream names or --all, not both")
    try:
        retried = ops.retry(open_database(settings, nudge=True), streams=args.streams or None,
                            all_failed=bool(args.all), actor="cli")
    except InvalidInput as exc:
        raise UsageError(exc.message) from None
    except NotFound as exc:
        raise Failure(exc.message) from None
    text = f"retried {len(retried)} stream(s): {', '.join(retried)}" if retried \
        else "nothing to retry"
    _emit(args, {"retried": retried}, text)
    return 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from app.core.settings import parse_duration
    from app.outbox import ops

    try:
        retention = parse_duration(args.older_than) if args.older_than else settings.retention
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    pruned = ops.prune(open_database(settings), retention=retention)
    _emit(args, {"pruned": pruned, "olderThanSeconds": retention.total_seconds()},
          f"pruned {pruned} event(s) older than {retention}")
    return 0


def register(sub: Any) -> None:
    outbox = sub.add_parser("outbox", help="the outbox: status, failed streams, retry, prune")
    cmds = outbox.add_subparsers(dest="outbox_cmd", required=True)

    def add(name: str, help: str, fn: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = cmds.add_parser(name, help=help)
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
        parser.set_defaults(fn=fn)
        return parser

    add("status", "events pending, streams behind, oldest pending age, failed, lag", cmd_status)
    add("failed", "failed streams with attempts, last error and since when", cmd_failed)
    retry = add("retry", "give streams back to the relay now", cmd_retry)
    retry.add_argument("streams", nargs="*", metavar="STREAM", type=stream_name,
                       help="a stream to give back to the relay (e.g. project-1); repeatable")
    retry.add_argument("--all", action="store_true",
                       help="every failed stream and every stream waiting on a backoff")
    prune = add("prune", "drop published events older than the retention", cmd_prune)
    prune.add_argument("--older-than", help="a duration (e.g. 7d); default HERALD_RETENTION")

