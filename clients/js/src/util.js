// Small helpers: token claims, ids, backoff, sleeping.

/** The claims of a JWT, unverified (the server verifies); {} when it cannot be read. */
/** What the client reports: `code` (e.g. `token_invalid`) and a message. */
export class HeraldError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
  }
}

export function claims(token) {
  try {
    const part = String(token).split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const text = typeof atob === 'function'
      ? decodeURIComponent(Array.from(atob(padded), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''))
      : Buffer.from(padded, 'base64').toString('utf8');
    const value = JSON.parse(text);
    return value && typeof value === 'object' ? value : {};
  } catch {
    return {};
  }
}

export const ROLE_STREAMS = { client: 'clients', technician: 'technicians', admin: 'admins' };

/** A random id (UUID where the platform has one: secure contexts and Node). */
export function newId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Exponential backoff with jitter: attempt 0 -> about `min`, doubling up to `max` (ms). */
export function backoff(attempt, { min = 500, max = 15000 } = {}) {
  const base = Math.min(max, min * 2 ** Math.min(attempt, 20));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) { resolve(); return; }
    const done = () => { clearTimeout(timer); signal?.removeEventListener('abort', done); resolve(); };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A list of callbacks: add() returns its remover; emit() calls each, isolating errors. */
export class Listeners {
  constructor() { this.set = new Set(); }

  add(fn) {
    if (typeof fn !== 'function') throw new TypeError('handler must be a function');
    const entry = (...args) => fn(...args);
    this.set.add(entry);
    return () => { this.set.delete(entry); };
  }

  emit(...args) {
    for (const fn of [...this.set]) {
      try {
        fn(...args);
      } catch (err) {
        report(err); // a handler's bug is reported, never breaks delivery
      }
    }
  }
}

function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else console.error('herald-client: a handler threw', err);
}
