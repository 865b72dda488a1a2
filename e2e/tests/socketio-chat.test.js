// A gateway on a namespace (`/chat`), served over Socket.IO and plain WebSocket at once: the
// `chat` example of wsgate-socketio, driven by the real socket.io-client and ws.
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

function connect(path, options = {}) {
  return io(chat.url + path, { reconnection: false, forceNew: true, ...options });
}

async function wsClient(path) {
  const ws = new WebSocket(`ws://127.0.0.1:${chat.port}${path}`);
  const inbox = [];
  ws.on('message', (data) => inbox.push(JSON.parse(data)));
  await new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('error', reject);
  });
  return { ws, inbox };
}

test('a namespaced gateway greets on connect (on_connect hook)', async () => {
  const socket = connect('/chat', { auth: { name: 'ada' } });
  assert.equal(await once(socket, 'welcome'), 'Hello, ada!');
  socket.disconnect();
});

test('its middleware refuses, and unknown namespaces are refused', async () => {
  const nameless = connect('/chat');
  assert.equal((await once(nameless, 'connect_error')).message, 'A name is required.');
  nameless.close();
  const lost = connect('/nowhere', { auth: { name: 'ada' } });
  assert.equal((await once(lost, 'connect_error')).message, 'Invalid namespace');
  lost.close();
  // The root namespace has no gateway in this server either.
  const root = connect('/', { auth: { name: 'ada' } });
  assert.equal((await once(root, 'connect_error')).message, 'Invalid namespace');
  root.close();
});

test('a room spans both transports: one say, one said each', async () => {
  const ada = connect('/chat', { auth: { name: 'ada' } });
  await once(ada, 'connect');
  assert.equal(await ada.timeout(5000).emitWithAck('join', { room: 'lobby' }), true);
  const bob = await wsClient('/ws/chat?name=bob');
  bob.ws.send(JSON.stringify({ event: 'join', data: { room: 'lobby' }, id: 1 }));
  await waitFor(() => bob.inbox.some((m) => m.event === 'ack' && m.id === 1));

  const heard = [];
  ada.on('said', (m) => heard.push(m));
  ada.emit('say', { room: 'lobby', text: 'hi' });
  await waitFor(() => heard.length === 1 && bob.inbox.some((m) => m.event === 'said'));
  bob.ws.send(JSON.stringify({ event: 'say', data: { room: 'lobby', text: 'hello' } }));
  await waitFor(() => heard.length === 2);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(heard, [
    { from: 'ada', text: 'hi' },
    { from: 'bob', text: 'hello' },
  ]);
  assert.deepEqual(
    bob.inbox.filter((m) => m.event === 'said').map((m) => m.data),
    [
      { from: 'ada', text: 'hi' },
      { from: 'bob', text: 'hello' },
    ],
  );

  ada.emit('say', { room: 'lobby', text: '' });
  const exception = await once(ada, 'exception');
  assert.deepEqual(exception, {
    status: 'error',
    message: 'Nothing to say.',
    cause: { pattern: 'say', data: { room: 'lobby', text: '' } },
  });
  ada.disconnect();
  bob.ws.close();
});

test('binary attachments reach the handler as bytes', async () => {
  const socket = connect('/chat', { auth: { name: 'ada' } });
  await once(socket, 'connect');
  const reply = await socket
    .timeout(5000)
    .emitWithAck('upload', { name: 'photos', first: Buffer.from([1, 2, 3]), second: Buffer.alloc(10) });
  assert.deepEqual(reply, { name: 'photos', sizes: [3, 10] });
  socket.disconnect();
});

test('a disconnect runs the on_disconnect hook', async () => {
  const ada = connect('/chat', { auth: { name: 'ada' } });
  await once(ada, 'connect');
  const cy = connect('/chat', { auth: { name: 'cy' } });
  await once(cy, 'connect');
  const left = once(ada, 'left');
  cy.disconnect();
  assert.equal(await left, 'cy');
  ada.disconnect();
});

test('pattern namespaces: every /topic-<n> is one of its own, over both transports', async () => {
  const ada = connect('/topic-7', { auth: { name: 'ada' } });
  await once(ada, 'connect');
  assert.equal(await ada.timeout(5000).emitWithAck('enter', null), '/topic-7');
  const bob = await wsClient('/ws/topic-7?name=bob');
  bob.ws.send(JSON.stringify({ event: 'enter', id: 1 }));
  await waitFor(() => bob.inbox.some((m) => m.event === 'ack' && m.id === 1));
  assert.equal(bob.inbox.find((m) => m.id === 1).data, '/topic-7');
  const eve = connect('/topic-8', { auth: { name: 'eve' } });
  await once(eve, 'connect');
  assert.equal(await eve.timeout(5000).emitWithAck('enter', null), '/topic-8');
  const eveHeard = [];
  eve.on('said', (m) => eveHeard.push(m));

  const heard = once(ada, 'said');
  bob.ws.send(JSON.stringify({ event: 'say', data: 'hello, seven' }));
  assert.deepEqual(await heard, { from: 'bob', text: 'hello, seven', topic: '/topic-7' });
  await waitFor(() => bob.inbox.some((m) => m.event === 'said'));
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(eveHeard, [], 'another topic hears nothing');

  // A name the pattern does not match is no namespace.
  const lost = connect('/topic-x', { auth: { name: 'ada' } });
  assert.equal((await once(lost, 'connect_error')).message, 'Invalid namespace');
  for (const s of [ada, eve, lost]) s.close();
  bob.ws.close();
});

test('acks from the server: one connection asked, a room asked, over both transports', async () => {
  const ada = connect('/chat', { auth: { name: 'ada' } });
  await once(ada, 'connect');
  ada.on('question', (q, answer) => answer(q === '6 × 7?' ? 42 : 'eh?'));
  ada.on('vote', (q, answer) => answer('tea'));
  const bob = await wsClient('/ws/chat?name=bob');
  // Plain WebSocket: an event frame with an id asks; {"event":"ack","id":…} answers.
  bob.ws.on('message', (raw) => {
    const m = JSON.parse(raw);
    if (m.event === 'question' && m.id !== undefined) bob.ws.send(JSON.stringify({ event: 'ack', id: m.id, data: 'forty-two' }));
    if (m.event === 'vote' && m.id !== undefined) bob.ws.send(JSON.stringify({ event: 'ack', id: m.id, data: 'coffee' }));
  });
  const eve = connect('/chat', { auth: { name: 'eve' } }); // never answers
  await once(eve, 'connect');

  assert.deepEqual(await ada.timeout(5000).emitWithAck('quiz', '6 × 7?'), { answer: 42 });
  bob.ws.send(JSON.stringify({ event: 'quiz', data: '6 × 7?', id: 'q' }));
  await waitFor(() => bob.inbox.some((m) => m.event === 'ack' && m.id === 'q'));
  assert.deepEqual(bob.inbox.find((m) => m.id === 'q').data, { answer: 'forty-two' });
  assert.deepEqual(await eve.timeout(5000).emitWithAck('quiz', 'anyone?'), { error: 'no answer within the time given' });

  for (const s of [ada, eve]) assert.equal(await s.timeout(5000).emitWithAck('join', { room: 'poll' }), true);
  bob.ws.send(JSON.stringify({ event: 'join', data: { room: 'poll' }, id: 'j' }));
  await waitFor(() => bob.inbox.some((m) => m.id === 'j'));
  const ids = {
    ada: await ada.timeout(5000).emitWithAck('whoami', null),
    eve: await eve.timeout(5000).emitWithAck('whoami', null),
  };
  bob.ws.send(JSON.stringify({ event: 'whoami', id: 'w' }));
  await waitFor(() => bob.inbox.some((m) => m.id === 'w'));
  ids.bob = bob.inbox.find((m) => m.id === 'w').data;
  // Eve polls: Ada (Socket.IO) and Bob (plain WebSocket) answer; Eve is not asked.
  const answers = await eve.timeout(5000).emitWithAck('poll', { room: 'poll' });
  assert.deepEqual(answers, { [ids.ada]: 'tea', [ids.bob]: 'coffee' });
  // Ada polls: Eve stays silent and times out, Bob answers.
  const second = await ada.timeout(5000).emitWithAck('poll', { room: 'poll' });
  assert.deepEqual(second, { [ids.eve]: { error: 'no answer within the time given' }, [ids.bob]: 'coffee' });
  for (const s of [ada, eve]) s.close();
  bob.ws.close();
});

test('a gateway on a port of its own: both transports there, not on the main port, one server handle', async () => {
  let lobbyPort;
  await waitFor(() => {
    const match = /lobby on http:\/\/[\d.]+:(\d+)/.exec(chat.logs.join(''));
    lobbyPort = match && Number(match[1]);
    return lobbyPort;
  });
  assert.notEqual(lobbyPort, chat.port);
  const lobbyUrl = `http://127.0.0.1:${lobbyPort}`;

  // The lobby is served on its port only, and /chat on the main port only.
  const misplaced = io(`${chat.url}/lobby`, { auth: { name: 'ada' }, reconnection: false, forceNew: true });
  assert.equal((await once(misplaced, 'connect_error')).message, 'Invalid namespace');
  const wrongPort = io(`${lobbyUrl}/chat`, { auth: { name: 'ada' }, reconnection: false, forceNew: true });
  assert.equal((await once(wrongPort, 'connect_error')).message, 'Invalid namespace');

  // A chat member on the main port hears an announcement made in the lobby, over either transport.
  const listener = connect('/chat', { auth: { name: 'bob' } });
  await once(listener, 'connect');
  const heard = once(listener, 'announcement');
  const host = io(`${lobbyUrl}/lobby`, { auth: { name: 'ada' }, reconnection: false, forceNew: true });
  await once(host, 'connect');
  assert.equal(await host.timeout(5000).emitWithAck('announce', 'tea at five'), true);
  assert.deepEqual(await heard, { from: 'ada', text: 'tea at five' });

  const ws = new WebSocket(`ws://127.0.0.1:${lobbyPort}/ws/lobby?name=eve`);
  const frames = [];
  ws.on('message', (raw) => frames.push(JSON.parse(raw)));
  await once(ws, 'open');
  const again = once(listener, 'announcement');
  ws.send(JSON.stringify({ event: 'announce', data: 'and scones', id: 1 }));
  assert.deepEqual(await again, { from: 'eve', text: 'and scones' });
  await waitFor(() => frames.some((f) => f.event === 'ack' && f.id === 1 && f.data === true));
  for (const s of [misplaced, wrongPort, listener, host]) s.close();
  ws.close();
});
