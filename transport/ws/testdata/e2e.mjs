// End-to-end run of web/msgnet.js against a real msgnet server, driven by
// TestJSClientEndToEnd (node_test.go). Usage: node e2e.mjs <ws url>
// It prints one line per step, which the Go test reads as they come, and
// exits 0 when every step passed. The WebSocket is Node's own or the ws
// package's (web/testdata/websocket.js; MSGNET_TEST_WEBSOCKET picks).
import assert from 'node:assert/strict';
import { Client, RemoteError, RequestError, value } from '../../../web/msgnet.js';
import { WebSocket, source } from '../../../web/testdata/websocket.js';

const url = process.argv[2];
const step = (s) => console.log(s);
setTimeout(() => {
  console.error('e2e: timed out');
  process.exit(2);
}, 25000).unref();

// until polls cond until it holds, or fails after ms.
async function until(what, cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

step(`WEBSOCKET ${source}`);
const c = new Client(url, { clientId: 'js_e2e', reconnect: { base: 20, max: 200 }, WebSocket });

// The server's requests (Session.Request in the Go test).
c.onrequest = (req) => {
  const q = req.text();
  if (q.startsWith('double ')) return String(2 * Number(q.slice(7)));
  if (q === 'async') return new Promise((resolve) => setTimeout(() => resolve(new Uint8Array([1, 2, 3])), 5));
  throw new Error(`js cannot answer ${JSON.stringify(q)}`);
};

// requests makes the client's requests, answered by the Go server's OnRequest.
async function requests() {
  assert.equal((await c.request('sum 2 3')).text(), '5');
  step('REQUEST_REPLY');
  await assert.rejects(c.request('fail'), (e) => e instanceof RemoteError && e.remoteMessage === 'no such question');
  step('REQUEST_REMOTE_ERROR');
  // The server answers "slow" only when the Go test has seen
  // REQUEST_TIMEOUT: the reply comes late, and is counted, not delivered.
  await assert.rejects(c.request('slow', { timeoutMs: 100 }), (e) => e instanceof RequestError && e.code === 'timeout');
  step('REQUEST_TIMEOUT');
  await until('the late reply', () => c.lateReplies === 1);
  assert.equal((await c.request('sum 1 1')).text(), '2', 'the late reply went to no other request');
  step('LATE_REPLY_COUNTED');
}

let phase = 'start';
const done = new Promise((resolve, reject) => {
  c.onmessage = async (m) => {
    try {
      if (phase === 'await_container') {
        const got = m.container();
        assert.equal(got.header.source_id, 'go_tcp');
        assert.equal(got.header.message_type, 'greeting');
        const v = Object.fromEntries(got.values.map((x) => [x.name, x.value]));
        assert.equal(v.max, 2n ** 64n - 1n);
        assert.equal(v.text, 'héllo from Go');
        assert.equal(v.f32, Math.fround(1.1));
        assert.deepEqual(v.blob, new Uint8Array([0, 255, 7]));
        step('CONTAINER_FROM_GO');
        phase = 'requests';
        c.sendContainer({
          header: { source_id: 'js_e2e', target_id: 'go_tcp', message_type: 'reply' },
          values: [
            value('big', 'int64', 9007199254740993n),
            value('f32', 'float32', 0.1),
            value('f64', 'float64', -0),
            value('raw', 'string', new Uint8Array([0xff, 0x61])),
            value('list', 'array', [value('', 'uint16', 7), value('', 'bool', true)]),
            value('nested', 'container', { values: [value('n', 'null')] }),
          ],
        });
        await requests();
        phase = 'await_kick';
        step('JS_REQUESTS_DONE'); // the Go test makes its requests, then kicks
      } else if (phase === 'await_bye') {
        assert.equal(m.text(), 'bye js');
        step('BYE');
        c.close('done');
        resolve();
      }
    } catch (e) {
      reject(e);
    }
  };
  c.onreconnect = async (w) => {
    try {
      step(`RECONNECTED ${w.session_id}`);
      // Request/reply on the new session too; its ids start again.
      assert.deepEqual(c.features, ['request']);
      assert.equal((await c.request('sum 20 22')).text(), '42');
      step('REQUEST_AFTER_RECONNECT');
      phase = 'await_bye';
      c.sendText('back again');
    } catch (e) {
      reject(e);
    }
  };
  c.onclose = (e) => {
    if (phase === 'await_kick') step(`CLOSED ${e.reason} ${e.willReconnect}`);
  };
});

const w = await c.connect();
step(`WELCOME ${w.session_id} ${w.server_id} features=${c.features.join(',')}`);
assert.deepEqual(w.features, ['request']);
const rtt = await c.ping();
assert.ok(rtt >= 0);
step('PING');
phase = 'await_container';
c.sendText('hello from js');
await done;
step('DONE');
