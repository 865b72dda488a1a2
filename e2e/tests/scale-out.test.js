// Two real blog processes on one PostgreSQL database and one Redis act as one server: what is
// written through one reaches the subscribers of both, over Socket.IO and plain WebSocket,
// exactly once; and when Redis goes away each keeps serving its own clients, says so, and
// resumes when it is back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { api, register } from '../lib/server.js';
import { postgresDatabase, redisUrl, startInstances, startRedis, withCleanup } from '../lib/services.js';
import { once, waitFor } from '../lib/wait.js';

/** An upper bound for each test, so that a hang shows as a failure (with cleanup run). */
const LIMIT = { timeout: 60_000 };

const EVENTS = ['commentCreated', 'commentUpdated', 'commentDeleted'];

/** A Socket.IO subscriber of the entry's room on `blog`; `inbox` collects [event, data]. */
async function socketIoSubscriber(blog, token, entryId) {
  const socket = io(blog.url, { auth: { token }, reconnection: false, forceNew: true });
  const inbox = [];
  for (const event of EVENTS) socket.on(event, (data) => inbox.push([event, data]));
  try {
    await once(socket, 'connect');
    const ack = await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });
    assert.deepEqual(ack, { entryId, subscribed: true });
  } catch (e) {
    socket.close();
    throw e;
  }
  return { name: `socket.io@${blog.port}`, inbox, socket, close: () => socket.close() };
}

/** A plain WebSocket subscriber of the entry's room on `blog`. */
async function wsSubscriber(blog, token, entryId) {
  const ws = new WebSocket(`ws://127.0.0.1:${blog.port}/?token=${token}`);
  const inbox = [];
  const acks = new Map();
  const exceptions = [];
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw);
    if (frame.event === 'ack') acks.set(frame.id, frame);
    else if (frame.event === 'exception') exceptions.push(frame);
    else if (EVENTS.includes(frame.event)) inbox.push([frame.event, frame.data]);
  });
  let nextId = 0;
  /** Sends `{type, ...data, id}` and resolves with the whole ack frame `{event, id, data}`. */
  const request = async (type, data, id = (nextId += 1)) => {
    ws.send(JSON.stringify({ type, ...data, id }));
    await waitFor(() => acks.has(id) || exceptions.length > 0, 5000).catch(() => {});
    assert.deepEqual(exceptions, [], `${type}: no exception`);
    assert.ok(acks.has(id), `${type}: ack ${id} within 5 s`);
    return acks.get(id);
  };
  try {
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const ack = await request('subscribeEntry', { entryId });
    assert.deepEqual(ack.data, { entryId, subscribed: true });
  } catch (e) {
    ws.terminate();
    throw e;
  }
  return { name: `ws@${blog.port}`, inbox, request, close: () => ws.terminate() };
}

/** Every subscriber receives [event, data] once, and nothing else. */
async function receivedOnce(subscribers, event, data) {
  await waitFor(() => subscribers.every((s) => s.inbox.length >= 1), 5000).catch(() => {});
  // Give a duplicate, or a late delivery through Redis, the time to show up.
  await new Promise((r) => setTimeout(r, 300));
  for (const s of subscribers) {
    assert.deepEqual(s.inbox, [[event, data]], `${s.name} received ${event} once`);
    s.inbox.length = 0;
  }
}

async function health(blog) {
  return (await fetch(`${blog.url}/healthz`, { signal: AbortSignal.timeout(5000) })).json();
}

/** Polls `/healthz` until it is `expected` (deepEqual), for at most `ms`; asserts on the last answer. */
async function healthBecomes(blog, expected, ms) {
  const deadline = Date.now() + ms;
  let last = await health(blog);
  while (!isDeepStrictEqual(last, expected) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    last = await health(blog);
  }
  assert.deepEqual(last, expected, `healthz of ${blog.url} within ${ms} ms`);
}

const OK = { status: 'ok', database: 'up', redis: 'up' };
const DEGRADED = { status: 'degraded', database: 'up', redis: 'down' };

async function metric(blog, name) {
  const text = await (await fetch(`${blog.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

test('a comment written on one instance reaches subscribers on every instance, over both transports, exactly once', LIMIT, async (t) => {
  const redis = await redisUrl(t);
  if (!redis) return;
  const db = await postgresDatabase(t);
  if (!db) return;
  await withCleanup(async (defer) => {
    defer(() => db.drop());
    const [a, b] = await startInstances({ databaseUrl: db.url, redisUrl: redis });
    defer(() => a.stop());
    defer(() => b.stop());
    // Both are subscribed to Redis (healthz says ok only once they are).
    for (const blog of [a, b]) await healthBecomes(blog, OK, 5000);
    // The machine's Redis carries every blog's envelopes on one channel (`blog`): another
    // deployment or test run on this machine also has an entry 1. Start this database's ids
    // far away, so that its rooms (`entry:{id}`) are this test's alone.
    const firstId = 1_000_000 + Math.floor(Math.random() * 1_000_000_000);
    await db.query(`ALTER TABLE entries ALTER COLUMN id RESTART WITH ${firstId}`);

    // Users registered on A sign in on B too: one database, one secret.
    const alice = await register(a.url, 'alice');
    const bob = await register(a.url, 'bob');
    const entry = await api(b.url, 'POST', '/entries', {
      token: alice.token,
      body: { title: 'Scale-out', content: 'Two instances, one room.' },
    });
    assert.equal(entry.status, 201);
    const entryId = entry.body.id;
    assert.equal(entryId, firstId);

    const subscribers = [];
    for (const [subscribe, blog, user] of [
      [socketIoSubscriber, a, alice],
      [wsSubscriber, a, bob],
      [socketIoSubscriber, b, bob],
      [wsSubscriber, b, alice],
    ]) {
      const s = await subscribe(blog, user.token, entryId);
      defer(() => s.close());
      subscribers.push(s);
    }
    const wsOnA = subscribers[1];
    const socketIoOnB = subscribers[2];

    // Over REST on B.
    const viaRest = await api(b.url, 'POST', `/entries/${entryId}/comments`, {
      token: bob.token,
      body: { body: 'Posted over REST on B' },
    });
    assert.equal(viaRest.status, 201);
    await receivedOnce(subscribers, 'commentCreated', viaRest.body);

    // Over Socket.IO on B: the ack is the stored comment, and the room gets it.
    const viaSocketIo = await socketIoOnB.socket
      .timeout(5000)
      .emitWithAck('createComment', { entryId, body: 'Sent over Socket.IO on B' });
    assert.equal(viaSocketIo.body, 'Sent over Socket.IO on B');
    assert.equal(viaSocketIo.entryId, entryId);
    await receivedOnce(subscribers, 'commentCreated', viaSocketIo);

    // Over plain WebSocket on A: the ack frame carries the stored comment.
    const ack = await wsOnA.request('createComment', { entryId, body: 'Sent over WebSocket on A' }, 7);
    const viaWs = ack.data;
    assert.deepEqual(ack, { event: 'ack', id: 7, data: viaWs });
    assert.equal(viaWs.body, 'Sent over WebSocket on A');
    assert.equal(viaWs.entryId, entryId);
    await receivedOnce(subscribers, 'commentCreated', viaWs);

    // Changes over REST on B.
    const path = `/entries/${entryId}/comments/${viaRest.body.id}`;
    const updated = await api(b.url, 'PUT', path, { token: bob.token, body: { body: 'Edited on B' } });
    assert.equal(updated.status, 200);
    assert.equal(updated.body.body, 'Edited on B');
    await receivedOnce(subscribers, 'commentUpdated', updated.body);
    assert.equal((await api(b.url, 'DELETE', path, { token: bob.token })).status, 204);
    await receivedOnce(subscribers, 'commentDeleted', { id: viaRest.body.id, entryId });
  });
});

test('pub/sub broker: when Redis goes away each instance serves its own clients, reports it, and resumes when it is back', LIMIT, async (t) => {
  const db = await postgresDatabase(t);
  if (!db) return;
  await withCleanup(async (defer) => {
    defer(() => db.drop());
    const redis = await startRedis(t);
    if (!redis) return;
    defer(() => redis.stop());
    // What pub/sub does in an outage: the Redis Streams broker (the default) loses nothing.
    const [a, b] = await startInstances({ databaseUrl: db.url, redisUrl: redis.url, env: { REDIS_BROKER: 'pubsub' } });
    defer(() => a.stop());
    defer(() => b.stop());

    const alice = await register(a.url, 'alice');
    const entry = await api(a.url, 'POST', '/entries', {
      token: alice.token,
      body: { title: 'Outage', content: 'Redis goes away.' },
    });
    assert.equal(entry.status, 201);
    const entryId = entry.body.id;
    const onA = await wsSubscriber(a, alice.token, entryId);
    defer(() => onA.close());
    const onB = await socketIoSubscriber(b, alice.token, entryId);
    defer(() => onB.close());
    for (const blog of [a, b]) await healthBecomes(blog, OK, 5000);
    assert.equal(await metric(a, 'wsgate_broker_connected'), 1);
    const comment = async (blog, body) => {
      const res = await api(blog.url, 'POST', `/entries/${entryId}/comments`, { token: alice.token, body: { body } });
      assert.equal(res.status, 201, `POST comment on ${blog.url}: ${JSON.stringify(res.body)}`);
      return res.body;
    };

    await redis.stop();
    for (const blog of [a, b]) await healthBecomes(blog, DEGRADED, 10_000);
    assert.equal(await metric(a, 'wsgate_broker_connected'), 0);
    // The warning follows the status change by a moment, and comes through a pipe.
    await waitFor(() => /connection lost/.test(a.logs.join('')), 2000).catch(() => {});
    assert.match(a.logs.join(''), /connection lost/);

    // Each instance still serves its own subscribers, and only those.
    const onlyA = await comment(a, 'Written on A during the outage');
    await receivedOnce([onA], 'commentCreated', onlyA);
    const onlyB = await comment(b, 'Written on B during the outage');
    await receivedOnce([onB], 'commentCreated', onlyB); // and not A's
    assert.deepEqual(onA.inbox, [], "B's comment did not reach A");

    // Redis is back: both reconnect (backoff at most 5 s) and broadcasts resume.
    await redis.start();
    for (const blog of [a, b]) await healthBecomes(blog, OK, 15_000);
    assert.equal(await metric(a, 'wsgate_broker_connected'), 1);
    const again = await comment(b, 'Written on B after the outage');
    await receivedOnce([onA, onB], 'commentCreated', again);
    assert.ok((await metric(a, 'wsgate_broker_reconnects_total')) >= 1);
    // A's comment during the outage could not be published: counted, not queued.
    assert.ok((await metric(a, 'wsgate_broker_dropped_total')) >= 1);
  });
});
