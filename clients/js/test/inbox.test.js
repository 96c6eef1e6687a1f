// The inbox against a real Herald: two tabs sharing one connection and another device of the
// same user agree on the counts through inbox-updated; foreign ids are refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createHerald, memoryStorage } from '../src/index.js';
import { URL, api, connect, fakeLocks, needsServer, newUser, online, pause, waitFor } from './support.js';

const notify = async (userId) => (await api('POST', '/api/notifications', { userId, type: 'info', title: 'Hi', message: 'm' })).id;

test('two tabs sharing a connection and another device converge on the inbox counts', needsServer, async () => {
  const user = await newUser('client');
  const other = await newUser('client');
  const storage = memoryStorage();
  const locks = fakeLocks();
  const tab = () => createHerald({
    url: URL, getToken: () => user.token, storage, tabs: { locks },
    retry: { min: 100, max: 1000 }, socketOptions: { transports: ['websocket'] },
  });
  const first = await tab();
  const second = await tab();
  const device = await connect(user);
  const clients = [first, second, device];
  const changes = clients.map((c) => { const list = []; c.inbox.onChange((counts, change) => list.push({ counts, change })); return list; });
  try {
    await online(...clients);
    assert.equal(second.isLeader, false);
    await api('POST', '/api/inbox/read', { all: true }, user.token); // what the clients stream holds from other tests
    for (const c of clients) await c.inbox.list();
    const base = first.inbox.counts;
    const ids = [await notify(user.id), await notify(user.id), await notify(user.id)];
    await waitFor(() => changes.every((list) => list.filter((c) => c.change.added).length === 3), 'three notifications everywhere');
    assert.deepEqual(second.inbox.counts, { unread: base.unread + 3, unseen: base.unseen + 3, countsCapped: false });

    const ack = await second.inbox.markRead([ids[0]]); // a follower: through the leader tab
    assert.equal(ack.ok, true);
    assert.equal(ack.counts.unread, 2);
    assert.equal((await device.inbox.archive([ids[1]])).ok, true);
    assert.equal((await first.inbox.markAllSeen()).ok, true);
    const refused = await first.inbox.markRead([await notify(other.id)]);
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, 'not_found');
    // four changes: the read-all above, then these three
    await waitFor(() => changes.every((list) => list.filter((c) => c.change.counts).length === 4), 'four inbox changes everywhere');
    await pause(200);
    const expected = { unread: 1, unseen: 0, countsCapped: false };
    for (const c of clients) assert.deepEqual(c.inbox.counts, expected);
    assert.deepEqual(changes[1].filter((c) => c.change.counts).map((c) => c.change.all), ['read', null, null, 'seen']);
    const page = await second.inbox.list({ state: 'unread' });
    assert.deepEqual(page.items.map((i) => i.id), [ids[2]]);
    assert.deepEqual(page.counts, expected);
  } finally {
    for (const c of clients) await c.close();
  }
});
