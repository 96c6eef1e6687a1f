// Against a real Herald: token refresh, the offline send queue, and tabs sharing a connection.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createHerald, memoryStorage } from '../src/index.js';
import {
  URL, api, connect, control, expiry, fakeLocks, needsServer, online, newPortal, patchProject, pause, range, record, waitFor,
} from './support.js';

test('a refused connect (token_expired) asks getToken again and resumes with nothing lost', needsServer, async () => {
  const { client, project } = await newPortal();
  const { token: shortLived } = await control('/token', { userId: client.id, role: 'client', email: client.email, ttl: 3 });
  const tokens = [];
  const errors = [];
  let current = shortLived;
  let refresh = false;
  // The application refreshes once it hears of the refusal; a second refusal in a row would be
  // final (state 'unauthorized'), so the retry right after it must get the fresh token. The
  // refresh is slow: an update is written while the client waits for it, offline.
  const getToken = async () => {
    if (refresh) {
      refresh = false;
      await patchProject(project, 2); // written while the client is refused
      current = client.token;
    }
    tokens.push(current);
    return current;
  };
  const herald = await connect(client, { getToken, onError: (error) => errors.push(error) });
  const seen = record(herald);
  const stream = `project-${project}`;
  try {
    await online(herald);
    await herald.joinProject(project);
    await patchProject(project, 1);
    await waitFor(() => seen.of(stream).length === 1, 'an update on the open connection');

    const refused = [];
    herald._conn.socket.on('connect_error', (err) => { refused.push(err.data?.code); refresh = true; });
    await expiry(shortLived); // the server closes the open transport at the token's exp
    await waitFor(() => refused.length > 0, 'the refused reconnect (it sends the expired token)');
    assert.equal(refused[0], 'token_expired');
    await waitFor(() => herald.state === 'online', 'online with the fresh token');
    await waitFor(() => seen.of(stream).length >= 2, 'the update written meanwhile');
    assert.deepEqual(seen.of(stream).map((e) => e.payload.progress), [1, 2]);
    assert.deepEqual(refused, ['token_expired']);
    assert.deepEqual(errors, []);
    assert.equal(tokens.at(-1), client.token);
  } finally {
    await herald.close();
  }
});

test('messages sent while offline are kept, survive a restart of the client, and are stored once, in order', needsServer, async () => {
  const { client, technician, ticket } = await newPortal();
  const storage = memoryStorage();
  const stream = `ticket-${ticket}`;
  const watcher = await connect(technician);
  const heard = record(watcher);
  const writer = await connect(client, { storage });
  await online(watcher, writer);
  await watcher.joinTicket(ticket);
  await writer.joinTicket(ticket);

  await control('/kill-web');
  await waitFor(() => writer.state !== 'online', 'the writer offline');
  const changes = [];
  writer.onPendingChange((list) => changes.push(list.map((m) => m.text)));
  const promises = ['one', 'two', 'three'].map((text) => writer.sendMessage(ticket, text));
  assert.deepEqual(writer.pendingMessages().map((m) => m.text), ['one', 'two', 'three']);
  assert.deepEqual(changes.at(-1), ['one', 'two', 'three']);
  const queued = JSON.parse(storage.getItem(`herald:${client.id}:outbox`));
  assert.deepEqual(queued.map((m) => [m.ticketId, m.text]), [[ticket, 'one'], [ticket, 'two'], [ticket, 'three']]);
  assert.equal(new Set(queued.map((m) => m.clientMessageId)).size, 3);
  await writer.close(); // the page is reloaded while offline
  assert.deepEqual((await Promise.all(promises)).map((ack) => ack.error?.code), ['closed', 'closed', 'closed']);

  await control('/start-web');
  const again = await connect(client, { storage });
  try {
    assert.deepEqual(again.pendingMessages().map((m) => m.text), ['one', 'two', 'three']);
    await waitFor(() => again.pendingMessages().length === 0, 'the queue sent');
    await waitFor(() => heard.of(stream).length >= 3, 'the messages at the other end');
    await pause(300); // a duplicate would show up now
    assert.deepEqual(heard.of(stream).map((e) => e.payload.message), ['one', 'two', 'three']);
    const { events } = await api('GET', `/api/streams/${stream}/events?after=0`);
    assert.deepEqual(events.filter((e) => e.type === 'new-message').map((e) => e.payload.message), ['one', 'two', 'three']);
    assert.equal(storage.getItem(`herald:${client.id}:outbox`), '[]');
  } finally {
    await again.close();
    await watcher.close();
  }
});

test('sendMessage resolves with the ack once stored; refused input resolves with the error and leaves the queue', needsServer, async () => {
  const { client, ticket } = await newPortal();
  const herald = await connect(client);
  try {
    await online(herald);
    const ack = await herald.sendMessage(ticket, 'hello');
    assert.equal(ack.ok, true);
    assert.ok(Number.isInteger(ack.messageId));
    const refused = await herald.sendMessage(ticket, '');
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, 'invalid_argument');
    assert.deepEqual(herald.pendingMessages(), []);
  } finally {
    await herald.close();
  }
});

test('typing reaches the other side of the ticket and not the sender', needsServer, async () => {
  const { client, technician, ticket } = await newPortal();
  const a = await connect(client);
  const b = await connect(technician);
  const typing = { a: [], b: [] };
  a.onTyping((p) => typing.a.push(p));
  b.onTyping((p) => typing.b.push(p));
  try {
    await online(a, b);
    await a.joinTicket(ticket);
    await b.joinTicket(ticket);
    assert.equal((await a.startTyping(ticket)).ok, true);
    await waitFor(() => typing.b.length === 1, 'typing at the other end');
    assert.equal((await a.stopTyping(ticket)).ok, true);
    await waitFor(() => typing.b.length === 2, 'stopped typing at the other end');
    assert.deepEqual(typing.b.map((p) => [p.ticketId, p.userId, p.isTyping]), [[ticket, client.id, true], [ticket, client.id, false]]);
    assert.deepEqual(typing.a, []);
  } finally {
    await a.close();
    await b.close();
  }
});

test('two tabs share one connection; when the leader closes the other takes over and misses nothing', needsServer, async () => {
  const { client, project, ticket } = await newPortal();
  const storage = memoryStorage(); // what localStorage is to the tabs of a browser
  const locks = fakeLocks();
  const tab = () => createHerald({
    url: URL, getToken: () => client.token, storage, tabs: { locks },
    retry: { min: 100, max: 1000 }, socketOptions: { transports: ['websocket'] },
  });
  const first = await tab();
  const second = await tab();
  const seenFirst = record(first);
  const seenSecond = record(second);
  const stream = `project-${project}`;
  try {
    await waitFor(() => first.state === 'online' && second.state === 'online', 'both tabs online');
    assert.equal(first.isLeader, true);
    assert.equal(second.isLeader, false);
    assert.equal(second._conn, null); // no socket of its own
    assert.equal((await second.joinProject(project)).ok, true); // through the leader
    await patchProject(project, 1);
    await waitFor(() => seenFirst.of(stream).length === 1 && seenSecond.of(stream).length === 1, 'the update in both tabs');
    const ack = await second.sendMessage(ticket, 'from the second tab');
    assert.equal(ack.ok, true);

    await first.close(); // the leader tab goes away
    const writes = (async () => { for (let p = 2; p <= 6; p += 1) await patchProject(project, p); })();
    await waitFor(() => second.isLeader, 'the second tab leading');
    await writes;
    await waitFor(() => seenSecond.of(stream).length >= 6, 'every update in the remaining tab');
    await pause(300);
    assert.deepEqual(seenSecond.of(stream).map((e) => e.payload.progress), range(1, 6));
  } finally {
    await first.close();
    await second.close();
  }
});
