// Against a real Herald: delivery once and in order across reconnects, server crashes,
// duplicates sent by the server, and live messages lost on the way (gap repair).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { memoryStorage } from '../src/index.js';
import {
  api, connect, control, needsServer, online, newPortal, newUser, patchProject, range, record, waitFor,
} from './support.js';

test('a joined project\'s events arrive once, in order, with their meta', needsServer, async () => {
  const { client, project } = await newPortal();
  const herald = await connect(client);
  const seen = record(herald);
  try {
    await herald.whenOnline(); // (a hang here fails at the test's timeout)
    assert.equal(herald.user.userId, client.id);
    const ack = await herald.joinProject(project);
    assert.equal(ack.ok, true);
    assert.equal(ack.stream, `project-${project}`);
    for (const progress of [10, 20, 30]) await patchProject(project, progress);
    const stream = `project-${project}`;
    await waitFor(() => seen.of(stream).length >= 3, 'three project updates');
    assert.deepEqual(seen.of(stream).map((e) => e.payload.progress), [10, 20, 30]);
    assert.deepEqual(seen.offsets(stream), range(ack.offset + 1, ack.offset + 3));
    assert.deepEqual(Object.keys(seen.of(stream)[0].meta).sort(), ['epoch', 'id', 'offset', 'stream', 'ts']);
    assert.deepEqual(herald.positions()[stream], { offset: ack.offset + 3, epoch: ack.epoch });
  } finally {
    await herald.close();
  }
});

test('the user stream is tracked from connected.positions: notifications missed offline are replayed', needsServer, async () => {
  const { client, project } = await newPortal();
  const storage = memoryStorage();
  const first = await connect(client, { storage });
  await online(first);
  const own = `user-${client.id}`;
  assert.ok(first.positions()[own], 'the user stream is tracked without being joined');
  await first.close();

  for (const progress of [1, 2]) await patchProject(project, progress); // each notifies the client
  const second = await connect(client, { storage });
  const seen = record(second);
  try {
    await waitFor(() => seen.of(own).length >= 2, 'the notifications missed while away');
    assert.deepEqual(seen.of(own).map((e) => e.type), ['notification', 'notification']);
    assert.deepEqual(seen.offsets(own), range(1, 2));
  } finally {
    await second.close();
  }
});

test('after the transport drops, events written meanwhile arrive once and in order', needsServer, async () => {
  const { client, project } = await newPortal();
  const herald = await connect(client);
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    const { offset: start } = await herald.joinProject(project);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'the first update');
    const writes = (async () => { for (let p = 2; p <= 21; p += 1) await patchProject(project, p); })();
    for (let i = 0; i < 3; i += 1) { // drop it three times while events are being written
      herald._conn.socket.io.engine.close();
      await waitFor(() => herald.state === 'online', 'back online');
    }
    await writes;
    await waitFor(() => seen.of(stream).length >= 21, 'every update');
    assert.deepEqual(seen.offsets(stream), range(start + 1, start + 21));
    assert.deepEqual(seen.of(stream).map((e) => e.payload.progress), range(1, 21));
  } finally {
    await herald.close();
  }
});

test('a web node killed and restarted: the events written while it was down arrive once, in order, then live', needsServer, async () => {
  const { client, project } = await newPortal();
  const herald = await connect(client);
  const seen = record(herald);
  const stream = `project-${project}`;
  const states = [];
  herald.onConnectionChange((state) => states.push(state));
  try {
    await online(herald);
    const { offset: start, epoch } = await herald.joinProject(project);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'the first update');
    await control('/kill-web');
    await waitFor(() => herald.state === 'reconnecting', 'reconnecting');
    for (let p = 2; p <= 6; p += 1) {
      await control('/append', { stream, type: 'project-updated', data: { projectId: project, progress: p, status: 'active' } });
    }
    await control('/start-web');
    await waitFor(() => seen.of(stream).length >= 6, 'the events written while the node was down');
    await patchProject(project, 7); // the room was restored: live again
    await waitFor(() => seen.of(stream).length >= 7, 'a live update after the restart');
    assert.deepEqual(seen.offsets(stream), range(start + 1, start + 7));
    assert.deepEqual(seen.of(stream).map((e) => e.payload.progress), range(1, 7));
    assert.ok(seen.of(stream).every((e) => e.meta.epoch === epoch));
    assert.deepEqual(states, ['online', 'reconnecting', 'online']);
  } finally {
    await herald.close();
  }
});

test('events the server sends twice are delivered once', needsServer, async () => {
  const { client, project } = await newPortal();
  const herald = await connect(client);
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    const { epoch } = await herald.joinProject(project);
    for (const p of [1, 2, 3]) await patchProject(project, p);
    await waitFor(() => seen.of(stream).length === 3, 'three updates');
    // The server replays 1..3 again to this socket: at-least-once delivery, as after a crash.
    const ack = await herald._conn.socket.timeout(5000).emitWithAck('join-project', { projectId: project, position: { offset: 0, epoch } });
    assert.equal(ack.recovered, true);
    await patchProject(project, 4);
    await waitFor(() => seen.of(stream).length >= 4, 'the fourth update');
    assert.deepEqual(seen.of(stream).map((e) => e.payload.progress), [1, 2, 3, 4]);
  } finally {
    await herald.close();
  }
});

test('a live event lost on the way is fetched over HTTP and delivered before the next one', needsServer, async () => {
  const { client, project } = await newPortal();
  const herald = await connect(client);
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    const { offset: start } = await herald.joinProject(project);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'the first update');
    const lost = await control('/lose', { stream, type: 'project-updated', data: { projectId: project, progress: 2, status: 'active' } });
    assert.equal(lost.offset, start + 2);
    await patchProject(project, 3);
    await waitFor(() => seen.of(stream).length >= 3, 'the lost update and the next');
    assert.deepEqual(seen.offsets(stream), range(start + 1, start + 3));
    assert.deepEqual(seen.of(stream).map((e) => e.payload.progress), [1, 2, 3]);
  } finally {
    await herald.close();
  }
});

test('a stream whose stored epoch is wrong is reset at connect (onReset with the head), then live', needsServer, async () => {
  const { client, project } = await newPortal();
  const storage = memoryStorage();
  const stream = `project-${project}`;
  const first = await connect(client, { storage });
  await online(first);
  await first.joinProject(project);
  await patchProject(project, 1);
  await waitFor(() => first.positions()[stream]?.offset === 1, 'the first update');
  await first.close();
  const key = `herald:${client.id}:positions`;
  const positions = JSON.parse(storage.getItem(key));
  positions[stream] = { offset: 1, epoch: 'not-the-epoch' };
  storage.setItem(key, JSON.stringify(positions));

  const resets = [];
  const second = await connect(client, { storage, onReset: (s, head) => resets.push([s, head]) });
  const seen = record(second);
  try {
    await online(second);
    const head = (await api('GET', `/api/streams/${stream}/events?after=1`)).head;
    assert.deepEqual(resets, [[stream, head]]);
    await patchProject(project, 2);
    await waitFor(() => seen.of(stream).length === 1, 'a live update after the reset');
    assert.deepEqual(seen.offsets(stream), [2]);
  } finally {
    await second.close();
  }
});

test('a new epoch seen live resets the stream and delivery goes on from there', needsServer, async () => {
  const { client, project } = await newPortal();
  const resets = [];
  const herald = await connect(client, { onReset: (s, head) => resets.push([s, head]) });
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    await herald.joinProject(project);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'the first update');
    const { epoch } = await control('/new-epoch', { stream });
    await patchProject(project, 2);
    await waitFor(() => resets.length === 1, 'the reset');
    assert.deepEqual(resets, [[stream, { offset: 2, epoch }]]);
    await patchProject(project, 3);
    await waitFor(() => seen.of(stream).length === 2, 'the update after the reset');
    assert.deepEqual(seen.of(stream).map((e) => [e.meta.offset, e.meta.epoch]), [[1, seen.of(stream)[0].meta.epoch], [3, epoch]]);
  } finally {
    await herald.close();
  }
});

test('a gap whose events were pruned resets the stream (onReset with the head) instead of skipping silently', needsServer, async () => {
  const { client, project } = await newPortal();
  const resets = [];
  const herald = await connect(client, { onReset: (s, head) => resets.push([s, head]) });
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    await herald.joinProject(project);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'the first update');
    await control('/lose', { stream, type: 'project-updated', data: { projectId: project, progress: 2, status: 'active' } });
    await control('/prune', { stream, through: 2 });
    await patchProject(project, 3);
    await waitFor(() => resets.length === 1, 'the reset');
    const { epoch } = seen.of(stream)[0].meta;
    assert.deepEqual(resets, [[stream, { offset: 3, epoch }]]);
    await patchProject(project, 4);
    await waitFor(() => seen.of(stream).length === 2, 'the next update');
    assert.deepEqual(seen.offsets(stream), [1, 4]);
  } finally {
    await herald.close();
  }
});

test('an outsider\'s join is refused with the server\'s error and not remembered', needsServer, async () => {
  const { project } = await newPortal();
  const outsider = await newUser('client');
  const storage = memoryStorage();
  const herald = await connect(outsider, { storage });
  try {
    await online(herald);
    const ack = await herald.joinProject(project);
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, 'not_found'); // what it may not see: as if unknown
    assert.deepEqual(JSON.parse(storage.getItem(`herald:${outsider.id}:rooms`)), []);
  } finally {
    await herald.close();
  }
});

test('a join made while offline resolves once reconnected, and the room then delivers', needsServer, async () => {
  const { client, project } = await newPortal();
  const herald = await connect(client);
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    await control('/kill-web');
    await waitFor(() => herald.state !== 'online', 'offline');
    const joined = herald.joinProject(project);
    await control('/start-web');
    const ack = await joined;
    assert.equal(ack.ok, true);
    assert.equal(ack.stream, stream);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'an update in the room joined offline');
  } finally {
    await herald.close();
  }
});

test('joining again a room whose epoch changed meanwhile resets it (onReset with the ack\'s head)', needsServer, async () => {
  const { client, project } = await newPortal();
  const resets = [];
  const herald = await connect(client, { onReset: (s, head) => resets.push([s, head]) });
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    await herald.joinProject(project);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'the first update');
    await herald.leaveProject(project);
    const { epoch } = await control('/new-epoch', { stream });
    const ack = await herald.joinProject(project);
    assert.equal(ack.recovered, false);
    assert.deepEqual(resets, [[stream, { offset: 1, epoch }]]);
    await patchProject(project, 2);
    await waitFor(() => seen.of(stream).length === 2, 'the update after the reset');
    assert.deepEqual(seen.of(stream).map((e) => [e.meta.offset, e.meta.epoch === epoch]), [[1, false], [2, true]]);
  } finally {
    await herald.close();
  }
});
