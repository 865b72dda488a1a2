// permessage-deflate (RFC 7692) with real clients: `ws`, socket.io-client (over `ws`) and
// Chromium negotiate it with a blog started with WS_COMPRESSION, and get the same answers in
// fewer bytes; a blog without it serves them uncompressed; a compressed bomb closes with 1009.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import WebSocket from 'ws';
import { io } from 'socket.io-client';
import { chromium } from 'playwright-core';
import { startBlog, api, seedBlog } from '../lib/server.js';
import { once } from '../lib/wait.js';
import { jsonInbox } from '../lib/inbox.js';

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const COMMENTS = 40;

let compressed;
let plain;
let world;

/** Seeds the blog and adds comments, so that indexComment answers with several KiB of JSON. */
async function seed(blog) {
  const seeded = await seedBlog(blog, 'Compression');
  for (let i = 0; i < COMMENTS; i += 1) {
    const res = await api(blog.url, 'POST', `/entries/${seeded.entryId}/comments`, {
      token: seeded.bob.token,
      body: { body: `Comment number ${i}: permessage-deflate makes JSON lists a lot smaller.` },
    });
    assert.equal(res.status, 201);
  }
  return seeded;
}

before(async () => {
  [compressed, plain] = await Promise.all([startBlog({ WS_COMPRESSION: '256' }), startBlog()]);
  world = { compressed: await seed(compressed), plain: await seed(plain) };
});

after(async () => {
  await Promise.all([compressed?.stop(), plain?.stop()]);
});

/** A plain WebSocket client that offers permessage-deflate (ws's default), and its inbox. */
async function connect(blog, token) {
  const ws = new WebSocket(`ws://127.0.0.1:${blog.port}/ws?token=${token}`, { perMessageDeflate: true });
  const next = jsonInbox(ws);
  await once(ws, 'open');
  return { ws, next };
}

/** Sends `frame` and resolves with the answer and the bytes the socket read meanwhile. */
async function measured(client, frame) {
  const before = client.ws._socket.bytesRead;
  client.ws.send(JSON.stringify(frame));
  const message = await client.next();
  return { message, bytes: client.ws._socket.bytesRead - before };
}

test('plain WebSocket: negotiated with ws, the same answer in a fraction of the bytes', async () => {
  const a = await connect(compressed, world.compressed.alice.token);
  const b = await connect(plain, world.plain.alice.token);
  assert.match(a.ws.extensions, /^permessage-deflate/);
  assert.equal(b.ws.extensions, '', 'not negotiated when the blog has it off');

  const small = await measured(a, { event: 'showUser', data: { userId: world.compressed.alice.user.id } });
  assert.equal(small.message.event, 'showUser');

  const fromA = await measured(a, { event: 'indexComment', data: { entryId: world.compressed.entryId } });
  const fromB = await measured(b, { event: 'indexComment', data: { entryId: world.plain.entryId } });
  assert.equal(fromA.message.data.length, COMMENTS + 1);
  assert.deepEqual(
    fromA.message.data.map((c) => c.body),
    fromB.message.data.map((c) => c.body),
  );
  const json = JSON.stringify(fromB.message).length;
  assert.ok(fromB.bytes >= json, `uncompressed: ${fromB.bytes} bytes for ${json} of JSON`);
  assert.ok(fromA.bytes * 3 < fromB.bytes, `compressed: ${fromA.bytes} bytes against ${fromB.bytes}`);

  // The client compresses what it sends over its threshold (1 KiB): read and answered.
  const padded = { event: 'indexComment', data: { entryId: world.compressed.entryId, note: 'x'.repeat(4000) } };
  const big = await measured(a, padded);
  assert.equal(big.message.event, 'indexComment');
  assert.equal(big.message.data.length, COMMENTS + 1);
  a.ws.close();
  b.ws.close();
});

test('plain WebSocket: a compressed message inflating past the 64 KiB limit closes with 1009', async () => {
  const a = await connect(compressed, world.compressed.alice.token);
  const closed = once(a.ws, 'close');
  // A few hundred bytes on the wire, 200 000 once inflated.
  a.ws.send(JSON.stringify({ event: 'showUser', data: { pad: ' '.repeat(200_000) } }));
  const [code] = await closed;
  assert.equal(code, 1009);
  // The server is fine.
  const again = await connect(compressed, world.compressed.alice.token);
  const { message } = await measured(again, { event: 'indexComment', data: { entryId: world.compressed.entryId } });
  assert.equal(message.data.length, COMMENTS + 1);
  again.ws.close();
});

test('Socket.IO over websocket: socket.io-client negotiates it too', async () => {
  const socket = io(`http://127.0.0.1:${compressed.port}`, {
    transports: ['websocket'],
    auth: { token: world.compressed.alice.token },
    forceNew: true,
  });
  await once(socket, 'connect', 10_000);
  const ws = socket.io.engine.transport.ws;
  assert.match(ws.extensions, /^permessage-deflate/);
  const before = ws._socket.bytesRead;
  const reply = once(socket, 'indexComment', 10_000);
  socket.emit('indexComment', { entryId: world.compressed.entryId });
  const comments = await reply;
  assert.equal(comments.length, COMMENTS + 1);
  const bytes = ws._socket.bytesRead - before;
  assert.ok(bytes * 3 < JSON.stringify(comments).length, `${bytes} bytes on the wire`);
  socket.close();
});

test('Chromium negotiates it and reads the compressed answers', async (t) => {
  if (!existsSync(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath}: apt-get install -y chromium`);
  }
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${compressed.url}/`);
  const seen = await page.evaluate(
    ({ url, entryId }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.onerror = () => reject(new Error('websocket error'));
        ws.onopen = () => ws.send(JSON.stringify({ event: 'indexComment', data: { entryId } }));
        ws.onmessage = (event) => {
          const message = JSON.parse(event.data);
          resolve({ extensions: ws.extensions, event: message.event, count: message.data.length });
          ws.close();
        };
      }),
    { url: `ws://127.0.0.1:${compressed.port}/ws?token=${world.compressed.alice.token}`, entryId: world.compressed.entryId },
  );
  assert.match(seen.extensions, /^permessage-deflate/);
  assert.deepEqual([seen.event, seen.count], ['indexComment', COMMENTS + 1]);
});
