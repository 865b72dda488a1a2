// The demo page in headless Chromium: two browser contexts as two users; one posts a comment,
// the other sees it appear without reloading, over each transport.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startBlog, seedBlog } from '../lib/server.js';

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

async function signUp(page, name) {
  await page.goto(blog.url);
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
    assert.equal(await page.locator('details.op').count(), 15, 'one block per operation');
    assert.equal(await page.locator('details.op .lock').count(), 11, 'the protected ones are marked');
    assert.deepEqual(outside, [], 'nothing is fetched from another origin');
    await page.screenshot({ path: join(artifacts, 'api-docs.png'), fullPage: true });
  } finally {
    await context.close();
  }
});

test("the README's two client snippets run as written in the console of the blog's page", async () => {
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
    // The blog's own page, logged in (the page keeps the token in localStorage).
    await page.goto(`http://localhost:${own.port}`);
    await page.evaluate((token) => localStorage.setItem('token', token), alice.token);
    for (const snippet of snippets) {
      await page.addScriptTag({ content: snippet.replaceAll('localhost:3000', `localhost:${own.port}`) });
    }
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
