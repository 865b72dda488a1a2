// Failover benchmark (not a test; `bench/failover` runs it): N Socket.IO and N plain WebSocket
// clients reach blog instance A through a TCP proxy (the load balancer); A is killed (-9), the
// proxy sends new connections to B, comments are posted on B meanwhile, and the clock runs until
// every client has recovered its session on B with every missed comment. Prints the time until
// all had, and the p50/p99 of each client's time.
//
//   node e2e/tools/failover.mjs   (BLOG_BIN, N=1000, DATABASE_BASE, a redis-server on PATH)
import { spawn } from 'node:child_process';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import pg from 'pg';
import { api, register, startServer } from '../lib/server.js';
import { startProxy } from '../lib/proxy.js';

const N = Number(process.env.N ?? 1000);
const base = process.env.DATABASE_BASE ?? 'postgres://postgres@127.0.0.1:5432';
const blogBin = process.env.BLOG_BIN ?? 'target/release/blog';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const redisPort = await freePort();
const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
await sleep(300);
const dbName = `wsgate_failover_${process.pid}`;
const admin = new pg.Client({ connectionString: `${base}/postgres` });
await admin.connect();
await admin.query(`CREATE DATABASE ${dbName}`);
const env = {
  DATABASE_URL: `${base}/${dbName}`,
  REDIS_URL: `redis://127.0.0.1:${redisPort}`,
  HOST: '127.0.0.1',
  MAX_CONNECTIONS_PER_PEER: '0',
  JWT_SECRET: 'failover-bench-secret-failover-bench-secret',
  RUST_LOG: 'info',
};
const a = await startServer(blogBin, ['serve'], env);
const b = await startServer(blogBin, ['serve'], env);
const cleanup = async () => {
  for (const s of [a, b]) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
  redis.kill('SIGKILL');
  await sleep(300);
  await admin.query(`DROP DATABASE IF EXISTS ${dbName}`).catch(() => {});
  await admin.end();
};

try {
  await sleep(500);
  const user = await register(a.url, 'failover');
  const entry = await api(a.url, 'POST', '/entries', { token: user.token, body: { title: 'Failover', content: '…' } });
  const entryId = entry.body.id;
  const proxy = await startProxy(a.port);
  const post = async (text) => (await api(b.url, 'POST', `/entries/${entryId}/comments`, { token: user.token, body: { body: text } })).body.id;

  const sio = [];
  for (let i = 0; i < N; i += 1) {
    const socket = io(proxy.url, { auth: { token: user.token }, forceNew: true, transports: ['websocket'], reconnectionDelay: 200, reconnectionDelayMax: 1000 });
    const c = { socket, ids: [], recoveredAt: null };
    socket.on('commentCreated', (comment) => {
      c.ids.push(comment.id);
    });
    socket.on('connect', () => {
      if (socket.recovered) c.recoveredAt = Date.now();
    });
    sio.push(c);
  }
  const ws = [];
  const openWs = (c, query) =>
    new Promise((resolve) => {
      const socket = new WebSocket(`ws://127.0.0.1:${proxy.port}/ws?token=${user.token}&${query}`);
      c.socket = socket;
      socket.on('message', (raw) => {
        const f = JSON.parse(raw);
        if (f.event === 'session') {
          c.session ??= f.data.id;
          if (f.data.recovered) c.recoveredAt = Date.now();
        } else if (f.event === 'commentCreated') {
          c.ids.push(f.data.id);
          c.offset = f.offset;
        }
      });
      socket.on('open', resolve);
      socket.on('error', () => {});
      socket.on('close', () => {
        if (!c.done) setTimeout(() => openWs(c, `session=${c.session}&offset=${encodeURIComponent(c.offset ?? '')}`), 200 + Math.random() * 800);
      });
    });
  for (let i = 0; i < N; i += 1) {
    const c = { ids: [], recoveredAt: null };
    await openWs(c, 'session=new');
    ws.push(c);
  }
  while (!sio.every((c) => c.socket.connected)) await sleep(50);
  await Promise.all(sio.map((c) => c.socket.timeout(10_000).emitWithAck('subscribeEntry', { entryId })));
  for (const c of ws) c.socket.send(JSON.stringify({ event: 'subscribeEntry', data: { entryId } }));
  await sleep(1000);
  const first = await post('before');
  while (![...sio, ...ws].every((c) => c.ids.length === 1)) await sleep(20);

  proxy.retarget(b.port);
  a.child.kill('SIGKILL');
  const killed = Date.now();
  const missed = [await post('missed 1'), await post('missed 2'), await post('missed 3')];
  const all = [...sio, ...ws];
  const complete = (c) => c.recoveredAt !== null && c.ids.length >= 4;
  const deadline = Date.now() + 60_000;
  while (!all.every(complete) && Date.now() < deadline) await sleep(20);
  const done = Date.now();
  const times = all.filter(complete).map((c) => c.recoveredAt - killed).sort((x, y) => x - y);
  const pct = (p) => times[Math.min(times.length - 1, Math.round((times.length - 1) * p))];
  const exact = all.filter((c) => JSON.stringify(c.ids) === JSON.stringify([first, ...missed])).length;
  console.log(`${all.length} clients (${N} Socket.IO, ${N} plain WebSocket) on the killed instance`);
  console.log(`recovered on the survivor: ${times.length}; all within ${done - killed} ms of the kill`);
  console.log(`per client: p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${times.at(-1)} ms`);
  console.log(`clients with exactly [before, missed 1..3] in order: ${exact} of ${all.length}`);
  for (const c of ws) c.done = true;
  for (const c of all) c.socket.close?.();
  await proxy.close();
} finally {
  await cleanup();
}
process.exit(0);
