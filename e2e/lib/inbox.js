// What a `ws` client receives, as JSON messages taken in order.

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
