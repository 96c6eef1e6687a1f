"""`herald tail STREAM… [--from OFFSET]`: follow streams live as a Socket.IO client.

One JSON line per event on stdout (`{"type", "payload", "meta"}`, as the HTTP API
returns them), anything else on stderr. The tail keeps each stream's last
`(offset, epoch)`; when the connection drops it reconnects with those positions, so
the server replays what was missed, and it skips what it already printed: no event is
missed (within retention) and none is printed twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from app.cli import EXTENSIONS, Failure, UsageError, _factory
from app.errors import HeraldError
from app.outbox.streams import parse_stream
from app.settings import Settings

if TYPE_CHECKING:
    import socketio

FAR_AFTER = 2**62  # asks the HTTP API for no events, only the head


@dataclass
class Position:
    offset: int
    epoch: str | None


def fetch_head(url: str, token: str, stream: str, timeout: float = 10) -> Position:
    """The stream's head over HTTP, which also checks that the caller may read it."""
    query = urllib.parse.urlencode({"after": FAR_AFTER, "limit": 1})
    request = urllib.request.Request(
        f"{url}/api/streams/{urllib.parse.quote(stream)}/events?{query}",
        headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            head = json.loads(response.read())["head"]
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())["error"]
            reason = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            reason = f"HTTP {exc.code}"
        raise Failure(f"{stream}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Failure(f"cannot reach {url}: {exc}") from None
    return Position(int(head["offset"]), str(head["epoch"]))


@dataclass
class Tail:
    """The follow loop: connect with positions, print new events, reconnect on a drop."""

    url: str
    token: Callable[[], str]
    positions: dict[str, Position]
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    max_delay: float = 2.0
    refused: Any = None
    _lost: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, text: str) -> None:
        print(f"herald tail: {text}", file=self.err, flush=True)

    def on_event(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "connected":
            recovered = args[0].get("recovered", {}) if args and isinstance(args[0], dict) else {}
            lost = sorted(s for s in self.positions if recovered.get(s) is False)
            if lost:
                self.note(f"could not recover {', '.join(lost)} (pruned or reset); "
                          "following from the head")
            return
        meta = args[1] if len(args) == 2 and isinstance(args[1], dict) else None
        if meta is None or meta.get("stream") not in self.positions:
            return
        stream, offset, epoch = meta["stream"], meta.get("offset"), meta.get("epoch")
        if not isinstance(offset, int):
            return
        seen = self.positions[stream]
        if (seen.epoch is None or seen.epoch == epoch) and offset <= seen.offset:
            return  # at least once on the wire, exactly once here
        print(json.dumps({"type": name, "payload": args[0], "meta": meta},
                         ensure_ascii=False), file=self.out, flush=True)
        self.positions[stream] = Position(offset, epoch if isinstance(epoch, str) else None)

    def auth(self) -> dict[str, Any]:
        positions = {s: {"offset": p.offset, **({"epoch": p.epoch} if p.epoch else {})}
                     for s, p in self.positions.items()}
        return {"token": self.token(), "positions": positions}

    def client(self) -> socketio.AsyncClient:
        import socketio  # here: the other herald commands need not load it

        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)

        @sio.on("*")  # type: ignore[untyped-decorator]
        async def any_event(name: str, *args: Any) -> None:
            self.on_event(name, args)

        @sio.event  # type: ignore[untyped-decorator]
        async def connect_error(data: Any) -> None:
            if isinstance(data, dict) and "code" in data:
                self.refused = data["code"]

        @sio.event  # type: ignore[untyped-decorator]
        async def disconnect(*_reason: Any) -> None:
            self._lost.set()

        return sio

    async def run(self) -> None:
        """Follow until interrupted; raises Failure if refused or never connected."""
        import socketio

        connected_once = False
        attempt = 0
        while True:
            sio = self.client()
            self._lost.clear()
            try:
                await sio.connect(self.url, auth=self.auth(), transports=["websocket"],
                                  wait_timeout=10)
            except socketio.exceptions.ConnectionError as exc:
                if self.refused is not None:
                    raise Failure(f"connection refused: {self.refused}") from None
                if not connected_once:
                    raise Failure(f"cannot connect to {self.url}: {exc}") from None
                delay = min(self.max_delay, 0.25 * 2 ** min(attempt, 8))
                attempt += 1
                self.note(f"reconnect failed ({exc}); retrying in {delay:.2f}s")
                await asyncio.sleep(delay)
                continue
            connected_once, attempt = True, 0
            self.note(f"connected to {self.url}; following {', '.join(self.positions)}")
            await self._lost.wait()
            if sio.connected:
                await sio.disconnect()
            self.note("connection lost; reconnecting from the last positions")


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    try:
        for stream in args.streams:
            parse_stream(stream)
    except HeraldError as exc:
        raise UsageError(exc.message) from None
    if (args.token is None) == (args.user is None):
        raise UsageError("give --token T or --user ID")
    if args.from_offset is not None and args.from_offset < 0:
        raise UsageError("--from must be 0 or more")
    token = _token_source(args, settings)
    url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    positions: dict[str, Position] = {}
    for stream in dict.fromkeys(args.streams):
        head = fetch_head(url, token(), stream)
        positions[stream] = head if args.from_offset is None \
            else Position(args.from_offset, head.epoch)
    asyncio.run(Tail(url=url, token=token, positions=positions).run())
    return 0


def _token_source(args: argparse.Namespace, settings: Settings) -> Callable[[], str]:
    if args.token is not None:
        given: str = args.token
        return lambda: given
    from app.auth import mint
    from app.models import User

    with _factory(settings)() as session:
        user = session.get(User, args.user)
        if user is None:
            raise Failure(f"no user with id {args.user}")
        sub, email, role = str(user.id), user.email, user.role
    # a fresh token for every (re)connection: a long tail never dies of an expired token
    return lambda: mint(secret=settings.secret, sub=sub, email=email, role=role,
                        ttl=timedelta(hours=1))


def register(sub: Any) -> None:
    tail = sub.add_parser("tail", help="follow streams live; one JSON line per event")
    tail.add_argument("streams", nargs="+", metavar="STREAM")
    tail.add_argument("--from", dest="from_offset", type=int, metavar="OFFSET",
                      help="start after this offset (default: only new events)")
    tail.add_argument("--token", help="an access token")
    tail.add_argument("--user", type=int, metavar="ID",
                      help="mint a token for this user (needs DATABASE_URL and JWT_SECRET)")
    tail.add_argument("--url", help="a web node (default http://127.0.0.1:$PORT)")
    tail.set_defaults(fn=cmd_tail)


if register not in EXTENSIONS:
    EXTENSIONS.append(register)
