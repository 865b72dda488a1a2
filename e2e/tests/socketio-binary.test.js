// Several arguments and binary attachments, both directions, in events, acks and the server's
// requests: the `chat` example of wsgate-socketio driven by the real socket.io-client over
// long-polling and over websocket, and by ws over plain WebSocket (attachments as binary
// frames after the JSON frame that counts them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startServer, exampleBinary } from '../lib/server.js';
import { once, waitFor } from '../lib/wait.js';

let chat;

before(async () => {
  chat = await startServer(exampleBinary('chat'));
});

after(async () => {
  await chat?.stop();
});

async function connect(name, transport) {
  const socket = io(`${chat.url}/chat`, {
    reconnection: false,
    forceNew: true,
    transports: [transport],
    auth: { name },
  });
  await once(socket, 'connect');
  assert.equal(socket.io.engine.transport.name, transport);
  return socket;
}

/** A plain WebSocket client that keeps JSON frames and the binary frames after them. */
async function wsClient(name) {
  const ws = new WebSocket(`ws://127.0.0.1:${chat.port}/ws/chat?name=${name}`);
  const inbox = [];
  ws.on('message', (data, isBinary) => inbox.push(isBinary ? Buffer.from(data) : JSON.parse(data)));
  await new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('error', reject);
  });
  return { ws, inbox };
}

const placeholder = (num) => ({ _placeholder: true, num });

for (const transport of ['polling', 'websocket']) {
  test(`${transport}: several arguments with a Buffer, acked with several arguments and a Buffer`, async () => {
    const socket = await connect('ada', transport);
    const [name, reversed] = await new Promise((resolve, reject) => {
      socket.timeout(5000).emit('reverse', 'a.bin', Buffer.from([1, 2, 3, 250]), (err, ...args) =>
        err ? reject(err) : resolve(args),
      );
    });
    assert.equal(name, 'a.bin');
    assert.ok(Buffer.isBuffer(reversed) || reversed instanceof ArrayBuffer, `bytes, not ${typeof reversed}`);
    assert.deepEqual([...new Uint8Array(reversed)], [250, 3, 2, 1]);
    // A binary-free call of the same handler: an array of numbers is bytes too.
    const [, plain] = await new Promise((resolve, reject) => {
      socket.timeout(5000).emit('reverse', 'b', [7, 8], (err, ...args) => (err ? reject(err) : resolve(args)));
    });
    assert.deepEqual([...new Uint8Array(plain)], [8, 7]);
    socket.disconnect();
  });

  test(`${transport}: a Buffer field read in place, broadcast to a room as several arguments`, async () => {
    const ada = await connect('ada', transport);
    const bob = await connect('bob', transport);
    for (const s of [ada, bob]) assert.equal(await s.timeout(5000).emitWithAck('join', { room: `files-${transport}` }), true);
    const received = [];
    bob.on('file', (...args) => received.push(args));
    const file = Buffer.from('hello, binary', 'utf8');
    const count = await ada.timeout(5000).emitWithAck('share', { room: `files-${transport}`, name: 'hello.txt', file });
    assert.equal(count, 2);
    await waitFor(() => received.length === 1);
    const [from, name, bytes] = received[0];
    assert.deepEqual([from, name], ['ada', 'hello.txt']);
    assert.equal(Buffer.from(bytes).toString('utf8'), 'hello, binary');
    ada.disconnect();
    bob.disconnect();
  });

  test(`${transport}: a request of the server's carries several arguments and a Buffer`, async () => {
    const socket = await connect('ada', transport);
    let binaryAnswer = false;
    socket.on('sign', (size, bytes, callback) => {
      const text = `${size}:${Buffer.from(bytes).toString('utf8')}`;
      callback(binaryAnswer ? Buffer.from(text) : text);
    });
    assert.deepEqual(await socket.timeout(5000).emitWithAck('countersign', 'abc'), { answer: '3:abc' });
    // An answer with a Buffer reaches the server as JSON (its placeholder), and the session
    // goes on.
    binaryAnswer = true;
    assert.deepEqual(await socket.timeout(5000).emitWithAck('countersign', 'de'), {
      answer: placeholder(0),
    });
    assert.ok(socket.connected);
    binaryAnswer = false;
    assert.deepEqual(await socket.timeout(5000).emitWithAck('countersign', 'f'), { answer: '1:f' });
    socket.disconnect();
  });
}

test('plain WebSocket: attachments are binary frames after the frame that counts them', async () => {
  const bob = await wsClient('bob');
  bob.ws.send(
    JSON.stringify({ event: 'reverse', data: ['a.bin', placeholder(0)], id: 1, attachments: 1 }),
  );
  bob.ws.send(Buffer.from([1, 2, 3]));
  await waitFor(() => bob.inbox.some((m) => m.event === 'ack' && m.id === 1));
  const acked = bob.inbox.findIndex((m) => m.event === 'ack' && m.id === 1);
  assert.deepEqual(bob.inbox[acked], {
    event: 'ack',
    id: 1,
    data: ['a.bin', placeholder(0)],
    attachments: 1,
  });
  await waitFor(() => bob.inbox.length > acked + 1);
  assert.deepEqual([...bob.inbox[acked + 1]], [3, 2, 1]);

  // A room with both transports: one share, each gets the file in its own terms.
  bob.ws.send(JSON.stringify({ event: 'join', data: { room: 'mixed' }, id: 2 }));
  const ada = await connect('ada', 'websocket');
  assert.equal(await ada.timeout(5000).emitWithAck('join', { room: 'mixed' }), true);
  await waitFor(() => bob.inbox.some((m) => m.event === 'ack' && m.id === 2));
  const heard = [];
  ada.on('file', (...args) => heard.push(args));
  bob.ws.send(
    JSON.stringify({
      event: 'share',
      data: { room: 'mixed', name: 'n.bin', file: placeholder(0) },
      id: 3,
      attachments: 1,
    }),
  );
  bob.ws.send(Buffer.from([9, 9]));
  await waitFor(() => heard.length === 1);
  assert.deepEqual(heard[0].slice(0, 2), ['bob', 'n.bin']);
  assert.deepEqual([...new Uint8Array(heard[0][2])], [9, 9]);
  await waitFor(() => bob.inbox.some((m) => m.event === 'file'));
  const at = bob.inbox.findIndex((m) => m.event === 'file');
  assert.deepEqual(bob.inbox[at], {
    event: 'file',
    data: ['bob', 'n.bin', placeholder(0)],
    attachments: 1,
  });
  await waitFor(() => bob.inbox.length > at + 1);
  assert.deepEqual([...bob.inbox[at + 1]], [9, 9]);

  // The server's request: answered with an ack frame carrying the request's id.
  bob.ws.send(JSON.stringify({ event: 'countersign', data: 'xy', id: 4 }));
  await waitFor(() => bob.inbox.some((m) => m.event === 'sign'));
  const sign = bob.inbox.findIndex((m) => m.event === 'sign');
  assert.deepEqual(bob.inbox[sign].data, [2, placeholder(0)]);
  assert.equal(bob.inbox[sign].attachments, 1);
  assert.equal(Buffer.from(bob.inbox[sign + 1]).toString('utf8'), 'xy');
  bob.ws.send(JSON.stringify({ event: 'ack', id: bob.inbox[sign].id, data: 'signed' }));
  await waitFor(() => bob.inbox.some((m) => m.event === 'ack' && m.id === 4));
  assert.deepEqual(bob.inbox.find((m) => m.event === 'ack' && m.id === 4).data, { answer: 'signed' });

  ada.disconnect();
  bob.ws.close();
});
