// Faults against the real blog binary on a PostgreSQL database of the test's own: shutdown
// (SIGTERM) while comments are being written, and the database going away and coming back.
//
// The database is the lever: the test holds a lock on `comments` so that every `createComment`
// is still waiting inside its handler when the signal arrives, then decides when it returns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { api, register, startBlog } from '../lib/server.js';
import { postgresDatabase } from '../lib/services.js';
import { once, waitFor } from '../lib/wait.js';

const LIMIT = { timeout: 60_000 };

/** A plain WebSocket client: `sent` ids, the `acks` and `exceptions` it got, its close code. */
async function wsClient(blog, token) {
  const ws = new WebSocket(`ws://127.0.0.1:${blog.port}/?token=${token}`);
  const client = { ws, acks: new Map(), exceptions: [], closeCode: null };
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw);
    if (frame.event === 'ack') client.acks.set(frame.id, frame.data);
    else if (frame.event === 'exception') client.exceptions.push(frame);
  });
  ws.on('close', (code) => {
    client.closeCode = code;
  });
  await once(ws, 'open');
  return client;
}

/** A Socket.IO client; `disconnectReason` once it is disconnected. */
async function socketIoClient(blog, token) {
  const socket = io(blog.url, { auth: { token }, reconnection: false, forceNew: true, transports: ['websocket'] });
  const client = { socket, exceptions: [], disconnectReason: null };
  socket.on('exception', (e) => client.exceptions.push(e));
  socket.on('disconnect', (reason) => {
    client.disconnectReason = reason;
  });
  await once(socket, 'connect');
  return client;
}

/** Holds `LOCK TABLE comments IN EXCLUSIVE MODE` (reads pass, inserts wait) until released. */
async function lockComments(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE comments IN EXCLUSIVE MODE');
  return {
    release: async () => {
      await client.query('COMMIT').catch(() => {});
      await client.end().catch(() => {});
    },
  };
}

/** How many statements of the database wait on a lock. */
async function waitingOnLocks(db) {
  const { rows } = await db.query(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
  );
  return rows[0].n;
}

async function waitUntil(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The bodies of the stored comments, sorted. */
async function storedBodies(db) {
  const { rows } = await db.query('SELECT body FROM comments ORDER BY body');
  return rows.map((r) => r.body);
}

function exitCode(child) {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

async function blogOnPostgres(t, env = {}) {
  const db = await postgresDatabase(t);
  if (!db) return null;
  t.after(() => db.drop());
  const blog = await startBlog({ DATABASE_URL: db.url, ...env });
  t.after(() => blog.stop());
  const alice = await register(blog.url, 'alice');
  const entry = await api(blog.url, 'POST', '/entries', {
    token: alice.token,
    body: { title: 'Shutdown', content: 'In flight.' },
  });
  assert.equal(entry.status, 201);
  return { db, blog, token: alice.token, entryId: entry.body.id };
}

test('SIGTERM while comments are being written: each is answered and stored, or refused and not stored', LIMIT, async (t) => {
  const world = await blogOnPostgres(t, { SHUTDOWN_TIMEOUT: '10' });
  if (!world) return;
  const { db, blog, token, entryId } = world;
  const wsClients = [await wsClient(blog, token), await wsClient(blog, token)];
  const sioClients = [await socketIoClient(blog, token), await socketIoClient(blog, token)];

  const lock = await lockComments(db.url);
  t.after(() => lock.release());
  // Four comments in flight, two per transport, all waiting on the lock.
  wsClients.forEach((c, i) =>
    c.ws.send(JSON.stringify({ event: 'createComment', data: { entryId, body: `ws-${i}` }, id: 1 })),
  );
  const sioAcks = sioClients.map((c, i) =>
    c.socket.timeout(15_000).emitWithAck('createComment', { entryId, body: `sio-${i}` }),
  );
  await waitUntil(async () => (await waitingOnLocks(db)) === 4, 10_000, 'four inserts waiting on the lock');

  blog.child.kill('SIGTERM');
  const exited = exitCode(blog.child);
  await waitFor(() => blog.logs.join('').includes('shutting down'), 5000);
  await new Promise((r) => setTimeout(r, 200));

  // Shutting down: a new connection is refused, and a message on a live connection is refused
  // with an exception, over both transports.
  const refused = await new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${blog.port}/?token=${token}`);
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
    ws.on('error', () => resolve('error'));
    ws.on('open', () => resolve('open'));
  });
  assert.ok(refused === 503 || refused === 'error', `a handshake during shutdown is refused (${refused})`);
  const late = sioClients[0].socket.timeout(1000).emitWithAck('createComment', { entryId, body: 'sio-late' });
  wsClients[0].ws.send(JSON.stringify({ event: 'createComment', data: { entryId, body: 'ws-late' }, id: 2 }));
  await waitFor(() => sioClients[0].exceptions.length === 1, 5000);
  assert.deepEqual(sioClients[0].exceptions[0], { status: 'error', message: 'The connection is closing.' });
  await assert.rejects(late, 'the refused message gets no ack');
  await waitFor(() => wsClients[0].exceptions.length === 1, 5000);
  assert.deepEqual(wsClients[0].exceptions[0], {
    event: 'exception',
    id: 2,
    data: { status: 'error', message: 'The connection is closing.' },
  });

  // The database lets the inserts through: each handler finishes, is answered, then the
  // connections close (1001 / io server disconnect) and the process exits 0.
  await lock.release();
  const acked = await Promise.all(sioAcks);
  acked.forEach((comment, i) => assert.equal(comment.body, `sio-${i}`));
  await waitFor(() => wsClients.every((c) => c.closeCode !== null), 10_000);
  wsClients.forEach((c, i) => {
    assert.equal(c.acks.get(1)?.body, `ws-${i}`, `ws client ${i} got its ack before the close`);
    assert.equal(c.closeCode, 1001);
    assert.equal(c.exceptions.length, i === 0 ? 1 : 0, 'only the late message was refused');
  });
  assert.equal(wsClients[0].acks.has(2), false, 'the late plain WebSocket message was not handled');
  await waitFor(() => sioClients.every((c) => c.disconnectReason !== null), 10_000);
  for (const c of sioClients) assert.equal(c.disconnectReason, 'io server disconnect');
  assert.equal(await exited, 0, 'exit code 0');

  // Stored: exactly the answered ones.
  assert.deepEqual(await storedBodies(db), ['sio-0', 'sio-1', 'ws-0', 'ws-1']);
});

test('a comment still waiting at the end of SHUTDOWN_TIMEOUT is neither answered nor stored', LIMIT, async (t) => {
  const world = await blogOnPostgres(t, { SHUTDOWN_TIMEOUT: '1' });
  if (!world) return;
  const { db, blog, token, entryId } = world;
  const ws = await wsClient(blog, token);
  const sio = await socketIoClient(blog, token);
  const lock = await lockComments(db.url);
  t.after(() => lock.release());
  ws.ws.send(JSON.stringify({ event: 'createComment', data: { entryId, body: 'ws-stuck' }, id: 1 }));
  const sioAck = sio.socket.timeout(20_000).emitWithAck('createComment', { entryId, body: 'sio-stuck' });
  sioAck.catch(() => {});
  await waitUntil(async () => (await waitingOnLocks(db)) === 2, 10_000, 'two inserts waiting on the lock');

  const started = Date.now();
  blog.child.kill('SIGTERM');
  assert.equal(await exitCode(blog.child), 0, 'exit code 0');
  const took = Date.now() - started;
  assert.ok(took < 6000, `exited within the shutdown timeout and its grace (${took} ms)`);
  await waitFor(() => ws.closeCode !== null && sio.disconnectReason !== null, 5000);
  assert.equal(ws.acks.size, 0, 'no answer');
  await assert.rejects(sioAck, 'no Socket.IO ack');

  // The lock goes: the inserts of a process that is gone are rolled back, not committed.
  await lock.release();
  await waitUntil(async () => (await waitingOnLocks(db)) === 0, 10_000, 'the waiting inserts ended');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(await storedBodies(db), []);
});

test('the database going away: Internal server error, the server stays up, and recovers', LIMIT, async (t) => {
  const world = await blogOnPostgres(t);
  if (!world) return;
  const { db, blog, token, entryId } = world;
  const ws = await wsClient(blog, token);
  const name = new URL(db.url).pathname.slice(1);
  const admin = new pg.Client({ connectionString: db.url.replace(`/${name}`, '/test') });
  await admin.connect();
  t.after(async () => {
    await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`).catch(() => {});
    await admin.end().catch(() => {});
  });

  // Gone: no new connections, and the blog's are cut.
  await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);

  const rest = await api(blog.url, 'GET', `/entries/${entryId}`, { token });
  assert.deepEqual(rest, { status: 500, body: { statusCode: 500, message: 'Internal server error' } });
  const health = await api(blog.url, 'GET', '/healthz');
  assert.equal(health.status, 503);
  ws.ws.send(JSON.stringify({ event: 'createComment', data: { entryId, body: 'while down' }, id: 1 }));
  await waitFor(() => ws.exceptions.length === 1, 15_000);
  assert.equal(ws.exceptions[0].data.message, 'Internal server error');
  assert.equal(ws.closeCode, null, 'the connection stays open');
  // Nothing about the database's failure reaches the client.
  assert.doesNotMatch(JSON.stringify([rest.body, ws.exceptions]), /connect|database|postgres/i);

  // Back: the same connection and the same server work again.
  await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
  ws.ws.send(JSON.stringify({ event: 'createComment', data: { entryId, body: 'after' }, id: 2 }));
  await waitFor(() => ws.acks.has(2), 15_000);
  assert.equal(ws.acks.get(2).body, 'after');
  assert.equal((await api(blog.url, 'GET', '/healthz')).status, 200);
  assert.equal((await api(blog.url, 'GET', `/entries/${entryId}`, { token })).status, 200);
  assert.deepEqual(await storedBodies(db), ['after']);
});
