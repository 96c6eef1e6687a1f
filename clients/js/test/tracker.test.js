// Unit tests of the pure logic: the StreamTracker with an in-memory history in place of the
// HTTP endpoint, the outbox, storage and token claims. (The same behaviours against a real
// server are in resume.test.js and session.test.js.)
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fileStorage } from '../src/file-storage.js';
import { GoneError } from '../src/history.js';
import { Outbox } from '../src/outbox.js';
import { Store, memoryStorage } from '../src/storage.js';
import { StreamTracker } from '../src/tracker.js';
import { claims } from '../src/util.js';

const S = 'project-1';
const ev = (offset, epoch = 'e1', stream = S) => ({
  type: 'project-updated', payload: { progress: offset }, meta: { id: `id-${offset}`, stream, offset, epoch, ts: 'now' },
});

/** A tracker over a history of `count` events in epoch e1 (offsets <= prunedThrough are gone). */
function setup({ positions = {}, count = 10, prunedThrough = 0, epoch = 'e1' } = {}) {
  const delivered = [];
  const resets = [];
  const saved = [];
  const requests = [];
  const history = Array.from({ length: count }, (_, i) => ev(i + 1, epoch));
  const tracker = new StreamTracker({
    positions,
    save: (p) => saved.push(p),
    deliver: (type, payload, meta) => delivered.push(meta.offset),
    reset: (stream, head) => resets.push([stream, head]),
    fetchPage: async (stream, after, limit) => {
      requests.push([after, limit]);
      if (after < prunedThrough) throw new GoneError(stream);
      return { events: history.filter((e) => e.meta.offset > after).slice(0, limit), head: { offset: count, epoch } };
    },
    retry: { min: 1, max: 5 },
  });
  return { tracker, delivered, resets, saved, requests };
}

const settle = async (tracker) => { await tracker.settled(S); await new Promise((r) => { setImmediate(r); }); };

test('events after the position are delivered in order; earlier ones are dropped as duplicates', async () => {
  const { tracker, delivered } = setup({ positions: { [S]: { offset: 2, epoch: 'e1' } } });
  for (const offset of [1, 2, 3, 3, 4, 2]) tracker.receive('project-updated', {}, ev(offset).meta);
  await settle(tracker);
  assert.deepEqual(delivered, [3, 4]);
  assert.deepEqual(tracker.get(S), { offset: 4, epoch: 'e1' });
});

test('a gap is fetched over history and delivered before the events that follow it', async () => {
  const { tracker, delivered, requests } = setup({ positions: { [S]: { offset: 1, epoch: 'e1' } } });
  tracker.receive('project-updated', {}, ev(5).meta);
  tracker.receive('project-updated', {}, ev(6).meta);
  await settle(tracker);
  assert.deepEqual(delivered, [2, 3, 4, 5, 6]);
  assert.deepEqual(requests, [[1, 3]]);
});

test('a gap that history no longer has (410) resets the stream to the head', async () => {
  const { tracker, delivered, resets } = setup({ positions: { [S]: { offset: 1, epoch: 'e1' } }, prunedThrough: 3 });
  tracker.receive('project-updated', {}, ev(5).meta);
  await settle(tracker);
  assert.deepEqual(resets, [[S, { offset: 10, epoch: 'e1' }]]);
  assert.deepEqual(delivered, []);
  tracker.receive('project-updated', {}, ev(11).meta);
  await settle(tracker);
  assert.deepEqual(delivered, [11]);
});

test('an event of another epoch resets the stream from that event', async () => {
  const { tracker, delivered, resets } = setup({ positions: { [S]: { offset: 3, epoch: 'e1' } } });
  tracker.receive('project-updated', {}, ev(4, 'e2').meta);
  tracker.receive('project-updated', {}, ev(5, 'e2').meta);
  await settle(tracker);
  assert.deepEqual(resets, [[S, { offset: 4, epoch: 'e2' }]]);
  assert.deepEqual(delivered, [5]);
});

test('a failing history request is retried until it answers', async () => {
  const { tracker, delivered } = setup({ positions: { [S]: { offset: 1, epoch: 'e1' } } });
  const real = tracker.fetchPage;
  let failures = 2;
  tracker.fetchPage = async (...args) => { if (failures-- > 0) throw new Error('network'); return real(...args); };
  tracker.receive('project-updated', {}, ev(3).meta);
  await settle(tracker);
  assert.deepEqual(delivered, [2, 3]);
});

test('seed takes a head only for untracked or unrecovered streams, never past a tracked position', () => {
  const { tracker, resets } = setup({ positions: { [S]: { offset: 2, epoch: 'e1' } } });
  tracker.seed(S, { offset: 9, epoch: 'e1' }); // recovered: replay of 3..9 follows
  assert.deepEqual(tracker.get(S), { offset: 2, epoch: 'e1' });
  tracker.seed('user-1', { offset: 7, epoch: 'u' });
  assert.deepEqual(tracker.get('user-1'), { offset: 7, epoch: 'u' });
  assert.deepEqual(resets, []);
  tracker.seed(S, { offset: 9, epoch: 'e1' }, { reset: true });
  assert.deepEqual(tracker.get(S), { offset: 9, epoch: 'e1' });
  assert.deepEqual(resets, [[S, { offset: 9, epoch: 'e1' }]]);
});

test('events of a held stream wait for its join ack, then those after the ack\'s head are delivered', async () => {
  const { tracker, delivered } = setup();
  tracker.hold(S);
  tracker.receive('project-updated', {}, ev(4).meta);
  tracker.receive('project-updated', {}, ev(5).meta);
  await settle(tracker);
  assert.deepEqual(delivered, []);
  tracker.seed(S, { offset: 4, epoch: 'e1' });
  tracker.release(S);
  await settle(tracker);
  assert.deepEqual(delivered, [5]);
});

test('positions are saved after each delivery', async () => {
  const { tracker, saved } = setup({ positions: { [S]: { offset: 0, epoch: 'e1' } } });
  tracker.receive('project-updated', {}, ev(1).meta);
  await settle(tracker);
  assert.deepEqual(saved.at(-1), { [S]: { offset: 1, epoch: 'e1' } });
});

test('the outbox keeps entries in order in storage, once per clientMessageId', () => {
  const storage = memoryStorage();
  const changes = [];
  const outbox = new Outbox(new Store(storage, 'u1'), (list) => changes.push(list.length));
  const a = Outbox.entry(1, 'a');
  const b = Outbox.entry(1, 'b');
  outbox.add(a);
  outbox.add(b);
  outbox.add(a);
  assert.deepEqual(new Outbox(new Store(storage, 'u1'), () => {}).list().map((m) => m.text), ['a', 'b']);
  outbox.remove(a.clientMessageId);
  assert.deepEqual(new Outbox(new Store(storage, 'u1'), () => {}).list().map((m) => m.text), ['b']);
  assert.deepEqual(changes, [1, 2, 1]);
  assert.notEqual(a.clientMessageId, b.clientMessageId);
});

test('a corrupt stored value is ignored, not fatal', () => {
  const storage = memoryStorage();
  storage.setItem('herald:u1:positions', '{not json');
  assert.deepEqual(new Store(storage, 'u1').read('positions', {}), {});
});

test('file storage keeps values across instances', async (t) => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(`${tmpdir()}/herald-`);
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = fileStorage(`${dir}/state.json`);
  first.setItem('k', 'v');
  first.setItem('gone', 'x');
  first.removeItem('gone');
  const second = fileStorage(`${dir}/state.json`);
  assert.equal(second.getItem('k'), 'v');
  assert.equal(second.getItem('gone'), null);
});

test('token claims are read without verification; garbage gives {}', () => {
  const body = Buffer.from(JSON.stringify({ sub: '42', role: 'client' })).toString('base64url');
  assert.deepEqual(claims(`x.${body}.y`), { sub: '42', role: 'client' });
  assert.deepEqual(claims('nonsense'), {});
});

test('a handler that throws does not stop the others or later deliveries', async (t) => {
  const { Listeners } = await import('../src/util.js');
  t.mock.method(console, 'error', () => {});
  const listeners = new Listeners();
  const got = [];
  listeners.add(() => { throw new Error('bug'); });
  listeners.add((x) => got.push(x));
  listeners.emit(1);
  listeners.emit(2);
  assert.deepEqual(got, [1, 2]);
});

test('the outbox sends again after "not now" answers and stops at a refusal', async () => {
  const answers = [
    { ok: false, error: { code: 'unavailable', message: 'database away' } },
    { ok: false, error: { code: 'internal', message: 'boom' } },
    { ok: true, messageId: 7 },
    { ok: false, error: { code: 'invalid_message', message: 'blank' } },
  ];
  const sent = [];
  const outbox = new Outbox(new Store(memoryStorage(), 'u2'), () => {}, {
    emit: async (entry) => { sent.push(entry.text); return answers.shift(); },
    online: () => true,
    signal: new AbortController().signal,
    retry: { min: 1, max: 2 },
  });
  const first = outbox.send(Outbox.entry(1, 'hello'));
  const second = outbox.send(Outbox.entry(1, ' '));
  assert.deepEqual(await first, { ok: true, messageId: 7 });
  assert.equal((await second).error.code, 'invalid_message');
  assert.deepEqual(sent, ['hello', 'hello', 'hello', ' ']);
  assert.deepEqual(outbox.list(), []);
});
