// Who the page acts as, and its tokens.
//
// In development the web node has /api/dev (a demo-user list and a token minter): the page
// offers a picker and mints a fresh token whenever the one it holds is about to expire. In
// production /api/dev does not exist (404): the page asks for an access token instead.
// URL parameters (for demos and tests): ?user=ID signs in as that demo user, &ttl=SECONDS
// sets the demo tokens' lifetime (default one hour).

const USER_KEY = 'herald.portal.user';
const TOKEN_KEY = 'herald.portal.token';

async function json(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body?.error?.message || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = body?.error?.code;
    throw error;
  }
  return body;
}

function expiryOf(token) {
  try {
    const claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return { exp: claims.exp * 1000, sub: Number(claims.sub), email: claims.email,
             role: claims.role };
  } catch {
    return null;
  }
}

/** A signed-in user: `getToken()` for herald-client and every HTTP call. */
export class Session {
  constructor({ user, ttl, token, mint }) {
    this.user = user;           // {id, email, name, role}
    this.ttl = ttl;             // seconds, demo tokens only
    this.mint = mint;           // true: tokens come from /api/dev/token
    this.token = token || null;
    this.expiresAt = token ? expiryOf(token)?.exp ?? 0 : 0;
    this.mints = 0;             // how many tokens were minted (shown to tests)
    this.inflight = null;
    this.onExpired = null;      // called when a pasted token has expired (no dev endpoint)
  }

  /** A token with some life left: the held one, or a new one from the dev endpoint. */
  async getToken() {
    const margin = Math.min(30_000, (this.ttl * 1000) / 2);
    if (this.token && this.expiresAt - Date.now() > margin) return this.token;
    if (!this.mint) {
      if (this.token && this.expiresAt > Date.now()) return this.token;
      this.onExpired?.();
      throw new Error('the access token has expired: sign in again');
    }
    this.inflight ??= fetch('/api/dev/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ userId: this.user.id, ttl: this.ttl }),
    }).then(json).then((body) => {
      this.token = body.token;
      this.expiresAt = Date.parse(body.expiresAt);
      this.mints += 1;
      return body.token;
    }).finally(() => { this.inflight = null; });
    return this.inflight;
  }

  /** JSON from the HTTP API, as this user (one retry with a fresh token after a 401). */
  async api(path, init = {}) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.getToken();
      const response = await fetch(path, {
        ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${token}` },
      });
      if (response.status === 401 && attempt === 0 && this.mint) {
        this.expiresAt = 0;
        continue;
      }
      return json(response);
    }
  }
}

/** The demo users, or null when the dev endpoint does not exist (production). */
export async function demoUsers() {
  const response = await fetch('/api/dev/users');
  if (response.status === 404) return null;
  return (await json(response)).users;
}

function remembered() {
  const params = new URLSearchParams(location.search);
  const ttl = Math.min(43_200, Math.max(1, Number(params.get('ttl')) || 3600));
  const userId = Number(params.get('user')) || Number(sessionStorage.getItem(USER_KEY)) || 0;
  return { ttl, userId };
}

/** The session to open: from the URL or this tab's last choice, else null (ask the user). */
export async function resume(users) {
  const { ttl, userId } = remembered();
  if (users) {
    const user = users.find((u) => u.id === userId);
    return user ? new Session({ user, ttl, mint: true }) : null;
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  const claims = token && expiryOf(token);
  if (!claims || claims.exp <= Date.now()) return null;
  return new Session({ user: { id: claims.sub, email: claims.email, name: claims.email,
                               role: claims.role }, ttl, token, mint: false });
}

export function choose(userId) {
  sessionStorage.setItem(USER_KEY, String(userId));
  const url = new URL(location.href);
  url.searchParams.set('user', String(userId));
  location.assign(url);
}

export function useToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
  location.reload();
}

export function signOut() {
  sessionStorage.removeItem(USER_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  const url = new URL(location.href);
  url.searchParams.delete('user');
  location.assign(url);
}
