"""`python -m bench` (`make bench`): relay, replay and end-to-end figures, in one run.

`python -m bench scale` runs the scale part alone (as `--only scale`).

Needs PostgreSQL and Redis (the test ones: TEST_PG_URL / REDIS_URL). Creates and drops
its own database, uses its own Socket.IO channels and Celery queues, starts a real web
node and real Celery workers. Prints medians over repetitions, and ratios measured side
by side in the same run. `--quick` is a fast smoke run with small sizes. However it ends
(SIGTERM and Ctrl-C included: exit 143 or 130), its processes, databases and Redis keys
are removed (bench/teardown.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from bench import (
    compression_bench,
    fanout_bench,
    infra,
    latency_bench,
    relay_bench,
    replay_bench,
    rooms_bench,
    scale_bench,
    storm_bench,
    teardown,
    writes_bench,
)
from bench.env import CHANNEL, QUEUE, RELAY_CHANNEL, RELAY_QUEUE
from bench.stats import Report

FULL = {"reps": 5, "relay_events": 20_000, "relay_streams": 200, "replay": "1000,10000",
        "replay_reps": 5, "rate": 500.0, "duration": 10.0, "e2e_reps": 3, "streams": 10,
        "threads": 4, "updates": 20, "low_rate": 50.0,
        "fanout_sockets": 2000, "fanout_events": 10, "fanout_wide": 10000,
        "fanout_reps": 5, "compression_sockets": 1000, "compression_events": 20,
        "storm_sockets": 10000, "storm_missed": 20, "storm_rate": 20.0,
        "writes_single": 300, "writes_batches": 10, "writes_appends": 2000, "writes_reps": 5,
        "scale_small": 1000, "scale_large": 1_000_000, "scale_events": 5000, "scale_reps": 5,
        "scale_nodes": "1,2,4", "scale_pg": "both"}
QUICK = {"reps": 2, "relay_events": 2_000, "relay_streams": 20, "replay": "100,1000",
         "replay_reps": 2, "rate": 200.0, "duration": 2.0, "e2e_reps": 1, "streams": 4,
         "threads": 2, "updates": 5, "low_rate": 0.0,
         "fanout_sockets": 200, "fanout_events": 5, "fanout_wide": 400,
         "fanout_reps": 2, "compression_sockets": 50, "compression_events": 5,
         "storm_sockets": 50, "storm_missed": 5, "storm_rate": 10.0,
         "writes_single": 30, "writes_batches": 2, "writes_appends": 200, "writes_reps": 2,
         "scale_small": 200, "scale_large": 2000, "scale_events": 1000, "scale_reps": 2,
         "scale_nodes": "", "scale_pg": "shared"}
PARTS = ("relay", "replay", "e2e", "fanout", "compression", "storm", "writes", "scale")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a fast smoke run")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable)")
    parser.add_argument("--reps", type=int, help="relay repetitions")
    parser.add_argument("--relay-events", type=int)
    parser.add_argument("--relay-streams", type=int)
    parser.add_argument("--no-celery-relay", action="store_true",
                        help="skip the relay through a Celery worker")
    parser.add_argument("--replay", help="missed-event counts, comma-separated")
    parser.add_argument("--replay-reps", type=int)
    parser.add_argument("--rate", type=float, help="end-to-end events per second")
    parser.add_argument("--low-rate", type=float,
                        help="also end to end at this lower rate (0: not)")
    parser.add_argument("--duration", type=float, help="end-to-end seconds (after warm-up)")
    parser.add_argument("--e2e-reps", type=int)
    parser.add_argument("--streams", type=int, help="end-to-end streams (one client each)")
    parser.add_argument("--threads", type=int, help="end-to-end writer processes")
    parser.add_argument("--plain-writes", action="store_true",
                        help="end-to-end writers write writer.append's rows through two plain "
                             "statements (default: writer.append itself)")
    parser.add_argument("--updates", type=int, help="single PATCH updates to time")
    parser.add_argument("--fanout-sockets", type=int, help="sockets in the fan-out room")
    parser.add_argument("--fanout-events", type=int, help="events per fan-out repetition")
    parser.add_argument("--fanout-wide", type=int, help="sockets for one event to all")
    parser.add_argument("--fanout-reps", type=int, help="fan-out and compression repetitions")
    parser.add_argument("--compression-sockets", type=int)
    parser.add_argument("--compression-events", type=int)
    parser.add_argument("--storm-sockets", type=int,
                        help="sockets in the reconnect storm, over two web nodes")
    parser.add_argument("--storm-missed", type=int,
                        help="events written to each shared room while the node is down")
    parser.add_argument("--storm-rate", type=float,
                        help="events/s written throughout the reconnect storm")
    parser.add_argument("--writes-single", type=int,
                        help="sequential requests of each kind per writes repetition")
    parser.add_argument("--writes-batches", type=int, help="batches of 1,000 per repetition")
    parser.add_argument("--writes-appends", type=int,
                        help="writer.append events in one transaction per repetition")
    parser.add_argument("--writes-reps", type=int, help="writes repetitions")
    parser.add_argument("--scale-small", type=int, help="streams in the small scale database")
    parser.add_argument("--scale-large", type=int, help="streams in the large scale database")
    parser.add_argument("--scale-events", type=int,
                        help="events posted to random streams and drained (a multiple of 1,000)")
    parser.add_argument("--scale-reps", type=int,
                        help="scale repetitions (claim, GET, batches, drain)")
    parser.add_argument("--scale-pg", choices=("shared", "sized", "both"),
                        help="the scale part's PostgreSQL: the bench's server, a private one "
                             "sized for a million streams (started for the run; needs root "
                             "and the server binaries; its shared memory in huge pages, "
                             "reserved for the run), or both")
    parser.add_argument("--scale-nodes",
                        help="web node counts of the scale part's rooms figures: a node's CPU "
                             "per event of rooms it does not hold, events/s cluster-wide on "
                             "one Redis and on a local 3-master Redis Cluster (empty: skip)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scale"]:  # `python -m bench scale`: that part alone
        argv = ["--only", "scale", *argv[1:]]
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.parts = tuple(args.only or PARTS)
    return args


def header(url: str) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Herald benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"  machine: {os.cpu_count()} CPUs ({platform.machine()}), load average {load} "
          f"(shared machine: quote medians and ratios)")
    print(f"  {infra.server_versions(url)}, Python {platform.python_version()}")
    print(f"  logs of the processes: {infra.LOG_DIR}", flush=True)


async def measure(args: argparse.Namespace, url: str, report: Report) -> None:
    engine = make_engine(url, pool_size=args.threads + 4, max_overflow=10)
    factory = make_session_factory(engine)
    base = {"DATABASE_URL": url}
    # No periodic sweep in either worker: it would relay the events the relay benchmark
    # is measuring, concurrently with the measurement (only the task is timed there).
    relay_worker = infra.Worker({**base, "HERALD_SOCKETIO_CHANNEL": RELAY_CHANNEL,
                                 "HERALD_CELERY_QUEUE": RELAY_QUEUE,
                                 "HERALD_SWEEP_INTERVAL": "3600"}, RELAY_QUEUE,
                                concurrency=2)
    web = infra.WebNode({**base, "HERALD_SOCKETIO_CHANNEL": CHANNEL})
    # Its periodic sweep would relay the relay benchmark's events too (same database):
    # only nudges drive it (and its sweep at start).
    worker = infra.Worker({**base, "HERALD_SOCKETIO_CHANNEL": CHANNEL,
                           "HERALD_CELERY_QUEUE": QUEUE, "HERALD_SWEEP_INTERVAL": "3600"},
                          QUEUE)
    procs: list[infra.Process] = []
    if "relay" in args.parts and not args.no_celery_relay:
        procs.append(relay_worker)
    if "replay" in args.parts or "e2e" in args.parts:
        procs.append(web)
    if "e2e" in args.parts:
        procs.append(worker)
    # The processes touch the database only when asked: migrate while they start.
    await asyncio.to_thread(infra.start_all, *procs, meanwhile=lambda: upgrade(url))
    header(url)
    try:
        if "relay" in args.parts:
            sizes = relay_bench.RelaySizes(args.relay_events, args.relay_streams, args.reps)
            await asyncio.to_thread(relay_bench.run, report, factory, sizes,
                                    not args.no_celery_relay)
        if "replay" in args.parts:
            missed = tuple(int(x) for x in str(args.replay).split(",") if x.strip())
            await replay_bench.run(report, factory, web.url,
                                   replay_bench.ReplaySizes(missed, args.replay_reps))
        if "e2e" in args.parts:
            await latency_bench.run(report, factory, web.url, latency_bench.LatencySizes(
                args.rate, args.duration, args.e2e_reps, args.streams, args.threads,
                args.updates, core_writes=args.plain_writes), low_rate=args.low_rate)
        if "fanout" in args.parts:
            await fanout_bench.run(report, factory, base, fanout_bench.FanoutSizes(
                args.fanout_sockets, args.fanout_events, args.fanout_wide, args.fanout_reps))
        if "compression" in args.parts:
            await compression_bench.run(report, factory, base, compression_bench.CompressionSizes(
                args.compression_sockets, args.compression_events, args.fanout_reps))
        if "storm" in args.parts:
            await storm_bench.run(report, factory, base, storm_bench.StormSizes(
                sockets=args.storm_sockets, missed=args.storm_missed, rate=args.storm_rate))
        if "writes" in args.parts:
            await writes_bench.run(report, factory, url, base, writes_bench.WritesSizes(
                args.writes_single, args.writes_batches, args.writes_appends, args.writes_reps))
        if "scale" in args.parts:
            await scale_bench.run(report, scale_bench.ScaleSizes(
                args.scale_small, args.scale_large, args.scale_events, args.scale_reps),
                args.scale_pg)
            nodes = [int(n) for n in str(args.scale_nodes).split(",") if n.strip()]
            if nodes:
                await rooms_bench.run(report, events=20_000, streams=1_000, reps=3,
                                      nodes=nodes, redis_cluster=True)
    finally:
        await asyncio.to_thread(infra.stop_all, *procs)
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        infra.check_services()
    except infra.Unavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    # From here on whatever the run starts is removed however it ends: SIGTERM and Ctrl-C
    # included (bench/teardown.py), the processes the parts left included.
    teardown.on_signals()
    started = time.perf_counter()
    report = Report()
    try:
        url = infra.create_database()
        asyncio.run(measure(args, url, report))
    finally:
        teardown.clean()
    print(f"\n(done in {time.perf_counter() - started:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps([f.to_dict() for f in report.figures], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
