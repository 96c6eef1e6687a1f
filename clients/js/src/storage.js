// Storage: the Web Storage interface (getItem/setItem/removeItem, string values), and a
// namespaced JSON view of it for the client's own keys.

/** A Web Storage kept in memory (the default in Node). */
export function memoryStorage() {
  const map = new Map();
  return {
    getItem: (key) => (map.has(key) ? map.get(key) : null),
    setItem: (key, value) => { map.set(key, String(value)); },
    removeItem: (key) => { map.delete(key); },
  };
}

/** localStorage in a browser (when usable), memory elsewhere. */
export function defaultStorage() {
  try {
    const ls = globalThis.localStorage;
    if (ls) {
      ls.getItem('herald:probe');
      return ls;
    }
  } catch { /* disabled storage: fall back to memory */ }
  return memoryStorage();
}

/** JSON values under `herald:<namespace>:<name>` in a Web Storage. */
export class Store {
  constructor(storage, namespace) {
    this.storage = storage;
    this.prefix = `herald:${namespace}:`;
  }

  read(name, fallback) {
    let raw = null;
    try {
      raw = this.storage.getItem(this.prefix + name);
    } catch { /* unreadable storage: start afresh */ }
    if (raw == null) return fallback;
    try {
      return JSON.parse(raw);
    } catch {
      return fallback; // a corrupt value is dropped, never fatal
    }
  }

  write(name, value) {
    try {
      this.storage.setItem(this.prefix + name, JSON.stringify(value));
    } catch { /* full or disabled storage: the client keeps working from memory */ }
  }

  remove(name) {
    try {
      this.storage.removeItem(this.prefix + name);
    } catch { /* ignore */ }
  }
}
