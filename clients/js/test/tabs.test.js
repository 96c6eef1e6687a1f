// Unit tests of the tab logic with Node's BroadcastChannel, in-process Web Locks and a scripted
// socket in place of socket.io-client (the same flows against a real server and real
// Chromium are in session.test.js and the portal's browser tests).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createHerald, memoryStorage } from '../src/index.js';
import { fakeLocks, waitFor } from './support.js';

const TOKEN = `x.${Buffer.from(JSON.stringify({ sub: '7', role: 'client' })).toString('base64url')}.y`;

class ScriptedSocket {
  constructor(options) {
    this.options = options;
    this.handlers = new Map();
    this.any = [];
    this.connected = false;
    this.active = false;
    this.calls = [];
  }

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(fn);
  }

  onAny(fn) { this.any.push(fn); }

  connect() {
    this.active = true;
    this.options.auth((auth) => { this.auth = auth; this.connected = true; });
  }

  disconnect() {
    this.connected = false;
    this.active = false;
  }

  timeout() {
    return { emit: (event, data, cb) => { this.calls.push([event, data]); cb(null, { ok: true, messageId: this.calls.length }); } };
  }

  /** The server sends `name` with `args`. */
  send(name, ...args) {
    for (const fn of this.handlers.get(name) ?? []) fn(...args);
    for (const fn of this.any) fn(name, ...args);
  }
}

function scriptedIo() {
  const sockets = [];
  const io = (url, options) => {
    const socket = new ScriptedSocket(options);
    sockets.push(socket);
    return socket;
  };
  return { io, sockets };
}

const meta = (offset) => ({ id: `e${offset}`, stream: 'user-7', offset, epoch: 'E', ts: 'now' });
const connected = (offset) => ({ userId: 7, email: 'c@x', role: 'client', recovered: {}, positions: { 'user-7': { offset, epoch: 'E' } } });

async function tabs(count) {
  const storage = memoryStorage();
  const locks = fakeLocks();
  const { io, sockets } = scriptedIo();
  const url = `http://tabs.test/${Math.random()}`;
  const list = [];
  for (let i = 0; i < count; i += 1) {
    list.push(await createHerald({ url, getToken: () => TOKEN, storage, io, tabs: { locks } }));
  }
  await waitFor(() => sockets.length === 1 && sockets[0].connected, 'the leader connected');
  return { list, sockets, storage };
}

test('only the tab holding the lock connects; the others get its events and state', async () => {
  const { list: [a, b], sockets } = await tabs(2);
  const got = [];
  b.onNotification((payload, m) => got.push(m.offset));
  sockets[0].send('connected', connected(0));
  sockets[0].send('notification', { title: 't' }, meta(1));
  await waitFor(() => got.length === 1 && b.state === 'online', 'the event and the state in the follower');
  assert.equal(a.isLeader, true);
  assert.equal(b.isLeader, false);
  assert.equal(sockets.length, 1);
  assert.deepEqual(b.user, { userId: 7, email: 'c@x', role: 'client' });
  await a.close();
  await b.close();
});

test('a follower\'s sendMessage goes through the leader and resolves with its ack', async () => {
  const { list: [a, b], sockets } = await tabs(2);
  sockets[0].send('connected', connected(0));
  const ack = await b.sendMessage(3, 'hi');
  assert.equal(ack.ok, true);
  assert.deepEqual(sockets[0].calls.map(([event, data]) => [event, data.ticketId, data.message]), [['send-message', 3, 'hi']]);
  await a.close();
  await b.close();
});

test('a new leader resumes from shared storage and the follower-turned-leader delivers each event once', async () => {
  const { list: [a, b], sockets, storage } = await tabs(2);
  const got = [];
  b.onNotification((payload, m) => got.push(m.offset));
  sockets[0].send('connected', connected(0));
  for (const offset of [1, 2, 3]) sockets[0].send('notification', {}, meta(offset));
  await waitFor(() => got.length === 3, 'three events in the follower');
  // The leader had forwarded 3 but stored only 1 when its tab went away.
  storage.setItem('herald:7:positions', JSON.stringify({ 'user-7': { offset: 1, epoch: 'E' } }));
  await a.close();
  await waitFor(() => sockets.length === 2 && sockets[1].connected, 'the second tab connected');
  assert.equal(b.isLeader, true);
  assert.deepEqual(sockets[1].auth.positions, { 'user-7': { offset: 1, epoch: 'E' } });
  sockets[1].send('connected', { ...connected(3), recovered: { 'user-7': true } });
  for (const offset of [2, 3, 4]) sockets[1].send('notification', {}, meta(offset));
  await waitFor(() => got.length >= 4, 'the fourth event');
  assert.deepEqual(got, [1, 2, 3, 4]);
  await b.close();
});
