// Type-checked with the DOM lib, never run: a browser's WebSocket and
// AbortSignal fit the client's options (see types-check.ts).
import { Client } from '@msgnet/client';

const c = new Client('wss://example.com/ws', { clientId: 'web_1', WebSocket });
new Client('wss://example.com/ws', { WebSocket: window.WebSocket });
const ctl = new AbortController();

export async function ask(): Promise<string> {
  await c.connect();
  const a = await c.request('q', { signal: ctl.signal });
  const b = await c.request('q', { signal: AbortSignal.timeout(1000) });
  return a.text() + b.text();
}
