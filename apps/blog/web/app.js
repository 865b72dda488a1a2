// The blog's demo page: REST for accounts and entries, a live gateway connection (Socket.IO or
// plain WebSocket, switchable) for comments.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  token: localStorage.getItem('token'),
  user: JSON.parse(localStorage.getItem('user') || 'null'),
  transport: localStorage.getItem('transport') || 'socketio',
  live: null,
  entry: null,
  comments: new Map(),
};

function showError(message, where = 'error') {
  $(where).textContent = message || '';
}

async function api(method, path, body) {
  const headers = { 'content-type': 'application/json' };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  const res = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(data?.message || `HTTP ${res.status}`);
  return data;
}

// ---- live connection: one small interface over both transports ----

function connectSocketIo(token, onStatus) {
  const socket = io({ auth: { token } });
  socket.on('connect', () => onStatus(`live over Socket.IO (${socket.io.engine.transport.name})`, true));
  socket.io.engine?.on?.('upgrade', (t) => onStatus(`live over Socket.IO (${t.name})`, true));
  socket.on('disconnect', () => onStatus('offline', false));
  socket.on('connect_error', (err) => onStatus(`refused: ${err.message}`, false));
  return {
    kind: 'socketio',
    request: (event, data) => socket.timeout(5000).emitWithAck(event, data),
    send: (event, data) => socket.emit(event, data),
    on: (event, handler) => socket.on(event, handler),
    close: () => socket.disconnect(),
  };
}

function connectWebSocket(token, onStatus) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  const listeners = new Map();
  const pending = new Map();
  const queue = [];
  let nextId = 1;
  const deliver = (frame) => (ws.readyState === WebSocket.OPEN ? ws.send(frame) : queue.push(frame));
  ws.onopen = () => {
    onStatus('live over plain WebSocket', true);
    while (queue.length) ws.send(queue.shift());
  };
  ws.onclose = () => onStatus('offline', false);
  ws.onmessage = (message) => {
    const { event, id, data } = JSON.parse(message.data);
    if (id !== undefined && pending.has(id)) {
      const { resolve, reject } = pending.get(id);
      pending.delete(id);
      return event === 'exception' ? reject(new Error(data.message)) : resolve(data);
    }
    for (const handler of listeners.get(event) || []) handler(data);
  };
  return {
    kind: 'ws',
    request(event, data) {
      const id = nextId++;
      deliver(JSON.stringify({ event, data, id }));
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        setTimeout(() => pending.delete(id) && reject(new Error(`no answer to ${event}`)), 5000);
      });
    },
    send: (event, data) => deliver(JSON.stringify({ event, data })),
    on(event, handler) {
      listeners.set(event, [...(listeners.get(event) || []), handler]);
    },
    close: () => ws.close(),
  };
}

function connectLive() {
  state.live?.close();
  const onStatus = (text, live) => {
    $('status').textContent = text;
    $('status').classList.toggle('live', live);
    if (live && state.entry) subscribe(state.entry.id);
  };
  const connect = state.transport === 'ws' ? connectWebSocket : connectSocketIo;
  const live = connect(state.token, onStatus);
  live.on('indexComment', (comments) => {
    state.comments = new Map(comments.map((c) => [c.id, c]));
    renderComments();
  });
  live.on('commentCreated', upsertComment);
  live.on('commentUpdated', upsertComment);
  live.on('commentDeleted', ({ id }) => {
    state.comments.delete(id);
    renderComments();
  });
  live.on('exception', (e) => showError(e.message));
  state.live = live;
}

async function subscribe(entryId) {
  try {
    await state.live.request('subscribeEntry', { entryId });
    state.live.send('indexComment', { entryId });
  } catch (e) {
    showError(e.message);
  }
}

// ---- rendering ----

function upsertComment(comment) {
  if (!state.entry || comment.entryId !== state.entry.id) return;
  state.comments.set(comment.id, comment);
  renderComments();
}

function renderComments() {
  const list = $('comments');
  list.replaceChildren(
    ...[...state.comments.values()]
      .sort((a, b) => a.id - b.id)
      .map((c) => {
        const li = document.createElement('li');
        li.dataset.testid = 'comment';
        li.textContent = c.body;
        const meta = document.createElement('div');
        meta.className = 'meta';
        meta.textContent = `user ${c.userId} · ${new Date(c.createdAt).toLocaleString()}`;
        li.append(meta);
        return li;
      }),
  );
}

async function loadEntries() {
  const entries = await api('GET', '/entries?limit=50');
  $('entries').replaceChildren(
    ...entries.map((entry) => {
      const li = document.createElement('li');
      li.className = 'entry';
      li.dataset.testid = 'entry';
      li.textContent = entry.title;
      li.onclick = () => openEntry(entry);
      return li;
    }),
  );
}

async function openEntry(entry) {
  if (state.entry && state.entry.id !== entry.id) {
    state.live.send('unsubscribeEntry', { entryId: state.entry.id });
  }
  state.entry = entry;
  state.comments = new Map();
  $('entry').hidden = false;
  $('entry-title').textContent = entry.title;
  $('entry-content').textContent = entry.content;
  renderComments();
  await subscribe(entry.id);
}

function showApp() {
  const signedIn = Boolean(state.token);
  $('auth').hidden = signedIn;
  $('app').hidden = !signedIn;
  $('logout').hidden = !signedIn;
  if (signedIn) {
    connectLive();
    loadEntries().catch((e) => showError(e.message));
  }
}

// ---- forms ----

$('auth-form').onsubmit = async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const action = event.submitter?.value || 'login';
  const body = Object.fromEntries(form.entries());
  try {
    const { token, user } = await api('POST', `/auth/${action}`, action === 'login'
      ? { email: body.email, password: body.password }
      : body);
    state.token = token;
    state.user = user;
    localStorage.setItem('token', token);
    localStorage.setItem('user', JSON.stringify(user));
    showError('', 'auth-error');
    showApp();
  } catch (e) {
    showError(e.message, 'auth-error');
  }
};

$('entry-form').onsubmit = async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const entry = await api('POST', '/entries', Object.fromEntries(form.entries()));
    event.target.reset();
    await loadEntries();
    await openEntry(entry);
  } catch (e) {
    showError(e.message);
  }
};

$('comment-form').onsubmit = async (event) => {
  event.preventDefault();
  const body = new FormData(event.target).get('body');
  try {
    const comment = await state.live.request('createComment', { entryId: state.entry.id, body });
    upsertComment(comment);
    event.target.reset();
    showError('');
  } catch (e) {
    showError(e.message);
  }
};

$('transport').value = state.transport;
$('transport').onchange = (event) => {
  state.transport = event.target.value;
  localStorage.setItem('transport', state.transport);
  if (state.token) connectLive();
};

$('logout').onclick = () => {
  state.live?.close();
  localStorage.removeItem('token');
  localStorage.removeItem('user');
  Object.assign(state, { token: null, user: null, entry: null, live: null });
  $('entry').hidden = true;
  $('status').textContent = 'offline';
  showApp();
};

showApp();
