// herald-client: createHerald() and the client object the application uses.
//
// Every client (tab) has handlers and a local de-duplication by (stream, offset); the leader
// also has the Connection. Without tabs every client is its own leader.

import { Connection, validId } from './connection.js';
import { HttpError } from './history.js';
import { Inbox } from './inbox.js';
import { Outbox } from './outbox.js';
import { tracked } from './presence.js';
import { Store, defaultStorage, memoryStorage } from './storage.js';
import { TabLink, tabsSupport } from './tabs.js';
import { HeraldError, Listeners, claims, newId } from './util.js';

export { HeraldError, memoryStorage };

const EVENTS = {
  onProjectUpdate: 'project-updated',
  onTicketUpdate: 'ticket-updated',
  onNewMessage: 'new-message',
  onNotification: 'notification',
  onDocumentAdded: 'document-added',
  onInterventionUpdate: 'intervention-updated',
  onQuoteUpdate: 'quote-updated',
  onTyping: 'user-typing',
};

/**
 * socket.io-client's `io`, or a rejection that says what is missing. `#socket.io-client` is
 * package.json's "imports": in Node the bundled build in vendor/ (nothing to install beside
 * this package, even when npm only linked its folder), elsewhere the socket.io-client
 * dependency (bundlers) or what the page's import map names.
 */
async function loadIo() {
  try {
    return (await import('#socket.io-client')).io;
  } catch (err) {
    throw new Error('createHerald: socket.io-client cannot be imported (in a page, map '
      + '"#socket.io-client" in the import map, or pass options.io): ' + err.message);
  }
}

/** Start a client; resolves once started (it does not wait for the network: see whenOnline). */
export async function createHerald(options) {
  if (!options || typeof options.url !== 'string' || !options.url) throw new TypeError('createHerald: url is required');
  if (typeof options.getToken !== 'function') throw new TypeError('createHerald: getToken must be a function');
  const getToken = async () => {
    const token = await options.getToken();
    return token === undefined || token === null ? '' : String(token);
  };
  let namespace = options.namespace;
  if (!namespace) {
    // The token is read once here: one that cannot be a token at all is refused at once.
    const token = await getToken();
    if (!token) throw new HeraldError('token_missing', 'createHerald: getToken() gave no token');
    const sub = claims(token).sub;
    if (sub === undefined || sub === null) throw new HeraldError('token_invalid', 'createHerald: getToken() gave something that is not a Herald token (a JWT with a sub)');
    namespace = String(sub);
  }
  const io = options.io ?? await loadIo();
  const fetchImpl = options.fetch ?? ((...args) => globalThis.fetch(...args));
  const client = new HeraldClient({
    ...options, getToken, io, fetchImpl, namespace,
    store: new Store(options.storage ?? defaultStorage(), namespace),
    tabs: tabsSupport(options.tabs),
  });
  client._start();
  return client;
}

class HeraldClient {
  constructor(o) {
    this._o = o;
    this._tab = newId();
    this._handlers = new Map();
    this._conn = null;
    this._link = null;
    this._seen = new Map(); // stream -> {offset, epoch} delivered to this tab's handlers
    this._stateListeners = new Listeners();
    this._pendingListeners = new Listeners();
    this._resetListeners = new Listeners();
    this._members = new Map(); // stream -> members, as the leader last said
    this._presenceListeners = new Map(); // stream -> Listeners
    if (typeof o.onReset === 'function') this._resetListeners.add(o.onReset);
    this._errorListeners = new Listeners();
    if (typeof o.onError === 'function') this._errorListeners.add(o.onError);
    this._error = null;
    this._state = 'offline';
    this._user = null;
    this._leaderPending = []; // followers: the leader's queue
    this._calls = new Map(); // followers: id -> {op, args, resolve}
    this._myRooms = new Map(); // stream -> [kind, id] joined from this tab
    this._closed = false;
    for (const [method, type] of Object.entries(EVENTS)) this[method] = (handler) => this.on(type, handler);
    this.inbox = new Inbox({ mark: (body) => this._call('inbox', [body]), get: (path) => this._getJson(path) });
  }

  get state() { return this._state; }

  get user() { return this._user; }

  get isLeader() { return this._conn !== null; }

  _start() {
    const { tabs } = this._o;
    if (!tabs) {
      this._lead();
      return;
    }
    this._link = new TabLink({
      support: tabs,
      name: `herald:${this._o.url}:${this._o.namespace}`,
      tab: this._tab,
      onLeader: () => this._lead(),
      onMessage: (m) => this._message(m),
    });
    this._link.post({ t: 'hello', tab: this._tab });
  }

  // -- leader --------------------------------------------------------------------------
  _lead() {
    if (this._closed || this._conn) return;
    const o = this._o;
    const post = (m) => this._link?.post(m);
    this._conn = new Connection({
      url: o.url, getToken: o.getToken, io: o.io, store: o.store, fetchImpl: o.fetchImpl,
      retry: o.retry, socketOptions: o.socketOptions, ackTimeout: o.ackTimeout, userName: o.userName,
      on: {
        deliver: (type, payload, meta) => { post({ t: 'event', type, payload, meta }); this._dispatch(type, payload, meta); },
        ephemeral: (type, payload) => { post({ t: 'ephemeral', type, payload }); this._dispatch(type, payload); },
        state: (state, user) => { post({ t: 'state', state, user }); this._setState(state, user); },
        reset: (stream, head) => { post({ t: 'reset', stream, head }); this._reset(stream, head); },
        pending: (list) => { post({ t: 'pending', list }); this._pendingListeners.emit(list); },
        presence: (stream, members) => { post({ t: 'presence', stream, members }); this._presence(stream, members); },
        error: (error) => { post({ t: 'error', error }); this._failed(error); },
      },
    });
    this._conn.start();
    post({ t: 'leader', tab: this._tab });
    // What this tab had asked of the previous leader, and the rooms it reads, are ours now.
    for (const [stream, [kind, id]] of this._myRooms) if (![...this._calls.values()].some((c) => c.op === 'join' && `${c.args[0]}-${c.args[1]}` === stream)) this._conn.join(kind, id, this._tab);
    const calls = [...this._calls.values()];
    this._calls.clear();
    for (const call of calls) this._local(call.op, call.args, this._tab).then(call.resolve);
    this._pendingListeners.emit(this._conn.pending());
  }

  _local(op, args, tab) {
    const conn = this._conn;
    switch (op) {
      case 'join': return conn.join(args[0], args[1], tab);
      case 'leave': return conn.leave(args[0], args[1], tab);
      case 'typing': return conn.typing(args[0], args[1]);
      case 'send': return conn.send(args[0]);
      case 'inbox': return conn.inboxMark(args[0]);
      case 'reconnect': conn.reconnect(); return Promise.resolve({ ok: true });
      default: return Promise.resolve({ ok: false, error: { code: 'unknown_call', message: op } });
    }
  }

  _message(m) {
    if (this._conn) { // leader: serve the followers
      if (m.t === 'call' && typeof m.id === 'string') {
        this._local(m.op, Array.isArray(m.args) ? m.args : [], m.tab)
          .then((result) => this._link?.post({ t: 'reply', tab: m.tab, id: m.id, result }));
      } else if (m.t === 'hello') {
        this._link.post({ t: 'state', state: this._state, user: this._user });
        this._link.post({ t: 'pending', list: this._conn.pending() });
        for (const [stream, members] of Object.entries(this._conn.presence.all())) this._link.post({ t: 'presence', stream, members });
      }
      return;
    }
    switch (m.t) {
      case 'event': this._dispatch(m.type, m.payload, m.meta); break;
      case 'ephemeral': this._dispatch(m.type, m.payload); break;
      case 'state': this._setState(m.state, m.user); break;
      case 'reset': this._reset(m.stream, m.head); break;
      case 'presence': if (tracked(m.stream) && Array.isArray(m.members)) this._presence(m.stream, m.members); break;
      case 'error': this._failed(m.error); break;
      case 'pending':
        this._leaderPending = Array.isArray(m.list) ? m.list : [];
        this._pendingListeners.emit(this.pendingMessages());
        break;
      case 'reply': {
        const call = m.tab === this._tab ? this._calls.get(m.id) : undefined;
        if (call) {
          this._calls.delete(m.id);
          call.resolve(m.result);
          if (call.op === 'send') this._pendingListeners.emit(this.pendingMessages());
        }
        break;
      }
      case 'leader': // a new leader: ask again what the last one may not have done
        for (const [stream, [kind, id]] of this._myRooms) {
          if (![...this._calls.values()].some((c) => c.op === 'join' && `${c.args[0]}-${c.args[1]}` === stream)) {
            this._link.post({ t: 'call', tab: this._tab, id: newId(), op: 'join', args: [kind, id] });
          }
        }
        for (const [id, call] of this._calls) this._link.post({ t: 'call', tab: this._tab, id, op: call.op, args: call.args });
        break;
      default: break;
    }
  }

  _call(op, args) {
    if (this._closed) return Promise.resolve({ ok: false, error: { code: 'closed', message: 'client closed' } });
    if (this._conn) return this._local(op, args, this._tab);
    return new Promise((resolve) => {
      const id = newId();
      this._calls.set(id, { op, args, resolve });
      this._link.post({ t: 'call', tab: this._tab, id, op, args });
    });
  }

  // -- every tab -----------------------------------------------------------------------
  _dispatch(type, payload, meta) {
    if (meta) {
      const seen = this._seen.get(meta.stream);
      if (seen && seen.epoch === meta.epoch && meta.offset <= seen.offset) return;
      this._seen.set(meta.stream, { offset: meta.offset, epoch: meta.epoch });
    }
    this.inbox._apply(type, payload, meta);
    this._handlers.get(type)?.emit(payload, meta);
  }

  async _getJson(path) {
    const token = await this._o.getToken();
    const response = await this._o.fetchImpl(`${this._o.url.replace(/\/+$/, '')}${path}`, {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
    });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { /* not JSON */ }
      throw new HttpError(response.status, body);
    }
    return response.json();
  }

  _reset(stream, head) {
    this._seen.set(stream, { offset: head.offset, epoch: head.epoch });
    this._resetListeners.emit(stream, head);
  }

  _presence(stream, members) {
    if (members.length === 0) this._members.delete(stream);
    else this._members.set(stream, members);
    this._presenceListeners.get(stream)?.emit(members.map((m) => ({ ...m })));
  }

  _failed(error) {
    this._error = new HeraldError(error?.code ?? 'unauthorized', error?.message ?? 'refused');
    this._setState('unauthorized');
    this._errorListeners.emit(this._error);
  }

  _setState(state, user) {
    if (user) this._user = user;
    if (state === this._state) return;
    this._state = state;
    this._stateListeners.emit(state);
  }

  // -- the API -------------------------------------------------------------------------
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Listeners());
    return this._handlers.get(type).add(handler);
  }

  onConnectionChange(handler) { return this._stateListeners.add(handler); }

  onPendingChange(handler) { return this._pendingListeners.add(handler); }

  /** handler(members) whenever who is in `stream` (a joined project/ticket room) changes — in
   * every tab sharing the connection — and at once when already known; [] once left.
   * Members: [{userId, name, role}] sorted by name. Returns off(). */
  onPresence(stream, handler) {
    if (!this._presenceListeners.has(stream)) this._presenceListeners.set(stream, new Listeners());
    const off = this._presenceListeners.get(stream).add(handler);
    const known = this._members.get(stream);
    if (known) handler(known.map((m) => ({ ...m })));
    return off;
  }

  /** The members of `stream` as last heard, or null. */
  presence(stream) {
    const known = this._members.get(stream);
    return known ? known.map((m) => ({ ...m })) : null;
  }

  /** `handler(error)` (a HeraldError: `code`, `message`) when the server refuses every token
   * getToken() gives; the state is then `unauthorized` and the client no longer reconnects. */
  onError(handler) { return this._errorListeners.add(handler); }

  /** Resolves once online; rejects with the error if the client is (or becomes) unauthorized. */
  whenOnline() {
    if (this._state === 'online') return Promise.resolve();
    if (this._state === 'unauthorized') return Promise.reject(this._error);
    return new Promise((resolve, reject) => {
      const off = this.onConnectionChange((state) => {
        if (state === 'online') { off(); resolve(); }
        if (state === 'unauthorized') { off(); reject(this._error ?? new HeraldError('unauthorized', 'refused')); }
      });
    });
  }

  joinProject(projectId) { return this._join('project', projectId); }

  joinTicket(ticketId) { return this._join('ticket', ticketId); }

  leaveProject(projectId) { return this._leave('project', projectId); }

  leaveTicket(ticketId) { return this._leave('ticket', ticketId); }

  _join(kind, id) {
    if (validId(id)) this._myRooms.set(`${kind}-${id}`, [kind, id]);
    return this._call('join', [kind, id]);
  }

  _leave(kind, id) {
    this._myRooms.delete(`${kind}-${id}`);
    return this._call('leave', [kind, id]);
  }

  /** Connect now rather than after the current backoff (through the leader tab). */
  reconnect() { return this._call('reconnect', []); }

  startTyping(ticketId) { return this._call('typing', [ticketId, true]); }

  stopTyping(ticketId) { return this._call('typing', [ticketId, false]); }

  sendMessage(ticketId, text) {
    const entry = Outbox.entry(ticketId, text);
    const promise = this._call('send', [entry]);
    if (!this._conn) this._pendingListeners.emit(this.pendingMessages());
    return promise;
  }

  pendingMessages() {
    if (this._conn) return this._conn.pending();
    const list = [...this._leaderPending];
    for (const call of this._calls.values()) {
      const entry = call.op === 'send' ? call.args[0] : null;
      if (entry && !list.some((m) => m.clientMessageId === entry.clientMessageId)) list.push({ ...entry });
    }
    return list;
  }

  positions() {
    if (this._conn) return this._conn.positions();
    return Object.fromEntries(this._seen);
  }

  async close() {
    if (this._closed) return;
    this._closed = true;
    this._link?.close(); // first: another tab may lead at once, and hears no 'offline' from us
    if (this._conn) await this._conn.close();
    for (const call of this._calls.values()) call.resolve({ ok: false, error: { code: 'closed', message: 'client closed' } });
    this._calls.clear();
    this._setState('offline', null);
  }
}
