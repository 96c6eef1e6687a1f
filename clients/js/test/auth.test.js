// Auth failures are reported, never an endless "reconnecting": a token the server refuses
// and that a fresh getToken() cannot fix makes createHerald reject (no token, not a token),
// or (refused by the server) calls onError, sets state 'unauthorized' and stops reconnecting.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import test from 'node:test';

import { HeraldError, createHerald } from '../src/index.js';
import { URL, connect, control, needsServer, newUser, pause } from './support.js';

/** A well-formed HS256 JWT for `user`, signed with a key the server does not know. */
function wrongKeyToken(user) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: String(user.id), email: user.email, role: user.role, iat: now, exp: now + 3600 })}`;
  return `${body}.${createHmac('sha256', 'not-the-server-key-0123456789abcdef').update(body).digest('base64url')}`;
}

/** Connects with `getToken` until the client gives up; what it reported, and how often it asked. */
async function refused(getToken, options = {}) {
  let calls = 0;
  const errors = [];
  const states = [];
  const herald = await connect({ token: undefined }, {
    getToken: () => { calls += 1; return getToken(); },
    onError: (error) => errors.push(error),
    ...options,
  });
  herald.onConnectionChange((state) => states.push(state));
  const failure = await herald.whenOnline().then(() => null, (error) => error);
  const asked = calls;
  await pause(1500); // ten retry delays (100 ms): an endless reconnect would ask again
  await herald.close();
  return { failure, errors, states, asked, askedLater: calls };
}

for (const [what, getToken] of [['no token (undefined)', () => undefined], ['an empty token', () => '']]) {
  test(`createHerald rejects ${what} with token_missing`, needsServer, async () => {
    await assert.rejects(createHerald({ url: URL, getToken, tabs: false }), (err) => err instanceof HeraldError && err.code === 'token_missing');
  });
}

test('createHerald rejects a malformed token with token_invalid', needsServer, async () => {
  await assert.rejects(createHerald({ url: URL, getToken: () => 'not-a-jwt', tabs: false }), (err) => err instanceof HeraldError && err.code === 'token_invalid');
});

test('a token that stays expired: onError(token_expired), state unauthorized, no more reconnects', needsServer, async () => {
  const user = await newUser('client');
  const { token: expired } = await control('/token', { userId: user.id, role: 'client', email: user.email, ttl: -3600 });
  const { failure, errors, states, asked, askedLater } = await refused(() => expired);
  assert.equal(failure?.code, 'token_expired');
  assert.deepEqual(errors.map((e) => e.code), ['token_expired']);
  assert.equal(states.at(-1), 'offline'); // closed by the test after 'unauthorized'
  assert.ok(states.includes('unauthorized'), states.join());
  assert.equal(askedLater, asked); // no connect after the second refusal
});

test('a token signed with another key: onError(token_invalid), state unauthorized', needsServer, async () => {
  const user = await newUser('client');
  const token = wrongKeyToken(user);
  const { failure, errors, states, asked, askedLater } = await refused(() => token);
  assert.equal(failure?.code, 'token_invalid');
  assert.deepEqual(errors.map((e) => e.code), ['token_invalid']);
  assert.ok(states.includes('unauthorized'), states.join());
  assert.equal(askedLater, asked);
});

test('with a namespace (no token read up front) a missing token ends unauthorized too', needsServer, async () => {
  const { failure, errors } = await refused(() => '', { namespace: 'no-token' });
  assert.equal(failure?.code, 'token_missing');
  assert.deepEqual(errors.map((e) => e.code), ['token_missing']);
});

test('one refusal that a fresh getToken() fixes is not an error', needsServer, async () => {
  const user = await newUser('client');
  const { token: expired } = await control('/token', { userId: user.id, role: 'client', email: user.email, ttl: -3600 });
  let calls = 0;
  const errors = [];
  const herald = await connect(user, {
    getToken: () => { calls += 1; return calls <= 2 ? expired : user.token; }, // 1: namespace, 2: connect
    onError: (error) => errors.push(error),
  });
  await herald.whenOnline();
  assert.equal(herald.state, 'online');
  assert.deepEqual(errors, []);
  await herald.close();
});
