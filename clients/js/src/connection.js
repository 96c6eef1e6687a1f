// The connection: one Socket.IO client, its auth (a fresh token and the current positions on
// every connect), retries where socket.io-client gives up, rooms re-joined after every
// reconnect, and the offline send queue. Durable events go through the StreamTracker.

import { historyReader } from './history.js';
import { Outbox } from './outbox.js';
import { StreamTracker } from './tracker.js';
import { backoff, sleep } from './util.js';

const MAX_POSITIONS = 100; // the server reads at most this many
const DROP_CODES = new Set(['forbidden', 'not_found', 'invalid_argument', 'unauthorized']);
// Refusals a fresh token may fix once; the same refusal after a fresh getToken() is final.
const AUTH_CODES = new Set(['token_missing', 'token_invalid', 'token_expired', 'forbidden']);
const KINDS = { project: ['join-project', 'leave-project', 'projectId'], ticket: ['join-ticket', 'leave-ticket', 'ticketId'] };

export class Connection {
  /**
   * @param {object} o
   * @param {string} o.url
   * @param {() => Promise<string>} o.getToken
   * @param {Function} o.io socket.io-client's io
   * @param {import('./storage.js').Store} o.store
   * @param {typeof fetch} o.fetchImpl
   * @param {{deliver: Function, ephemeral: Function, state: Function, reset: Function, pending: Function, error: Function}} o.on
   */
  constructor({ url, getToken, io, store, fetchImpl, retry, socketOptions = {}, ackTimeout = 10000, userName, on }) {
    this.url = url;
    this.getToken = getToken;
    this.io = io;
    this.store = store;
    this.retry = retry;
    this.socketOptions = socketOptions;
    this.ackTimeout = ackTimeout;
    this.userName = userName;
    this.on = on;
    this.user = null;
    this.online = false;
    this.closed = false;
    this.tried = false;
    this.attempt = 0;
    this.refusals = 0; // auth refusals in a row, each with a fresh token
    this.tokenFailed = false; // the last getToken() threw: a refusal then is not the token's fault
    this.failure = null; // {code, message} once unauthorized: no more reconnects
    this.abort = new AbortController();
    this.rooms = new Set(arrayOf(store.read('rooms', [])));
    this.refs = new Map(); // stream -> Set(tab id) of the tabs that joined it
    this.auto = arrayOf(store.read('auto', []));
    this.joinWaiters = new Map(); // stream -> [resolve]
    this.tracker = new StreamTracker({
      positions: store.read('positions', {}),
      save: (positions) => store.write('positions', positions),
      deliver: (type, payload, meta) => on.deliver(type, payload, meta),
      reset: (stream, head) => on.reset(stream, head),
      fetchPage: historyReader({ url, getToken, fetchImpl }),
      retry,
    });
    this.outbox = new Outbox(store, (list) => on.pending(list), {
      emit: (entry) => this._emit('send-message', { ticketId: entry.ticketId, message: entry.text, clientMessageId: entry.clientMessageId }),
      online: () => this.online && !this.closed,
      signal: this.abort.signal,
      retry,
    });
  }

  get state() {
    if (this.online) return 'online';
    if (this.closed) return 'offline';
    if (this.failure) return 'unauthorized';
    if (globalThis.navigator?.onLine === false) return 'offline';
    return this.tried ? 'reconnecting' : 'offline';
  }

  start() {
    this.socket = this.io(this.url, {
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
      ...this.socketOptions,
      autoConnect: false,
      auth: (cb) => { this._auth().then(cb); },
    });
    const socket = this.socket;
    socket.on('connected', (data) => this._connected(data));
    socket.onAny((name, ...args) => this._event(name, args));
    socket.on('disconnect', (reason) => {
      this.online = false;
      this.tried = true;
      this._state();
      // The official client never reconnects after a server-side disconnect; Herald's server
      // only drops a socket so that it reconnects and recovers.
      if (reason === 'io server disconnect' && !this.closed) this._retryLater();
    });
    socket.on('connect_error', (err) => {
      this.tried = true;
      const code = err?.data?.code;
      if (AUTH_CODES.has(code) && !this.tokenFailed && !this.closed) {
        this.refusals += 1;
        if (this.refusals >= 2) {
          this._unauthorized(code, err?.data?.message ?? err?.message ?? code);
          return;
        }
      }
      this._state();
      // A refused connect (token_expired, ...) is final for socket.io-client: retry ourselves,
      // with a fresh token from getToken().
      if (!socket.active && !this.closed) this._retryLater();
    });
    this._watchNetwork();
    socket.connect();
  }

  /** In a browser: drop the transport when the network goes away (the badge and the queue
   * react at once, not after a ping timeout) and reconnect as soon as it is back. */
  _watchNetwork() {
    const target = globalThis;
    if (typeof target.addEventListener !== 'function' || !target.navigator || !('onLine' in target.navigator)) return;
    const offline = () => {
      this.socket.io?.engine?.close();
      this._state();
    };
    const online = () => {
      if (!this.closed && !this.failure && !this.socket.connected) {
        this.socket.disconnect(); // ends a pending backoff; connect() opens at once
        this.socket.connect();
      }
      this._state();
    };
    target.addEventListener('offline', offline);
    target.addEventListener('online', online);
    this.unwatch = () => {
      target.removeEventListener('offline', offline);
      target.removeEventListener('online', online);
    };
  }

  positions() {
    return this.tracker.all();
  }

  pending() {
    return this.outbox.list();
  }

  /** Join `kind-id` for `tab`; resolves with the ack once online. */
  join(kind, id, tab) {
    const spec = KINDS[kind];
    if (!spec || !validId(id)) return Promise.resolve(badArgument(`${kind}Id must be a positive integer`));
    const stream = `${kind}-${id}`;
    this.rooms.add(stream);
    this._saveRooms();
    if (!this.refs.has(stream)) this.refs.set(stream, new Set());
    this.refs.get(stream).add(tab);
    const promise = new Promise((resolve) => addTo(this.joinWaiters, stream, resolve));
    if (this.online) this._join(stream);
    return promise;
  }

  async leave(kind, id, tab) {
    const spec = KINDS[kind];
    if (!spec || !validId(id)) return badArgument(`${kind}Id must be a positive integer`);
    const stream = `${kind}-${id}`;
    const holders = this.refs.get(stream);
    holders?.delete(tab);
    if (holders && holders.size > 0) return { ok: true, stream }; // another tab still reads it
    this.refs.delete(stream);
    this.rooms.delete(stream);
    this._saveRooms();
    this._settleJoin(stream, { ok: false, error: { code: 'left', message: `left ${stream}` } });
    if (!this.online) return { ok: true, stream };
    try {
      return await this._emit(spec[1], id);
    } catch {
      return { ok: true, stream }; // disconnected: not re-joined on reconnect anyway
    }
  }

  async typing(ticketId, start) {
    if (!validId(ticketId)) return badArgument('ticketId must be a positive integer');
    if (!this.online) return { ok: false, error: { code: 'offline', message: 'not connected' } };
    const name = this.userName || this.user?.email || 'user';
    try {
      return await (start ? this._emit('typing-start', { ticketId, userName: name })
        : this._emit('typing-stop', { ticketId }));
    } catch {
      return { ok: false, error: { code: 'offline', message: 'not connected' } };
    }
  }

  /** One `inbox-mark` ({action, ids?, all?}); resolves with its ack ({ok, counts} or an error). */
  async inboxMark(body) {
    if (!body || typeof body !== 'object') return badArgument('inbox-mark takes {action, ids?, all?}');
    if (!this.online) return { ok: false, error: { code: 'offline', message: 'not connected' } };
    try {
      return await this._emit('inbox-mark', body);
    } catch {
      return { ok: false, error: { code: 'offline', message: 'not connected' } };
    }
  }

  /** Queue `entry` ({ticketId, text, clientMessageId, queuedAt}); resolves with its ack. */
  send(entry) {
    if (!validId(entry.ticketId)) return Promise.resolve(badArgument('ticketId must be a positive integer'));
    if (typeof entry.text !== 'string') return Promise.resolve(badArgument('text must be a string'));
    return this.outbox.send(entry);
  }

  async close() {
    this.closed = true;
    this.online = false;
    this.abort.abort();
    this.tracker.stop();
    this.socket?.disconnect();
    this.unwatch?.();
    this.outbox.abandon();
    for (const [stream] of this.joinWaiters) this._settleJoin(stream, { ok: false, error: { code: 'closed', message: 'client closed' } });
    this._state();
  }

  // -- connection ------------------------------------------------------------------------
  async _auth() {
    const streams = [...new Set([...this.auto, ...this.rooms])].slice(0, MAX_POSITIONS);
    const positions = this.tracker.pick(streams);
    try {
      const token = await this.getToken();
      this.tokenFailed = false;
      return { token, positions };
    } catch {
      this.tokenFailed = true;
      return { positions }; // refused as token_missing, then retried
    }
  }

  /** The server refuses every token getToken() gives: report it once, stop reconnecting. */
  _unauthorized(code, message) {
    this.failure = { code, message };
    this.online = false;
    this.socket.disconnect();
    this.on.error({ ...this.failure }); // the state becomes 'unauthorized' with it
    this._state();
    for (const [stream] of this.joinWaiters) this._settleJoin(stream, { ok: false, error: { ...this.failure } });
    this.outbox.abandon({ ...this.failure, message: `${message}; the message stays queued` });
  }

  async _retryLater() {
    const delay = backoff(this.attempt, this.retry);
    this.attempt += 1;
    await sleep(delay, this.abort.signal);
    if (!this.closed && !this.failure && !this.socket.connected && !this.socket.active) this.socket.connect();
  }

  _connected(data) {
    if (!data || typeof data !== 'object') return;
    this.user = { userId: data.userId, email: data.email, role: data.role };
    const heads = isObject(data.positions) ? data.positions : {};
    const recovered = isObject(data.recovered) ? data.recovered : {};
    this.auto = Object.keys(heads).filter((s) => !s.startsWith('project-') && !s.startsWith('ticket-'));
    this.store.write('auto', this.auto);
    for (const [stream, head] of Object.entries(heads)) {
      this.tracker.seed(stream, head, { reset: recovered[stream] === false && !!this.tracker.get(stream) });
    }
    for (const stream of Object.keys(recovered)) {
      if (!(stream in heads) && this.rooms.has(stream)) { // no longer readable
        this.rooms.delete(stream);
        this._settleJoin(stream, { ok: false, error: { code: 'forbidden', message: `${stream} is not readable` } });
      }
    }
    this._saveRooms();
    this.online = true;
    this.tried = true;
    this.attempt = 0;
    this.refusals = 0;
    this._state();
    for (const stream of this.rooms) {
      if (stream in heads) {
        const head = heads[stream];
        this._settleJoin(stream, { ok: true, stream, offset: head.offset, epoch: head.epoch, recovered: recovered[stream] !== false });
      } else {
        this._join(stream);
      }
    }
    this.outbox.flush();
  }

  _event(name, args) {
    if (name === 'connected') return;
    const meta = args[1];
    if (isObject(meta) && typeof meta.stream === 'string' && Number.isInteger(meta.offset)) {
      this.tracker.receive(name, args[0], meta);
    } else {
      this.on.ephemeral(name, args[0]);
    }
  }

  async _join(stream) {
    const [kind, idText] = stream.split('-');
    const [joinEvent, , key] = KINDS[kind];
    const position = this.tracker.get(stream);
    const body = { [key]: Number(idText) };
    if (position) body.position = { offset: position.offset, epoch: position.epoch };
    this.tracker.hold(stream);
    let ack;
    try {
      ack = await this._emit(joinEvent, body);
    } catch {
      this.tracker.release(stream);
      if (this.online) this._settleJoin(stream, { ok: false, error: { code: 'timeout', message: 'no ack' } });
      return; // disconnected: the next connect joins again
    }
    if (ack?.ok) {
      this.tracker.seed(stream, { offset: ack.offset, epoch: ack.epoch }, { reset: !!position && ack.recovered === false });
    } else if (DROP_CODES.has(ack?.error?.code)) {
      this.rooms.delete(stream);
      this._saveRooms();
    }
    this.tracker.release(stream);
    await Promise.race([this.tracker.settled(stream), sleep(this.ackTimeout, this.abort.signal)]);
    this._settleJoin(stream, ack);
  }

  _emit(event, data) {
    return new Promise((resolve, reject) => {
      if (!this.socket?.connected) {
        reject(new Error('disconnected'));
        return;
      }
      this.socket.timeout(this.ackTimeout).emit(event, data, (err, ack) => (err ? reject(err) : resolve(ack)));
    });
  }

  // -- bookkeeping -----------------------------------------------------------------------
  _state() {
    this.on.state(this.state, this.user);
  }

  _saveRooms() {
    this.store.write('rooms', [...this.rooms]);
  }

  _settleJoin(stream, ack) {
    const list = this.joinWaiters.get(stream) ?? [];
    this.joinWaiters.delete(stream);
    for (const resolve of list) resolve(ack);
  }

}

function addTo(map, key, value) {
  const list = map.get(key) ?? [];
  list.push(value);
  map.set(key, list);
}

function arrayOf(value) {
  return Array.isArray(value) ? value.filter((s) => typeof s === 'string') : [];
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function validId(id) {
  return Number.isSafeInteger(id) && id > 0;
}

function badArgument(message) {
  return { ok: false, error: { code: 'invalid_argument', message } };
}
