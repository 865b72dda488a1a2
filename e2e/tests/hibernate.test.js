// Sleeping connections (HIBERNATE_AFTER): a blog whose quiet websocket connections sleep
// serves socket.io-client (upgraded from polling to a websocket) and a plain `ws` client as
// one that keeps them awake. /metrics counts the sleepers; a broadcast, a message and pings
// wake them, and they sleep again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startBlog, api, seedBlog } from '../lib/server.js';
import { once, waitFor } from '../lib/wait.js';
import { commentReachesBothOnce } from '../lib/inbox.js';

let blog;
let world;

before(async () => {
  blog = await startBlog({ HIBERNATE_AFTER: '1' });
  world = await seedBlog(blog, 'Sleep');
});

after(async () => {
  await blog?.stop();
});

/** The blog's `wsgate_sleeping_connections`. */
async function sleeping() {
  const text = await (await fetch(`${blog.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('wsgate_sleeping_connections '));
  assert.ok(line, 'the metric is served');
  return Number(line.split(' ')[1]);
}

async function untilSleeping(n) {
  const deadline = Date.now() + 10_000;
  let now;
  while ((now = await sleeping()) !== n) {
    assert.ok(Date.now() < deadline, `${now} asleep, not ${n}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('sleeping connections of both transports wake for a broadcast and a message, and sleep again', async () => {
  const { alice, bob, entryId, commentId } = world;
  await untilSleeping(0);
  const socket = io(blog.url, { auth: { token: alice.token }, reconnection: false, forceNew: true });
  await once(socket, 'connect');
  await waitFor(() => socket.io.engine.transport.name === 'websocket');
  await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });
  const ws = new WebSocket(`ws://127.0.0.1:${blog.port}/?token=${bob.token}`);
  const wsInbox = [];
  ws.on('message', (data) => wsInbox.push(JSON.parse(data)));
  await once(ws, 'open');
  ws.send(JSON.stringify({ type: 'subscribeEntry', entryId, id: 1 }));
  await waitFor(() => wsInbox.some((m) => m.event === 'ack' && m.id === 1));
  const sioInbox = [];
  socket.on('commentCreated', (c) => sioInbox.push(c));

  await untilSleeping(2);

  // A comment posted over REST reaches both sleepers, once.
  const comment = { entryId, token: bob.token, body: 'Heard in my sleep' };
  await commentReachesBothOnce(blog.url, comment, sioInbox, wsInbox);
  await untilSleeping(2);

  // A message wakes its connection and is answered.
  socket.emit('showComment', { entryId, commentId });
  const shown = await once(socket, 'showComment');
  assert.equal(shown.body, 'First!');
  ws.send(JSON.stringify({ event: 'indexComment', data: { entryId } }));
  await waitFor(() => wsInbox.some((m) => m.event === 'indexComment'));
  await untilSleeping(2);
  assert.equal(socket.connected, true);
  assert.equal(ws.readyState, WebSocket.OPEN);

  socket.disconnect();
  ws.close();
  await untilSleeping(0);
});
