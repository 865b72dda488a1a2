// Presence (DESIGN §10) with real clients, socket.io-client and ws, over each transport and
// mixed: who reads an entry (presenceDiff as readers come and go, presenceEntry's list), a user
// with two tabs as one reader, `typing` relayed to the other readers only; across two blog
// instances on PostgreSQL and Redis, one list everywhere, and the readers of an instance killed
// with -9 gone from the other's within 15 s; and the demo page in Chromium, two users reading
// one entry and seeing each other read and type.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { api, register, startBlog } from '../lib/server.js';
import { linkedInstances, withCleanup } from '../lib/services.js';
import { once, waitFor } from '../lib/wait.js';

const artifacts = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Long enough for a presenceDiff that should not come to have come: several 100 ms intervals. */
const QUIET_MS = 600;
const NOT_SUBSCRIBED = 'Subscribe to the entry first.';
/**
 * How long an instance may stay silent before its readers are removed everywhere (the blog's
 * default). The wait below adds a margin: a bound for a hang, not a measure of speed.
 */
const SILENT_MS = 15_000;

let blog;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  blog = await startBlog();
});

after(async () => {
  await blog?.stop();
});

// ---- clients of either transport, one shape ----

/**
 * A connection as `user` over `kind` ('socketio' | 'ws') to `server` ({url, port}): `request`
 * resolves with an ack (or rejects with the exception's message), `send` expects nothing back,
 * `inbox` holds every pushed [event, data] in order, `next(event, pred)` waits for one.
 */
async function connect(kind, server, user) {
  const inbox = [];
  const name = `${user.user.firstName} over ${kind} on ${server.port}`;
  const client = {
    kind,
    name,
    user: user.user,
    inbox,
    /** The first [event, data] pushed so far that matches. */
    seen: (event, pred = () => true) => inbox.find(([e, d]) => e === event && pred(d))?.[1],
    /** Waits for a pushed `event` whose data matches `pred`, and returns its data. */
    async next(event, pred = () => true, ms = 5000) {
      await waitFor(() => client.seen(event, pred) !== undefined, ms).catch(() => {
        throw new Error(`${name}: no ${event} matching ${pred} within ${ms} ms; got ${JSON.stringify(inbox)}`);
      });
      return client.seen(event, pred);
    },
    /** Forgets what was received so far. */
    clear: () => inbox.splice(0),
  };
  if (kind === 'socketio') {
    const socket = io(server.url, { auth: { token: user.token }, transports: ['websocket'], forceNew: true, reconnection: false });
    socket.onAny((event, data) => inbox.push([event, data]));
    await once(socket, 'connect');
    Object.assign(client, {
      async request(event, data) {
        // An exception answers an ack request as the `exception` event.
        const failed = new Promise((_, reject) => socket.once('exception', (e) => reject(new Error(e.message))));
        return Promise.race([socket.timeout(5000).emitWithAck(event, data), failed]);
      },
      send: (event, data) => socket.emit(event, data),
      close: () => socket.disconnect(),
      // Gone without a goodbye, as a closed laptop: the server keeps its session for recovery.
      drop: () => socket.io.engine.close(),
    });
  } else {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws?token=${user.token}`);
    const answers = new Map();
    let nextId = 0;
    ws.on('message', (raw) => {
      const frame = JSON.parse(String(raw));
      if (frame.id !== undefined && (frame.event === 'ack' || frame.event === 'exception')) answers.set(frame.id, frame);
      else if (frame.event !== 'session') inbox.push([frame.event, frame.data]);
    });
    ws.on('error', () => {}); // a killed server: the test looks at what arrived
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    Object.assign(client, {
      async request(event, data) {
        const id = (nextId += 1);
        ws.send(JSON.stringify({ event, data, id }));
        await waitFor(() => answers.has(id), 5000);
        const { event: kind, data: answer } = answers.get(id);
        if (kind === 'exception') throw new Error(answer.message);
        return answer;
      },
      send: (event, data) => ws.send(JSON.stringify({ event, data })),
      close: () => ws.close(1000),
      drop: () => ws.terminate(),
    });
  }
  return client;
}

/** Subscribes `client` to the entry: it becomes a reader. */
async function subscribe(client, entryId) {
  assert.deepEqual(await client.request('subscribeEntry', { entryId }), { entryId, subscribed: true }, `${client.name} subscribed`);
}

/** `presenceEntry {entryId}` over `client`: the readers it replies with. */
async function presence(client, entryId) {
  const asked = client.inbox.length;
  client.send('presenceEntry', { entryId });
  await waitFor(() => client.inbox.slice(asked).some(([e, d]) => e === 'presenceEntry' && d.entryId === entryId), 5000);
  return client.inbox.slice(asked).find(([e, d]) => e === 'presenceEntry' && d.entryId === entryId)[1].readers;
}

/** A reader as the others see them. */
const reader = (user) => ({ userId: user.id, firstName: user.firstName });
/** presenceEntry's order: by user id as text. */
const listed = (...users) => users.map(reader).sort((a, b) => String(a.userId).localeCompare(String(b.userId)));
/** A presenceDiff's data, as `client` should see it. */
const diff = (entryId, { joins = [], leaves = [] }) => ({ entryId, joins: joins.map(reader), leaves: leaves.map(reader) });
/** presenceDiff events `client` received, as data. */
const diffs = (client) => client.inbox.filter(([e]) => e === 'presenceDiff').map(([, d]) => d);

async function newEntry(server, author, title) {
  const res = await api(server.url, 'POST', '/entries', { token: author.token, body: { title, content: 'Who is reading?' } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.id;
}

/** Every connection opened by a test, closed at its end. */
async function withClients(body) {
  const clients = [];
  const open = async (...args) => {
    const client = await connect(...args);
    clients.push(client);
    return client;
  };
  try {
    await body(open);
  } finally {
    for (const c of clients) c.drop();
  }
}

const PAIRS = [
  ['socketio', 'socketio'],
  ['ws', 'ws'],
  ['socketio', 'ws'],
];
const label = ([a, b]) => (a === b ? `over ${a}` : `mixed: ${a} and ${b}`);

// ---- one instance ----

for (const pair of PAIRS) {
  const [first, second] = pair;

  test(`a join is seen by the readers already there, and presenceEntry lists both (${label(pair)})`, async () => {
    const ada = await register(blog.url, 'Ada');
    const grace = await register(blog.url, 'Grace');
    const entryId = await newEntry(blog, ada, `Joins ${label(pair)}`);
    await withClients(async (open) => {
      const a = await open(first, blog, ada);
      await subscribe(a, entryId);
      // A subscriber is told of its own join too.
      assert.deepEqual(await a.next('presenceDiff'), diff(entryId, { joins: [ada.user] }));
      assert.deepEqual(await presence(a, entryId), listed(ada.user));

      const g = await open(second, blog, grace);
      await subscribe(g, entryId);
      assert.deepEqual(
        await a.next('presenceDiff', (d) => d.joins.some((r) => r.userId === grace.user.id)),
        diff(entryId, { joins: [grace.user] }),
      );
      // Grace's first diff is her own join; Ada, there before, is in presenceEntry.
      assert.deepEqual(await g.next('presenceDiff'), diff(entryId, { joins: [grace.user] }));
      for (const c of [a, g]) assert.deepEqual(await presence(c, entryId), listed(ada.user, grace.user), `${c.name}'s presenceEntry`);
      // Anyone signed in may ask, reader or not.
      const outsider = await open(first, blog, await register(blog.url, 'Linus'));
      assert.deepEqual(await presence(outsider, entryId), listed(ada.user, grace.user));

      // Unsubscribing is a leave.
      a.clear();
      assert.deepEqual(await g.request('unsubscribeEntry', { entryId }), { entryId, subscribed: false });
      assert.deepEqual(await a.next('presenceDiff'), diff(entryId, { leaves: [grace.user] }));
      assert.deepEqual(await presence(a, entryId), listed(ada.user));
      await sleep(QUIET_MS);
      assert.deepEqual(diffs(g), [diff(entryId, { joins: [grace.user] })], 'no diff after unsubscribing');
    });
  });

  test(`two tabs of one user are one reader; closing one is no leave, closing the last is (${label(pair)})`, async () => {
    const ada = await register(blog.url, 'Ada');
    const grace = await register(blog.url, 'Grace');
    const entryId = await newEntry(blog, ada, `Tabs ${label(pair)}`);
    await withClients(async (open) => {
      const g = await open(first, blog, grace);
      await subscribe(g, entryId);
      await g.next('presenceDiff');
      g.clear();

      const tab1 = await open(first, blog, ada);
      await subscribe(tab1, entryId);
      await g.next('presenceDiff');
      const tab2 = await open(second, blog, ada);
      await subscribe(tab2, entryId);
      await sleep(QUIET_MS);
      assert.deepEqual(diffs(g), [diff(entryId, { joins: [ada.user] })], 'one join for two tabs');
      assert.deepEqual(await presence(g, entryId), listed(ada.user, grace.user), 'Ada listed once');
      // The second tab joined a present reader: no diff for it, presenceEntry says who is there.
      assert.deepEqual(await presence(tab2, entryId), listed(ada.user, grace.user));

      g.clear();
      tab1.close();
      await sleep(QUIET_MS);
      assert.deepEqual(diffs(g), [], 'closing one tab of two is no leave');
      assert.deepEqual(await presence(g, entryId), listed(ada.user, grace.user));

      // The last tab goes without a goodbye (its session kept for recovery): a leave all the same.
      tab2.drop();
      assert.deepEqual(await g.next('presenceDiff'), diff(entryId, { leaves: [ada.user] }));
      assert.deepEqual(await presence(g, entryId), listed(grace.user));
    });
  });

  test(`typing reaches the other readers and not the typist; without subscribing it is refused (${label(pair)})`, async () => {
    const ada = await register(blog.url, 'Ada');
    const grace = await register(blog.url, 'Grace');
    const linus = await register(blog.url, 'Linus');
    const entryId = await newEntry(blog, ada, `Typing ${label(pair)}`);
    const elsewhere = await newEntry(blog, ada, `Elsewhere ${label(pair)}`);
    await withClients(async (open) => {
      const a = await open(first, blog, ada);
      const g = await open(second, blog, grace);
      const l = await open(second, blog, linus);
      for (const c of [a, g]) await subscribe(c, entryId);
      await subscribe(l, elsewhere); // a reader of another entry

      a.send('typing', { entryId });
      assert.deepEqual(await g.next('typing'), { entryId, userId: ada.user.id, firstName: 'Ada' });
      g.send('typing', { entryId });
      assert.deepEqual(await a.next('typing'), { entryId, userId: grace.user.id, firstName: 'Grace' });
      await sleep(QUIET_MS);
      for (const c of [a, g]) {
        assert.deepEqual(c.inbox.filter(([e]) => e === 'typing').map(([, d]) => d.userId), [c === a ? grace.user.id : ada.user.id], `${c.name} heard the other only`);
        assert.equal(c.seen('exception'), undefined, `${c.name}: no exception`);
      }
      assert.equal(l.seen('typing'), undefined, "another entry's reader hears nothing");

      // Not a reader of the entry: refused, and nobody hears it.
      l.send('typing', { entryId });
      const refused = await l.next('exception');
      assert.equal(refused.message, NOT_SUBSCRIBED);
      assert.deepEqual(refused.cause, { pattern: 'typing', data: { entryId } });
      // Nor after unsubscribing.
      await g.request('unsubscribeEntry', { entryId });
      g.clear();
      g.send('typing', { entryId });
      assert.equal((await g.next('exception')).message, NOT_SUBSCRIBED);
      await sleep(QUIET_MS);
      assert.equal(a.inbox.filter(([e]) => e === 'typing').length, 1, 'the refused typing reached nobody');
    });
  });
}

// ---- two instances on PostgreSQL and Redis ----

/** Polls `presenceEntry` over `client` until it lists `want` (or `ms` ran out); returns the last list. */
async function presenceBecomes(client, entryId, want, ms = 5000) {
  const deadline = Date.now() + ms;
  let readers = await presence(client, entryId);
  while (JSON.stringify(readers) !== JSON.stringify(want) && Date.now() < deadline) {
    await sleep(100);
    readers = await presence(client, entryId);
  }
  return readers;
}

test('two instances: a reader on each, and both instances list the same readers', { timeout: 60_000 }, async (t) => {
  await withCleanup(async (defer) => {
    const world = await linkedInstances(t, defer);
    if (!world) return;
    const { a, b } = world;
    const ada = await register(a.url, 'Ada');
    const grace = await register(a.url, 'Grace');
    const entryId = await newEntry(a, ada, 'Across instances');
    await withClients(async (open) => {
      const onA = await open('socketio', a, ada);
      const onB = await open('ws', b, grace);
      await subscribe(onA, entryId);
      await onA.next('presenceDiff');
      await subscribe(onB, entryId);
      // Each hears of the other's join through Redis.
      assert.deepEqual(
        await onA.next('presenceDiff', (d) => d.joins.some((r) => r.userId === grace.user.id)),
        diff(entryId, { joins: [grace.user] }),
      );
      const both = listed(ada.user, grace.user);
      assert.deepEqual(await presenceBecomes(onB, entryId, both), both, "B's presenceEntry");
      assert.deepEqual(await presence(onA, entryId), both, "A's presenceEntry");

      // A tab of Ada's on B too: still one reader, on both instances.
      const adaOnB = await open('socketio', b, ada);
      await subscribe(adaOnB, entryId);
      await sleep(QUIET_MS);
      assert.equal(diffs(onA).filter((d) => d.joins.some((r) => r.userId === ada.user.id)).length, 1, 'one join for Ada');
      for (const c of [onA, onB, adaOnB]) assert.deepEqual(await presence(c, entryId), both, `${c.name}'s presenceEntry`);

      // Ada closes her tab on A: she still reads on B, on both instances.
      onB.clear();
      onA.close();
      await sleep(QUIET_MS);
      assert.deepEqual(diffs(onB), [], 'no leave while a tab is left');
      for (const c of [onB, adaOnB]) assert.deepEqual(await presence(c, entryId), both, `${c.name}'s presenceEntry`);
    });
  });
});

test('kill -9 of an instance: its readers leave on the other within 15 s', { timeout: 60_000 }, async (t) => {
  await withCleanup(async (defer) => {
    const world = await linkedInstances(t, defer);
    if (!world) return;
    const { a, b } = world;
    const ada = await register(a.url, 'Ada');
    const linus = await register(a.url, 'Linus');
    const grace = await register(a.url, 'Grace');
    const entryId = await newEntry(a, ada, 'An instance dies');
    await withClients(async (open) => {
      // Ada and Linus read on A; Grace on B, in a tab of each transport.
      const onA = [await open('socketio', a, ada), await open('ws', a, linus)];
      const onB = [await open('ws', b, grace), await open('socketio', b, grace)];
      for (const c of [...onA, ...onB]) await subscribe(c, entryId);
      const all = listed(ada.user, linus.user, grace.user);
      const joined = (c) => diffs(c).flatMap((d) => d.joins.map((r) => r.userId));
      for (const c of onB) {
        assert.deepEqual(await presenceBecomes(c, entryId, all), all, `${c.name} sees A's readers`);
        // The list has them as soon as A's delta arrives; the diff follows within an interval.
        await waitFor(() => [ada, linus].every((u) => joined(c).includes(u.user.id)), 5000);
      }
      for (const c of onB) c.clear();

      const killed = Date.now();
      a.child.kill('SIGKILL');
      // Both leave, in one diff or two, on each of Grace's tabs.
      const left = (c) => diffs(c).flatMap((d) => d.leaves.map((r) => r.userId));
      await waitFor(() => onB.every((c) => [ada, linus].every((u) => left(c).includes(u.user.id))), SILENT_MS + 5000).catch(() => {});
      // At most SILENT_MS from A's last word (a delta just now, or its last heartbeat, 5 s
      // before at most), and one interval more for the diff.
      const took = Date.now() - killed;
      t.diagnostic(`the killed instance's readers left on the other ${took} ms after kill -9`);
      for (const c of onB) {
        assert.deepEqual(
          diffs(c),
          diffs(c).map((d) => ({ entryId, joins: [], leaves: d.leaves })),
          `${c.name}: leaves only`,
        );
        assert.deepEqual(left(c).sort(), [ada.user.id, linus.user.id].sort(), `${c.name}: Ada and Linus left, once each`);
        assert.deepEqual(await presence(c, entryId), listed(grace.user), `${c.name}'s presenceEntry`);
      }
    });
  });
});

// ---- the demo page ----

test('the demo page: two users see each other reading, and one sees the other typing (Socket.IO and plain WebSocket)', { timeout: 60_000 }, async () => {
  if (!existsSync(executablePath)) throw new Error(`Chromium not found at ${executablePath}: apt-get install -y chromium`);
  const ada = await register(blog.url, 'Ada');
  const grace = await register(blog.url, 'Grace');
  const linus = await register(blog.url, 'Linus');
  const title = 'Who is here?';
  const entryId = await newEntry(blog, ada, title);
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  try {
    /** A page of its own browser context, signed in as `who`, over `transport`, the entry open. */
    const reading = async (who, transport) => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      await page.goto(blog.url);
      await page.evaluate(([token, user, transport]) => {
        localStorage.setItem('token', token);
        localStorage.setItem('user', JSON.stringify(user));
        localStorage.setItem('transport', transport);
      }, [who.token, who.user, transport]);
      await page.reload();
      await page.getByTestId('entry').filter({ hasText: title }).click();
      await page.getByTestId('entry-heading').filter({ hasText: title }).waitFor();
      return page;
    };
    const text = (page, id) => page.getByTestId(id).textContent();
    const becomes = (page, id, want, timeout = 10_000) =>
      page.waitForFunction(([id, want]) => document.querySelector(`[data-testid=${id}]`)?.textContent === want, [id, want], { timeout })
        .catch(async () => assert.fail(`${id} is ${JSON.stringify(await text(page, id))}, not ${JSON.stringify(want)}`));

    const pageA = await reading(ada, 'socketio');
    await becomes(pageA, 'readers', 'Reading now: Ada (you)');
    const pageG = await reading(grace, 'ws');
    // Each page lists both, the user marked; Ada's page heard of Grace by presenceDiff.
    await becomes(pageG, 'readers', 'Reading now: Ada, Grace (you)');
    await becomes(pageA, 'readers', 'Reading now: Ada (you), Grace');
    assert.equal(await text(pageA, 'typing'), '');

    // Grace types: Ada's page says so; Grace's own page does not.
    await pageG.getByTestId('comment-body').pressSequentially('Hello', { delay: 50 });
    await becomes(pageA, 'typing', 'Grace is typing…');
    assert.equal(await text(pageG, 'typing'), '');
    await pageA.screenshot({ path: join(artifacts, 'presence-typing.png'), fullPage: true });
    await pageG.screenshot({ path: join(artifacts, 'presence-reading.png'), fullPage: true });
    // She pauses: a few seconds after her last `typing`, she is no longer typing.
    await becomes(pageA, 'typing', '', 6000);

    // Linus (a client of his own) reads and types too, while Grace goes on.
    await withClients(async (open) => {
      const l = await open('socketio', blog, linus);
      await subscribe(l, entryId);
      await becomes(pageA, 'readers', 'Reading now: Ada (you), Grace, Linus');
      await pageG.getByTestId('comment-body').pressSequentially(', Ada', { delay: 50 });
      l.send('typing', { entryId });
      await becomes(pageA, 'typing', 'Grace and Linus are typing…');
      await pageA.screenshot({ path: join(artifacts, 'presence-typing-two.png'), fullPage: true });
      // Linus stops: after a few seconds he is no longer typing (Grace's page heard him too).
      await becomes(pageG, 'typing', 'Linus is typing…');
      await becomes(pageG, 'typing', '', 6000);
      // He leaves: gone from the list.
      l.close();
      await becomes(pageA, 'readers', 'Reading now: Ada (you), Grace');
    });

    // Grace sends her comment: on Ada's page it appears and Grace is no longer typing, at once
    // (not when her last `typing` runs out).
    await pageG.getByTestId('comment-body').pressSequentially('!', { delay: 50 });
    await becomes(pageA, 'typing', 'Grace is typing…');
    await pageG.getByTestId('comment-submit').click();
    await pageA.getByTestId('comment').filter({ hasText: 'Hello, Ada!' }).waitFor({ timeout: 10_000 });
    await becomes(pageA, 'typing', '', 1000);

    // Grace leaves the page: Ada's page lists her alone.
    await pageG.context().close();
    await becomes(pageA, 'readers', 'Reading now: Ada (you)');
    await pageA.screenshot({ path: join(artifacts, 'presence-left.png'), fullPage: true });
  } finally {
    await browser.close();
  }
});
