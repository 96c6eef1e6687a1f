// The offline send queue: chat messages kept in storage until the server acknowledges them.
// Each carries a clientMessageId, so that sending it again (after a lost ack, a reconnect or
// a reload) stores it once.

import { backoff, newId, sleep } from './util.js';

// Answers that say "not now": the message stays queued and is sent again (same clientMessageId).
const RETRY_CODES = new Set(['rate_limited', 'unavailable', 'internal']);

export class Outbox {
  /**
   * @param {import('./storage.js').Store} store
   * @param {(list: object[]) => void} onChange
   * @param {object} link
   * @param {(entry: object) => Promise<any>} link.emit send one message; rejects when not sent
   * @param {() => boolean} link.online
   * @param {AbortSignal} link.signal
   * @param {{min?: number, max?: number}} [link.retry]
   */
  constructor(store, onChange, link) {
    this.store = store;
    this.onChange = onChange;
    this.link = link;
    this.waiters = new Map(); // clientMessageId -> [resolve]
    this.flushing = false;
    const saved = store.read('outbox', []);
    this.items = Array.isArray(saved) ? saved.filter(valid) : [];
  }

  /** A new entry for a message (not stored yet). */
  static entry(ticketId, text) {
    return { ticketId, text, clientMessageId: newId(), queuedAt: new Date().toISOString() };
  }

  list() {
    return this.items.map((m) => ({ ...m }));
  }

  first() {
    return this.items[0];
  }

  /** Append `entry` unless one with its clientMessageId is queued already. */
  add(entry) {
    if (!this.items.some((m) => m.clientMessageId === entry.clientMessageId)) {
      this.items.push({ ...entry });
      this._changed();
    }
  }

  remove(clientMessageId) {
    const before = this.items.length;
    this.items = this.items.filter((m) => m.clientMessageId !== clientMessageId);
    if (this.items.length !== before) this._changed();
  }

  /** Queue `entry` and resolve with the server's ack once it is stored (or refused). */
  send(entry) {
    const promise = new Promise((resolve) => {
      const list = this.waiters.get(entry.clientMessageId) ?? [];
      list.push(resolve);
      this.waiters.set(entry.clientMessageId, list);
    });
    this.add(entry);
    this.flush();
    return promise;
  }

  /** Send what is queued, oldest first, one at a time, while online. */
  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    const { emit, online, signal, retry } = this.link;
    try {
      let attempt = 0;
      while (online()) {
        const entry = this.first();
        if (!entry) break;
        let ack;
        try {
          ack = await emit(entry);
        } catch {
          if (!online()) break; // sent again after the reconnect (the server stores it once)
          await sleep(backoff(attempt, retry), signal);
          attempt += 1;
          continue;
        }
        const code = ack?.error?.code;
        if (ack?.ok || (code && !RETRY_CODES.has(code))) {
          this.remove(entry.clientMessageId);
          this._settle(entry.clientMessageId, ack);
          attempt = 0;
        } else {
          const wait = code === 'rate_limited' && ack.error.retryAfter > 0 ? ack.error.retryAfter * 1000 : backoff(attempt, retry);
          attempt += 1;
          await sleep(wait, signal);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /** The client closes: promises resolve with `closed`; the messages stay in storage. */
  abandon(error = { code: 'closed', message: 'client closed; the message stays queued' }) {
    for (const cmid of [...this.waiters.keys()]) this._settle(cmid, { ok: false, error });
  }

  _settle(cmid, ack) {
    const list = this.waiters.get(cmid) ?? [];
    this.waiters.delete(cmid);
    for (const resolve of list) resolve(ack);
  }

  _changed() {
    this.store.write('outbox', this.items);
    this.onChange(this.list());
  }
}

function valid(m) {
  return m && Number.isInteger(m.ticketId) && typeof m.text === 'string'
    && typeof m.clientMessageId === 'string';
}
