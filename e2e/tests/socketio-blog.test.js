// The chapter's Socket.IO client, run with the real socket.io-client 4.x against the blog.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startBlog, api, seedBlog } from '../lib/server.js';
import { once, waitFor } from '../lib/wait.js';
import { commentReachesBothOnce } from '../lib/inbox.js';

let blog;
let alice;
let bob;
let entryId;
let commentId;

before(async () => {
  blog = await startBlog();
  ({ alice, bob, entryId, commentId } = await seedBlog(blog, 'Socket.IO'));
});

after(async () => {
  await blog?.stop();
});

/** A client that never reconnects on its own, so that failures show. */
function connect(url, options = {}) {
  return io(url, { reconnection: false, forceNew: true, ...options });
}

test('the chapter client: query auth_token, showUser, indexComment, showComment, exception', async () => {
  // As in the chapter: the token in the query string, then three emits on connect.
  const socket = connect(`http://localhost:${blog.port}`, { query: 'auth_token=' + alice.token });
  const received = {};
  const all = Promise.all(
    ['showUser', 'indexComment', 'showComment', 'exception'].map((event) =>
      once(socket, event).then((data) => {
        received[event] = data;
      }),
    ),
  );
  socket.on('connect', () => {
    socket.emit('showUser', { userId: alice.user.id });
    socket.emit('indexComment', { entryId });
    socket.emit('showComment', { entryId, commentId });
    socket.emit('showComment', { entryId });
  });
  await all;
  assert.equal(received.showUser.email, alice.user.email);
  assert.deepEqual(received.indexComment.map((c) => c.id), [commentId]);
  assert.equal(received.showComment.body, 'First!');
  assert.deepEqual(received.exception, {
    status: 'error',
    message: 'Missing comment id.',
    cause: { pattern: 'showComment', data: { entryId } },
  });
  socket.disconnect();
});

test('events emitted on connect are never lost, even with many clients connecting at once', async () => {
  const clients = Array.from({ length: 50 }, () =>
    connect(blog.url, { auth: { token: alice.token }, transports: ['websocket'] }),
  );
  const replies = clients.map((socket) => {
    const reply = once(socket, 'indexComment', 10_000);
    socket.on('connect', () => socket.emit('indexComment', { entryId }));
    return reply;
  });
  for (const comments of await Promise.all(replies)) {
    assert.ok(comments.some((c) => c.id === commentId));
  }
  for (const socket of clients) socket.disconnect();
});

test('auth: {token} and the Forbidden exception for another user', async () => {
  const socket = connect(blog.url, { auth: { token: alice.token } });
  await once(socket, 'connect');
  socket.emit('showUser', { userId: bob.user.id });
  const exception = await once(socket, 'exception');
  assert.equal(exception.message, 'Forbidden.');
  assert.equal(exception.cause.pattern, 'showUser');
  socket.disconnect();
});

for (const [name, options, expected] of [
  ['polling only', { transports: ['polling'] }, 'polling'],
  ['websocket only', { transports: ['websocket'] }, 'websocket'],
]) {
  test(`${name}`, async () => {
    const socket = connect(blog.url, { auth: { token: alice.token }, ...options });
    await once(socket, 'connect');
    assert.equal(socket.io.engine.transport.name, expected);
    socket.emit('indexComment', { entryId });
    assert.equal((await once(socket, 'indexComment')).length, 1);
    socket.disconnect();
  });
}

test('polling then upgrade to websocket', async () => {
  const socket = connect(blog.url, { auth: { token: alice.token } });
  // Read the transports as the engine opens and upgrades, whatever the timing of `connect`.
  const transports = new Promise((resolve) => {
    socket.io.on('open', () => {
      const first = socket.io.engine.transport.name;
      socket.io.engine.on('upgrade', (transport) => resolve([first, transport.name]));
    });
  });
  await once(socket, 'connect');
  assert.deepEqual(await transports, ['polling', 'websocket']);
  assert.equal(socket.io.engine.transport.name, 'websocket');
  socket.emit('showComment', { entryId, commentId });
  assert.equal((await once(socket, 'showComment')).id, commentId);
  socket.disconnect();
});

test('a missing or bad token, or a foreign origin, is a connect_error with the reason', async () => {
  for (const [options, message] of [
    [{}, 'Missing authentication token.'],
    [{ auth: { token: 'not-a-jwt' } }, 'Invalid token.'],
    [{ query: { auth_token: 'not-a-jwt' } }, 'Invalid token.'],
    // A page of another site, even with a valid token (ALLOWED_ORIGINS is not set).
    [{ auth: { token: alice.token }, extraHeaders: { Origin: 'http://evil.example' } }, 'Origin not allowed.'],
  ]) {
    const socket = connect(blog.url, options);
    const error = await once(socket, 'connect_error');
    assert.equal(error.message, message);
    assert.equal(socket.connected, false);
    socket.close();
  }
});

test('plain values go to the ack: emitWithAck resolves with them', async () => {
  const socket = connect(blog.url, { auth: { token: alice.token } });
  await once(socket, 'connect');
  const ack = await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });
  assert.deepEqual(ack, { entryId, subscribed: true });
  const left = await socket.timeout(5000).emitWithAck('unsubscribeEntry', { entryId });
  assert.deepEqual(left, { entryId, subscribed: false });
  socket.disconnect();
});

test('one broadcast reaches a Socket.IO and a plain WebSocket client in the same room, once', async () => {
  const socket = connect(blog.url, { auth: { token: alice.token } });
  await once(socket, 'connect');
  await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });

  const ws = new WebSocket(`ws://127.0.0.1:${blog.port}/?token=${bob.token}`);
  const wsInbox = [];
  ws.on('message', (data) => wsInbox.push(JSON.parse(data)));
  await new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('error', reject);
  });
  ws.send(JSON.stringify({ type: 'subscribeEntry', entryId, id: 1 }));
  await waitFor(() => wsInbox.some((m) => m.event === 'ack' && m.id === 1));

  const sioInbox = [];
  socket.on('commentCreated', (c) => sioInbox.push(c));
  const comment = { entryId, token: bob.token, body: 'Live over both transports' };
  await commentReachesBothOnce(blog.url, comment, sioInbox, wsInbox);
  socket.disconnect();
  ws.close();
});
