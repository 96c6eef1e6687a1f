// Type declarations for @herald-notify/client (the ES module in src/, no build step).

/** The Web Storage interface: `localStorage`, `sessionStorage`, `memoryStorage()`, `fileStorage()`. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Where a client is in a stream: the last offset it has seen, in that epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

/** The second argument of every durable event. */
export interface EventMeta {
  id: string;
  stream: string;
  offset: number;
  epoch: string;
  /** ISO 8601 UTC commit time. */
  ts: string;
}

/** 'online': connected and `connected` received; 'reconnecting': a lost or refused connection
 * is being retried; 'offline': before the first connection, after close(), or while the
 * browser reports no network; 'unauthorized': the server refused the token twice in a row,
 * each time a fresh one from getToken() (see `onError`): the client no longer reconnects. */
export type ConnectionState = 'online' | 'reconnecting' | 'offline' | 'unauthorized';

/** What the client reports: a token refused for good (`token_missing`, `token_invalid`,
 * `token_expired`, `forbidden`). */
export class HeraldError extends Error {
  readonly code: string;
  constructor(code: string, message: string);
}

export interface AckError {
  code: string;
  message: string;
  retryAfter?: number;
}

export interface Ack {
  ok: boolean;
  error?: AckError;
  [field: string]: unknown;
}

export interface JoinAck extends Ack {
  stream?: string;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  /** Who is in the room (the joining user included), once per user. */
  presence?: Member[];
}

export interface MessageAck extends Ack {
  messageId?: number;
  duplicate?: boolean;
}

/** A user present in a project or ticket room. */
export interface Member {
  userId: number;
  name: string;
  role: 'client' | 'technician' | 'admin';
}

/** A chat message kept in storage until the server acknowledges it. */
export interface PendingMessage {
  ticketId: number;
  text: string;
  clientMessageId: string;
  /** ISO 8601 time at which sendMessage was called. */
  queuedAt: string;
}

export interface ProjectUpdated { projectId: number; progress: number; status: string; }
export interface TicketUpdated { ticketId: number; status: string; priority: string; }
export interface NewMessage {
  ticketId: number;
  messageId: number;
  message: string;
  /** `name`: the author's name (their e-mail address when they have none). */
  author: { id: number; email: string; name: string };
  createdAt: string;
}
export interface Notification {
  type: 'success' | 'error' | 'info' | 'warning';
  title: string;
  message: string;
}
export interface DocumentAdded { projectId: number; document: { id: number; name: string; url: string }; }
export interface InterventionUpdated {
  projectId: number;
  intervention: { id: number; status: string; [field: string]: unknown };
}
export interface QuoteUpdated { quoteId: number; status: string; }
export interface UserTyping { ticketId: number; userId: number; userName: string; isTyping: boolean; }

export type Handler<P> = (payload: P, meta: EventMeta) => void;
export type Unsubscribe = () => void;

/** The user the server announced in `connected`. */
export interface HeraldUser {
  userId: number;
  email: string;
  role: 'client' | 'technician' | 'admin';
}

export interface BroadcastChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  close(): void;
}

export interface LocksLike {
  request(name: string, callback: (lock: unknown) => Promise<unknown>): Promise<unknown>;
}

export interface TabsOptions {
  /** `navigator.locks` (default in browsers). */
  locks: LocksLike;
  /** Makes the channel shared by the tabs; default `name => new BroadcastChannel(name)`. */
  channel?: (name: string) => BroadcastChannelLike;
}

export interface HeraldOptions {
  /** The web node, e.g. `https://herald.example.com` (Socket.IO at `/socket.io/`, history at `/api`). */
  url: string;
  /** Called before every (re)connect and history request; must return a valid, unexpired token. */
  getToken: () => string | Promise<string>;
  /** Where positions, joined rooms and queued messages live. Default: localStorage in a
   * browser, memory in Node (see `@herald-notify/client/file-storage` for a file). */
  storage?: StorageLike;
  /** A stream could not be recovered (wrong epoch, pruned range, epoch changed): reload its
   * state over HTTP. The client continues from `head`. */
  onReset?: (stream: string, head: Position) => void;
  /** The server refuses every token getToken() gives (state 'unauthorized'). */
  onError?: (error: HeraldError) => void;
  /** socket.io-client's `io` (default: `import('#socket.io-client')`: in Node the bundled
   * build in vendor/, elsewhere the socket.io-client dependency or the page's import map;
   * pass it in a browser without an import map). */
  io?: (url: string, options: Record<string, unknown>) => unknown;
  /** `fetch` for the history endpoint (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /** Storage keys and the tab lock are scoped by this; default: the token's `sub`. */
  namespace?: string;
  /** Share one connection between the tabs of a browser: default true when
   * `navigator.locks` and `BroadcastChannel` exist; `false` makes every client its own leader. */
  tabs?: boolean | TabsOptions;
  /** Name sent with `typing-start` (default: the user's email). */
  userName?: string;
  /** Backoff after a refused connect or a failed history request, in ms (default 500..15000). */
  retry?: { min?: number; max?: number };
  /** Passed to `io()` (reconnectionDelay, transports, ...). `auth`, `autoConnect` are the client's. */
  socketOptions?: Record<string, unknown>;
  /** Ack timeout for calls, ms (default 10000). */
  ackTimeout?: number;
}

/** Unread and unseen items (not archived), each exact up to 999, then 999 and `countsCapped`. */
export interface InboxCounts { unread: number; unseen: number; countsCapped: boolean; }

export interface InboxItem {
  /** The notification event's id. */
  id: string;
  stream: string;
  offset: number;
  type: Notification['type'];
  title: string;
  message: string;
  createdAt: string;
  read: boolean;
  seen: boolean;
  archived: boolean;
}

export interface InboxPage { items: InboxItem[]; counts: InboxCounts; hasMore: boolean; }

/** An `inbox-updated` payload (a change from any tab or device of the user). */
export interface InboxUpdated {
  read: string[]; unread: string[]; seen: string[]; archived: string[]; unarchived: string[];
  all: 'read' | 'seen' | null;
  counts: InboxCounts;
}

/** What `onChange` reports: a change of the inbox, or a new notification. */
export type InboxChange = InboxUpdated | { added: string[] };

export interface InboxAck extends Ack { counts?: InboxCounts; }

/** The user's inbox: kept current in every tab by the same events. */
export interface Inbox {
  /** As last heard (null before any list or change). */
  readonly counts: InboxCounts | null;
  /** GET /api/inbox, newest first; rejects with an HttpError when refused. */
  list(options?: { state?: 'unread' | 'all' | 'archived'; limit?: number; before?: string }): Promise<InboxPage>;
  /** Each resolves with the ack: `{ok: true, counts}`, or `{ok: false, error}` (`not_found`:
   * an id that is not an item of this inbox, nothing changed; `offline`). */
  markRead(ids: string[]): Promise<InboxAck>;
  markUnread(ids: string[]): Promise<InboxAck>;
  markSeen(ids: string[]): Promise<InboxAck>;
  archive(ids: string[]): Promise<InboxAck>;
  unarchive(ids: string[]): Promise<InboxAck>;
  markAllRead(): Promise<InboxAck>;
  markAllSeen(): Promise<InboxAck>;
  onChange(handler: (counts: InboxCounts | null, change: InboxChange) => void): Unsubscribe;
}

export interface Herald {
  readonly state: ConnectionState;
  /** The user from the last `connected` (null before the first connect). */
  readonly user: HeraldUser | null;
  /** True in the tab that holds the connection (always true without tabs). */
  readonly isLeader: boolean;
  /** Resolves when the client is online (at once if it is); rejects with the HeraldError
   * once it is 'unauthorized'. */
  whenOnline(): Promise<void>;
  /** `handler(error)` when the server refuses every token getToken() gives. */
  onError(handler: (error: HeraldError) => void): Unsubscribe;

  /** Join `project-{id}` (remembered in storage; re-joined with its position after every
   * reconnect). Resolves with the ack once joined (waiting for the connection if offline);
   * events missed since the stored position are delivered in order, once. */
  joinProject(projectId: number): Promise<JoinAck>;
  joinTicket(ticketId: number): Promise<JoinAck>;
  leaveProject(projectId: number): Promise<Ack>;
  leaveTicket(ticketId: number): Promise<Ack>;
  /** Ephemeral: `{ok: false, error: {code: 'offline'}}` when not connected. */
  startTyping(ticketId: number): Promise<Ack>;
  stopTyping(ticketId: number): Promise<Ack>;
  /** Queued in storage first (with a clientMessageId), sent in order when online; resolves with
   * the server's ack (an error ack for refused input, which is then dropped from the queue). */
  sendMessage(ticketId: number, text: string): Promise<MessageAck>;
  /** Messages not acknowledged yet, oldest first. */
  pendingMessages(): PendingMessage[];
  onPendingChange(handler: (pending: PendingMessage[]) => void): Unsubscribe;
  /** Who is in `stream` (a joined `project-{id}` / `ticket-{id}`), sorted by name, on every
   * change in every tab sharing the connection, at once if known; [] once left. */
  /** Try to connect now, not after the current backoff (e.g. a "Retry" button). */
  reconnect(): Promise<Ack>;
  onPresence(stream: string, handler: (members: Member[]) => void): Unsubscribe;
  /** The members of `stream` as last heard, or null. */
  presence(stream: string): Member[] | null;

  onProjectUpdate(handler: Handler<ProjectUpdated>): Unsubscribe;
  onTicketUpdate(handler: Handler<TicketUpdated>): Unsubscribe;
  onNewMessage(handler: Handler<NewMessage>): Unsubscribe;
  onNotification(handler: Handler<Notification>): Unsubscribe;
  onDocumentAdded(handler: Handler<DocumentAdded>): Unsubscribe;
  onInterventionUpdate(handler: Handler<InterventionUpdated>): Unsubscribe;
  onQuoteUpdate(handler: Handler<QuoteUpdated>): Unsubscribe;
  /** `user-typing` (ephemeral: no meta). */
  onTyping(handler: (payload: UserTyping) => void): Unsubscribe;
  onConnectionChange(handler: (state: ConnectionState) => void): Unsubscribe;
  /** Any event by its Socket.IO name (durable ones with meta, in order, once). */
  on(type: string, handler: (payload: any, meta?: EventMeta) => void): Unsubscribe;

  /** Read, seen and archived state of the user's notifications. */
  readonly inbox: Inbox;

  /** The last delivered position of every stream heard. */
  positions(): Record<string, Position>;
  /** Disconnect and stop; queued messages stay in storage. */
  close(): Promise<void>;
}

export function createHerald(options: HeraldOptions): Promise<Herald>;

/** A Web Storage in memory (Node's default). */
export function memoryStorage(): StorageLike;
