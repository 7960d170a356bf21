// The WebSocket class that tests give the client in Node: Node's own when
// it has one (22 and newer, or 20 with --experimental-websocket), else the
// ws package's (a devDependency: npm ci in web/; msgnet.js itself never
// imports it). MSGNET_TEST_WEBSOCKET=global or =ws picks one, so that a
// Node with its own can test with ws too.
const want = process.env.MSGNET_TEST_WEBSOCKET ?? '';
if (!['', 'global', 'ws'].includes(want)) throw new Error(`MSGNET_TEST_WEBSOCKET=${want}: want global or ws`);

async function pick() {
  if (want !== 'ws' && typeof globalThis.WebSocket === 'function') return { WebSocket: globalThis.WebSocket, source: 'global' };
  if (want === 'global') throw new Error(`MSGNET_TEST_WEBSOCKET=global, but Node ${process.version} has no global WebSocket`);
  try {
    const ws = await import('ws');
    return { WebSocket: ws.WebSocket ?? ws.default, source: 'ws' };
  } catch (e) {
    throw new Error(`Node ${process.version} has no global WebSocket and the ws package is not installed (run npm ci in web/): ${e.message}`);
  }
}

/** WebSocket is the class to use; source says which: 'global' or 'ws'. */
export const { WebSocket, source } = await pick();
