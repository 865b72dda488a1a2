// The echo gateway, as a Nest.js user writes it: JWT checked at the handshake (the
// websockets chapter's way), one @SubscribeMessage handler returning a WsResponse. For the
// broadcast benchmark, `join` enters the room `broadcast` and `shout` emits `news` to it, as
// tools/echo-server does.
import type { IncomingMessage } from 'node:http';
import {
  ConnectedSocket,
  MessageBody,
  OnGatewayConnection,
  OnGatewayDisconnect,
  OnGatewayInit,
  SubscribeMessage,
  WebSocketGateway,
  WebSocketServer,
  WsResponse,
} from '@nestjs/websockets';
import jwt from 'jsonwebtoken';
import type { Server, Socket } from 'socket.io';
import type { WebSocket } from 'ws';

export const TRANSPORT = process.env.TRANSPORT === 'socketio' ? 'socketio' : 'ws';
const SECRET = process.env.JWT_SECRET ?? '';

/** The token's subject if it is valid (HS256 only, signature and exp checked), else null. */
function verify(token: unknown): string | null {
  if (typeof token !== 'string' || token === '') return null;
  try {
    const claims = jwt.verify(token, SECRET, { algorithms: ['HS256'] });
    return typeof claims === 'object' && typeof claims.sub === 'string' ? claims.sub : null;
  } catch {
    return null;
  }
}

@WebSocketGateway(TRANSPORT === 'ws' ? { path: '/ws' } : {})
export class EchoGateway implements OnGatewayInit, OnGatewayConnection, OnGatewayDisconnect {
  @WebSocketServer() server: unknown;
  /** Plain WebSocket has no rooms: the members of `broadcast`. */
  private readonly members = new Set<WebSocket>();

  afterInit(server: unknown): void {
    if (TRANSPORT !== 'socketio') return;
    // Socket.IO: refuse at the namespace connect, the client sees connect_error.
    (server as Server).use((socket: Socket, next) => {
      const user = verify(socket.handshake.auth?.token ?? socket.handshake.query?.auth_token);
      if (user === null) return next(new Error('Unauthorized'));
      socket.data.user = user;
      next();
    });
  }

  handleConnection(client: unknown, request?: IncomingMessage): void {
    if (TRANSPORT !== 'ws') return;
    // Plain WebSocket: the token from the query; a bad one closes the connection.
    const url = new URL(request?.url ?? '/', 'http://localhost');
    if (verify(url.searchParams.get('token')) === null) {
      (client as WebSocket).close(1008, 'Unauthorized');
    }
  }

  handleDisconnect(client: unknown): void {
    if (TRANSPORT === 'ws') this.members.delete(client as WebSocket);
  }

  @SubscribeMessage('join')
  join(@ConnectedSocket() client: unknown): WsResponse<boolean> {
    if (TRANSPORT === 'ws') this.members.add(client as WebSocket);
    else (client as Socket).join('broadcast');
    return { event: 'joined', data: true };
  }

  @SubscribeMessage('shout')
  shout(@MessageBody() data: unknown): void {
    if (TRANSPORT === 'socketio') {
      (this.server as Server).to('broadcast').emit('news', data);
      return;
    }
    const frame = JSON.stringify({ event: 'news', data });
    for (const member of this.members) member.send(frame);
  }

  @SubscribeMessage('echo')
  echo(@MessageBody() data: unknown): WsResponse<unknown> {
    return { event: 'echo', data };
  }
}
