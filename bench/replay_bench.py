"""Replay: a client reconnects with a position and receives what it missed.

For each size N, a fresh user's own stream gets N events (written in bulk, marked as
already relayed: the client missed them). Each repetition connects a real
python-socketio client to a real web node with `positions: {user-X: {offset: 0}}`
and times from the connect call to the N-th event received (all N checked, in order).

Then, for the largest N, the OFFICIAL client (socket.io-client 4.8.1 in Node,
bench/node/replay.js) against Herald (the same stream and positions) and against a
Socket.IO 4.8 server's in-memory connection state recovery (bench/node/recovery_server.js:
the client closes its transport, the server emits N events of Herald's sizes to its room,
the client reconnects; timed from the reconnect to the N-th event), back to back in each
repetition, with the ratio per repetition.
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
from bench.infra import LOG_DIR, ROOT, Process, free_port, start_all, stop_all
from bench.peers import NODE_DIR, NodeMissing, require_node
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


class RecoveryPeer(Process):
    """`node bench/node/recovery_server.js`: socket.io 4.8 with connection state recovery."""

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__("recovery-peer", [require_node(), str(NODE_DIR / "recovery_server.js"),
                                           str(self.port)], {}, LOG_DIR)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return "recovery peer ready" in self.log()


async def official_client(options: dict[str, Any], timeout: float = 600) -> list[dict[str, Any]]:
    """Run bench/node/replay.js; its repetitions (warm-up ones left out)."""
    proc = await asyncio.create_subprocess_exec(
        require_node(), str(NODE_DIR / "replay.js"), json.dumps(options), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench/node/replay.js failed: {err.decode()[-2000:]}")
    reps = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return [rep for rep in reps if not rep.get("warmup")]


async def versus_socketio(report: Report, factory: sessionmaker[Session], url: str,
                          missed: int, reps: int) -> None:
    report.section(f"Replay of {missed:,} missed events to the OFFICIAL client "
                   f"(socket.io-client 4.8.1, websocket), Herald beside Socket.IO 4.8's "
                   f"in-memory connection state recovery, median of {reps}")
    try:
        require_node()
        if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
            raise NodeMissing("bench/node has no socket.io-client (make js: npm ci)")
    except NodeMissing as exc:
        report.add(Figure("replay", "official client vs Socket.IO", float("nan"), "",
                          note=f"skipped: {exc}"))
        return
    user_id, stream, epoch = await asyncio.to_thread(prepare, factory, missed)
    peer = RecoveryPeer()
    await asyncio.to_thread(start_all, peer)
    try:
        payload = {"type": "info", "title": "Update 0",
                   "message": "Ticket 0: a technician answered your message."}
        meta = {"id": str(uuid.uuid4()), "stream": stream, "offset": 0, "epoch": epoch,
                "ts": "2026-11-28T21:00:00.000000Z"}
        runs = await official_client({
            "missed": missed, "reps": reps, "warmup": 1,
            "herald": {"url": url, "token": token(user_id, "client"), "stream": stream,
                       "epoch": epoch},
            "socketio": {"url": peer.url, "payload": payload, "meta": meta}})
    finally:
        await asyncio.to_thread(stop_all, peer)
    herald = [float(r["herald"]) for r in runs]
    socketio = [float(r["socketio"]) for r in runs]
    ratios = [100 * h / s for h, s in zip(herald, socketio, strict=True)]
    report.add(Figure("replay", "Herald: connect with positions -> last event", median(herald),
                      "ms", herald, note=f"{missed / median(herald) * 1000:,.0f} ev/s"))
    report.add(Figure("replay", "Socket.IO 4.8 recovery: reconnect -> last event",
                      median(socketio), "ms", socketio,
                      note=f"{missed / median(socketio) * 1000:,.0f} ev/s"))
    report.add(Figure("replay", "  ratio Herald / Socket.IO (time)", median(ratios), "%",
                      ratios, note="goal <= 100 %"))


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
    if sizes.missed:
        await versus_socketio(report, factory, url, max(sizes.missed), sizes.reps)
