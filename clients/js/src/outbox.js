// The offline send queue: chat messages kept in storage until the server acknowledges them.
// Each carries a clientMessageId, so that sending it again (after a lost ack, a reconnect or
// a reload) stores it once.

import { newId } from './util.js';

export class Outbox {
  /** @param {import('./storage.js').Store} store @param {(list: object[]) => void} onChange */
  constructor(store, onChange) {
    this.store = store;
    this.onChange = onChange;
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

  _changed() {
    this.store.write('outbox', this.items);
    this.onChange(this.list());
  }
}

function valid(m) {
  return m && Number.isInteger(m.ticketId) && typeof m.text === 'string'
    && typeof m.clientMessageId === 'string';
}
