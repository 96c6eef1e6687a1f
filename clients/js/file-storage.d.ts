import type { StorageLike } from './index.js';

/** A Web Storage kept in one JSON file (Node only): survives a process restart. */
export function fileStorage(path: string): StorageLike;
