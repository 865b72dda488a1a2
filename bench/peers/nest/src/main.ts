// `JWT_SECRET=… PORT=3001 TRANSPORT=ws|socketio node dist/main.js`
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { WsAdapter } from '@nestjs/platform-ws';
import { EchoGateway, TRANSPORT } from './echo.gateway.js';

@Module({ providers: [EchoGateway] })
class AppModule {}

async function main(): Promise<void> {
  if (!process.env.JWT_SECRET) {
    console.error('JWT_SECRET must be set');
    process.exit(1);
  }
  const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
  if (TRANSPORT === 'ws') app.useWebSocketAdapter(new WsAdapter(app));
  const port = Number(process.env.PORT ?? 3001);
  await app.listen(port, '127.0.0.1');
  console.log(`nest echo (${TRANSPORT}) listening on http://127.0.0.1:${port}`);
}

main();
