// Test support: the real server given by tests/test_js_client.py (HERALD_URL, HERALD_CONTROL,
// HERALD_ADMIN_TOKEN), its admin API, clients with short retry delays, and event recorders.

import { createHerald, memoryStorage } from '../src/index.js';

export const URL = process.env.HERALD_URL;
export const CONTROL = process.env.HERALD_CONTROL;
export const ADMIN = process.env.HERALD_ADMIN_TOKEN;
/** `{skip}` for node:test when no server was given (npm test runs the unit tests alone). */
export const needsServer = URL && CONTROL && ADMIN ? { timeout: 30000 } : { skip: 'HERALD_URL, HERALD_CONTROL and HERALD_ADMIN_TOKEN are not set' };

export async function control(path, body = {}) {
  const response = await fetch(`${CONTROL}${path}`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const result = await response.json();
  if (!response.ok) throw new Error(`control ${path}: ${result.error}`);
  return result;
}

export async function api(method, path, body, token = ADMIN) {
  const response = await fetch(`${URL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status >= 300) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

let serial = 0;

/** A new user of `role` with a one-hour token. */
export async function newUser(role = 'client') {
  serial += 1;
  const email = `${role}-${process.pid}-${Date.now()}-${serial}@js.test`;
  const { id } = await api('POST', '/api/users', { email, role, name: `${role} ${serial}` });
  const { token } = await control('/token', { userId: id, role, email });
  return { id, role, email, token };
}

/** A client, a technician, their project and a ticket in it. */
export async function newPortal() {
  const client = await newUser('client');
  const technician = await newUser('technician');
  const { id: project } = await api('POST', '/api/projects', { name: 'P', clientId: client.id, technicianIds: [technician.id] });
  const { id: ticket } = await api('POST', '/api/tickets', { projectId: project, subject: 'S' });
  return { client, technician, project, ticket };
}

export function patchProject(project, progress) {
  return api('PATCH', `/api/projects/${project}`, { progress });
}

/** createHerald with one connection per client and short retry delays. */
export function connect(user, options = {}) {
  return createHerald({
    url: URL,
    getToken: () => user.token,
    storage: memoryStorage(),
    tabs: false,
    retry: { min: 100, max: 1000 },
    socketOptions: { reconnectionDelay: 100, reconnectionDelayMax: 500, transports: ['websocket'] },
    ackTimeout: 5000,
    ...options,
  });
}

/** Records what `herald` delivers: events by type, with meta. */
export function record(herald, types = ['project-updated', 'new-message', 'notification', 'ticket-updated']) {
  const events = [];
  for (const type of types) herald.on(type, (payload, meta) => events.push({ type, payload, meta }));
  return {
    events,
    of: (stream) => events.filter((e) => e.meta?.stream === stream),
    offsets: (stream) => events.filter((e) => e.meta?.stream === stream).map((e) => e.meta.offset),
  };
}

/** Until `herald` is online (a failure after 10 s, not a hang). */
export const online = (...clients) => waitFor(() => clients.every((c) => c.state === 'online'), 'online');

/** Resolves once `token` (a JWT) has expired. */
export async function expiry(token) {
  const { exp } = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  await pause(Math.max(0, exp * 1000 - Date.now()) + 300);
}

export async function waitFor(predicate, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => { setTimeout(resolve, 20); });
  }
}

export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

export const pause = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * Web Locks for tests in one process: `request(name, [options], callback)` grants each name to
 * one holder at a time, in request order; `options.signal` aborts a waiting request.
 */
export function fakeLocks() {
  const queues = new Map(); // name -> [{grant}]
  const held = new Set();
  const next = (name) => {
    const queue = queues.get(name) ?? [];
    if (held.has(name) || queue.length === 0) return;
    const waiter = queue.shift();
    held.add(name);
    waiter.grant().finally(() => { held.delete(name); next(name); });
  };
  return {
    request(name, options, callback) {
      const cb = typeof options === 'function' ? options : callback;
      const signal = typeof options === 'object' ? options.signal : undefined;
      return new Promise((resolve, reject) => {
        const waiter = { grant: () => Promise.resolve().then(() => cb({ name })).then(resolve, reject) };
        if (!queues.has(name)) queues.set(name, []);
        queues.get(name).push(waiter);
        signal?.addEventListener('abort', () => {
          const queue = queues.get(name);
          const at = queue.indexOf(waiter);
          if (at >= 0) { queue.splice(at, 1); reject(new Error('AbortError')); }
        }, { once: true });
        next(name);
      });
    },
  };
}
