// The gateways' contract. /asyncapi.json is a valid AsyncAPI 3.0 document (@asyncapi/parser);
// every event it documents is served over both transports and answers as documented (the
// reply's name, the ack, the payload's required fields), and every push it documents arrives;
// the /asyncapi page renders in Chromium from the binary alone; the generated TypeScript
// (apps/blog/web/gateways.ts) compiles, rejects misuse, and its plain WebSocket client works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Parser } from '@asyncapi/parser';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startBlog, seedBlog, api } from '../lib/server.js';
import { once } from '../lib/wait.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const artifacts = join(here, '..', 'artifacts');
const tsc = join(here, '..', 'node_modules', '.bin', 'tsc');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

let blog;
let world;
let doc;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  blog = await startBlog();
  world = await seedBlog(blog, 'Contracts');
  const res = await fetch(`${blog.url}/asyncapi.json`);
  assert.equal(res.status, 200);
  doc = await res.json();
});

after(async () => {
  await blog?.stop();
});

test('/asyncapi.json is a valid AsyncAPI 3.0 document, public', async () => {
  assert.equal(doc.asyncapi, '3.0.0');
  const { document, diagnostics } = await new Parser().parse(JSON.stringify(doc));
  // Spectral's severities: 0 error, 1 warning, 2 information, 3 hint.
  const problems = diagnostics.filter((d) => d.severity <= 1);
  assert.deepEqual(problems.map((d) => `${d.code}: ${d.message} at ${d.path.join('.')}`), []);
  assert.ok(document, 'the parser gives a document');
  assert.equal(document.servers().length, 2);
  assert.ok(document.operations().length >= 11);
});

/** `#/a/b` in the document. */
function resolve(ref) {
  return ref.slice(2).split('/').reduce((node, key) => node[key], doc);
}

/** Checks `value` against the schema's types and required fields (the subset utoipa writes). */
function conforms(value, schema, where) {
  if (schema.$ref) return conforms(value, resolve(schema.$ref), `${where} (${schema.$ref})`);
  for (const key of ['oneOf', 'anyOf']) {
    if (schema[key]) {
      const ok = schema[key].some((s) => {
        try {
          conforms(value, s, where);
          return true;
        } catch {
          return false;
        }
      });
      assert.ok(ok, `${where}: ${JSON.stringify(value)} matches none of ${key}`);
      return;
    }
  }
  const types = [schema.type ?? []].flat();
  if (types.length) {
    const type = value === null ? 'null' : Array.isArray(value) ? 'array'
      : Number.isInteger(value) ? 'integer' : typeof value;
    const ok = types.includes(type) || (type === 'integer' && types.includes('number'));
    assert.ok(ok, `${where}: ${JSON.stringify(value)} is not ${types.join('|')}`);
  }
  if (Array.isArray(value) && schema.items) value.forEach((v, i) => conforms(v, schema.items, `${where}[${i}]`));
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const key of schema.required ?? []) assert.ok(key in value, `${where}: no ${key} in ${JSON.stringify(value)}`);
    for (const [key, prop] of Object.entries(schema.properties ?? {})) {
      if (key in value) conforms(value[key], prop, `${where}.${key}`);
    }
  }
}

/** What a client sends for each documented event (the seeded world's ids). */
function probes() {
  const { entryId, commentId, alice } = world;
  return {
    createComment: { entryId, body: 'Written through the contract' },
    indexComment: { entryId },
    indexEntry: { limit: 5 },
    presenceEntry: { entryId },
    showComment: { entryId, commentId },
    showEntry: { entryId },
    showUser: { userId: alice.user.id },
    subscribeEntry: { entryId },
    typing: { entryId },
    unsubscribeEntry: { entryId },
  };
}

/** The documented answer of operation `event`: `{kind: 'reply' | 'ack', name, payload}`. */
function answerOf(event) {
  const op = doc.operations[event];
  const refs = op.reply.messages.map((m) => m.$ref);
  const answer = refs.find((r) => r.endsWith('.reply') || r.endsWith('.ack'));
  if (!answer) {
    assert.equal(op['x-answer'], 'nothing', `${event} documents an answer, or none`);
    return { kind: 'none' };
  }
  const message = resolve(answer);
  return { kind: answer.endsWith('.reply') ? 'reply' : 'ack', name: message.name, payload: message.payload };
}

/** A client of either transport with one shape: `request(event, data, answer)`. */
async function connect(transport, token) {
  if (transport === 'socketio') {
    const socket = io(blog.url, { auth: { token }, transports: ['websocket'], forceNew: true });
    await once(socket, 'connect');
    return {
      on: (event, f) => socket.on(event, f),
      request(event, data, answer) {
        return new Promise((resolve, reject) => {
          const failed = (e) => reject(new Error(`${event}: ${JSON.stringify(e)}`));
          socket.once('exception', failed);
          const done = (value) => {
            socket.off('exception', failed);
            resolve(value);
          };
          if (answer.kind === 'ack') socket.timeout(5000).emitWithAck(event, data).then(done, reject);
          else if (answer.kind === 'none') {
            socket.emit(event, data);
            setTimeout(() => done(undefined), 300); // no answer; an exception would come first
          } else {
            once(socket, answer.name).then(done, reject);
            socket.emit(event, data);
          }
        });
      },
      close: () => socket.close(),
    };
  }
  const ws = new WebSocket(`${blog.url.replace('http', 'ws')}/ws?token=${token}`);
  await once(ws, 'open');
  const listeners = new Map();
  const waiting = new Map();
  let id = 0;
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw);
    if (frame.event === 'ack' && waiting.has(frame.id)) return waiting.get(frame.id)(frame.data);
    (listeners.get(frame.event) ?? []).forEach((f) => f(frame.data));
  });
  const on = (event, f) => listeners.set(event, [...(listeners.get(event) ?? []), f]);
  return {
    on,
    request(event, data, answer) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to ${event}`)), 5000);
        const done = (value) => {
          clearTimeout(timer);
          resolve(value);
        };
        on('exception', (e) => reject(new Error(`${event}: ${JSON.stringify(e)}`)));
        if (answer.kind === 'ack') {
          id += 1;
          waiting.set(id, done);
          ws.send(JSON.stringify({ event, data, id }));
        } else if (answer.kind === 'none') {
          ws.send(JSON.stringify({ event, data }));
          setTimeout(() => done(undefined), 300); // no answer; an exception would come first
        } else {
          on(answer.name, done);
          ws.send(JSON.stringify({ event, data }));
        }
      });
    },
    close: () => ws.close(),
  };
}

for (const [transport, label] of [['socketio', 'Socket.IO'], ['ws', 'plain WebSocket']]) {
  test(`every documented event is served and answers as documented (${label})`, async () => {
    const received = Object.entries(doc.operations).filter(([, op]) => op.action === 'receive');
    const documented = received.map(([id]) => id).sort();
    const table = probes();
    assert.deepEqual(documented, Object.keys(table).sort(), 'each documented event has a probe here, and no more');

    const client = await connect(transport, world.alice.token);
    try {
      // An event nobody serves is refused, so a served one is told apart.
      const refused = await client
        .request('noSuchEvent', {}, { kind: 'reply', name: 'never' })
        .then(() => null, (e) => e.message);
      assert.match(refused, /There is no handler for event 'noSuchEvent'/);

      for (const event of documented) {
        const answer = answerOf(event);
        const value = await client.request(event, table[event], answer);
        if (answer.kind !== 'none') conforms(value, answer.payload, `${event} → ${answer.kind} ${answer.name}`);
      }
    } finally {
      client.close();
    }
  });

  test(`every documented push arrives with its documented payload (${label})`, async () => {
    const pushed = Object.entries(doc.operations).filter(([, op]) => op.action === 'send');
    const events = pushed.map(([, op]) => resolve(op.messages[0].$ref));
    assert.deepEqual(
      events.map((m) => m.name).sort(),
      ['commentCreated', 'commentDeleted', 'commentUpdated', 'presenceDiff', 'typing'],
    );

    const client = await connect(transport, world.alice.token);
    const other = await connect(transport, world.bob.token);
    try {
      const arrived = new Map();
      for (const message of events) client.on(message.name, (data) => arrived.set(message.name, data));
      // Subscribing makes Alice a reader (presenceDiff); Bob reading and typing is a typing push.
      await client.request('subscribeEntry', { entryId: world.entryId }, answerOf('subscribeEntry'));
      await other.request('subscribeEntry', { entryId: world.entryId }, answerOf('subscribeEntry'));
      await other.request('typing', { entryId: world.entryId }, { kind: 'none' });
      const path = `/entries/${world.entryId}/comments`;
      const created = await api(blog.url, 'POST', path, { token: world.bob.token, body: { body: `pushed over ${label}` } });
      assert.equal(created.status, 201);
      await api(blog.url, 'PUT', `${path}/${created.body.id}`, { token: world.bob.token, body: { body: 'changed' } });
      await api(blog.url, 'DELETE', `${path}/${created.body.id}`, { token: world.bob.token });
      const deadline = Date.now() + 5000;
      while (arrived.size < events.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const message of events) {
        assert.ok(arrived.has(message.name), `${message.name} arrived`);
        conforms(arrived.get(message.name), message.payload, message.name);
      }
    } finally {
      client.close();
      other.close();
    }
  });
}

test('the /asyncapi page renders the document in Chromium, from the blog alone', async (t) => {
  if (!existsSync(executablePath)) throw new Error(`Chromium not found at ${executablePath}: apt-get install -y chromium`);
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const elsewhere = [];
  const errors = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(blog.url) && !r.url().startsWith('data:')) elsewhere.push(r.url());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${blog.url}/asyncapi`);
  await page.waitForSelector('#asyncapi[data-state=rendered]', { timeout: 20000 });
  // The operations and the schemas are in the page, not only the title.
  await page.waitForFunction(
    (words) => words.every((w) => document.body.innerText.includes(w)),
    ['blog gateways', 'showComment', 'commentCreated', 'WsExceptionBody', 'Subscription'],
    { timeout: 20000 },
  );
  await page.screenshot({ path: join(artifacts, 'asyncapi-1280.png'), fullPage: false });
  assert.deepEqual(elsewhere, [], 'no request leaves the blog');
  assert.deepEqual(errors, []);
});

test('the generated TypeScript compiles, rejects misuse, and its WebSocket client works', async () => {
  const out = mkdtempSync(join(tmpdir(), 'wsgate-types-'));
  // Misuse the maps: each line below must be a type error, and the rest must compile.
  copyFileSync(join(root, 'apps/blog/web/gateways.ts'), join(out, 'gateways.ts'));
  const usage = join(out, 'usage.ts');
  writeFileSync(usage, `
import type { Socket } from "socket.io-client";
import { GatewaySocket, type ClientToServerEvents, type ServerToClientEvents, type Comment } from "./gateways";
declare const socket: Socket<ServerToClientEvents, ClientToServerEvents>;
socket.emit("showComment", { entryId: 1, commentId: 2 });
socket.on("commentCreated", (c: Comment) => c.body.toUpperCase());
const comment: Promise<Comment> = socket.emitWithAck("createComment", { entryId: 1, body: "hi" });
// @ts-expect-error: an id is a number
socket.emit("showComment", { entryId: "1" });
// @ts-expect-error: no such event
socket.emit("showComments", { entryId: 1 });
// @ts-expect-error: showComment replies with an event, it takes no ack
socket.emit("showComment", { entryId: 1 }, () => {});
// @ts-expect-error: a comment's body is a string
socket.on("commentCreated", (c) => c.body.toFixed());
const ws = new GatewaySocket("ws://localhost:3000/ws");
const sub: Promise<{ entryId: number; subscribed: boolean }> = ws.emitWithAck("subscribeEntry", { entryId: 1 });
// @ts-expect-error: indexComment answers with an event, not an ack
ws.emitWithAck("indexComment", { entryId: 1 });
void comment; void sub;
`);
  const config = join(out, 'tsconfig.json');
  writeFileSync(config, JSON.stringify({
    compilerOptions: {
      strict: true, target: 'es2022', module: 'es2022', moduleResolution: 'bundler', lib: ['es2022', 'dom'],
      outDir: join(out, 'js'), rootDir: out, skipLibCheck: true,
      baseUrl: out, paths: { 'socket.io-client': [join(here, '..', 'node_modules', 'socket.io-client')] },
    },
    files: [usage, join(out, 'gateways.ts')],
  }));
  const compiled = spawnSync(tsc, ['-p', config], { encoding: 'utf8' });
  assert.equal(compiled.status, 0, `tsc:\n${compiled.stdout}${compiled.stderr}`);

  writeFileSync(join(out, 'js', 'package.json'), '{"type":"module"}');
  const { GatewaySocket, GatewayException } = await import(pathToFileURL(join(out, 'js', 'gateways.js')).href);
  const client = new GatewaySocket(`${blog.url.replace('http', 'ws')}/ws?token=${world.bob.token}`, WebSocket);
  await client.opened;
  try {
    const ack = await client.emitWithAck('subscribeEntry', { entryId: world.entryId });
    assert.deepEqual(ack, { entryId: world.entryId, subscribed: true });
    const reply = new Promise((resolve) => client.on('showComment', resolve));
    client.emit('showComment', { entryId: world.entryId, commentId: world.commentId });
    assert.equal((await reply).id, world.commentId);
    const pushed = new Promise((resolve) => client.on('commentCreated', (c, offset) => resolve([c, offset])));
    const created = await client.emitWithAck('createComment', { entryId: world.entryId, body: 'typed' });
    const [comment] = await pushed;
    assert.deepEqual(comment, created);
    await assert.rejects(client.emitWithAck('createComment', { entryId: world.entryId, body: '' }), (e) => {
      assert.ok(e instanceof GatewayException);
      assert.equal(e.message, 'body must be between 1 and 10000 characters long.');
      assert.equal(e.body.cause.pattern, 'createComment');
      return true;
    });
    await assert.rejects(
      new GatewaySocket(`${blog.url.replace('http', 'ws')}/ws?token=forged`, WebSocket).opened,
      /failed|closed/,
    );
  } finally {
    client.close();
  }
});
