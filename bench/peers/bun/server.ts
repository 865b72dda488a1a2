// The echo gateway of tools/echo-server, as a Bun user writes it: `Bun.serve` with a
// `websocket` handler (uWebSockets underneath), the JWT checked at the upgrade, JSON frames
// `{event, data}` (an `id` asks for an ack). For the broadcast benchmark, `join` subscribes the
// connection to the topic `broadcast` and `shout` publishes `news` to it.
//
// `JWT_SECRET=… PORT=3705 bun server.ts`   # ws://127.0.0.1:3705/ws?token=… (or /?token=…)
import { jwtVerify } from 'jose';
import type { ServerWebSocket } from 'bun';

const SECRET = process.env.JWT_SECRET;
if (!SECRET) {
  console.error('JWT_SECRET must be set');
  process.exit(1);
}
const KEY = new TextEncoder().encode(SECRET);
const PORT = Number(process.env.PORT ?? 3705);
const HOST = process.env.HOST ?? '127.0.0.1';
/** The room of the broadcast benchmark. */
const ROOM = 'broadcast';

type Conn = ServerWebSocket<{ user: string }>;

/** The token's subject if it is valid (HS256 only, signature and exp checked), else null. */
async function verify(token: string): Promise<string | null> {
  try {
    const { payload } = await jwtVerify(token, KEY, { algorithms: ['HS256'], requiredClaims: ['exp'] });
    return typeof payload.sub === 'string' ? payload.sub : null;
  } catch {
    return null;
  }
}

const refused = (message: string) =>
  Response.json({ status: 'error', message }, { status: 401 });

/** `{"event":"exception","id"?,"data":{"status":"error","message","cause"?}}`, as tools/echo-server. */
function exception(ws: Conn, message: string, id?: unknown, cause?: unknown): void {
  const data = cause === undefined ? { status: 'error', message } : { status: 'error', message, cause };
  ws.send(JSON.stringify(id === undefined ? { event: 'exception', data } : { event: 'exception', id, data }));
}

function ack(ws: Conn, id: unknown, data: unknown): void {
  ws.send(JSON.stringify({ event: 'ack', id, data }));
}

const server = Bun.serve<{ user: string }, never>({
  port: PORT,
  hostname: HOST,
  async fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname !== '/' && url.pathname !== '/ws') return new Response('Not Found', { status: 404 });
    const token = url.searchParams.get('token');
    if (!token) return refused('Missing authentication token.');
    const user = await verify(token);
    if (user === null) return refused('Invalid token.');
    if (server.upgrade(req, { data: { user } })) return undefined;
    return new Response('Expected a WebSocket upgrade', { status: 426 });
  },
  websocket: {
    message(ws, message) {
      if (typeof message !== 'string') return exception(ws, 'Binary frames are not accepted.');
      let frame: Record<string, unknown>;
      try {
        frame = JSON.parse(message);
      } catch (e) {
        return exception(ws, `Invalid JSON: ${(e as Error).message}`);
      }
      if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
        return exception(ws, 'Invalid message: expected a JSON object with "event" and "data", or with "type".');
      }
      const id = frame.id;
      // `{event, data}`, or the chapter's `{type, …}` where every other field is the data.
      let event: unknown;
      let data: unknown;
      if ('event' in frame) {
        event = frame.event;
        data = frame.data ?? null;
      } else if ('type' in frame) {
        const { type, id: _, ...rest } = frame;
        event = type;
        data = rest;
      } else {
        return exception(ws, 'Invalid message: expected a JSON object with "event" and "data", or with "type".', id);
      }
      switch (event) {
        case 'echo':
          ws.send(JSON.stringify({ event: 'echo', data }));
          return;
        case 'join':
          ws.subscribe(ROOM);
          if (id !== undefined) ack(ws, id, true);
          return;
        case 'shout':
          // No reply, not even to an `id`: the handler returns nothing.
          server.publish(ROOM, JSON.stringify({ event: 'news', data }));
          return;
        default:
          return exception(ws, `There is no handler for event '${String(event)}'.`, id, { pattern: event, data });
      }
    },
  },
});
console.log(`bun echo listening on ws://${server.hostname}:${server.port}/ws`);
