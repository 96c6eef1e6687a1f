// A Web Storage in one JSON file, for Node: positions, rooms and queued messages survive a
// restart of the process. Writes go to a temporary file renamed over the old one.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

/** @param {string} path */
export function fileStorage(path) {
  let data = {};
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8'));
    if (parsed && typeof parsed === 'object') data = parsed;
  } catch { /* missing or corrupt: start empty */ }
  const flush = () => {
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(data));
    renameSync(tmp, path);
  };
  return {
    getItem: (key) => (Object.hasOwn(data, key) ? data[key] : null),
    setItem: (key, value) => { data[key] = String(value); flush(); },
    removeItem: (key) => { if (Object.hasOwn(data, key)) { delete data[key]; flush(); } },
  };
}
