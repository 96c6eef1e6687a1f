"""Replay: a client reconnects with a position and receives what it missed.

For each size N, a fresh user's own stream gets N events (written in bulk, marked as
already relayed: the client missed them). Each repetition connects a real
python-socketio client to a real web node with `positions: {user-X: {offset: 0}}`
and times from the connect call to the N-th event received (all N checked, in order).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import websockets
from sqlalchemy.orm import Session, sessionmaker

from app.portal import projects
from bench import fixtures
from bench.clients import Listener, token
from bench.stats import Figure, Report, median


@dataclass(frozen=True)
class ReplaySizes:
    missed: tuple[int, ...]
    reps: int


def _user(factory: sessionmaker[Session]) -> int:
    with factory() as session, session.begin():
        user = projects.create_user(session, email=f"replay-{uuid.uuid4().hex[:8]}@bench",
                                  role="client", name="bench")
        return int(user.id)


def prepare(factory: sessionmaker[Session], missed: int) -> tuple[int, str, str]:
    """A user whose own stream holds `missed` events; (user id, stream, epoch)."""
    user_id = _user(factory)
    stream = f"user-{user_id}"
    items = [(stream, "notification",
              {"type": "info", "title": f"Update {i}",
               "message": f"Ticket {i % 97}: a technician answered your message."})
             for i in range(missed)]
    fixtures.bulk_write(factory, items)
    fixtures.mark_dispatched(factory, [stream])
    return user_id, stream, fixtures.epoch_of(factory, stream)


async def replay_once(url: str, tok: str, stream: str, epoch: str, missed: int,
                      timeout: float = 120) -> float:
    """Seconds from the connect call to the last missed event received; checks all N."""
    done = asyncio.Event()
    seen = {"next": 1, "disorder": 0}

    def on_event(name: str, args: tuple[Any, ...], _at: float) -> None:
        meta = args[1] if len(args) > 1 else None
        if not isinstance(meta, dict) or meta.get("stream") != stream:
            return
        if meta["offset"] != seen["next"]:
            seen["disorder"] += 1
        seen["next"] = int(meta["offset"]) + 1
        if meta["offset"] >= missed:
            done.set()

    listener = Listener(url, tok, positions={stream: {"offset": 0, "epoch": epoch}},
                        on_event=on_event)
    start = time.perf_counter()
    await listener.connect()
    try:
        if missed:
            await asyncio.wait_for(done.wait(), timeout)
        else:
            await listener.wait_connected()
        elapsed = time.perf_counter() - start
    finally:
        await listener.close()
    if seen["disorder"] or seen["next"] != missed + 1:
        raise RuntimeError(f"replay of {missed} events: got up to {seen['next'] - 1}, "
                           f"{seen['disorder']} out of order")
    return elapsed


async def replay_raw(url: str, tok: str, stream: str, epoch: str, missed: int,
                     timeout: float = 120) -> float:
    """The same replay read by a bare websocket speaking Engine.IO/Socket.IO v4 by hand.

    Nearly nothing is spent on the client side, so this shows the server's own rate.
    """
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    auth = {"token": tok, "positions": {stream: {"offset": 0, "epoch": epoch}}}
    needle = f'"offset":{missed},'
    start = time.perf_counter()
    async with websockets.connect(ws_url, max_size=None) as ws:
        opened = await ws.recv()
        if not str(opened).startswith("0"):
            raise RuntimeError(f"unexpected engine.io open packet: {opened!r}")
        await ws.send("40" + json.dumps(auth))
        events = 0
        async with asyncio.timeout(timeout):
            while True:
                frame = str(await ws.recv())
                if frame == "2":  # engine.io ping
                    await ws.send("3")
                    continue
                if frame.startswith("42") and f'"stream":"{stream}"' in frame:
                    events += 1
                    if needle in frame or missed == 0:
                        break
                elif frame.startswith("42") and missed == 0:
                    break
        elapsed = time.perf_counter() - start
    if events != missed and missed:
        raise RuntimeError(f"raw replay of {missed} events got {events}")
    return elapsed


async def run(report: Report, factory: sessionmaker[Session], url: str,
              sizes: ReplaySizes) -> None:
    report.section(f"Replay to a reconnecting python-socketio client (websocket), "
                   f"connect -> last missed event, median of {sizes.reps}")
    for missed in (0, *sizes.missed):
        user_id, stream, epoch = await asyncio.to_thread(prepare, factory, missed)
        tok = token(user_id, "client")
        runs = [1000 * await replay_once(url, tok, stream, epoch, missed)
                for _ in range(sizes.reps)]
        if missed == 0:
            report.add(Figure("replay", "connect alone (nothing missed, until `connected`)",
                              median(runs), "ms", runs))
            continue
        ms = median(runs)
        report.add(Figure("replay", f"{missed:,} missed events", ms, "ms", runs,
                          note=f"{missed / ms * 1000:,.0f} ev/s"
                               + ("  goal < 1000 ms" if missed == 10_000 else "")))
        raw = [1000 * await replay_raw(url, tok, stream, epoch, missed)
               for _ in range(sizes.reps)]
        report.add(Figure("replay", "  (diagnostic) same, bare websocket client", median(raw),
                          "ms", raw, note=f"{missed / median(raw) * 1000:,.0f} ev/s: the "
                                          "server's side alone"))
