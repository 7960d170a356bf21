// End-to-end run of web/msgnet.js against a real msgnet server, driven by
// TestJSClientEndToEnd (node_test.go). Usage: node e2e.mjs <ws url>
// It prints one line per step and exits 0 when every step passed.
import assert from 'node:assert/strict';
import { Client, value } from '../../../web/msgnet.js';

const url = process.argv[2];
const step = (s) => console.log(s);
setTimeout(() => {
  console.error('e2e: timed out');
  process.exit(2);
}, 20000).unref();

const c = new Client(url, { clientId: 'js_e2e', reconnect: { base: 20, max: 200 } });
let phase = 'start';
const done = new Promise((resolve, reject) => {
  c.onmessage = (m) => {
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
        phase = 'await_kick';
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
  c.onreconnect = (w) => {
    step(`RECONNECTED ${w.session_id}`);
    phase = 'await_bye';
    c.sendText('back again');
  };
  c.onclose = (e) => {
    if (phase === 'await_kick') step(`CLOSED ${e.reason} ${e.willReconnect}`);
  };
});

const w = await c.connect();
step(`WELCOME ${w.session_id} ${w.server_id}`);
const rtt = await c.ping();
assert.ok(rtt >= 0);
step('PING');
phase = 'await_container';
c.sendText('hello from js');
await done;
step('DONE');
