"""`herald tail STREAM… [--from [STREAM:]OFFSET …]`: follow streams live, as a client.

Built on herald_client's Subscriber: one JSON line per event on stdout (`{"type",
"payload", "meta"}`, as the HTTP API returns them), anything else on stderr. Each stream
starts after its `--from` offset (or at its head); reconnects resume from the last
position printed, gaps are filled over HTTP, and nothing is printed twice. Ctrl-C (or
SIGTERM) ends it with exit code 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from app.cli.common import Failure, UsageError, open_database, stream_name

if TYPE_CHECKING:
    from app.core.settings import Settings


def parse_from(values: list[str], streams: list[str]) -> dict[str, int]:
    """`--from N` (every stream) and `--from STREAM:N` (one), the latter winning."""
    every: int | None = None
    one: dict[str, int] = {}
    for value in values:
        stream, _, raw = value.rpartition(":")
        try:
            offset = int(raw)
        except ValueError:
            raise UsageError(f"--from {value}: give OFFSET or STREAM:OFFSET") from None
        if offset < 0:
            raise UsageError("--from must be 0 or more")
        if not stream:
            every = offset
        elif stream not in streams:
            raise UsageError(f"--from {value}: {stream} is not one of the streams followed")
        else:
            one[stream] = offset
    out: dict[str, int] = {}
    for stream in streams:
        if stream in one:
            out[stream] = one[stream]
        elif every is not None:
            out[stream] = every
    return out


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    streams = list(dict.fromkeys(args.streams))
    if (args.token is None) == (args.user is None):
        raise UsageError("give --token T or --user ID")
    starts = parse_from(args.from_ or [], streams)
    token = _token_source(args, settings)
    url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    import asyncio

    from app.cli.follow import Position, follow, heads  # the client, only when tailing

    try:
        positions = asyncio.run(heads(url, token, streams))
        for stream, offset in starts.items():
            positions[stream] = Position(offset, positions[stream].epoch)
        asyncio.run(follow(url, token, positions))
    except KeyboardInterrupt:  # before the signal handlers are in place: still a clean stop
        pass
    return 0


def _token_source(args: argparse.Namespace, settings: Settings) -> Callable[[], str]:
    if args.token is not None:
        given: str = args.token
        return lambda: given
    from app.portal.auth import mint
    from app.portal.models import User

    with open_database(settings)() as session:
        user = session.get(User, args.user)
        if user is None:
            raise Failure(f"no user with id {args.user}")
        sub, email, role = str(user.id), user.email, user.role
    # a fresh token for every (re)connection: a long tail never dies of an expired token
    return lambda: mint(secret=settings.secret, sub=sub, email=email, role=role,
                        ttl=timedelta(hours=1))


def register(sub: Any) -> None:
    tail = sub.add_parser("tail", help="follow streams live; one JSON line per event")
    tail.add_argument("streams", nargs="+", metavar="STREAM", type=stream_name,
                      help="a stream to follow (user-ID, project-ID, ticket-ID, clients, "
                           "technicians, admins)")
    tail.add_argument("--from", dest="from_", action="append", metavar="[STREAM:]OFFSET",
                      help="start after this offset, for one stream (STREAM:OFFSET) or for all "
                           "(OFFSET); repeatable (default: only new events)")
    tail.add_argument("--token", help="an access token")
    tail.add_argument("--user", type=int, metavar="ID",
                      help="mint a token for this user (needs DATABASE_URL and JWT_SECRET)")
    tail.add_argument("--url", help="a web node (default http://127.0.0.1:$PORT)")
    tail.set_defaults(fn=cmd_tail)

