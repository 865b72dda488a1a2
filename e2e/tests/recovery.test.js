// Connection state recovery (DESIGN §9) with the real clients: socket.io-client 4.x over
// websocket, long-polling and the default upgrade, and `ws` with plain WebSocket sessions. The
// network is cut by a TCP proxy between client and blog while comments are posted over REST.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startBlog, api, seedBlog, register } from '../lib/server.js';
import { startProxy } from '../lib/proxy.js';
import { once, waitFor } from '../lib/wait.js';

let blog;
let alice;
let bob;
let entryId;

before(async () => {
  blog = await startBlog();
  ({ alice, bob, entryId } = await seedBlog(blog, 'Recovery'));
});

after(async () => {
  await blog?.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function comment(b, token, body) {
  const res = await api(b.url, 'POST', `/entries/${entryId}/comments`, { token, body: { body } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

/** A socket.io client through `proxy` that reconnects quickly and records commentCreated. */
function sioClient(proxy, token, transports, extra = {}) {
  const socket = io(proxy.url, {
    auth: { token },
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
    randomizationFactor: 0,
    ...(transports ? { transports } : {}),
    ...extra,
  });
  const got = [];
  socket.on('commentCreated', (c, offset) => got.push({ id: c.id, offset }));
  return { socket, got };
}

for (const [name, transports] of [
  ['websocket only', ['websocket']],
  ['long-polling only', ['polling']],
  ['default: long-polling, then the upgrade', undefined],
]) {
  test(`Socket.IO (${name}): the cut connection recovers its id, its room and every missed event, once`, async () => {
    const proxy = await startProxy(blog.port);
    const { socket, got } = sioClient(proxy, bob.token, transports);
    try {
      await once(socket, 'connect');
      if (!transports) await waitFor(() => socket.io.engine.transport.name === 'websocket');
      const firstId = socket.id;
      assert.equal(socket.recovered, false);
      const ack = await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });
      assert.deepEqual(ack, { entryId, subscribed: true });

      const before = await comment(blog, alice.token, `before the cut (${name})`);
      await waitFor(() => got.length === 1);
      assert.equal(got[0].id, before.id);
      assert.equal(typeof got[0].offset, 'string', 'room events carry their offset as the last argument');

      const disconnected = once(socket, 'disconnect');
      proxy.cut();
      await disconnected;
      const missed = [];
      for (let i = 0; i < 3; i += 1) missed.push(await comment(blog, alice.token, `missed ${i} (${name})`));
      const reconnected = once(socket, 'connect', 10_000);
      proxy.restore();
      await reconnected;

      assert.equal(socket.recovered, true, 'socket.recovered');
      assert.equal(socket.id, firstId, 'the same id');
      await waitFor(() => got.length >= 4);
      await sleep(300); // room for a duplicate to show
      assert.deepEqual(got.map((g) => g.id), [before.id, ...missed.map((c) => c.id)], 'every missed event in order, once, nothing from before again');

      // The room came back without subscribing again.
      const after = await comment(blog, alice.token, `after (${name})`);
      await waitFor(() => got.length === 5);
      assert.equal(got[4].id, after.id);
    } finally {
      socket.disconnect();
      await proxy.close();
    }
  });
}

test('Socket.IO: a goodbye (socket.disconnect()) ends the session; a reconnect with its pid starts anew', async () => {
  const { socket } = sioClient({ url: blog.url }, bob.token, ['websocket'], { reconnection: false });
  await once(socket, 'connect');
  await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });
  const pid = socket._pid;
  assert.equal(typeof pid, 'string');
  socket.disconnect();
  const again = io(blog.url, { forceNew: true, reconnection: false, transports: ['websocket'], auth: { token: bob.token, pid } });
  try {
    await once(again, 'connect');
    assert.equal(again.recovered, false);
    assert.notEqual(again._pid, pid);
  } finally {
    again.disconnect();
  }
});

test('Socket.IO: recovery runs the middleware again; a bad token is refused; another user gets nothing', async () => {
  const proxy = await startProxy(blog.port);
  const { socket, got } = sioClient(proxy, bob.token, ['websocket'], { reconnection: false });
  try {
    await once(socket, 'connect');
    await socket.timeout(5000).emitWithAck('subscribeEntry', { entryId });
    await comment(blog, alice.token, 'seen by bob');
    await waitFor(() => got.length === 1);
    const { _pid: pid, _lastOffset: offset, id: sid } = socket;
    const disconnected = once(socket, 'disconnect');
    proxy.cut();
    await disconnected;
    const secret = await comment(blog, alice.token, 'missed by bob');

    // A forged token with bob's session: refused like any handshake.
    const forged = io(blog.url, { forceNew: true, reconnection: false, transports: ['websocket'], auth: { token: 'not-a-jwt', pid, offset } });
    const error = await once(forged, 'connect_error');
    assert.equal(error.message, 'Invalid token.');
    forged.close();

    // Carol, a real user, presenting bob's pid and offset: a fresh session, none of his events.
    const carol = await register(blog.url, 'carol');
    const thief = io(blog.url, { forceNew: true, reconnection: false, transports: ['websocket'], auth: { token: carol.token, pid, offset } });
    const stolen = [];
    thief.on('commentCreated', (c) => stolen.push(c));
    await once(thief, 'connect');
    assert.equal(thief.recovered, false);
    assert.notEqual(thief.id, sid);
    await sleep(300);
    assert.deepEqual(stolen, [], 'nothing of the session reaches another user');
    thief.disconnect();

    // Bob himself still recovers afterwards (a new client object: `recovered` compares with a
    // pid it never had, so the restored id tells).
    const back = io(blog.url, { forceNew: true, reconnection: false, transports: ['websocket'], auth: { token: bob.token, pid, offset } });
    const replayed = [];
    back.on('commentCreated', (c) => replayed.push(c.id));
    await once(back, 'connect');
    assert.equal(back.id, sid);
    assert.equal(back._pid, pid);
    await waitFor(() => replayed.length === 1);
    assert.deepEqual(replayed, [secret.id]);
    back.disconnect();
  } finally {
    socket.close();
    await proxy.close();
  }
});

// ---- plain WebSocket sessions ----

/** A `ws` client of the blog (or through a proxy at `port`) collecting every frame. */
async function wsClient(port, query) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/?${query}`);
  const frames = [];
  ws.on('message', (raw) => frames.push(JSON.parse(raw)));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  let nextId = 0;
  const request = async (type, data) => {
    const id = `r${(nextId += 1)}`;
    ws.send(JSON.stringify({ type, ...data, id }));
    await waitFor(() => frames.some((f) => f.id === id));
    return frames.find((f) => f.id === id);
  };
  const closed = new Promise((resolve) => ws.once('close', resolve));
  return { ws, frames, request, closed, events: () => frames.filter((f) => f.event === 'commentCreated') };
}

test('plain WebSocket: a client that does not ask for a session sees the chapter frames unchanged', async () => {
  const c = await wsClient(blog.port, `token=${bob.token}`);
  await c.request('subscribeEntry', { entryId });
  const created = await comment(blog, alice.token, 'no session');
  await waitFor(() => c.events().length === 1);
  assert.deepEqual(c.events()[0], { event: 'commentCreated', data: created });
  assert.ok(!c.frames.some((f) => f.event === 'session'));
  c.ws.close();
});

test('plain WebSocket: session=new, cut, session=<S>&offset=<O>: the same session, missed frames in order, then live ones', async () => {
  const proxy = await startProxy(blog.port);
  try {
    const c = await wsClient(proxy.port, `token=${bob.token}&session=new`);
    await waitFor(() => c.frames.length >= 1);
    assert.equal(c.frames[0].event, 'session', 'the session frame comes first');
    const { id, recovered } = c.frames[0].data;
    assert.equal(recovered, false);
    assert.match(id, /^[0-9a-f]{32}$/);
    await c.request('subscribeEntry', { entryId });
    const seen = await comment(blog, alice.token, 'ws before');
    await waitFor(() => c.events().length === 1);
    const frame = c.events()[0];
    assert.deepEqual(frame.data, seen);
    assert.equal(typeof frame.offset, 'string');

    proxy.cut();
    await c.closed;
    const missed = [];
    for (let i = 0; i < 3; i += 1) missed.push(await comment(blog, alice.token, `ws missed ${i}`));
    proxy.restore();

    const r = await wsClient(proxy.port, `token=${bob.token}&session=${id}&offset=${encodeURIComponent(frame.offset)}`);
    await waitFor(() => r.events().length === 3);
    assert.deepEqual(r.frames[0], { event: 'session', data: { id, recovered: true } });
    assert.deepEqual(r.frames.slice(1).map((f) => f.data.id), missed.map((m) => m.id), 'missed frames in order, right after the session frame');
    const live = await comment(blog, alice.token, 'ws live');
    await waitFor(() => r.events().length === 4);
    await sleep(300);
    assert.deepEqual(r.events().map((f) => f.data.id), [...missed, live].map((m) => m.id), 'once each, the room restored');
    r.ws.close(1000);
  } finally {
    await proxy.close();
  }
});

test('plain WebSocket: a close with code 1000 ends the session; junk session ids and offsets are recovered:false, never an error', async () => {
  const c = await wsClient(blog.port, `token=${bob.token}&session=new`);
  await waitFor(() => c.frames.length >= 1);
  const { id } = c.frames[0].data;
  c.ws.close(1000);
  await c.closed;
  await sleep(100);
  const after = await wsClient(blog.port, `token=${bob.token}&session=${id}`);
  await waitFor(() => after.frames.length >= 1);
  assert.equal(after.frames[0].data.recovered, false);
  assert.notEqual(after.frames[0].data.id, id);
  after.ws.terminate();

  const junk = [
    ['x'.repeat(2000), '1'],
    ['deadbeef', '-1'],
    [id, '99999999999999999999999999'],
    [id, 'ffffffff-ffffffffffffffff'],
    ['../../etc/passwd', '%00'],
    ['', 'abc'],
  ];
  for (const [session, offset] of junk) {
    const j = await wsClient(blog.port, `token=${bob.token}&session=${encodeURIComponent(session)}&offset=${encodeURIComponent(offset)}`);
    const ack = await j.request('subscribeEntry', { entryId });
    assert.deepEqual(ack.data, { entryId, subscribed: true }, 'the connection works');
    const first = j.frames[0];
    if (session === '') {
      assert.notEqual(first.event, 'session', 'an empty session asks for none');
    } else {
      assert.equal(first.event, 'session');
      assert.equal(first.data.recovered, false, `junk ${session.slice(0, 20)} / ${offset}`);
    }
    j.ws.terminate();
  }
});

test('plain WebSocket: another user presenting the session id and offset recovers nothing; the owner still does', async () => {
  const c = await wsClient(blog.port, `token=${bob.token}&session=new`);
  await waitFor(() => c.frames.length >= 1);
  const { id } = c.frames[0].data;
  await c.request('subscribeEntry', { entryId });
  await comment(blog, alice.token, 'for bob');
  await waitFor(() => c.events().length === 1);
  const { offset } = c.events()[0];
  c.ws.terminate();
  await c.closed;
  const missed = await comment(blog, alice.token, 'only for bob');

  const carol = await register(blog.url, 'carol');
  const thief = await wsClient(blog.port, `token=${carol.token}&session=${id}&offset=${offset}`);
  await waitFor(() => thief.frames.length >= 1);
  assert.equal(thief.frames[0].data.recovered, false);
  assert.notEqual(thief.frames[0].data.id, id);
  await sleep(300);
  assert.deepEqual(thief.events(), [], 'none of the session events');
  thief.ws.terminate();

  // A bad token with the session: refused at the upgrade.
  await assert.rejects(wsClient(blog.port, `token=garbage&session=${id}&offset=${offset}`), /HTTP 401/);

  const owner = await wsClient(blog.port, `token=${bob.token}&session=${id}&offset=${offset}`);
  await waitFor(() => owner.events().length === 1);
  assert.deepEqual(owner.frames[0].data, { id, recovered: true });
  assert.equal(owner.events()[0].data.id, missed.id);
  owner.ws.terminate();
});

test('past the recovery window the session is gone: recovered:false over both transports', async () => {
  const short = await startBlog({ RECOVERY_WINDOW: '1' });
  try {
    const { alice: a, entryId: e } = await seedBlog(short, 'Short window');
    const c = await wsClient(short.port, `token=${a.token}&session=new`);
    await waitFor(() => c.frames.length >= 1);
    const { id } = c.frames[0].data;
    c.ws.terminate();

    const s = io(short.url, { forceNew: true, reconnection: false, transports: ['websocket'], auth: { token: a.token } });
    await once(s, 'connect');
    await s.timeout(5000).emitWithAck('subscribeEntry', { entryId: e });
    const pid = s._pid;
    const sid = s.id;
    s.io.engine.close();
    await sleep(1600);

    const late = await wsClient(short.port, `token=${a.token}&session=${id}`);
    await waitFor(() => late.frames.length >= 1);
    assert.equal(late.frames[0].data.recovered, false);
    late.ws.terminate();
    const lateIo = io(short.url, { forceNew: true, reconnection: false, transports: ['websocket'], auth: { token: a.token, pid } });
    await once(lateIo, 'connect');
    assert.equal(lateIo.recovered, false);
    assert.notEqual(lateIo.id, sid);
    lateIo.disconnect();

    const metrics = await fetch(`${short.url}/metrics`).then((r) => r.text());
    assert.match(metrics, /wsgate_recoveries_total\{outcome="expired"\} 2/);
  } finally {
    await short.stop();
  }
});

test('/metrics counts recoveries by outcome and the history held', async () => {
  const metrics = await fetch(`${blog.url}/metrics`).then((r) => r.text());
  const value = (outcome) => Number(new RegExp(`wsgate_recoveries_total\\{outcome="${outcome}"\\} (\\d+)`).exec(metrics)?.[1]);
  assert.ok(value('recovered') >= 6, metrics);
  assert.ok(value('refused') >= 2, metrics);
  assert.ok(Number(/wsgate_recovery_history_events (\d+)/.exec(metrics)?.[1]) > 0, metrics);
});
