// onPresence against a real Herald: two tabs sharing one connection agree on who is in a
// ticket (the follower hears it from the leader), a tab opened later gets the list at once,
// and a room restored at connect reads its members over HTTP.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createHerald, memoryStorage } from '../src/index.js';
import { PresenceBook } from '../src/presence.js';
import { URL, connect, fakeLocks, needsServer, newPortal, online, waitFor } from './support.js';

const ids = (members) => (members ?? []).map((m) => m.userId).sort((a, b) => a - b);

test('two tabs sharing a connection follow who is in a ticket', needsServer, async () => {
  const { client, technician, ticket } = await newPortal();
  const stream = `ticket-${ticket}`;
  const storage = memoryStorage();
  const locks = fakeLocks();
  const tab = () => createHerald({
    url: URL, getToken: () => technician.token, storage, tabs: { locks },
    retry: { min: 100, max: 1000 }, socketOptions: { transports: ['websocket'] },
  });
  const first = await tab();
  const second = await tab();
  const device = await connect(client);
  const heard = [[], []];
  first.onPresence(stream, (members) => heard[0].push(members));
  second.onPresence(stream, (members) => heard[1].push(members));
  let third;
  try {
    await online(first, second, device);
    assert.equal(second.isLeader, false);
    const ack = await second.joinTicket(ticket); // a follower: through the leader
    assert.equal(ack.ok, true);
    assert.deepEqual(ids(ack.presence), [technician.id]);
    await waitFor(() => heard.every((h) => ids(h.at(-1)).join() === `${technician.id}`), 'the technician in both tabs');
    await device.joinTicket(ticket);
    const both = [client.id, technician.id].sort((a, b) => a - b).join();
    await waitFor(() => heard.every((h) => ids(h.at(-1)).join() === both), 'the client joins in both tabs');
    const member = heard[1].at(-1).find((m) => m.userId === client.id);
    assert.equal(member.role, 'client');
    assert.match(member.name, /^client /);

    third = await tab(); // opened later: the leader tells it what it knows
    const now = [];
    third.onPresence(stream, (members) => now.push(members));
    await waitFor(() => ids(now.at(-1)).join() === both, 'the list in a tab opened later');

    await device.leaveTicket(ticket);
    await waitFor(() => heard.every((h) => ids(h.at(-1)).join() === `${technician.id}`), 'the client leaves in both tabs');
    assert.deepEqual(ids(first.presence(stream)), [technician.id]);
  } finally {
    for (const c of [first, second, third, device]) await c?.close();
  }
});

test('a room restored at connect reads its members over HTTP', needsServer, async () => {
  const { client, technician, ticket } = await newPortal();
  const stream = `ticket-${ticket}`;
  const tech = await connect(technician);
  const storage = memoryStorage();
  const before = await connect(client, { storage });
  try {
    await online(tech, before);
    await tech.joinTicket(ticket);
    await before.joinTicket(ticket); // remembered in storage: restored by the next connect
    await before.close();
    const after = await connect(client, { storage });
    const heard = [];
    after.onPresence(stream, (members) => heard.push(members));
    try {
      await waitFor(() => ids(heard.at(-1)).length === 2, 'both members, without a join');
    } finally {
      await after.close();
    }
  } finally {
    await tech.close();
  }
});

test('events that arrive before the snapshot are applied on top of it', () => {
  const heard = [];
  const book = new PresenceBook((stream, members) => heard.push([stream, members]));
  const member = (userId, name) => ({ userId, name, role: 'client' });
  book.begin('ticket-1');
  book.event('presence-leave', { stream: 'ticket-1', userId: 2 });
  book.event('presence-join', { stream: 'ticket-1', user: member(3, 'Cleo') });
  assert.deepEqual(heard, []);
  book.snapshot('ticket-1', [member(1, 'Tom'), member(2, 'Ann')]);
  assert.deepEqual(heard, [['ticket-1', [member(3, 'Cleo'), member(1, 'Tom')]]]);
  book.event('presence-join', { stream: 'ticket-9', user: member(4, 'Zed') }); // not followed
  book.forget('ticket-1');
  assert.deepEqual(heard.at(-1), ['ticket-1', []]);
  assert.equal(book.members('ticket-1'), null);
});
