// The demo page in headless Chromium: two browser contexts as two users; one posts a comment,
// the other sees it appear without reloading, over each transport; and a page whose network
// drops gets the comments it missed by replay once it is back (connection state recovery), and
// is a reader of its entry again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';
import { startBlog, seedBlog, api, register } from '../lib/server.js';
import { startProxy } from '../lib/proxy.js';
import { waitFor } from '../lib/wait.js';

const artifacts = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

let blog;
let browser;

before(async () => {
  if (!existsSync(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath}: apt-get install -y chromium`);
  }
  mkdirSync(artifacts, { recursive: true });
  blog = await startBlog();
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
});

after(async () => {
  await browser?.close();
  await blog?.stop();
});

async function signUp(page, name, base = blog.url) {
  await page.goto(base);
  await page.getByTestId('email').fill(`${name}-${Date.now()}@example.com`);
  await page.getByTestId('password').fill('correct horse battery');
  await page.getByTestId('first-name').fill(name);
  await page.getByTestId('last-name').fill('Tester');
  await page.getByTestId('register').click();
  await page.getByTestId('entry-submit').waitFor();
}

async function useTransport(page, transport, label) {
  await page.getByTestId('transport').selectOption(transport);
  await page.waitForFunction(
    (text) => document.querySelector('[data-testid=status]')?.textContent.includes(text),
    label,
  );
}

for (const [transport, label] of [
  ['socketio', 'Socket.IO'],
  ['ws', 'plain WebSocket'],
]) {
  test(`a comment posted by one user appears live for another (${label})`, async () => {
    const alice = await browser.newContext();
    const bob = await browser.newContext();
    const pageA = await alice.newPage();
    const pageB = await bob.newPage();
    try {
      await signUp(pageA, 'alice');
      await useTransport(pageA, transport, label);
      const title = `Live over ${label}`;
      await pageA.getByTestId('entry-title').fill(title);
      await pageA.getByTestId('entry-content').fill('Watch the comments arrive.');
      await pageA.getByTestId('entry-submit').click();
      await pageA.getByTestId('entry-heading').filter({ hasText: title }).waitFor();

      await signUp(pageB, 'bob');
      await useTransport(pageB, transport, label);
      await pageB.getByTestId('entry').filter({ hasText: title }).click();
      await pageB.getByTestId('entry-heading').filter({ hasText: title }).waitFor();
      // Bob's page is subscribed before Alice writes: wait for the empty list to load.
      await pageB.waitForFunction(() => document.querySelector('[data-testid=status]').classList.contains('live'));

      const body = `Hello from Alice over ${label}`;
      await pageA.getByTestId('comment-body').fill(body);
      await pageA.getByTestId('comment-submit').click();

      // No reload on Bob's side: the comment arrives through the gateway.
      await pageB.getByTestId('comment').filter({ hasText: body }).waitFor({ timeout: 10_000 });
      assert.equal(await pageB.getByTestId('comment').filter({ hasText: body }).count(), 1);
      await pageB.screenshot({ path: join(artifacts, `demo-${transport}.png`), fullPage: true });
    } finally {
      await alice.close();
      await bob.close();
    }
  });
}

// ---- connection state recovery: Bob's page loses its network for a while ----

/** Resolves once #status's data-state is `state`. */
async function waitForState(page, state, timeout = 20_000) {
  await page.waitForFunction(
    (s) => document.querySelector('[data-testid=status]')?.dataset.state === s,
    state,
    { timeout },
  );
}

/**
 * Records what the page's live connection sends and receives, over websocket (frames) and
 * Socket.IO long-polling (POST bodies sent, GET bodies received), in order, as text.
 */
function recordWire(page) {
  const sent = [];
  const received = [];
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => sent.push(String(payload)));
    ws.on('framereceived', ({ payload }) => received.push(String(payload)));
  });
  page.on('request', (req) => {
    if (req.url().includes('/socket.io/') && req.method() === 'POST') sent.push(req.postData() ?? '');
  });
  page.on('response', async (res) => {
    if (!res.url().includes('/socket.io/') || res.request().method() !== 'GET') return;
    received.push(await res.text().catch(() => ''));
  });
  return { sent, received };
}

/**
 * The `[event, data]` pairs in recorded payloads: plain WebSocket frames (`{event, data}`) and
 * Socket.IO EVENT packets (`42["event", data, …]`, several per polling payload).
 */
function eventsIn(payloads) {
  const events = [];
  for (const payload of payloads) {
    for (const packet of payload.split('\x1e')) {
      try {
        const sio = /^42\d*(\[.*)$/s.exec(packet);
        if (sio) {
          const [event, data] = JSON.parse(sio[1]);
          events.push([event, data]);
        } else if (packet.startsWith('{')) {
          const { event, data } = JSON.parse(packet);
          events.push([event, data]);
        }
      } catch {
        // Not JSON: an engine.io control packet.
      }
    }
  }
  return events;
}

for (const [transport, label] of [
  ['socketio', 'Socket.IO'],
  ['ws', 'plain WebSocket'],
]) {
  test(`a page cut off from the server gets the comments it missed by replay, once, in order (${label})`, async () => {
    const proxy = await startProxy(blog.port);
    const alice = await register(blog.url, 'alice');
    const title = `Recovery over ${label}`;
    const entry = await api(blog.url, 'POST', '/entries', {
      token: alice.token,
      body: { title, content: 'Comments survive a network drop.' },
    });
    assert.equal(entry.status, 201, JSON.stringify(entry.body));
    const comment = async (body) => {
      const res = await api(blog.url, 'POST', `/entries/${entry.body.id}/comments`, { token: alice.token, body: { body } });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body;
    };

    const bob = await browser.newContext();
    const page = await bob.newPage();
    const wire = recordWire(page);
    try {
      // Bob's page comes from the proxy, so its gateway connection goes through it too (and its
      // token lives in the proxy origin's localStorage).
      await signUp(page, 'bob', proxy.url);
      await useTransport(page, transport, label);
      if (transport === 'socketio') {
        // Deterministic: the cut hits the websocket, not the long-polling it started with.
        await useTransport(page, transport, 'Socket.IO (websocket)');
      }
      await page.getByTestId('entry').filter({ hasText: title }).click();
      await page.getByTestId('entry-heading').filter({ hasText: title }).waitFor();
      await waitForState(page, 'connected');
      // Once the page subscribed (its indexComment came back), a comment from before the cut
      // arrives live, with an offset. (Posted earlier, it would reach the page only in the
      // list, and the server would replay it after the recovery: it replays from the
      // session's start, by the rooms held at the drop, when the client received no offset.)
      await waitFor(() => eventsIn(wire.received).some(([event]) => event === 'indexComment'), 10_000);
      const before = await comment(`before the cut (${label})`);
      await page.getByTestId('comment').filter({ hasText: before.body }).waitFor({ timeout: 10_000 });
      const asked = (payloads) => eventsIn(payloads).map(([event]) => event).filter((e) => e === 'subscribeEntry' || e === 'indexComment');
      assert.deepEqual(asked(wire.sent), ['subscribeEntry', 'indexComment'], 'the recording sees what the page sends');

      const sentBefore = wire.sent.length;
      const receivedBefore = wire.received.length;
      proxy.cut();
      await waitForState(page, 'reconnecting');
      assert.match(await page.getByTestId('status').textContent(), /reconnecting/);
      assert.equal(await page.getByTestId('status').evaluate((el) => el.classList.contains('live')), false);

      const missed = [];
      for (let i = 1; i <= 3; i += 1) missed.push(await comment(`missed ${i} (${label})`));
      proxy.restore();
      await waitForState(page, 'recovered', 30_000);
      const status = await page.getByTestId('status').textContent();
      assert.match(status, new RegExp(`^live over ${label}.*recovered`));
      assert.equal(await page.getByTestId('status').evaluate((el) => el.classList.contains('live')), true);

      // No reload: the missed comments appear, after the one from before, in order, once each.
      await page.getByTestId('comment').filter({ hasText: missed.at(-1).body }).waitFor({ timeout: 10_000 });
      await new Promise((r) => setTimeout(r, 500)); // room for a refetch or a duplicate to show
      const bodies = await page.getByTestId('comment').evaluateAll((lis) => lis.map((li) => li.firstChild.textContent));
      assert.deepEqual(bodies, [before, ...missed].map((c) => c.body));

      // They came by replay: the page fetched nothing after the reconnect (it subscribed again,
      // which tracks it as a reader anew: presence ends with a connection), and each missed
      // comment reached it exactly once (the page's list would hide a duplicate).
      assert.deepEqual(asked(wire.sent.slice(sentBefore)), ['subscribeEntry'], `sent after the cut: ${JSON.stringify(wire.sent.slice(sentBefore))}`);
      const replayed = eventsIn(wire.received.slice(receivedBefore)).filter(([event]) => event === 'commentCreated' || event === 'indexComment');
      assert.deepEqual(
        replayed.map(([event, data]) => `${event} ${data?.id}`),
        missed.map((c) => `commentCreated ${c.id}`),
        `received after the cut: ${JSON.stringify(wire.received.slice(receivedBefore))}`,
      );

      // The room came back with the session: a new comment still arrives live.
      const after = await comment(`after the recovery (${label})`);
      await page.getByTestId('comment').filter({ hasText: after.body }).waitFor({ timeout: 10_000 });
      // And the server counts it among the entry's readers again.
      const readers = await new Promise((resolve, reject) => {
        const socket = io(blog.url, { auth: { token: alice.token }, transports: ['websocket'], forceNew: true, reconnection: false });
        socket.once('connect_error', reject);
        socket.once('presenceEntry', (data) => {
          socket.close();
          resolve(data.readers);
        });
        socket.once('connect', () => socket.emit('presenceEntry', { entryId: entry.body.id }));
      });
      assert.deepEqual(readers.map((r) => r.firstName), ['bob'], 'the page is a reader again');
      assert.equal(await page.getByTestId('readers').textContent(), 'Reading now: bob (you)');
      await page.screenshot({ path: join(artifacts, `demo-recovered-${transport}.png`), fullPage: true });
    } finally {
      await bob.close();
      await proxy.close();
    }
  });
}

test('the API docs page renders every operation of /openapi.json, offline', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const outside = [];
  page.on('request', (req) => {
    if (!req.url().startsWith(blog.url)) outside.push(req.url());
  });
  try {
    await page.goto(`${blog.url}/docs`);
    const login = page.locator('details.op', { hasText: '/auth/login' });
    await login.locator('summary').click();
    await login.locator('td code', { hasText: '401' }).waitFor();
    assert.equal(await page.locator('details.op').count(), 16, 'one block per operation');
    assert.equal(await page.locator('details.op .lock').count(), 12, 'the protected ones are marked');
    assert.deepEqual(outside, [], 'nothing is fetched from another origin');
    // Every operation says what it does, in words rather than by repeating its route.
    const summaries = await page.locator('details.op .summary').allTextContents();
    assert.ok(summaries.every((text) => text && !text.includes('/')), `summaries: ${summaries}`);
    for (const op of await page.locator('details.op').all()) await op.locator('summary').click();
    const described = await page.locator('details.op').evaluateAll((ops) => ops.filter((op) => op.querySelector('.body > p')).length);
    assert.equal(described, 16, 'every operation has a description');
    // Code spans are <code>, not raw backticks; paths are named as in the README.
    const text = await page.locator('main').innerText();
    assert.ok(!text.includes('`'), 'no raw backtick on the page');
    assert.ok(await page.locator('.body p code', { hasText: 'commentCreated' }).count() > 0);
    const paths = await page.locator('details.op .path').allTextContents();
    assert.ok(paths.includes('/entries/{id}') && paths.includes('/entries/{entryId}/comments/{id}'), `paths: ${paths}`);
    assert.ok(!paths.some((path) => path.includes('_')), `paths: ${paths}`);
    await page.screenshot({ path: join(artifacts, 'api-docs.png'), fullPage: true });
  } finally {
    await context.close();
  }
});

for (const host of ['localhost', '127.0.0.1']) {
  test(`the README's two client snippets run as written in the console of the blog's page (${host})`, async () => {
    const readme = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'README.md'), 'utf8');
    const clients = readme.slice(readme.indexOf('## Clients'), readme.indexOf('## Try the blog'));
    const snippets = [...clients.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.equal(snippets.length, 2, 'a plain WebSocket and a Socket.IO snippet');
    // A fresh blog of its own: entry 1 and comment 1 are the ones the snippets ask for.
    const own = await startBlog();
    try {
      const { alice } = await seedBlog(own, 'README');
      const context = await browser.newContext();
      const page = await context.newPage();
      const logged = [];
      page.on('console', async (message) => {
        logged.push(await Promise.all(message.args().map((a) => a.jsonValue().catch(() => null))));
      });
      // The blog's own page, logged in (the page keeps the token in localStorage), under the
      // host name the reader typed: the snippets are pasted as they are.
      await page.goto(`http://${host}:${own.port}`);
      await page.evaluate((token) => localStorage.setItem('token', token), alice.token);
      for (const snippet of snippets) await page.addScriptTag({ content: snippet });
      const seen = (pred) => logged.some(pred);
      const deadline = Date.now() + 10_000;
      const wanted = [
        (l) => l[0]?.event === 'showComment' && l[0].data?.id === 1,
        (l) => l[0]?.event === 'indexComment' && Array.isArray(l[0].data),
        (l) => l[0]?.event === 'exception' && l[0].data?.message === 'Missing comment id.',
        (l) => l[0] === 'showUser' && l[1]?.id === 1,
        (l) => l[0] === 'indexComment' && Array.isArray(l[1]),
        (l) => l[0] === 'showComment' && l[1]?.id === 1,
        (l) => l[0] === 'exception' && l[1]?.message === 'Missing comment id.',
      ];
      while (!wanted.every(seen) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      wanted.forEach((pred, i) => assert.ok(seen(pred), `snippet output ${i} in the console: ${JSON.stringify(logged)}`));
      await context.close();
    } finally {
      await own.stop();
    }
  });
}

// ---- the page at a phone's width and a laptop's ----

/** Elements that stick out of the viewport on the right, or a page wider than it. */
function overflow(page) {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const out = [...document.querySelectorAll('body *')]
      .filter((el) => el.getClientRects().length > 0)
      .filter((el) => el.getBoundingClientRect().right > width + 0.5 || el.getBoundingClientRect().left < -0.5)
      .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`);
    return { width, scrollWidth: document.documentElement.scrollWidth, out };
  });
}

/** Inputs whose placeholder is wider than the room the input gives it. */
function cutPlaceholders(page) {
  return page.evaluate(() => {
    const ctx = document.createElement('canvas').getContext('2d');
    return [...document.querySelectorAll('input[placeholder]')]
      .filter((input) => input.getClientRects().length > 0)
      .filter((input) => {
        const style = getComputedStyle(input);
        ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        return ctx.measureText(input.placeholder).width > room;
      })
      .map((input) => input.placeholder);
  });
}

for (const width of [420, 1280]) {
  test(`the demo page at ${width} px: names, who is signed in, a hint, nothing off screen`, async () => {
    const alice = await register(blog.url, 'Alice');
    const bob = await register(blog.url, 'Bob');
    const title = `A long title with a long word: Pneumonoultramicroscopicsilicovolcanoconiosis-${width}`;
    const entry = await api(blog.url, 'POST', '/entries', {
      token: alice.token,
      body: { title, content: 'Does the page fit a phone? '.repeat(8) },
    });
    assert.equal(entry.status, 201, JSON.stringify(entry.body));
    for (const [who, body] of [[bob, 'First, from Bob.'], [alice, 'Thanks, Bob!']]) {
      const res = await api(blog.url, 'POST', `/entries/${entry.body.id}/comments`, { token: who.token, body: { body } });
      assert.equal(res.status, 201, JSON.stringify(res.body));
    }

    const context = await browser.newContext({ viewport: { width, height: 900 } });
    const page = await context.newPage();
    const problems = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()}`);
    });
    page.on('response', (res) => {
      if (res.status() >= 400) problems.push(`${res.status()} ${res.url()}`);
    });
    try {
      await page.goto(blog.url);
      await page.getByTestId('email').waitFor();
      assert.deepEqual(await cutPlaceholders(page), [], 'every placeholder fits its input');
      const login = await overflow(page);
      assert.deepEqual(login.out, [], `the login form fits ${width} px`);
      await page.screenshot({ path: join(artifacts, `demo-login-${width}.png`), fullPage: true });

      await page.getByTestId('email').fill(bob.user.email);
      await page.getByTestId('password').fill('correct horse battery');
      await page.getByTestId('login').click();
      await page.getByTestId('entry-submit').waitFor();
      assert.equal(await page.getByTestId('whoami').textContent(), 'Signed in as Bob Tester');
      assert.ok(await page.getByTestId('pick-entry').isVisible(), 'a hint where the entry will be');
      assert.match(await page.getByTestId('pick-entry').textContent(), /Pick an entry/);

      await page.getByTestId('entry').filter({ hasText: title }).click();
      await page.getByTestId('comment').filter({ hasText: 'Thanks, Bob!' }).waitFor();
      assert.equal(await page.getByTestId('pick-entry').isVisible(), false);
      await page.waitForFunction(() => document.querySelector('[data-testid=entry-byline]').textContent.startsWith('by Alice Tester'));
      const metas = await page.getByTestId('comment').locator('.meta').allTextContents();
      assert.match(metas[0], /^Bob Tester \(you\) · /);
      assert.match(metas[1], /^Alice Tester · /);
      assert.ok(!metas.some((m) => /user \d/.test(m)), `names, not ids: ${metas}`);

      // Nothing wider than the viewport, from the page's own layout.
      const layout = await overflow(page);
      assert.ok(layout.scrollWidth <= layout.width, `the page scrolls sideways: ${layout.scrollWidth} > ${layout.width}`);
      assert.deepEqual(layout.out, [], `elements off screen at ${width} px`);
      const [list, open] = await Promise.all(
        [page.getByTestId('entries'), page.getByTestId('entry-heading')].map((l) => l.evaluate((el) => {
          const r = el.closest('section').getBoundingClientRect();
          return { left: r.left, right: r.right, top: r.top, bottom: r.bottom };
        })),
      );
      if (width === 420) assert.ok(open.top >= list.bottom, 'one column: the entry under the list');
      else assert.ok(open.left >= list.right && open.top === list.top, 'two columns side by side');
      await page.screenshot({ path: join(artifacts, `demo-${width}.png`), fullPage: true });
      assert.deepEqual(problems, [], 'no failed request and no error in the console (the icon is served)');
    } finally {
      await context.close();
    }
  });
}
