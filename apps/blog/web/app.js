// The blog's demo page: REST for accounts and entries, a live gateway connection (Socket.IO or
// plain WebSocket, switchable) for comments and for who is reading and typing.
//
// Plain JavaScript, type-checked (`tsc -p apps/blog/web`, in scripts/test) against the types
// generated from the gateways (gateways.ts, `scripts/types`): an event the gateways do not
// serve, or data of the wrong shape, fails the check.
// @ts-check
'use strict';

/** @typedef {import('./gateways').ClientToServerEvents} ClientToServerEvents */
/** @typedef {import('./gateways').ServerToClientEvents} ServerToClientEvents */
/** @typedef {import('./gateways').Comment} BlogComment */
/** @typedef {import('./gateways').Entry} Entry */
/** @typedef {import('./gateways').User} User */
/** @typedef {import('./gateways').Reader} Reader */
/** @typedef {{ id: number, firstName: string, lastName: string }} Author */
/**
 * @template {keyof ClientToServerEvents} E
 * @typedef {import('./gateways').DataOf<ClientToServerEvents[E]>} DataOf
 */
/**
 * @template {keyof ClientToServerEvents} E
 * @typedef {import('./gateways').AckOf<ClientToServerEvents[E]>} AckOf
 */
/**
 * The live connection, over either transport, typed by the gateways' event maps.
 * @typedef {{
 *   kind: 'socketio' | 'ws',
 *   request: <E extends import('./gateways').AckEvents<ClientToServerEvents>>(event: E, data: DataOf<E>) => Promise<AckOf<E>>,
 *   send: <E extends keyof ClientToServerEvents>(event: E, data: DataOf<E>) => void,
 *   sendVolatile: <E extends keyof ClientToServerEvents>(event: E, data: DataOf<E>) => void,
 *   on: <E extends keyof ServerToClientEvents>(event: E, handler: (data: Parameters<ServerToClientEvents[E]>[0]) => void) => void,
 *   close: () => void,
 * }} Live
 */

const $ = (/** @type {string} */ id) => document.getElementById(id);
/** The element `id`, as the kind of element it is. @template T @param {string} id @param {new () => T} _kind @returns {T} */
const $as = (id, _kind) => /** @type {T} */ (/** @type {unknown} */ (document.getElementById(id)));
/**
 * @type {{
 *   token: string | null, user: User | null, transport: string, live: Live | null,
 *   entry: Entry | null, comments: Map<number, BlogComment>, authors: Map<number, Author>,
 *   reading: number | null, readers: Map<number, Reader> | null,
 *   typing: Map<number, { firstName: string, timer: ReturnType<typeof setTimeout> }>,
 * }}
 */
const state = {
  token: localStorage.getItem('token'),
  user: JSON.parse(localStorage.getItem('user') || 'null'),
  transport: localStorage.getItem('transport') || 'socketio',
  live: null,
  entry: null,
  comments: new Map(),
  authors: new Map(), // user id -> {id, firstName, lastName}: who wrote the open entry and its comments
  reading: null, // the entry the current connection is subscribed to (its subscribeEntry was acked)
  readers: null, // user id -> reader of the open entry; null until the server said who they are
  typing: new Map(), // user id -> who is typing in the open entry, until their timer runs out
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
  if (!res.ok) throw Object.assign(new Error(data?.message || `HTTP ${res.status}`), { status: res.status });
  return data;
}

// A failed call with an expired or unknown token sends the page back to the login form.
function handleError(e) {
  if (e.status === 401 && state.token) signOut(`${e.message} Log in again.`);
  else showError(e.message);
}

// ---- live connection: one small interface over both transports ----
//
// Both transports survive a network drop without losing comments: the server keeps a dropped
// connection's session for a while (connection state recovery) and, when the client comes back
// in time, restores its rooms and replays the events it missed. The page then only has to show
// what happened; it refetches the comments only when the session could not be recovered.
// Presence is another matter: who reads an entry is tracked per connection and ends with it, so
// every new connection, recovered or not, subscribes to the open entry again (which tracks the
// user as a reader anew) and asks who is reading.
//
// A transport reports through `report(state, text, { session })`:
//   state   - 'connected' | 'recovered' | 'reconnecting' | 'offline' (#status's data-state)
//   text    - what #status says
//   session - set when a connection (re)starts: 'recovered' (its rooms restored, the missed
//             events on their way) or 'new' (a fresh session, without the page's rooms: the
//             comments must be fetched again).

/** @returns {Live} */
function connectSocketIo(token, report) {
  // socket.io-client reconnects by itself and, with the pid and last offset it kept, asks the
  // server to recover the session (Socket.IO 4.6+ connection state recovery).
  /** @type {import('socket.io-client').Socket<ServerToClientEvents, ClientToServerEvents>} */
  const socket = io({ auth: { token } });
  let recovered = false;
  const text = () => {
    const transport = socket.io.engine?.transport?.name;
    return `live over Socket.IO (${transport})${recovered ? ' · recovered' : ''}`;
  };
  socket.on('connect', () => {
    // `recovered`: same id, rooms restored server-side, the missed events arrive right after
    // this by themselves. Otherwise (first connect or too late) it is a fresh session.
    recovered = socket.recovered;
    report(recovered ? 'recovered' : 'connected', text(), { session: recovered ? 'recovered' : 'new' });
  });
  // Each (re)connection opens a new engine, which may upgrade from long-polling to websocket.
  socket.io.on('open', () => {
    socket.io.engine.on('upgrade', () => {
      if (socket.connected) report(recovered ? 'recovered' : 'connected', text());
    });
  });
  socket.on('disconnect', (reason) => {
    // Only a goodbye (ours or the server's) is final; anything else is retried.
    const final = reason === 'io client disconnect' || reason === 'io server disconnect';
    report(final ? 'offline' : 'reconnecting', final ? 'offline' : 'reconnecting…');
  });
  socket.on('connect_error', (err) => {
    // `active`: a network failure, the client keeps trying; otherwise the server refused us
    // (e.g. a bad token) and it gives up.
    if (socket.active) report('reconnecting', 'reconnecting…');
    else report('offline', `refused: ${err.message}`);
  });
  // The maps type every call site (`Live`); socket.io-client's own generics cannot follow an
  // event name that is itself generic, hence the untyped view here.
  /** @type {any} */
  const untyped = socket;
  return {
    kind: 'socketio',
    // Emits while disconnected are buffered by socket.io-client and sent on reconnect.
    request: (event, data) => untyped.timeout(5000).emitWithAck(event, data),
    send: (event, data) => untyped.emit(event, data),
    // Dropped rather than buffered while disconnected: it would be stale when it got there.
    sendVolatile: (event, data) => untyped.volatile.emit(event, data),
    // Room events carry their offset as an extra last argument: handlers get the payload only.
    on: (event, handler) => untyped.on(event, (data) => handler(data)),
    // A goodbye: the server ends the session for good.
    close: () => socket.disconnect(),
  };
}

/** @returns {Live} */
function connectWebSocket(token, report) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const listeners = new Map();
  const pending = new Map(); // request id -> { resolve, reject }
  const queue = []; // frames waiting for an open connection: { id, frame }
  let nextId = 1;
  let ws = null;
  let session = null; // the server's session id, from its `session` frame
  let offset = null; // the offset of the last room event received in that session
  let up = false; // open and its session frame received: frames go out at once
  let closed = false; // closed on purpose: no reconnecting
  // Reconnect backoff: 250 ms doubling up to 5 s, each wait drawn from half to one and a half
  // times it (as socket.io-client's randomizationFactor 0.5), so that clients cut off together
  // do not all come back at the same instant.
  let delay = 250;
  let timer = null;

  const deliver = (id, frame) => (up ? ws.send(frame) : queue.push({ id, frame }));
  const flush = () => {
    while (queue.length) ws.send(queue.shift().frame);
  };

  function open() {
    // `session=new` asks for a recoverable session; `session=S&offset=O` asks to resume one.
    const params = new URLSearchParams({ token, session: session ?? 'new' });
    if (session !== null && offset !== null) params.set('offset', offset);
    const socket = new WebSocket(`${scheme}://${location.host}/ws?${params}`);
    ws = socket;
    socket.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.event === 'session') return onSession(frame.data);
      if (frame.offset !== undefined) offset = frame.offset;
      const { event, id, data } = frame;
      if (id !== undefined && pending.has(id)) {
        const { resolve, reject } = pending.get(id);
        pending.delete(id);
        return event === 'exception' ? reject(new Error(data.message)) : resolve(data);
      }
      for (const handler of listeners.get(event) || []) handler(data);
    };
    socket.onclose = () => {
      if (closed || socket !== ws) return;
      // A network drop or a server restart: the session stays recoverable for a while, so
      // come back with it (and the last offset) after a growing pause.
      up = false;
      report('reconnecting', 'reconnecting…');
      timer = setTimeout(open, delay * (0.5 + Math.random()));
      delay = Math.min(delay * 2, 5000);
    };
  }

  // The server's first frame on every connection.
  function onSession({ id, recovered }) {
    delay = 250;
    up = true;
    flush(); // what was asked while reconnecting, in order
    if (recovered && id === session) {
      // Rooms restored; the missed room events follow this frame, in order.
      report('recovered', 'live over plain WebSocket · recovered', { session: 'recovered' });
    } else {
      // A fresh session (first connection, or the old one expired): its offsets start anew and
      // the page must subscribe and fetch again.
      session = id;
      offset = null;
      report('connected', 'live over plain WebSocket', { session: 'new' });
    }
  }

  open();
  return {
    kind: 'ws',
    request(event, data) {
      const id = nextId++;
      deliver(id, JSON.stringify({ event, data, id }));
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        setTimeout(() => {
          if (!pending.delete(id)) return;
          // Given up on: don't send it later either.
          const queued = queue.findIndex((q) => q.id === id);
          if (queued >= 0) queue.splice(queued, 1);
          reject(new Error(`no answer to ${event}`));
        }, 5000);
      });
    },
    send: (event, data) => deliver(null, JSON.stringify({ event, data })),
    // Dropped rather than queued while disconnected: it would be stale when it got there.
    sendVolatile(event, data) {
      if (up) ws.send(JSON.stringify({ event, data }));
    },
    on(event, handler) {
      listeners.set(event, [...(listeners.get(event) || []), handler]);
    },
    // Code 1000 is a goodbye: the server ends the session for good.
    close() {
      closed = true;
      clearTimeout(timer);
      ws.close(1000);
    },
  };
}

let generation = 0; // which connectLive() call is current: reports of replaced ones are ignored

function setStatus(state, text) {
  $('status').textContent = text;
  $('status').dataset.state = state;
  $('status').classList.toggle('live', state === 'connected' || state === 'recovered');
}

function connectLive() {
  state.live?.close();
  state.reading = null; // until the new connection has subscribed
  const current = ++generation;
  const report = (status, text, { session = null } = {}) => {
    if (current !== generation) return;
    setStatus(status, text);
    // Off the line: the next connection is not subscribed until it says so.
    if (status === 'reconnecting' || status === 'offline') state.reading = null;
    if (session && state.entry) subscribe(state.entry.id, { comments: session === 'new' });
  };
  setStatus('offline', 'connecting…');
  const connect = state.transport === 'ws' ? connectWebSocket : connectSocketIo;
  const live = connect(state.token, report);
  live.on('indexComment', (comments) => {
    state.comments = new Map(comments.map((c) => [c.id, c]));
    renderComments();
  });
  live.on('commentCreated', (comment) => {
    // Their comment is what they were typing.
    if (comment.entryId === state.entry?.id) stopTyping(comment.userId);
    upsertComment(comment);
  });
  live.on('commentUpdated', (comment) => upsertComment(comment));
  live.on('commentDeleted', ({ id }) => {
    state.comments.delete(id);
    renderComments();
  });
  live.on('presenceEntry', ({ entryId, readers }) => {
    if (entryId !== state.entry?.id) return;
    state.readers = new Map(readers.map((r) => [r.userId, r]));
    renderReaders();
  });
  live.on('presenceDiff', ({ entryId, joins, leaves }) => {
    // Diffs before the first presenceEntry answer are in that answer already.
    if (entryId !== state.entry?.id || !state.readers) return;
    // A diff never has one reader both joining and leaving.
    for (const r of joins) state.readers.set(r.userId, r);
    for (const r of leaves) {
      state.readers.delete(r.userId);
      stopTyping(r.userId);
    }
    renderReaders();
  });
  live.on('typing', ({ entryId, userId, firstName }) => {
    // The server skips only the typist's connection: their other tabs hear it too.
    if (entryId !== state.entry?.id || userId === state.user?.id) return;
    showTyping(userId, firstName);
  });
  live.on('exception', (e) => showError(e.message));
  state.live = live;
}

// Subscribes the current connection to the entry's room (which also tracks the user as one of
// its readers), asks who reads it, and, unless the room's events were kept for it (a recovered
// session), fetches its comments.
async function subscribe(entryId, { comments = true } = {}) {
  const live = state.live;
  try {
    await live.request('subscribeEntry', { entryId });
    if (live !== state.live || state.entry?.id !== entryId) return; // replaced meanwhile
    state.reading = entryId;
    live.send('presenceEntry', { entryId });
    if (comments) live.send('indexComment', { entryId });
  } catch (e) {
    showError(e.message);
  }
}

// ---- names ----
//
// Entries and comments carry a `userId`; GET /entries/{id}/authors gives the names of who wrote
// the entry and its comments (never their e-mail addresses). A comment from someone new (it
// arrived live) asks again, once per entry and author.

let authorsAsked = new Set(); // `${entryId}:${userId}` asked for since the entry was opened

async function loadAuthors(entryId) {
  const authors = await api('GET', `/entries/${entryId}/authors`);
  for (const author of authors) state.authors.set(author.id, author);
  if (state.entry?.id === entryId) {
    renderByline();
    renderComments();
  }
}

function nameOf(userId) {
  if (state.user?.id === userId) return `${state.user.firstName} ${state.user.lastName} (you)`;
  const author = state.authors.get(userId);
  return author ? `${author.firstName} ${author.lastName}` : '…';
}

// Comments by someone the page has no name for yet (written after the names were loaded).
function askForMissingAuthors() {
  const entry = state.entry;
  if (!entry) return;
  const missing = [...state.comments.values()]
    .map((c) => c.userId)
    .filter((id) => id !== state.user?.id && !state.authors.has(id) && !authorsAsked.has(`${entry.id}:${id}`));
  if (!missing.length) return;
  for (const id of missing) authorsAsked.add(`${entry.id}:${id}`);
  loadAuthors(entry.id).catch(handleError);
}

function renderWhoami() {
  const user = state.user;
  $('whoami').hidden = !user;
  $('whoami').textContent = user ? `Signed in as ${user.firstName} ${user.lastName}` : '';
  if (user) $('whoami').title = user.email;
}

// The signed-in user: kept from the login, or (a token set by hand) asked for by the id the
// token names.
async function loadMe() {
  if (state.user) return renderWhoami();
  const payload = state.token.split('.')[1] ?? '';
  const { sub } = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/')));
  state.user = await api('GET', `/users/${sub}`);
  localStorage.setItem('user', JSON.stringify(state.user));
  renderWhoami();
}

// ---- who is reading, who is typing ----
//
// "Reading now" lists the open entry's readers by first name, the user included and marked
// "(you)": the server's list (presenceEntry, asked on every subscription) kept up to date by its
// presenceDiff events. "… is typing…" shows a reader for TYPING_SHOWN_MS after their last
// `typing`, and goes at once when their comment arrives or they leave. While the user types,
// the page sends `typing` at most every TYPING_EVERY_MS, and only on a connection subscribed to
// the entry (the server refuses it otherwise).

const TYPING_SHOWN_MS = 3000;
const TYPING_EVERY_MS = 2000;
let typingSentAt = 0; // when the page last sent `typing` (0: the next keystroke sends it)

/** Names joined for a sentence: "Ada", "Ada and Grace", "Ada, Grace and Linus". */
function listOf(/** @type {string[]} */ names) {
  return names.length < 2 ? names.join('') : `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
}

const byName = (/** @type {{ firstName: string, userId: number }} */ a, /** @type {typeof a} */ b) =>
  a.firstName.localeCompare(b.firstName) || a.userId - b.userId;

function renderReaders() {
  const readers = state.readers;
  $('readers').hidden = !readers;
  if (!readers) return;
  const names = [...readers.values()]
    .sort(byName)
    .map((r) => (r.userId === state.user?.id ? `${r.firstName} (you)` : r.firstName));
  $('readers').textContent = `Reading now: ${names.join(', ')}`;
}

function renderTyping() {
  const typists = [...state.typing].map(([userId, { firstName }]) => ({ userId, firstName })).sort(byName);
  const names = listOf(typists.map((t) => t.firstName));
  $('typing').textContent = typists.length ? `${names} ${typists.length > 1 ? 'are' : 'is'} typing…` : '';
}

function showTyping(userId, firstName) {
  clearTimeout(state.typing.get(userId)?.timer);
  const timer = setTimeout(() => stopTyping(userId), TYPING_SHOWN_MS);
  state.typing.set(userId, { firstName, timer });
  renderTyping();
}

function stopTyping(userId) {
  const typist = state.typing.get(userId);
  if (!typist) return;
  clearTimeout(typist.timer);
  state.typing.delete(userId);
  renderTyping();
}

/** Nobody is reading or typing as far as the page knows (another entry, or signed out). */
function forgetPresence() {
  for (const { timer } of state.typing.values()) clearTimeout(timer);
  state.typing = new Map();
  state.readers = null;
  state.reading = null;
  typingSentAt = 0;
  renderReaders();
  renderTyping();
}

// The user types a comment: the other readers learn of it, at most every TYPING_EVERY_MS.
function typed() {
  const entryId = state.entry?.id;
  if (entryId === undefined || state.reading !== entryId) return;
  if (!$as('comment-body', HTMLTextAreaElement).value.trim()) return; // emptied: not writing
  if (Date.now() - typingSentAt < TYPING_EVERY_MS) return;
  typingSentAt = Date.now();
  state.live.sendVolatile('typing', { entryId });
}

// ---- rendering ----

function renderByline() {
  const entry = state.entry;
  $('entry-byline').textContent = entry
    ? `by ${nameOf(entry.userId)} · ${new Date(entry.createdAt).toLocaleString()}`
    : '';
}

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
        meta.textContent = `${nameOf(c.userId)} · ${new Date(c.createdAt).toLocaleString()}`;
        li.append(meta);
        return li;
      }),
  );
  askForMissingAuthors();
}

async function loadEntries() {
  const entries = await api('GET', '/entries?limit=50');
  $('entries').replaceChildren(
    ...entries.map((entry) => {
      const li = document.createElement('li');
      li.className = 'entry';
      li.dataset.testid = 'entry';
      li.textContent = entry.title;
      li.dataset.id = entry.id;
      li.classList.toggle('open', state.entry?.id === entry.id);
      li.onclick = () => openEntry(entry).catch(handleError);
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
  forgetPresence();
  authorsAsked = new Set([`${entry.id}:${entry.userId}`]); // asked for below
  for (const li of $('entries').querySelectorAll('li')) li.classList.toggle('open', Number(li.dataset.id) === entry.id);
  $('pick').hidden = true;
  $('entry').hidden = false;
  $('entry-title').textContent = entry.title;
  $('entry-content').textContent = entry.content;
  renderByline();
  renderComments();
  // The names first, so that the comments arrive with them.
  await loadAuthors(entry.id).catch(handleError);
  await subscribe(entry.id);
}

function showApp() {
  const signedIn = Boolean(state.token);
  $('auth').hidden = signedIn;
  $('app').hidden = !signedIn;
  $('logout').hidden = !signedIn;
  renderWhoami();
  if (signedIn) {
    connectLive();
    loadMe().catch(handleError);
    loadEntries().catch(handleError);
  }
}

// ---- forms ----

$('auth-form').onsubmit = async (event) => {
  event.preventDefault();
  const form = new FormData($as('auth-form', HTMLFormElement));
  const submitter = /** @type {HTMLButtonElement | null} */ (event.submitter);
  const action = submitter?.value || 'login';
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
  const formElement = $as('entry-form', HTMLFormElement);
  const form = new FormData(formElement);
  try {
    const entry = await api('POST', '/entries', Object.fromEntries(form.entries()));
    formElement.reset();
    await loadEntries();
    await openEntry(entry);
  } catch (e) {
    handleError(e);
  }
};

$('comment-form').onsubmit = async (event) => {
  event.preventDefault();
  const formElement = $as('comment-form', HTMLFormElement);
  const body = String(new FormData(formElement).get('body') ?? '');
  try {
    const comment = await state.live.request('createComment', { entryId: state.entry.id, body });
    upsertComment(comment);
    formElement.reset();
    typingSentAt = 0; // the next comment's first keystroke tells the others at once
    showError('');
  } catch (e) {
    showError(e.message);
  }
};

$('comment-form').oninput = typed;

const transportSelect = $as('transport', HTMLSelectElement);
transportSelect.value = state.transport;
transportSelect.onchange = () => {
  state.transport = transportSelect.value;
  localStorage.setItem('transport', state.transport);
  if (state.token) connectLive();
};

// Back to the login form, with `message` there (why, when it was not the user's choice).
function signOut(message = '') {
  state.live?.close();
  localStorage.removeItem('token');
  localStorage.removeItem('user');
  generation += 1; // nothing more from the closed connection
  Object.assign(state, { token: null, user: null, entry: null, live: null, authors: new Map() });
  forgetPresence();
  $('entry').hidden = true;
  $('pick').hidden = false;
  setStatus('offline', 'offline');
  showError('');
  showError(message, 'auth-error');
  showApp();
}

$('logout').onclick = () => signOut();

showApp();
