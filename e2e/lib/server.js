// Starts the real blog binary on a free loopback port with a fresh SQLite database, and gives
// tests small helpers for its REST API.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/**
 * Cargo's target directory: CARGO_TARGET_DIR (a relative one from the workspace's root, where
 * scripts/test runs cargo), or the workspace's `target`.
 */
const targetDir = resolve(root, process.env.CARGO_TARGET_DIR ?? 'target');

/** The blog binary: BLOG_BIN, or the workspace's debug build (the profile the tests share). */
export function blogBinary() {
  return process.env.BLOG_BIN ?? join(targetDir, 'debug', 'blog');
}

/** An example server of the workspace, from the same debug build. */
export function exampleBinary(name) {
  return join(targetDir, 'debug', 'examples', name);
}

/**
 * Starts `blog serve` on port 0 with a fresh SQLite database and resolves once it logs its
 * address.
 * @returns {Promise<{url: string, port: number, stop: () => Promise<void>, logs: string[], child: import('node:child_process').ChildProcess}>}
 */
export async function startBlog(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'wsgate-e2e-'));
  const server = await startServer(blogBinary(), ['serve'], {
    HOST: '127.0.0.1',
    DATABASE_URL: `sqlite://${join(dir, 'blog.db')}`,
    JWT_SECRET: 'e2e-secret-e2e-secret-e2e-secret-e2e',
    ...env,
  });
  const stop = server.stop;
  server.stop = async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  };
  return server;
}

/** Starts a server binary on port 0 and resolves once it prints `listening on http://…`. */
export async function startServer(binary, args = [], env = {}) {
  if (!existsSync(binary)) {
    // At once, not after the start timeout: nothing was built where the suite looks.
    throw new Error(`${binary} does not exist: build it with \`cargo test --workspace --no-run\` (or set BLOG_BIN / CARGO_TARGET_DIR)`);
  }
  const logs = [];
  const child = spawn(binary, args, {
    env: {
      ...process.env,
      PORT: '0',
      RUST_LOG: process.env.RUST_LOG ?? 'info',
      NO_COLOR: '1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      // Don't leave a server that never came up running behind the failed test.
      child.kill('SIGKILL');
      reject(new Error(`${binary} did not start:\n${logs.join('')}`));
    }, 30_000);
    const onData = (chunk) => {
      const text = chunk.toString();
      logs.push(text);
      const match = /listening on http:\/\/[\d.]+:(\d+)/.exec(logs.join(''));
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${binary} exited with ${code}:\n${logs.join('')}`));
    });
  });
  const stop = async () => {
    // Not if it is gone already (exited, or killed by a signal: a test's kill -9).
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  };
  return { url: `http://127.0.0.1:${port}`, port, stop, logs, child };
}

/** JSON request against the blog; resolves to `{status, body}`. */
export async function api(base, method, path, { token, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

let counter = 0;

/** Registers a fresh user and returns `{token, user}`. */
export async function register(base, name = 'user') {
  counter += 1;
  const email = `${name}-${process.pid}-${counter}@example.com`;
  const res = await api(base, 'POST', '/auth/register', {
    body: { email, password: 'correct horse battery', firstName: name, lastName: 'Tester' },
  });
  if (res.status !== 201) throw new Error(`register failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/**
 * A blog with two users, an entry of Alice's and a comment of Bob's on it: the world of the
 * chapter's client code.
 */
export async function seedBlog(blog, title = 'Gateways') {
  const alice = await register(blog.url, 'alice');
  const bob = await register(blog.url, 'bob');
  const entry = await api(blog.url, 'POST', '/entries', {
    token: alice.token,
    body: { title, content: 'Real-time in Rust.' },
  });
  if (entry.status !== 201) throw new Error(`entry: ${entry.status} ${JSON.stringify(entry.body)}`);
  const comment = await api(blog.url, 'POST', `/entries/${entry.body.id}/comments`, {
    token: bob.token,
    body: { body: 'First!' },
  });
  if (comment.status !== 201) throw new Error(`comment: ${comment.status} ${JSON.stringify(comment.body)}`);
  return { alice, bob, entryId: entry.body.id, commentId: comment.body.id };
}
