// Acknowledged delivery of web/msgnet.js against a real msgnet server,
// driven by the tests in node_reliable_test.go.
// Usage: node reliable.mjs <mode> <ws url> [arguments of the mode]
// It prints one line per step, which the Go test reads as they come, and
// exits 0 when every step passed. Modes:
//   cuts N            subscribes to group:room and publishes N messages to
//                     it while the Go test cuts the connection again and
//                     again; each must arrive once, in order
//   lost FILE         subscribes to group:news; the Go test keeps it away
//                     while more than retention is published; then blocks
//                     in onstream (without acknowledging) until FILE exists
//   refused           a publish and a subscription the server refuses, and
//                     a publish the store fails once (store_unavailable)
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Client, StreamError, groupStream } from '../../../web/msgnet.js';
import { WebSocket, source } from '../../../web/testdata/websocket.js';

const [mode, url, arg] = process.argv.slice(2);
const step = (s) => console.log(s);
setTimeout(() => {
  console.error(`reliable ${mode}: timed out`);
  process.exit(2);
}, 14000).unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// until polls cond until it holds, or fails after ms.
async function until(what, cond, ms = 10000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// client is a reliable client that records what it is told.
function client(clientId) {
  const c = new Client(url, { clientId, reliable: true, reconnect: { base: 5, max: 50 }, WebSocket, heartbeat: 0 });
  const rec = { got: [], lost: [], failed: [], errors: [], closes: [], reconnects: 0 };
  c.onstream = (m) => rec.got.push(m);
  c.oncontinuitylost = (l) => rec.lost.push(l);
  c.onpublishfailed = (f) => rec.failed.push(f);
  c.onerror = (e) => rec.errors.push(e.code);
  c.onclose = (e) => rec.closes.push(e);
  c.onreconnect = () => rec.reconnects++;
  return { c, rec };
}

const texts = (msgs) => msgs.map((m) => m.text());
const range = (from, to, prefix = 'm-') => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

step(`WEBSOCKET ${source}`);

switch (mode) {
  case 'cuts': {
    const n = Number(arg);
    const { c, rec } = client('js_cuts');
    await c.connect();
    const room = groupStream('room');
    await c.subscribe(room);
    step('SUBSCRIBED');
    const stored = [];
    for (let i = 1; i <= n; i++) {
      for (;;) {
        try {
          stored.push(c.publish(room, `m-${i}`));
          break;
        } catch (e) {
          if (!(e instanceof StreamError && e.code === 'buffer_full')) throw e;
          await sleep(1); // acknowledgements make room
        }
      }
      if (i % 10 === 0) await sleep(3); // long enough to be cut many times
    }
    await Promise.all(stored); // rejects on any failure
    await c.waitPublished({ timeoutMs: 10000 });
    assert.equal(c.pending, 0);
    step('PUBLISHED');
    await until(`${n} messages`, () => rec.got.length >= n);
    assert.deepEqual(texts(rec.got), range(1, n), 'each message once, in order');
    const offsets = rec.got.map((m) => m.offset);
    offsets.forEach((o, i) => assert.equal(o, offsets[0] + i, 'offsets contiguous'));
    assert.ok(rec.got.every((m) => m.epoch === rec.got[0].epoch && /^\d+$/.test(m.epoch)));
    assert.deepEqual(rec.lost, []);
    assert.deepEqual(rec.failed, []);
    step(`RECEIVED ${rec.got.length} reconnects=${rec.reconnects} replayed=${rec.got.filter((m) => m.replayed).length}`);
    c.close('done');
    break;
  }

  case 'lost': {
    const { c, rec } = client('js_lost');
    const news = groupStream('news');
    await c.connect();
    const first = await c.subscribe(news);
    step('SUBSCRIBED');
    await until('m-1 to m-10', () => rec.got.length === 10);
    assert.deepEqual(texts(rec.got), range(1, 10));
    step('GOT 10'); // the Go test keeps this client away while m-11 to m-80 are published

    // Back: the server kept only the last 50, so m-11 to m-30 are lost.
    await until('the continuity-lost event', () => rec.lost.length === 1);
    assert.deepEqual(rec.lost[0], {
      stream: news, missed: 11, next: 31, epoch: first.epoch,
      reason: 'the messages after its position have left retention',
    });
    await until('m-31 to m-80', () => rec.got.length === 60);
    assert.deepEqual(texts(rec.got.slice(10)), range(31, 80), 'delivery goes on from the oldest retained');
    assert.ok(rec.got.slice(10).every((m) => m.replayed && m.epoch === first.epoch), 'replayed from the stream');
    assert.equal(rec.reconnects, 1);
    step('RESUMED lost=11..30');

    // A live subscription that falls behind: onstream blocks (so nothing
    // is read or acknowledged) until the Go test has published past the
    // server's window and retention; the server then says what was lost.
    const block = new Int32Array(new SharedArrayBuffer(4));
    let blocked = false;
    c.onstream = (m) => {
      rec.got.push(m);
      if (!blocked) {
        blocked = true;
        step('BLOCKED');
        const end = Date.now() + 10000;
        while (!existsSync(arg)) {
          if (Date.now() > end) throw new Error(`${arg} did not appear`);
          Atomics.wait(block, 0, 0, 5); // sleeps, the event loop with it
        }
      }
    };
    await until('the last message', () => rec.got.at(-1)?.text() === 'm-1300');
    assert.equal(rec.lost.length, 2, 'one more continuity-lost event');
    const lost = rec.lost[1];
    const live = rec.got.slice(60);
    const gap = live.findIndex((m, i) => i > 0 && m.offset !== live[i - 1].offset + 1);
    assert.ok(gap > 0, 'a gap in the offsets');
    assert.equal(lost.missed, live[gap - 1].offset + 1, 'missed: the first offset not delivered');
    assert.equal(lost.next, live[gap].offset, 'next: where delivery went on');
    assert.equal(lost.epoch, first.epoch);
    assert.match(lost.reason, /left retention/);
    live.forEach((m, i) => {
      if (i > 0 && i !== gap) assert.equal(m.offset, live[i - 1].offset + 1, 'contiguous but for the gap');
    });
    // m-k is the stream's offset k.
    assert.deepEqual(texts(live), [...range(81, lost.missed - 1), ...range(lost.next, 1300)]);
    step(`LIVE_LOST missed=${lost.missed} next=${lost.next}`);
    c.close('done');
    break;
  }

  case 'refused': {
    const { c, rec } = client('js_refused');
    await c.connect();
    const s = groupStream('s');
    await c.subscribe(s);

    // A stream name the server refuses: the promise rejects, for good.
    await assert.rejects(c.publish('nope', 'x'), (e) => e instanceof StreamError && e.code === 'refused' && e.remoteCode === 'bad_stream' && e.stream === 'nope');
    assert.equal(rec.failed.length, 1);
    assert.equal(rec.failed[0].error.code, 'refused');
    assert.equal(new TextDecoder().decode(rec.failed[0].payload), 'x');
    step('PUBLISH_REFUSED');
    await assert.rejects(c.subscribe('client:someone-else'), (e) => e instanceof StreamError && e.code === 'refused' && e.remoteCode === 'bad_stream');
    step('SUBSCRIBE_REFUSED');

    // The store fails "boom" once: the server ends the session with
    // store_unavailable; the client reconnects and sends it again, with
    // what followed it, and nothing fails.
    await Promise.all([c.publish(s, 'a'), c.publish(s, 'boom'), c.publish(s, 'after')]);
    assert.deepEqual(rec.errors, ['store_unavailable']);
    assert.equal(rec.closes.length, 1);
    assert.equal(rec.closes[0].willReconnect, true);
    assert.match(rec.closes[0].reason, /store_unavailable/);
    assert.equal(rec.reconnects, 1);
    await c.publish(s, 'end'); // a repeat of what came before would come before it
    await until('four messages', () => rec.got.at(-1)?.text() === 'end');
    assert.deepEqual(texts(rec.got), ['a', 'boom', 'after', 'end'], 'each once, in order');
    assert.equal(rec.failed.length, 1, 'store_unavailable failed no publish');
    step('STORE_RECOVERED');
    c.close('done');
    break;
  }

  default:
    throw new Error(`unknown mode ${mode}`);
}
step('DONE');
