// The chapter's plain WebSocket client, run with the `ws` npm package against the real blog.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startBlog, api, seedBlog } from '../lib/server.js';
import { jsonInbox } from '../lib/inbox.js';

let blog;
let alice;
let bob;
let entryId;
let commentId;

before(async () => {
  blog = await startBlog();
  ({ alice, bob, entryId, commentId } = await seedBlog(blog, 'Gateways'));
});

after(async () => {
  await blog?.stop();
});

/** Opens a client the chapter's way and collects what arrives. */
function connect(url) {
  const ws = new WebSocket(url);
  const next = jsonInbox(ws);
  const opened = new Promise((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = (e) => reject(e.error ?? e);
  });
  return { ws, next, opened };
}

test('the chapter client gets showComment', async () => {
  // As in the chapter: token in the query, `type` and the data side by side.
  const { ws, next, opened } = connect(`ws://localhost:${blog.port}?token=${alice.token}`);
  await opened;
  ws.send(JSON.stringify({ type: 'showComment', entryId, commentId }));
  const message = await next();
  assert.equal(message.event, 'showComment');
  assert.equal(message.data.id, commentId);
  assert.equal(message.data.entryId, entryId);
  assert.equal(message.data.body, 'First!');
  assert.equal(message.data.userId, bob.user.id);
  ws.close();
});

test('indexComment lists the entry\'s comments', async () => {
  const { ws, next, opened } = connect(`ws://127.0.0.1:${blog.port}/?token=${alice.token}`);
  await opened;
  ws.send(JSON.stringify({ type: 'indexComment', entryId }));
  const message = await next();
  assert.equal(message.event, 'indexComment');
  assert.ok(Array.isArray(message.data));
  assert.deepEqual(message.data.map((c) => c.id), [commentId]);
  ws.close();
});

test('missing ids are exceptions with the chapter\'s messages', async () => {
  const { ws, next, opened } = connect(`ws://127.0.0.1:${blog.port}/ws?token=${alice.token}`);
  await opened;
  ws.send(JSON.stringify({ type: 'showComment', commentId }));
  assert.deepEqual(await next(), {
    event: 'exception',
    data: {
      status: 'error',
      message: 'Missing entry id.',
      cause: { pattern: 'showComment', data: { commentId } },
    },
  });
  ws.send(JSON.stringify({ type: 'showComment', entryId }));
  const missingComment = await next();
  assert.equal(missingComment.event, 'exception');
  assert.equal(missingComment.data.message, 'Missing comment id.');
  ws.send(JSON.stringify({ type: 'indexComment' }));
  assert.equal((await next()).data.message, 'Missing entry id.');
  ws.close();
});

test('showUser answers for yourself and refuses another user', async () => {
  const { ws, next, opened } = connect(`ws://127.0.0.1:${blog.port}/?token=${alice.token}`);
  await opened;
  ws.send(JSON.stringify({ type: 'showUser', userId: alice.user.id }));
  const me = await next();
  assert.equal(me.event, 'showUser');
  assert.equal(me.data.email, alice.user.email);
  assert.equal(me.data.passwordHash, undefined);
  ws.send(JSON.stringify({ type: 'showUser', userId: bob.user.id }));
  const other = await next();
  assert.equal(other.event, 'exception');
  assert.equal(other.data.message, 'Forbidden.');
  ws.close();
});

test('Nest format with an ack id, bad frames and unknown events', async () => {
  const { ws, next, opened } = connect(`ws://127.0.0.1:${blog.port}/?token=${alice.token}`);
  await opened;
  ws.send(JSON.stringify({ event: 'showComment', data: { entryId, commentId }, id: 'q1' }));
  const reply = await next();
  assert.equal(reply.event, 'showComment');
  ws.send('this is not json');
  const bad = await next();
  assert.equal(bad.event, 'exception');
  assert.match(bad.data.message, /^Invalid JSON/);
  ws.send(JSON.stringify({ event: 'deleteEverything', data: {} }));
  const unknown = await next();
  assert.equal(unknown.data.message, "There is no handler for event 'deleteEverything'.");
  ws.send(JSON.stringify({ type: 'showComment', entryId: 999999, commentId: 1, id: 7 }));
  const missing = await next();
  assert.equal(missing.event, 'exception');
  assert.equal(missing.id, 7);
  assert.equal(missing.data.message, 'Entry not found.');
  ws.close();
});

test('a missing or bad token is refused with 401 at the handshake', async () => {
  for (const [query, message] of [
    ['', 'Missing authentication token.'],
    ['?token=not-a-jwt', 'Invalid token.'],
  ]) {
    const ws = new WebSocket(`ws://127.0.0.1:${blog.port}/${query}`);
    const response = await new Promise((resolve, reject) => {
      ws.on('unexpected-response', (_req, res) => resolve(res));
      ws.on('open', () => reject(new Error('connected without a valid token')));
      ws.on('error', () => {});
    });
    assert.equal(response.statusCode, 401);
    let body = '';
    for await (const chunk of response) body += chunk;
    assert.deepEqual(JSON.parse(body), { status: 'error', message });
  }
});

test('plain HTTP GET / is still HTTP', async () => {
  const res = await fetch(`${blog.url}/`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /<title>wsgate blog<\/title>/);
});
