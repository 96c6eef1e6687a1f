"""What `herald tail` runs once its arguments are checked: a herald_client Subscriber that
prints each event as one JSON line, until SIGINT/SIGTERM.

herald_client is the copy bundled in the server's wheel (setup.py), or, in a clone with
editable installs, the clients/python package itself: one source either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from app.cli.common import Failure

if TYPE_CHECKING:
    import herald_client
    from herald_client import History, Position, Subscriber
else:
    try:
        from app._bundled import herald_client  # an installed wheel's copy
    except ImportError:  # a clone: clients/python, installed editable
        import herald_client
    History, Position, Subscriber = (herald_client.History, herald_client.Position,
                                     herald_client.Subscriber)


class Tail:
    """Prints the events of `streams` from a Subscriber until stopped."""

    def __init__(self, url: str, token: Callable[[], str], positions: dict[str, Position],
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.url, self.positions, self.out, self.err = url, positions, out, err
        self.closing = False  # a stop asked for: the disconnect that follows is not news
        self.sub = Subscriber(url, get_token=token, on_reset=self.on_reset,
                              on_connection_change=self.on_change)
        for stream, position in positions.items():
            self.sub.track(stream, position)

    def note(self, text: str) -> None:
        print(f"herald tail: {text}", file=self.err, flush=True)

    def on_change(self, up: bool) -> None:
        if up:
            self.note(f"connected to {self.url}; following {', '.join(self.positions)}")
        elif not self.closing:
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
            self.closing = True
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


__all__ = ["Position", "Tail", "follow", "heads"]
