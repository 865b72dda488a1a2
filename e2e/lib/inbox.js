// What a `ws` client receives, as JSON messages taken in order.

import assert from 'node:assert/strict';
import { api } from './server.js';
import { waitFor } from './wait.js';

/**
 * Collects the JSON messages of `ws` (a `ws` or browser-style WebSocket) from now on.
 * @returns {() => Promise<any>} the next message, or a rejection after `ms`
 */
export function jsonInbox(ws, ms = 5000) {
  const inbox = [];
  const waiters = [];
  ws.addEventListener('message', (event) => {
    const message = JSON.parse(event.data.toString());
    const waiter = waiters.shift();
    if (waiter) waiter(message);
    else inbox.push(message);
  });
  return () =>
    new Promise((resolve, reject) => {
      if (inbox.length) return resolve(inbox.shift());
      const timer = setTimeout(() => reject(new Error(`no message within ${ms / 1000} s`)), ms);
      waiters.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
}

/**
 * Posts a comment on entry `entryId` over the blog's REST API as the user of `token`, and
 * checks that it reached a Socket.IO client (`sioInbox`: its `commentCreated` payloads) and a
 * `ws` client (`wsInbox`: its JSON messages) once each, after a pause for a duplicate.
 * @returns the created comment
 */
export async function commentReachesBothOnce(url, { entryId, token, body }, sioInbox, wsInbox) {
  const created = await api(url, 'POST', `/entries/${entryId}/comments`, { token, body: { body } });
  assert.equal(created.status, 201);
  await waitFor(() => sioInbox.length >= 1 && wsInbox.some((m) => m.event === 'commentCreated'));
  // Give a duplicate the time to show up, then count.
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(sioInbox, [created.body]);
  assert.deepEqual(
    wsInbox.filter((m) => m.event === 'commentCreated'),
    [{ event: 'commentCreated', data: created.body }],
  );
  return created.body;
}
