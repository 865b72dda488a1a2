// The machine's services for the scale-out suite: a PostgreSQL database of the test's own, the
// machine's Redis, or a redis-server the test starts (and stops) itself.
import { spawn } from 'node:child_process';
import net from 'node:net';
import pg from 'pg';
import { startBlog } from './server.js';

/**
 * A service the test needs is missing: fail under CI=true, else skip the test loudly.
 * @returns {null}
 */
function unavailable(t, message) {
  if (process.env.CI === 'true') throw new Error(message);
  const rule = '='.repeat(78);
  process.stderr.write(`\n${rule}\nSKIPPED ${t.name}: ${message}\n${rule}\n\n`);
  t.skip(message);
  return null;
}

/** Whether something accepts TCP connections at host:port. */
function reachable(host, port, ms = 2000) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(ms, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

let databases = 0;

/**
 * A new, uniquely named PostgreSQL database on the server of TEST_POSTGRES_URL, else of
 * DATABASE_URL if it is postgres://, else postgres://postgres@127.0.0.1:5432/test.
 * @returns {Promise<{url: string, drop: () => Promise<void>} | null>}
 */
export async function postgresDatabase(t) {
  const base =
    process.env.TEST_POSTGRES_URL ??
    (process.env.DATABASE_URL?.startsWith('postgres') ? process.env.DATABASE_URL : null) ??
    'postgres://postgres@127.0.0.1:5432/test';
  const url = new URL(base);
  if (!(await reachable(url.hostname, Number(url.port || 5432)))) {
    return unavailable(
      t,
      `PostgreSQL is not reachable at ${url.host}. Start one (e.g. ` +
        '`pg_ctlcluster --skip-systemctl-redirect 15 main start`, or `docker run -d -p 5432:5432 ' +
        '-e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`) or set TEST_POSTGRES_URL.',
    );
  }
  databases += 1;
  const name = `wsgate_e2e_${process.pid}_${databases}`;
  /** Runs `queries(client)` on a connection to `connectionString`, closed whatever happens. */
  const withClient = async (connectionString, queries) => {
    const client = new pg.Client({ connectionString, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      return await queries(client);
    } finally {
      await client.end().catch(() => {});
    }
  };
  await withClient(base, (c) => c.query(`CREATE DATABASE ${name}`));
  const own = new URL(base);
  own.pathname = `/${name}`;
  return {
    url: own.toString(),
    /** One statement on the test's own database. */
    query: (sql, params) => withClient(own.toString(), (c) => c.query(sql, params)),
    drop: () =>
      withClient(base, async (c) => {
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
        await c.query(`DROP DATABASE IF EXISTS ${name}`);
      }),
  };
}

/** The machine's Redis: REDIS_URL, else redis://127.0.0.1:6379, if it answers. */
export async function redisUrl(t) {
  const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const { hostname, port } = new URL(url);
  if (!(await reachable(hostname, Number(port || 6379)))) {
    return unavailable(
      t,
      `Redis is not reachable at ${url}. Start one (\`redis-server --daemonize yes\`, or ` +
        '`docker run -d -p 6379:6379 redis:7`) or set REDIS_URL.',
    );
  }
  return url;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * A redis-server of the test's own on a free port, keeping nothing on disk: stop() kills it
 * (as a crash would), start() brings it back on the same port.
 */
export async function startRedis(t) {
  const port = await freePort();
  let child = null;
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    // A spawn error (no redis-server), or an exit (the port taken meanwhile), ends the wait.
    const failed = new Promise((resolve) => {
      child.once('error', resolve);
      child.once('exit', (code, signal) => resolve(new Error(`redis-server on ${port} exited (${code ?? signal})`)));
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const error = await Promise.race([failed, new Promise((r) => setTimeout(() => r(null), 50))]);
      if (error) throw error;
      if (await reachable('127.0.0.1', port, 200)) return;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`redis-server on ${port} did not start`);
      }
    }
  };
  const stop = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
  };
  try {
    await start();
  } catch (e) {
    if (e.code === 'ENOENT') {
      return unavailable(t, 'redis-server is not installed (`apt-get install redis-server`).');
    }
    throw e;
  }
  return { url: `redis://127.0.0.1:${port}`, port, start, stop };
}

/**
 * `count` blogs on one database and one Redis, started one after the other (the first creates
 * and migrates the database). If one fails to start, those already running are stopped. Each
 * `stop()` kills its blog if it has not exited 10 s after SIGTERM, so that cleanup never hangs.
 */
export async function startInstances({ databaseUrl, redisUrl: redis, count = 2, env = {} }) {
  const instances = [];
  try {
    for (let i = 0; i < count; i += 1) {
      const blog = await startBlog({ DATABASE_URL: databaseUrl, REDIS_URL: redis, ...env });
      const stop = blog.stop;
      blog.stop = async () => {
        const timer = setTimeout(() => blog.child.kill('SIGKILL'), 10_000);
        try {
          await stop();
        } finally {
          clearTimeout(timer);
        }
      };
      instances.push(blog);
    }
  } catch (e) {
    await Promise.all(instances.map((blog) => blog.stop().catch(() => {})));
    throw e;
  }
  return instances;
}

/** Resolves once `blog`'s `/healthz` says Redis is up; throws after `ms`. */
export async function reachesRedis(blog, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const health = await fetch(`${blog.url}/healthz`).then((r) => r.json()).catch(() => ({}));
    if (health.redis === 'up') return;
    if (Date.now() > deadline) throw new Error(`${blog.url} never reached Redis: ${JSON.stringify(health)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Two blogs on a PostgreSQL database and a redis-server of the test's own, both reaching Redis,
 * everything handed to `defer` for cleanup (use within `withCleanup`); null when PostgreSQL or
 * redis-server is missing (skipped loudly, or failed under CI, by `postgresDatabase` and
 * `startRedis`). `env` is given to both blogs.
 */
export async function linkedInstances(t, defer, env = {}) {
  const db = await postgresDatabase(t);
  if (!db) return null;
  defer(() => db.drop());
  const redis = await startRedis(t);
  if (!redis) return null;
  defer(() => redis.stop());
  const [a, b] = await startInstances({ databaseUrl: db.url, redisUrl: redis.url, env });
  defer(() => a.stop());
  defer(() => b.stop());
  for (const blog of [a, b]) await reachesRedis(blog);
  return { db, redis, a, b };
}

/** Runs `body` with everything it opens closed afterwards, pass or fail. */
export async function withCleanup(body) {
  const cleanups = [];
  try {
    await body((fn) => cleanups.push(fn));
  } finally {
    for (const fn of cleanups.reverse()) {
      await Promise.resolve()
        .then(fn)
        .catch(() => {});
    }
  }
}
