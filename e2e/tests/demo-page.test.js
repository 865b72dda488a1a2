// The demo page in headless Chromium: two browser contexts as two users; one posts a comment,
// the other sees it appear without reloading, over each transport.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startBlog } from '../lib/server.js';

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
