// The stream history endpoint: GET /api/streams/{stream}/events?after=N&limit=M.

export class GoneError extends Error {
  constructor(stream) {
    super(`events of ${stream} were pruned`);
    this.name = 'GoneError';
  }
}

export class HttpError extends Error {
  constructor(status, body) {
    super(`history request failed with HTTP ${status}`);
    this.name = 'HttpError';
    this.status = status;
    this.body = body;
  }
}

export const MAX_AFTER = Number.MAX_SAFE_INTEGER;

/** A page reader bound to a server, a token source and a fetch implementation. */
export function historyReader({ url, getToken, fetchImpl }) {
  const base = url.replace(/\/+$/, '');
  return async function fetchPage(stream, after, limit) {
    const token = await getToken();
    const query = `after=${after}&limit=${Math.max(1, Math.min(1000, limit))}`;
    const response = await fetchImpl(`${base}/api/streams/${encodeURIComponent(stream)}/events?${query}`, {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
    });
    if (response.status === 410) throw new GoneError(stream);
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { /* not JSON */ }
      throw new HttpError(response.status, body);
    }
    return response.json(); // {events: [{type, payload, meta}], head: {offset, epoch}}
  };
}
