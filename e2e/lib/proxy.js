// A TCP proxy a test controls: clients connect through it, and `cut()` drops every connection
// at once (both sides see their socket destroyed, as in a network failure) and refuses new ones
// until `restore()`; `retarget(port)` sends new connections elsewhere (a load balancer's
// failover).
import net from 'node:net';

/**
 * Starts a proxy on a free loopback port in front of `targetPort`.
 * @returns {Promise<{port: number, url: string, cut: () => void, restore: () => void, retarget: (port: number) => void, close: () => Promise<void>, connections: () => number}>}
 */
export async function startProxy(targetPort) {
  const open = new Set();
  let down = false;
  let target = targetPort;
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    open.add(client);
    open.add(upstream);
    const drop = () => {
      open.delete(client);
      open.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    cut() {
      down = true;
      // A reset, not a polite FIN: as a network failure looks to both ends.
      for (const socket of open) socket.resetAndDestroy?.() ?? socket.destroy();
      open.clear();
    },
    restore() {
      down = false;
    },
    /** New connections go to `port` from now on (a load balancer failing over). */
    retarget(port) {
      target = port;
    },
    connections: () => open.size,
    async close() {
      down = true;
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
