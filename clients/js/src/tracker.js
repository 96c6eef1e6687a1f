// Per-stream positions and in-order, exactly-once delivery.
//
// Every durable event goes through `receive`: events at or before the stream's position are
// duplicates and dropped; the event right after it is delivered and becomes the position; an
// event further ahead means a gap, which is fetched over HTTP (`fetchPage`) and delivered
// first, while later events wait in the stream's buffer. An epoch other than the tracked one,
// or a range the server no longer has, is a reset: `onReset(stream, head)` and the stream
// continues from `head`. No I/O here besides the injected callbacks: the logic is unit-tested.

import { GoneError, MAX_AFTER } from './history.js';
import { backoff, sleep } from './util.js';

const PAGE = 1000;

export class StreamTracker {
  /**
   * @param {object} o
   * @param {Record<string, {offset: number, epoch: string}>} [o.positions] loaded positions
   * @param {(positions: object) => void} o.save persist the positions
   * @param {(type: string, payload: any, meta: object) => void} o.deliver
   * @param {(stream: string, head: {offset: number, epoch: string}) => void} o.reset
   * @param {(stream: string, after: number, limit: number) => Promise<{events: any[], head: any}>} o.fetchPage
   * @param {{min?: number, max?: number}} [o.retry]
   */
  constructor({ positions = {}, save, deliver, reset, fetchPage, retry }) {
    this.pos = new Map(Object.entries(positions).filter(([, p]) => validPosition(p)));
    this.save = save;
    this.deliver = deliver;
    this.onReset = reset;
    this.fetchPage = fetchPage;
    this.retry = retry;
    this.buffers = new Map(); // stream -> Map(offset -> {type, payload, meta})
    this.held = new Map(); // stream -> count of joins in flight: events wait for their ack
    this.busy = new Set(); // streams being drained (maybe waiting on HTTP)
    this.again = new Set(); // streams kicked while busy: drained once more when it ends
    this.idle = new Map(); // stream -> resolvers waiting for the drain to finish
    this.abort = new AbortController();
  }

  /** The last delivered position of `stream`, or undefined. */
  get(stream) {
    return this.pos.get(stream);
  }

  all() {
    return Object.fromEntries(this.pos);
  }

  /** Positions of these streams (those known), for the auth payload or a join. */
  pick(streams) {
    const out = {};
    for (const s of streams) {
      const p = this.pos.get(s);
      if (p) out[s] = { offset: p.offset, epoch: p.epoch };
    }
    return out;
  }

  /** Hold the events of `stream` until `release` (a join is in flight). */
  hold(stream) {
    this.held.set(stream, (this.held.get(stream) ?? 0) + 1);
  }

  release(stream) {
    const n = (this.held.get(stream) ?? 0) - 1;
    if (n > 0) this.held.set(stream, n);
    else this.held.delete(stream);
    this._kick(stream);
  }

  /**
   * The server announced `head` for `stream` (connected.positions or a join ack).
   * Taken only when the stream is not tracked yet or could not be recovered (`reset`):
   * a tracked position is never moved forward past events still being replayed.
   */
  seed(stream, head, { reset = false } = {}) {
    if (!validPosition(head)) return;
    const known = this.pos.get(stream);
    if (known && !reset) return;
    this._moveTo(stream, head);
    if (reset) this.onReset(stream, { offset: head.offset, epoch: head.epoch });
  }

  /** A durable event arrived (live or replayed). */
  receive(type, payload, meta) {
    if (!meta || typeof meta.stream !== 'string' || !Number.isInteger(meta.offset)) return;
    const { stream } = meta;
    let buf = this.buffers.get(stream);
    if (!buf) {
      buf = new Map();
      this.buffers.set(stream, buf);
    }
    if (!buf.has(meta.offset)) buf.set(meta.offset, { type, payload, meta });
    this._kick(stream);
  }

  /** Resolves once `stream` has nothing buffered that can be delivered now. */
  settled(stream) {
    if (!this.busy.has(stream)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.idle.get(stream) ?? [];
      list.push(resolve);
      this.idle.set(stream, list);
    });
  }

  stop() {
    this.abort.abort();
  }

  _moveTo(stream, head) {
    this.pos.set(stream, { offset: head.offset, epoch: head.epoch });
    this.save(this.all());
  }

  _kick(stream) {
    if (this.abort.signal.aborted) return;
    if (this.busy.has(stream)) {
      this.again.add(stream);
      return;
    }
    this.busy.add(stream);
    this._drain(stream).finally(() => {
      this.busy.delete(stream);
      if (this.again.delete(stream)) {
        this._kick(stream);
        return;
      }
      for (const resolve of this.idle.get(stream) ?? []) resolve();
      this.idle.delete(stream);
    });
  }

  async _drain(stream) {
    const buf = this.buffers.get(stream);
    while (buf && buf.size > 0 && !this.abort.signal.aborted) {
      let pos = this.pos.get(stream);
      if (!pos) {
        if (this.held.has(stream)) return; // the join's ack will seed it
        const first = lowest(buf);
        pos = { offset: first.meta.offset - 1, epoch: first.meta.epoch }; // start where it starts
        this.pos.set(stream, pos);
      } else if (this.held.has(stream)) {
        return;
      }
      const event = lowest(buf);
      const { meta } = event;
      if (meta.epoch !== pos.epoch) {
        // The stream's history was reset: the app reloads; continue from this event.
        buf.delete(meta.offset);
        this._moveTo(stream, meta);
        this.onReset(stream, { offset: meta.offset, epoch: meta.epoch });
      } else if (meta.offset <= pos.offset) {
        buf.delete(meta.offset); // seen already
      } else if (meta.offset === pos.offset + 1) {
        buf.delete(meta.offset);
        this.deliver(event.type, event.payload, meta);
        this._moveTo(stream, meta);
      } else {
        await this._repair(stream, pos, meta.offset - 1);
      }
    }
  }

  /** Fetch (pos.offset, upto] into the buffer; a reset when the server no longer has it. */
  async _repair(stream, pos, upto) {
    const buf = this.buffers.get(stream);
    for (let attempt = 0; !this.abort.signal.aborted; attempt += 1) {
      try {
        const page = await this.fetchPage(stream, pos.offset, Math.min(PAGE, upto - pos.offset));
        const events = Array.isArray(page?.events) ? page.events : [];
        const wrongEpoch = events.some((e) => e.meta?.epoch !== pos.epoch);
        if (events.length === 0 || wrongEpoch || page.head?.epoch !== pos.epoch) {
          this._resetTo(stream, page.head);
          return;
        }
        for (const e of events) {
          if (!buf.has(e.meta.offset)) buf.set(e.meta.offset, { type: e.type, payload: e.payload, meta: e.meta });
        }
        return;
      } catch (err) {
        if (err instanceof GoneError) {
          await this._resetFromServer(stream);
          return;
        }
        await sleep(backoff(attempt, this.retry), this.abort.signal);
      }
    }
  }

  async _resetFromServer(stream) {
    for (let attempt = 0; !this.abort.signal.aborted; attempt += 1) {
      try {
        const page = await this.fetchPage(stream, MAX_AFTER, 1);
        this._resetTo(stream, page.head);
        return;
      } catch {
        await sleep(backoff(attempt, this.retry), this.abort.signal);
      }
    }
  }

  _resetTo(stream, head) {
    if (!validPosition(head)) throw new Error(`no head for ${stream}`);
    this._moveTo(stream, head);
    this.onReset(stream, { offset: head.offset, epoch: head.epoch });
  }
}

function lowest(buf) {
  let best;
  for (const [offset, event] of buf) if (best === undefined || offset < best.meta.offset) best = event;
  return best;
}

export function validPosition(p) {
  return p != null && Number.isInteger(p.offset) && p.offset >= 0 && typeof p.epoch === 'string';
}
