// The user's inbox: read, seen and archived state of their notifications (docs/protocol.md,
// "Inbox"). Marks go over the socket (`inbox-mark`, through the leader tab); the list over
// HTTP (GET /api/inbox). Every tab follows the same events — each `inbox-updated`, from any
// tab or device of the user (replayed after an absence), sets the counts; a new
// `notification` counts one more unread and unseen item — so the tabs that share a
// connection agree, and `onChange(handler(counts, change))` fires in each.

import { Listeners, ROLE_STREAMS } from './util.js';

const CAP = 999;
const ROLE_STREAM_NAMES = new Set(Object.values(ROLE_STREAMS));

export class Inbox {
  /**
   * @param {object} o
   * @param {(body: object) => Promise<object>} o.mark one `inbox-mark` call; resolves with its ack
   * @param {(path: string) => Promise<object>} o.get GET of the API as the user (JSON body)
   */
  constructor({ mark, get }) {
    this._mark = mark;
    this._get = get;
    this._counts = null;
    this._listeners = new Listeners();
  }

  /** {unread, unseen, countsCapped} as last heard, or null before any list or change. */
  get counts() { return this._counts ? { ...this._counts } : null; }

  /** handler(counts, change): change is the inbox-updated payload, or {added: [id]}. */
  onChange(handler) { return this._listeners.add(handler); }

  /** GET /api/inbox: {items, counts, hasMore}, newest first; options {state, limit, before}. */
  async list({ state = 'all', limit = 50, before } = {}) {
    const query = new URLSearchParams({ state, limit: String(limit) });
    if (before) query.set('before', before);
    const body = await this._get(`/api/inbox?${query}`);
    this._counts = { ...body.counts };
    return body;
  }

  markRead(ids) { return this._call('read', ids); }

  markUnread(ids) { return this._call('unread', ids); }

  markSeen(ids) { return this._call('seen', ids); }

  archive(ids) { return this._call('archive', ids); }

  unarchive(ids) { return this._call('unarchive', ids); }

  markAllRead() { return this._call('read', null); }

  markAllSeen() { return this._call('seen', null); }

  /** Resolves with the ack: {ok: true, counts} or {ok: false, error: {code, message}}. */
  _call(action, ids) {
    return this._mark(ids === null ? { action, all: true } : { action, ids });
  }

  /** An event handed to this tab's handlers (de-duplicated, in order per stream). */
  _apply(type, payload, meta) {
    if (!meta) return;
    let change;
    if (type === 'inbox-updated' && payload && typeof payload === 'object') {
      if (payload.counts && typeof payload.counts === 'object') this._counts = { ...payload.counts };
      change = payload;
    } else if (type === 'notification' && (meta.stream.startsWith('user-') || ROLE_STREAM_NAMES.has(meta.stream))) {
      const c = this._counts;
      if (c && !c.countsCapped) {
        const capped = c.unread >= CAP || c.unseen >= CAP;
        this._counts = { unread: Math.min(c.unread + 1, CAP), unseen: Math.min(c.unseen + 1, CAP), countsCapped: capped };
      }
      change = { added: [meta.id] };
    } else {
      return;
    }
    this._listeners.emit(this.counts, change);
  }
}
