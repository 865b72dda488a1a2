// The README's "Try the blog" shell flow, run as written (but for starting the server, which the
// test does, and its port): it works on a fresh blog, says so when ada exists already, and stops
// with the server's answer when it cannot log in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBlog, api } from '../lib/server.js';

const readme = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'README.md'), 'utf8');
const section = readme.slice(readme.indexOf('## Try the blog'), readme.indexOf("## The blog's API"));
const flow = /```sh\n([\s\S]*?)```/.exec(section)[1];

/** The flow against `blog`, in bash; resolves to `{code, stdout, stderr}`. */
function runFlow(blog) {
  const script = flow
    .split('\n')
    .filter((line) => !line.startsWith('cargo run')) // the test started the server
    .join('\n')
    .replaceAll('localhost:3000', `127.0.0.1:${blog.port}`);
  return new Promise((resolve) => {
    execFile('bash', ['-c', script], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr });
    });
  });
}

test("the README's curl flow registers ada, writes an entry and a comment, and says what failed", async () => {
  const blog = await startBlog();
  try {
    const first = await runFlow(blog);
    assert.equal(first.code, 0, JSON.stringify(first));
    assert.match(first.stdout, /"title":"Hello"/);
    assert.match(first.stdout, /"body":"First!"/);

    // Again: ada exists, which the register step shows; the rest works as before.
    const again = await runFlow(blog);
    assert.equal(again.code, 0, JSON.stringify(again));
    assert.match(again.stdout, /"statusCode":409,"message":"Email already registered\."/);
    assert.match(again.stderr, /409/);
    assert.equal((again.stdout.match(/"title":"Hello"/g) ?? []).length, 1);
  } finally {
    await blog.stop();
  }
});

test("the README's curl flow stops with the server's answer when ada has another password", async () => {
  const blog = await startBlog();
  try {
    const body = { email: 'ada@example.com', password: 'not the demo one', firstName: 'Ada', lastName: 'L' };
    assert.equal((await api(blog.url, 'POST', '/auth/register', { body })).status, 201);
    const run = await runFlow(blog);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /no token: \{"statusCode":401,"message":"Invalid email or password\."\}/);
    assert.doesNotMatch(run.stdout, /"title":"Hello"/);
    const login = await api(blog.url, 'POST', '/auth/login', { body });
    const entries = await api(blog.url, 'GET', '/entries', { token: login.body.token });
    assert.deepEqual(entries.body, [], 'nothing was written with an empty token');
  } finally {
    await blog.stop();
  }
});
