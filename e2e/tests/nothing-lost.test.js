// Nothing lost across instances (DESIGN §9): two real blog processes on PostgreSQL and a
// redis-server of the test's own, linked by the Redis Streams broker (the blog's default).
// (a) Redis stopped for 3 s while comments are posted on both instances: every subscriber on
// each instance, over each transport, receives every comment once, in the same order.
// (b) The instance a Socket.IO client and a plain WebSocket client are on is killed (-9); the
// load balancer (a TCP proxy) sends them to the survivor, where they recover their sessions and
// every comment posted meanwhile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { api, register } from '../lib/server.js';
import { linkedInstances, reachesRedis, startInstances, withCleanup } from '../lib/services.js';
import { startProxy } from '../lib/proxy.js';
import { once, waitFor } from '../lib/wait.js';

const LIMIT = { timeout: 90_000 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A Socket.IO subscriber of the entry (through `url`), recording comment ids. */
async function sioSubscriber(url, token, entryId, options = {}) {
  const socket = io(url, {
    auth: { token },
    forceNew: true,
    transports: ['websocket'],
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    randomizationFactor: 0,
    ...options,
  });
  const ids = [];
  socket.on('commentCreated', (c) => ids.push(c.id));
  await once(socket, 'connect', 10_000);
  const ack = await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });
  assert.deepEqual(ack, { entryId, subscribed: true });
  return { name: `socket.io via ${url}`, socket, ids, close: () => socket.close() };
}

/** A plain WebSocket subscriber with a recovery session, recording comment ids and its frames. */
async function wsSubscriber(port, token, entryId, query = 'session=new') {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token}&${query}`);
  const frames = [];
  const ids = [];
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw);
    frames.push(frame);
    if (frame.event === 'commentCreated') ids.push(frame.data.id);
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  if (entryId !== null) {
    ws.send(JSON.stringify({ event: 'subscribeEntry', data: { entryId }, id: 1 }));
    await waitFor(() => frames.some((f) => f.event === 'ack' && f.id === 1), 5000);
  }
  const closed = new Promise((resolve) => ws.once('close', resolve));
  return { name: `ws on ${port}`, ws, frames, ids, closed, close: () => ws.terminate() };
}

async function setup(t, defer) {
  const linked = await linkedInstances(t, defer);
  if (!linked) return null;
  const { db, redis, a, b } = linked;
  const alice = await register(a.url, 'alice');
  const bob = await register(a.url, 'bob');
  const entry = await api(a.url, 'POST', '/entries', {
    token: alice.token,
    body: { title: 'Nothing lost', content: 'Across instances.' },
  });
  assert.equal(entry.status, 201);
  const comment = async (blog, body) => {
    const res = await api(blog.url, 'POST', `/entries/${entry.body.id}/comments`, { token: alice.token, body: { body } });
    assert.equal(res.status, 201, `POST comment on ${blog.url}: ${JSON.stringify(res.body)}`);
    return res.body.id;
  };
  return { db, redis, a, b, alice, bob, entryId: entry.body.id, comment };
}

test('Redis down for 3 s while comments are posted on both instances: every subscriber gets every comment once, in one order', LIMIT, async (t) => {
  await withCleanup(async (defer) => {
    const world = await setup(t, defer);
    if (!world) return;
    const { redis, a, b, bob, entryId, comment } = world;
    const subscribers = [
      await sioSubscriber(a.url, bob.token, entryId),
      await wsSubscriber(a.port, bob.token, entryId),
      await sioSubscriber(b.url, bob.token, entryId),
      await wsSubscriber(b.port, bob.token, entryId),
    ];
    for (const s of subscribers) defer(() => s.close());

    const posted = [await comment(a, 'before')];
    await waitFor(() => subscribers.every((s) => s.ids.length === 1), 5000);

    await redis.stop();
    const outage = Date.now();
    for (let i = 0; Date.now() - outage < 3000; i += 1) {
      posted.push(await comment(i % 2 ? b : a, `during ${i}`));
      await sleep(200);
    }
    await redis.start();
    for (const blog of [a, b]) await reachesRedis(blog);
    posted.push(await comment(b, 'after'));

    await waitFor(() => subscribers.every((s) => s.ids.length >= posted.length), 15_000).catch(() => {});
    await sleep(500); // room for a duplicate
    const order = subscribers[0].ids;
    for (const s of subscribers) {
      assert.deepEqual([...s.ids].sort((x, y) => x - y), [...posted].sort((x, y) => x - y), `${s.name}: every comment once`);
      assert.deepEqual(s.ids, order, `${s.name}: the same order as everyone`);
    }
    // Each instance's comments in the order they were written.
    for (const from of [a, b]) {
      const mine = posted.filter((_, i) => i > 0 && i < posted.length - 1 && ((i - 1) % 2 ? b : a) === from);
      assert.deepEqual(order.filter((id) => mine.includes(id)), mine);
    }
  });
});

test('kill -9 of the instance two clients are on: through the balancer they recover on the survivor, with every comment posted meanwhile', LIMIT, async (t) => {
  await withCleanup(async (defer) => {
    const world = await setup(t, defer);
    if (!world) return;
    const { a, b, bob, entryId, comment } = world;
    const balancer = await startProxy(a.port);
    defer(() => balancer.close());
    const sio = await sioSubscriber(balancer.url, bob.token, entryId);
    defer(() => sio.close());
    const ws = await wsSubscriber(balancer.port, bob.token, entryId);
    defer(() => ws.close());
    const seen = await comment(b, 'seen on A');
    await waitFor(() => sio.ids.length === 1 && ws.ids.length === 1, 5000);
    const sid = sio.socket.id;
    const session = ws.frames[0].data.id;
    const offset = ws.frames.filter((f) => f.event === 'commentCreated').at(-1).offset;
    assert.equal(typeof offset, 'string');

    balancer.retarget(b.port);
    a.child.kill('SIGKILL');
    await ws.closed;
    const missed = [];
    for (let i = 0; i < 3; i += 1) missed.push(await comment(b, `missed ${i}`));

    // Socket.IO reconnects by itself through the balancer, now to B.
    await waitFor(() => sio.socket.connected && sio.ids.length === 4, 15_000).catch(() => {});
    assert.equal(sio.socket.recovered, true, 'socket.recovered on the survivor');
    assert.equal(sio.socket.id, sid, 'the same id');
    // The plain WebSocket client comes back with its session and last offset.
    const again = await wsSubscriber(balancer.port, bob.token, null, `session=${session}&offset=${encodeURIComponent(offset)}`);
    defer(() => again.close());
    await waitFor(() => again.ids.length === 3, 5000).catch(() => {});
    assert.deepEqual(again.frames[0], { event: 'session', data: { id: session, recovered: true } });

    const live = await comment(b, 'after the failover');
    await waitFor(() => sio.ids.length === 5 && again.ids.length === 4, 5000).catch(() => {});
    await sleep(300);
    assert.deepEqual(sio.ids, [seen, ...missed, live], 'Socket.IO: each once, in order, the room restored');
    assert.deepEqual(again.ids, [...missed, live], 'plain WebSocket: each once, in order, the room restored');
  });
});

test('60 s of comments with Redis restarted every 15 s and one instance killed and restarted: zero lost, zero doubled, per subscriber', { timeout: 180_000 }, async (t) => {
  await withCleanup(async (defer) => {
    const world = await setup(t, defer);
    if (!world) return;
    const { db, redis, b, bob, entryId, comment } = world;
    let { a } = world;
    const balancer = await startProxy(a.port);
    defer(() => balancer.close());

    // Subscribers: on B directly, and on A through the balancer (they move to B when A dies).
    const sioB = await sioSubscriber(b.url, bob.token, entryId);
    const sioA = await sioSubscriber(balancer.url, bob.token, entryId);
    const wsB = await resumingWs(b.port, bob.token, entryId);
    const wsA = await resumingWs(balancer.port, bob.token, entryId);
    const subscribers = [sioB, sioA, wsB, wsA];
    for (const s of subscribers) defer(() => s.close());

    const posted = [];
    let aUp = true;
    let stop = false;
    const poster = (async () => {
      for (let i = 0; !stop; i += 1) {
        // Every other comment on A while it is up; a request cut by its death is not counted.
        const target = i % 2 === 0 && aUp ? a : b;
        try {
          posted.push(await comment(target, `chaos ${i}`));
        } catch (e) {
          if (target === b) throw e;
        }
        await sleep(100);
      }
    })();

    const started = Date.now();
    const at = (s) => sleep(Math.max(0, started + s * 1000 - Date.now()));
    for (const when of [15, 30, 45]) {
      await at(when);
      await redis.stop();
      await sleep(1000);
      await redis.start();
      if (when === 15) {
        // Seven seconds later, A dies; the balancer sends its clients to B.
        await at(22);
        aUp = false;
        await sleep(300); // no request of the poster is on its way to A
        balancer.retarget(b.port);
        a.child.kill('SIGKILL');
      }
      if (when === 30) {
        // A comes back (a new process, reading the streams from the window's start) and
        // takes its share of the comments again.
        await at(35);
        [a] = await startInstances({ databaseUrl: db.url, redisUrl: redis.url, count: 1 });
        defer(() => a.stop());
        await reachesRedis(a);
        aUp = true;
      }
    }
    await at(60);
    stop = true;
    await poster;
    await waitFor(() => subscribers.every((s) => new Set(s.ids).size >= posted.length), 30_000).catch(() => {});
    await sleep(1000); // room for a duplicate
    const want = [...posted].sort((x, y) => x - y);
    for (const s of subscribers) {
      const doubled = s.ids.filter((id, i) => s.ids.indexOf(id) !== i);
      const lost = want.filter((id) => !s.ids.includes(id));
      assert.deepEqual({ lost, doubled }, { lost: [], doubled: [] }, `${s.name}: ${posted.length} comments`);
    }
    assert.deepEqual(sioA.ids, sioB.ids, 'one order everywhere');
    assert.deepEqual(wsA.ids, wsB.ids, 'one order everywhere');
    assert.ok(posted.length > 300, `a stream of comments: ${posted.length}`);
    assert.ok(!wsA.lostSession && !wsB.lostSession, 'no plain WebSocket session was lost');
  });
});

/** A plain WebSocket subscriber that comes back with its session and last offset whenever it is cut off. */
async function resumingWs(port, token, entryId) {
  const c = { name: `resuming ws via ${port}`, ids: [], session: null, offset: null, done: false };
  const open = (query) =>
    new Promise((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token}&${query}`);
      c.ws = ws;
      ws.on('message', (raw) => {
        const f = JSON.parse(raw);
        if (f.event === 'session') {
          if (c.session !== null && !f.data.recovered) c.lostSession = true;
          c.session = f.data.id;
          resolve();
        } else if (f.event === 'commentCreated') {
          c.ids.push(f.data.id);
          c.offset = f.offset;
        }
      });
      ws.on('error', () => {});
      ws.on('close', () => {
        if (!c.done) setTimeout(() => open(`session=${c.session}&offset=${encodeURIComponent(c.offset ?? '')}`).catch(() => {}), 200);
      });
    });
  await open('session=new');
  c.ws.send(JSON.stringify({ event: 'subscribeEntry', data: { entryId }, id: 1 }));
  await sleep(200);
  c.close = () => {
    c.done = true;
    c.ws.terminate();
  };
  return c;
}
