// The Socket.IO Admin UI (`blog --admin-ui`): a real socket.io-client logged in to `/admin`
// sees the blog's clients of both transports connect, join rooms, send and receive events and
// leave; two blogs behind Redis show both servers and each other's sockets; and the vendored
// UI itself, in headless Chromium, logs in and lists the connected clients.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startBlog, seedBlog } from '../lib/server.js';
import { linkedInstances, withCleanup } from '../lib/services.js';
import { once, waitFor } from '../lib/wait.js';

const artifacts = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const USERNAME = 'admin';
const PASSWORD = 'correct horse admin';
const ADMIN_ENV = { ADMIN_UI: 'true', ADMIN_UI_USERNAME: USERNAME, ADMIN_UI_PASSWORD: PASSWORD };

let blog;

before(async () => {
  blog = await startBlog(ADMIN_ENV);
});

after(async () => {
  await blog?.stop();
});

/** A socket.io-client on `/admin` recording every event it receives, in order. */
function admin(url, auth = { username: USERNAME, password: PASSWORD }) {
  const socket = io(`${url}/admin`, { auth, forceNew: true, reconnection: false });
  const seen = [];
  socket.onAny((event, ...args) => seen.push({ event, args }));
  /** Resolves with the first recorded `event` whose arguments pass `check`. */
  const next = async (event, check = () => true, ms = 8000) => {
    let found;
    await waitFor(() => (found = seen.find((e) => e.event === event && check(...e.args))), ms).catch(() => {
      throw new Error(`no '${event}' as expected within ${ms} ms; got ${JSON.stringify(seen.map((e) => e.event))}`);
    });
    return found.args;
  };
  return { socket, seen, next };
}

/** A blog client over Socket.IO, connected. */
async function socketIoClient(url, token) {
  const socket = io(url, { auth: { token }, forceNew: true, reconnection: false });
  await once(socket, 'connect');
  return socket;
}

/** A blog client over plain WebSocket, open. */
async function wsClient(url, token) {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/?token=${token}`);
  await once(ws, 'open');
  return ws;
}

test('/admin refuses a wrong password, a wrong username and no credentials', async () => {
  for (const auth of [
    { username: USERNAME, password: 'wrong' },
    { username: 'root', password: PASSWORD },
    {},
  ]) {
    const { socket } = admin(blog.url, auth);
    try {
      const error = await once(socket, 'connect_error');
      assert.equal(error.message, 'invalid credentials');
    } finally {
      socket.close();
    }
  }
  // The blog's own namespace still asks for a token, not for the admin's password.
  const stranger = io(blog.url, { auth: { username: USERNAME, password: PASSWORD }, forceNew: true, reconnection: false });
  try {
    const error = await once(stranger, 'connect_error');
    assert.notEqual(error.message, 'invalid credentials');
  } finally {
    stranger.close();
  }
});

test('a logged-in UI sees clients of both transports connect, join, talk and leave', async () => {
  const { alice, bob, entryId } = await seedBlog(blog);
  const ui = admin(blog.url);
  const clients = [];
  try {
    await once(ui.socket, 'connect');
    const [sessionId] = await ui.next('session');
    assert.match(sessionId, /^\d+\.[0-9a-f]{32}\.[0-9a-f]{64}$/);
    const [config] = await ui.next('config');
    for (const feature of ['JOIN', 'LEAVE', 'DISCONNECT', 'EMIT', 'AGGREGATED_EVENTS', 'ALL_EVENTS']) {
      assert.ok(config.supportedFeatures.includes(feature), feature);
    }
    const [all] = await ui.next('all_sockets');
    assert.ok(all.some((s) => s.id === ui.socket.id && s.nsp === '/admin'), 'the UI itself is listed');

    // A Socket.IO client: connected, in a room, an event each way.
    const sio = await socketIoClient(blog.url, alice.token);
    clients.push(sio);
    const [connected] = await ui.next('socket_connected', (s) => s.id === sio.id);
    assert.equal(connected.nsp, '/');
    assert.ok(['polling', 'websocket'].includes(connected.transport), connected.transport);
    assert.equal(connected.handshake.query.EIO, '4');
    assert.ok(!JSON.stringify(connected).includes(alice.token), 'the token is not shown');

    sio.emit('subscribeEntry', { entryId });
    await ui.next('room_joined', (nsp, room, id) => nsp === '/' && room === `entry:${entryId}` && id === sio.id);
    await ui.next(
      'event_received',
      (nsp, id, args) => id === sio.id && args[0] === 'subscribeEntry' && args[1].entryId === entryId,
    );
    // The reply is the event `indexEntry`; the room's presence events may come before it.
    const reply = once(sio, 'indexEntry');
    sio.emit('indexEntry', {});
    await reply;
    const [, , sent] = await ui.next('event_sent', (nsp, id, args) => id === sio.id && args[0] === 'indexEntry');
    assert.ok(Array.isArray(sent[1]), 'the reply data is shown');

    // A plain WebSocket client, shown with its transport.
    const ws = await wsClient(blog.url, bob.token);
    clients.push(ws);
    const [plain] = await ui.next('socket_connected', (s) => s.transport === 'ws');
    assert.equal(plain.nsp, '/');
    assert.equal(plain.handshake.query.token, '[redacted]');
    ws.send(JSON.stringify({ event: 'subscribeEntry', data: { entryId } }));
    await ui.next('room_joined', (nsp, room, id) => room === `entry:${entryId}` && id === plain.id);
    await ui.next('event_received', (nsp, id, args) => id === plain.id && args[0] === 'subscribeEntry');

    // A comment pushed to the room is sent to both.
    ws.send(JSON.stringify({ event: 'createComment', data: { entryId, body: 'Seen by the admin' } }));
    for (const id of [sio.id, plain.id]) {
      await ui.next('event_sent', (nsp, to, args) => to === id && args[0] === 'commentCreated' && args[1].body === 'Seen by the admin');
    }

    // The UI's operations: an event with several arguments to one socket, a room to join, a
    // socket to disconnect.
    const hello = new Promise((resolve) => sio.on('hello', (...args) => resolve(args)));
    ui.socket.emit('emit', '/', sio.id, 'hello', 1, { two: 2 });
    assert.deepEqual(await hello, [1, { two: 2 }]);
    ui.socket.emit('join', '/', 'lobby', sio.id);
    await ui.next('room_joined', (nsp, room, id) => room === 'lobby' && id === sio.id);
    const closed = once(ws, 'close');
    ui.socket.emit('_disconnect', '/', true, plain.id);
    await closed;
    await ui.next('socket_disconnected', (nsp, id) => id === plain.id);

    const sioId = sio.id; // socket.io-client forgets it on disconnect
    sio.close();
    const [nsp, , reason] = await ui.next('socket_disconnected', (nsp, id) => id === sioId);
    assert.equal(nsp, '/');
    assert.equal(typeof reason, 'string');

    // Every two seconds, this server's stats.
    const [stats] = await ui.next('server_stats', (s) => s.aggregatedEvents.length > 0, 5000);
    assert.equal(typeof stats.serverId, 'string');
    assert.equal(typeof stats.pid, 'number');
    assert.ok(stats.namespaces.some((n) => n.name === '/admin' && n.socketsCount >= 1));

    // The session id logs in again without the password.
    const again = admin(blog.url, { sessionId });
    try {
      await once(again.socket, 'connect');
    } finally {
      again.socket.close();
    }
  } finally {
    for (const client of clients) client.close();
    ui.socket.close();
  }
});

test('without --admin-ui there is no /admin namespace and no page', async () => {
  const plain = await startBlog();
  try {
    const { socket } = admin(plain.url);
    try {
      const error = await once(socket, 'connect_error');
      assert.notEqual(error.message, 'invalid credentials');
    } finally {
      socket.close();
    }
    const page = await fetch(`${plain.url}/admin-ui/`);
    assert.equal(page.status, 404);
  } finally {
    await plain.stop();
  }
});

test('a read-only Admin UI shows and changes nothing', async () => {
  const readonly = await startBlog({ ...ADMIN_ENV, ADMIN_UI_READONLY: 'true' });
  const ui = admin(readonly.url);
  try {
    await once(ui.socket, 'connect');
    const [config] = await ui.next('config');
    assert.deepEqual(config.supportedFeatures.filter((f) => !f.includes('EVENTS')), []);
    ui.socket.emit('_disconnect', '/', true);
    const [exception] = await ui.next('exception');
    assert.equal(exception.message, 'The admin namespace is read-only.');
  } finally {
    ui.socket.close();
    await readonly.stop();
  }
});

test('two blogs behind Redis: the UI on one sees both servers and the sockets of the other', async (t) => {
  await withCleanup(async (defer) => {
    const linked = await linkedInstances(t, defer, ADMIN_ENV);
    if (!linked) return;
    const { a, b } = linked;
    const { alice, bob, entryId } = await seedBlog(b);
    // A client of B's before the UI opens: it comes from B when the UI connects to A.
    const early = await socketIoClient(b.url, alice.token);
    defer(() => early.close());

    const ui = admin(a.url);
    defer(() => ui.socket.close());
    await once(ui.socket, 'connect');
    await ui.next('socket_connected', (s) => s.id === early.id);
    // The session A handed out logs in on B too (a load balancer may send the UI there).
    const [sessionId] = await ui.next('session');
    const onB = admin(b.url, { sessionId });
    defer(() => onB.socket.close());
    await once(onB.socket, 'connect');
    const [statsA] = await ui.next('server_stats');
    await ui.next('server_stats', (s) => s.serverId !== statsA.serverId, 8000);

    // A client of B's after: connected, joins, sends, leaves, all seen from A.
    const late = await wsClient(b.url, bob.token);
    defer(() => late.close());
    const [plain] = await ui.next('socket_connected', (s) => s.transport === 'ws');
    late.send(JSON.stringify({ event: 'subscribeEntry', data: { entryId } }));
    await ui.next('room_joined', (nsp, room, id) => room === `entry:${entryId}` && id === plain.id);
    await ui.next('event_received', (nsp, id, args) => id === plain.id && args[0] === 'subscribeEntry');
    // An operation from A reaches B's client.
    const closed = once(late, 'close');
    ui.socket.emit('_disconnect', '/', true, plain.id);
    await closed;
    await ui.next('socket_disconnected', (nsp, id) => id === plain.id);
  });
});

test('the vendored Admin UI in Chromium logs in and lists the clients', async () => {
  if (!existsSync(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath}: apt-get install -y chromium`);
  }
  mkdirSync(artifacts, { recursive: true });
  const { alice, bob } = await seedBlog(blog);
  const sio = await socketIoClient(blog.url, alice.token);
  const ws = await wsClient(blog.url, bob.token);
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const foreign = [];
    page.on('request', (req) => {
      if (!req.url().startsWith(blog.url)) foreign.push(req.url());
    });
    // What the server sends must be what the UI's code expects: no error on any page.
    const errors = [];
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    await page.goto(`${blog.url}/admin-ui/`);
    // The connection form, pointed at this server by the page itself.
    const serverUrl = page.getByLabel('Server URL');
    await serverUrl.waitFor();
    assert.equal(await serverUrl.inputValue(), blog.url);

    // A wrong password is refused, and said so.
    await page.getByLabel('Username').fill(USERNAME);
    await page.getByLabel('Password').fill('wrong');
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByText('Invalid credentials').waitFor();

    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Connect' }).click();
    await serverUrl.waitFor({ state: 'hidden' });

    await page.goto(`${blog.url}/admin-ui/#/sockets/`);
    for (const id of [sio.id]) await page.getByText(id, { exact: true }).first().waitFor();
    await page.getByText('ws', { exact: true }).first().waitFor();
    await page.screenshot({ path: join(artifacts, 'admin-ui-sockets.png'), fullPage: true });

    // The socket's own page: its transport and its rooms.
    await page.goto(`${blog.url}/admin-ui/#/n/%2F/sockets/${sio.id}`);
    await page.getByText('HTTP long-polling').or(page.getByText('WebSocket')).first().waitFor();
    // The other pages, with this server on the servers' one.
    for (const route of ['#/', '#/rooms/', '#/clients/', '#/events/']) {
      await page.goto(`${blog.url}/admin-ui/${route}`);
      await page.waitForTimeout(300);
    }
    await page.goto(`${blog.url}/admin-ui/#/servers/`);
    await page.getByText(/#\d+$/).first().waitFor();
    await page.screenshot({ path: join(artifacts, 'admin-ui-servers.png'), fullPage: true });
    assert.deepEqual(errors, [], 'the UI logged no error');
    assert.deepEqual(foreign, [], 'nothing is fetched from another origin');
  } finally {
    await browser.close();
    sio.close();
    ws.close();
  }
});
