// Who is here: the members of each project/ticket room the connection is in (docs/protocol.md,
// "Presence"). A room's list starts from a snapshot — the join ack's `presence`, or
// GET /api/streams/{stream}/presence for a room restored at connect — and follows the
// ephemeral presence-join / presence-leave events. Events that arrive while a snapshot is
// pending are kept and applied on top of it: the server reads the snapshot after the socket
// entered the room, so nothing is lost and nothing stale stays.

export const PRESENCE_EVENTS = new Set(['presence-join', 'presence-leave']);

export function tracked(stream) {
  return typeof stream === 'string' && (stream.startsWith('project-') || stream.startsWith('ticket-'));
}

/** Members sorted by name, then id (the order every tab shows). */
export function sortMembers(members) {
  return [...members].sort((a, b) => String(a.name ?? '').localeCompare(String(b.name ?? '')) || (a.userId - b.userId));
}

export class PresenceBook {
  /** @param {(stream: string, members: object[]) => void} changed called on every change */
  constructor(changed) {
    this._changed = changed;
    this._members = new Map(); // stream -> Map(userId -> member)
    this._pending = new Map(); // stream -> [[name, payload]] held until the snapshot
  }

  members(stream) {
    const book = this._members.get(stream);
    return book ? sortMembers(book.values()) : null;
  }

  /** {stream: members} of every room with a known list. */
  all() {
    return Object.fromEntries([...this._members.keys()].map((s) => [s, this.members(s)]));
  }

  begin(stream) {
    if (!this._pending.has(stream)) this._pending.set(stream, []);
  }

  snapshot(stream, members) {
    const held = this._pending.get(stream) ?? [];
    this._pending.delete(stream);
    if (!Array.isArray(members)) return;
    const book = new Map();
    for (const m of members) if (m && Number.isInteger(m.userId)) book.set(m.userId, { ...m });
    this._members.set(stream, book);
    for (const [name, payload] of held) this._apply(name, payload);
    this._emit(stream);
  }

  forget(stream) {
    this._pending.delete(stream);
    if (this._members.delete(stream)) this._changed(stream, []);
  }

  event(name, payload) {
    if (!PRESENCE_EVENTS.has(name) || !payload || typeof payload.stream !== 'string') return;
    const held = this._pending.get(payload.stream);
    if (held) held.push([name, payload]);
    else if (this._apply(name, payload)) this._emit(payload.stream);
  }

  _apply(name, payload) {
    const book = this._members.get(payload.stream);
    if (!book) return false;
    if (name === 'presence-join') {
      const user = payload.user;
      if (!user || !Number.isInteger(user.userId)) return false;
      book.set(user.userId, { ...user });
      return true;
    }
    return book.delete(payload.userId);
  }

  _emit(stream) {
    this._changed(stream, this.members(stream) ?? []);
  }
}

/** GET /api/streams/{stream}/presence → members (throws on an HTTP error). */
export async function readPresence({ url, getToken, fetchImpl }, stream) {
  const token = await getToken();
  const response = await fetchImpl(`${url.replace(/\/+$/, '')}/api/streams/${encodeURIComponent(stream)}/presence`, {
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
  });
  if (!response.ok) throw new Error(`presence of ${stream}: HTTP ${response.status}`);
  const body = await response.json();
  return Array.isArray(body?.members) ? body.members : [];
}
