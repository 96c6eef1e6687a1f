"""`herald tail STREAM… [--from [STREAM:]OFFSET …]`: follow streams live, as a client.

Built on herald_client's Subscriber: one JSON line per event on stdout (`{"type",
"payload", "meta"}`, as the HTTP API returns them), anything else on stderr. Each stream
starts after its `--from` offset (or at its head); reconnects resume from the last
position printed, gaps are filled over HTTP, and nothing is printed twice. Ctrl-C (or
SIGTERM) ends it with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TextIO

import herald_client
from herald_client import History, Position, Subscriber

from app.cli.common import Failure, UsageError, open_database, stream_name
from app.core.settings import Settings


class Tail:
    """Prints the events of `streams` from a Subscriber until stopped."""

    def __init__(self, url: str, token: Callable[[], str], positions: dict[str, Position],
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.url, self.positions, self.out, self.err = url, positions, out, err
        self.sub = Subscriber(url, get_token=token, on_reset=self.on_reset,
                              on_connection_change=self.on_change)
        for stream, position in positions.items():
            self.sub.track(stream, position)

    def note(self, text: str) -> None:
        print(f"herald tail: {text}", file=self.err, flush=True)

    def on_change(self, up: bool) -> None:
        if up:
            self.note(f"connected to {self.url}; following {', '.join(self.positions)}")
        else:
            self.note("connection lost; reconnecting from the last positions")

    def on_reset(self, stream: str, head: Position) -> None:
        if stream in self.positions:
            self.note(f"could not recover {stream} (pruned or reset); "
                      f"following from offset {head.offset}")

    async def run(self) -> None:
        try:
            await self.sub.start()
            async for event in self.sub:
                if event.meta is not None and event.meta.stream in self.positions:
                    print(json.dumps(event.to_dict(), ensure_ascii=False), file=self.out,
                          flush=True)
        except herald_client.HeraldError as exc:
            raise Failure(f"connection refused: {exc.code}") from None
        finally:
            await self.sub.close()


async def follow(url: str, token: Callable[[], str], positions: dict[str, Position]) -> None:
    """Run the tail until SIGINT/SIGTERM, then stop it cleanly."""
    tail = Tail(url, token, positions)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(tail.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopper.cancel()
        if not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    if runner.done() and not runner.cancelled():
        runner.result()  # a Failure from the tail itself


async def heads(url: str, token: Callable[[], str], streams: list[str]) -> dict[str, Position]:
    """Each stream's head over HTTP, which also checks that the caller may read it."""
    async def current(fresh: bool) -> str:
        return token()

    history = History(url, current)
    try:
        out = {}
        for stream in streams:
            try:
                out[stream] = await history.head(stream)
            except herald_client.Unavailable:
                raise Failure(f"cannot reach {url}") from None
            except herald_client.HeraldError as exc:
                raise Failure(f"{stream}: {exc.code}: {exc.message}") from None
        return out
    finally:
        await history.aclose()


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

