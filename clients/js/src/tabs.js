// One connection for all the tabs of a browser: the tab holding a Web Lock is the leader and
// owns the Socket.IO connection; the others (followers) get its events, connection state and
// pending list over a BroadcastChannel and send their calls through it. When the leader tab
// goes away the browser grants the lock to another tab, which connects from the positions in
// the shared storage; followers de-duplicate by (stream, offset), so nothing is missed or
// delivered twice.
//
// Messages: {t: 'leader'} a new leader; {t: 'hello'} a new tab asks for the state;
// {t: 'call', tab, id, op, args} / {t: 'reply', tab, id, result}; {t: 'event' | 'ephemeral' |
// 'state' | 'reset' | 'pending', ...} from the leader.

/** {locks, channel} when tabs should share a connection, else null. */
export function tabsSupport(option) {
  if (option === false) return null;
  if (option && typeof option === 'object') {
    if (!option.locks) throw new TypeError('tabs.locks is required');
    return { locks: option.locks, channel: option.channel ?? ((name) => new BroadcastChannel(name)) };
  }
  const locks = globalThis.navigator?.locks;
  const inPage = typeof globalThis.document !== 'undefined';
  if (option === undefined && !inPage) return null; // Node: every client is its own leader
  if (!locks || typeof globalThis.BroadcastChannel !== 'function') return null;
  return { locks, channel: (name) => new BroadcastChannel(name) };
}

export class TabLink {
  /**
   * @param {object} o
   * @param {{locks: any, channel: (name: string) => any}} o.support
   * @param {string} o.name lock and channel name
   * @param {string} o.tab this tab's id
   * @param {() => void} o.onLeader called once this tab holds the lock
   * @param {(message: any) => void} o.onMessage every message from other tabs
   */
  constructor({ support, name, tab, onLeader, onMessage }) {
    this.tab = tab;
    this.channel = support.channel(name);
    this.channel.addEventListener('message', (event) => {
      if (!this.closed && event?.data && typeof event.data === 'object') onMessage(event.data);
    });
    this.closed = false;
    this.abort = new AbortController();
    this.released = new Promise((resolve) => { this.release = resolve; });
    support.locks.request(name, { signal: this.abort.signal }, async () => {
      if (this.closed) return;
      onLeader();
      await this.released; // held until close() (or the tab goes away)
    }).catch(() => { /* aborted by close() */ });
  }

  post(message) {
    if (this.closed) return;
    try {
      this.channel.postMessage(message);
    } catch { /* a closing channel */ }
  }

  close() {
    this.closed = true;
    this.abort.abort();
    this.release();
    try {
      this.channel.close();
    } catch { /* already closed */ }
  }
}
