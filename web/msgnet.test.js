// Tests of msgnet.js that need no WebSocket: the frame codec, the
// container JSON form (against output of Go's container package), and the
// client's protocol logic driven through a fake WebSocket.
// Run: node --test web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Client, Flag, FrameDecoder, Kind, ProtocolError, RemoteError, RequestError, StreamError, backoff, base64Decode, base64Encode,
  concatBytes, containerFromJSON, containerToJSON, decodeContainer, encodeContainer,
  encodeFrame, formatFloat, parseError, value,
} from './msgnet.js';
import { GOLDEN_ALL, GOLDEN_DOC } from './testdata/golden.js';

const hex = (b) => Buffer.from(b).toString('hex');
const text = (b) => new TextDecoder().decode(b);

test('encodeFrame matches the protocol example', () => {
  assert.equal(hex(encodeFrame(Kind.DATA, 'hi')), '4d534749' + '0000000c' + '0010' + '6869');
  assert.equal(hex(encodeFrame(Kind.PING)), '4d534749' + '0000000a' + '0001');
  assert.equal(hex(encodeFrame(Kind.DATA, new Uint8Array([1]), 0x04)), '4d534749' + '0000000b' + '0410' + '01');
});

test('FrameDecoder: several frames in one message', () => {
  const d = new FrameDecoder();
  const msg = concatBytes([encodeFrame(Kind.DATA, 'one'), encodeFrame(Kind.PING, 'two'), encodeFrame(Kind.DATA, '')]);
  const fs = d.push(msg.buffer);
  assert.deepEqual(fs.map((f) => [f.kind, text(f.payload)]), [[Kind.DATA, 'one'], [Kind.PING, 'two'], [Kind.DATA, '']]);
  assert.equal(d.buffered, 0);
});

test('FrameDecoder: a frame split across pushes', () => {
  const d = new FrameDecoder();
  const f = encodeFrame(Kind.DATA, 'split frame');
  for (const cut of [1, 4, 9, 10, 15]) {
    assert.deepEqual(d.push(f.subarray(0, cut)), []);
    assert.equal(d.buffered, cut);
    const got = d.push(f.subarray(cut));
    assert.equal(got.length, 1);
    assert.equal(text(got[0].payload), 'split frame');
  }
  // A whole frame and the start of the next; the caller's buffer may be
  // reused afterwards.
  const two = concatBytes([f, f.subarray(0, 6)]);
  assert.equal(d.push(two).length, 1);
  two.fill(0);
  assert.equal(text(d.push(f.subarray(6))[0].payload), 'split frame');
});

test('FrameDecoder: bad input', () => {
  const bad = encodeFrame(Kind.DATA, 'x');
  bad[0] = 0x58;
  assert.throws(() => new FrameDecoder().push(bad), (e) => e instanceof ProtocolError && e.code === 'bad_frame');
  const short = encodeFrame(Kind.DATA, 'x');
  short[7] = 9;
  assert.throws(() => new FrameDecoder().push(short), { code: 'bad_frame' });
  // Too large is decided from the header alone.
  const d = new FrameDecoder({ maxPayload: 100 });
  const header = encodeFrame(Kind.DATA, new Uint8Array(101)).subarray(0, 10);
  assert.throws(() => d.push(header), { code: 'message_too_large' });
  assert.throws(() => d.push(encodeFrame(Kind.DATA, 'ok')), { code: 'message_too_large' }, 'stays failed');
  assert.equal(new FrameDecoder({ maxPayload: 100 }).push(encodeFrame(Kind.DATA, new Uint8Array(100))).length, 1);
});

test('parseError', () => {
  assert.deepEqual(parseError(new TextEncoder().encode('{"code":"server_full","message":"m"}')), { code: 'server_full', message: 'm' });
  assert.deepEqual(parseError(new TextEncoder().encode('nope')), { code: '', message: 'nope' });
});

test('container JSON: Go output reads back and is written back byte for byte', () => {
  for (const g of [GOLDEN_ALL, GOLDEN_DOC]) {
    const c = containerFromJSON(g);
    assert.equal(containerToJSON(c), g);
    assert.equal(text(encodeContainer(decodeContainer(new TextEncoder().encode(g)))), g);
  }
});

test('container JSON: JavaScript forms of the values', () => {
  const c = containerFromJSON(GOLDEN_ALL);
  const get = (name) => c.values.find((v) => v.name === name).value;
  assert.equal(c.header.target_id, 'srv');
  assert.deepEqual(c.header.source_sub_id, new Uint8Array([0xff, 0xfe]));
  assert.equal(get('null'), null);
  assert.equal(get('t'), true);
  assert.equal(get('i16'), -32768);
  assert.equal(get('u32'), 4294967295);
  assert.equal(get('i64'), -(2n ** 63n));
  assert.equal(get('u64'), 2n ** 64n - 1n);
  assert.equal(get('big'), 9007199254740993n); // beyond 2^53: exact only as a bigint
  assert.equal(get('f32'), Math.fround(0.1));
  assert.equal(get('f64'), 0.1);
  assert.ok(Object.is(get('negz'), -0));
  assert.ok(Number.isNaN(get('nan')));
  assert.equal(get('ninf'), -Infinity);
  assert.deepEqual(get('bytes'), new Uint8Array([0, 1, 2, 255]));
  assert.equal(get('s'), 'hi "there"\\\n\r\t\u0001 \u2028\u2029 é 日本 🎉');
  assert.deepEqual(get('raw'), new Uint8Array([0xff, 0x00, 0x6f, 0x6b]));
  assert.deepEqual(c.values.find((v) => v.name instanceof Uint8Array).name, new Uint8Array([0xfe, 0x6e, 0x61, 0x6d, 0x65]));
  assert.deepEqual(get('inner'), { values: [{ name: 'x', type: 'int16', value: -1 }] });
  assert.equal(get('innerH').header.source_id, 'in');
  assert.equal(get('arr')[2].value[0].value, true);
});

test('container JSON: built in JavaScript, as Go writes it', () => {
  const c = {
    header: { target_id: 'srv', source_id: 'c1', message_type: 'chat', version: '1.0.0.0' },
    values: [value('count', 'int32', 42), value('msg', 'string', 'hi there')],
  };
  assert.equal(containerToJSON(c), GOLDEN_DOC);
  // Accepted input forms: numbers and strings for 64-bit integers, a
  // Uint8Array string that is valid UTF-8 is written as text.
  const d = containerFromJSON(containerToJSON({
    values: [
      value('a', 'int64', 5), value('b', 'uint64', '18446744073709551615'), value('c', 'string', new TextEncoder().encode('ok')),
      value('n', 'null'), value('nest', 'container', { values: [] }), value('e', 'array', []),
    ],
  }));
  assert.deepEqual(d.values.map((v) => v.value), [5n, 2n ** 64n - 1n, 'ok', null, { values: [] }, []]);
  assert.deepEqual(d.header, { target_id: '', target_sub_id: '', source_id: '', source_sub_id: '', message_type: '', version: '' });
});

test('container JSON: what is refused', () => {
  assert.throws(() => containerToJSON({ values: [value('x', 'int16', 40000)] }), RangeError);
  assert.throws(() => containerToJSON({ values: [value('x', 'int32', 1.5)] }), RangeError);
  assert.throws(() => containerToJSON({ values: [value('x', 'uint64', -1n)] }), RangeError);
  assert.throws(() => containerToJSON({ values: [value('x', 'int64', 2 ** 60)] }), RangeError, 'unsafe integer');
  assert.throws(() => containerToJSON({ values: [value('x', 'decimal', 1)] }), TypeError);
  assert.throws(() => containerToJSON({ values: [value('x', 'bool', 1)] }), RangeError);
  assert.throws(() => containerFromJSON('{"values":[{"name":"x","type":"int32","vaule":1}]}'), SyntaxError);
  assert.throws(() => containerFromJSON('{"values":[{"name":"x","type":"int32","value_b64":"AA=="}]}'), SyntaxError);
  assert.throws(() => containerFromJSON('{"values":[{"name":"x","type":"int16","value":32768}]}'), SyntaxError);
  assert.throws(() => containerFromJSON('{"values":[{"name":"x","type":"uint8","value":1}]}'), SyntaxError);
  assert.throws(() => containerFromJSON('{"values":[{"name":"x","type":"int32"}]}'), SyntaxError);
  assert.throws(() => containerFromJSON('{"headers":{}}'), SyntaxError);
  assert.throws(() => containerFromJSON('{"values":[{"name":"x","type":"bytes","value":"A"}]}'), SyntaxError);
  // Lenient where Go's reader is: numbers for 64-bit, strings for small ints, no values.
  assert.equal(containerFromJSON('{"values":[{"value":7,"type":"int64","name":"x"}]}').values[0].value, 7n);
  assert.equal(containerFromJSON('{"values":[{"name":"x","type":"uint16","value":"7"}]}').values[0].value, 7);
  assert.deepEqual(containerFromJSON('{"values":null}').values, []);
});

test('formatFloat writes what Go writes', () => {
  const cases = [
    [0.1, false, '0.1'], [1e6, false, '1e+06'], [123456, false, '123456'], [1234567, false, '1.234567e+06'],
    [1e21, false, '1e+21'], [1e20, false, '1e+20'], [0.0001, false, '0.0001'], [0.00001, false, '1e-05'],
    [1.5e-7, false, '1.5e-07'], [100, false, '100'], [1e100, false, '1e+100'], [5e-324, false, '5e-324'],
    [-2.5, false, '-2.5'], [-0, false, '-0'], [123456.789, false, '123456.789'], [1234567.5, false, '1.2345675e+06'],
    [0.1, true, '0.1'], [3.4028234663852886e38, true, '3.4028235e+38'], [1e-45, true, '1e-45'], [16777216, true, '1.6777216e+07'],
    [NaN, false, '"NaN"'], [Infinity, true, '"Infinity"'], [-Infinity, false, '"-Infinity"'],
  ];
  for (const [f, f32, want] of cases) assert.equal(formatFloat(f, f32), want, `${f} (${f32 ? 32 : 64})`);
  // Every float written reads back to the same value.
  for (let i = 0; i < 2000; i++) {
    const f = (Math.random() - 0.5) * 10 ** Math.floor(Math.random() * 40 - 20);
    assert.equal(Number(formatFloat(f)), f);
    const g = Math.fround(f);
    assert.equal(Math.fround(Number(formatFloat(g, true))), g);
  }
});

test('base64 agrees with Buffer', () => {
  for (let n = 0; n < 40; n++) {
    const b = new Uint8Array(n).map(() => Math.floor(Math.random() * 256));
    const s = base64Encode(b);
    assert.equal(s, Buffer.from(b).toString('base64'));
    assert.deepEqual(base64Decode(s), b);
  }
  assert.throws(() => base64Decode('AAA'), SyntaxError);
  assert.throws(() => base64Decode('A=AA'), SyntaxError);
});

test('backoff: doubles, capped, half fixed and half random', () => {
  assert.equal(backoff(0, 100, 5000, () => 0), 50);
  assert.equal(backoff(0, 100, 5000, () => 1), 100);
  assert.equal(backoff(3, 100, 5000, () => 0), 400);
  assert.equal(backoff(10, 100, 5000, () => 0.5), 3750);
  assert.equal(backoff(1000, 100, 5000, () => 1), 5000);
});

// ---------------------------------------------------------------- client

// FakeWebSocket stands in for a browser WebSocket; the test plays the
// server through it.
class FakeWebSocket {
  static sockets = [];
  static refuse = false;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.decoder = new FrameDecoder();
    this.frames = []; // what the client sent, decoded
    this.closed = null;
    FakeWebSocket.sockets.push(this);
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    }, 1);
  }
  send(data) {
    assert.equal(this.readyState, 1, 'send on a socket that is not open');
    const b = new Uint8Array(data);
    this.sent.push(b);
    this.frames.push(...this.decoder.push(b));
  }
  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.closed = { code, reason };
    setTimeout(() => this.onclose?.({ code, reason }), 1);
  }
  // server side
  deliver(...frames) {
    const b = concatBytes(frames);
    this.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.length) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
  welcome(extra = {}) {
    const w = { op: 'welcome', session_id: `s-${FakeWebSocket.sockets.length}`, server_id: 'fake', max_message_size: 1024, idle_timeout_ms: 0, ...extra };
    this.deliver(encodeFrame(Kind.CONTROL, JSON.stringify(w)));
  }
}

async function until(what, cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function newClient(opts = {}) {
  FakeWebSocket.sockets = [];
  return new Client('ws://fake/ws', { WebSocket: FakeWebSocket, heartbeat: 0, clientId: 'web_1', ...opts });
}

test('client: hello, welcome with a message in the same WebSocket message, send, ping', async () => {
  const c = newClient();
  const got = [];
  c.onmessage = (m) => got.push(m.text());
  let opened = null;
  c.onopen = (w) => (opened = w);
  const p = c.connect();
  assert.equal(c.state, 'connecting');
  c.sendText('early'); // waits for the welcome
  await until('the hello', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  const ws = FakeWebSocket.sockets[0];
  assert.deepEqual(ws.protocols, ['msgnet']);
  const hello = ws.frames[0];
  assert.equal(hello.kind, Kind.CONTROL);
  assert.deepEqual(JSON.parse(text(hello.payload)), { op: 'hello', client_id: 'web_1', features: ['request'] });
  ws.deliver(
    encodeFrame(Kind.CONTROL, JSON.stringify({ op: 'welcome', session_id: 'abc-1', server_id: 'srv', max_message_size: 256, idle_timeout_ms: 30000 })),
    encodeFrame(Kind.DATA, 'first'),
    encodeFrame(Kind.DATA, 'second'),
  );
  const w = await p;
  assert.equal(w.session_id, 'abc-1');
  assert.equal(opened.server_id, 'srv');
  assert.equal(c.state, 'open');
  assert.equal(c.sessionId, 'abc-1');
  assert.deepEqual(got, ['first', 'second']);
  assert.equal(text(ws.frames[1].payload), 'early');

  c.sendContainer({ values: [value('n', 'int32', 1)] });
  assert.deepEqual(decodeContainer(ws.frames[2].payload).values, [{ name: 'n', type: 'int32', value: 1 }]);
  assert.throws(() => c.send(new Uint8Array(257)), { code: 'message_too_large' }, 'limit from the welcome');
  c.send(new Uint8Array(256));
  ws.frames.pop();

  const rtt = c.ping();
  await until('the PING', () => ws.frames.length === 4);
  const ping = ws.frames[3];
  assert.equal(ping.kind, Kind.PING);
  assert.equal(ping.payload.length, 8);
  ws.deliver(encodeFrame(Kind.PONG, ping.payload));
  assert.ok((await rtt) >= 0);

  // The server's PING is answered with its payload.
  ws.deliver(encodeFrame(Kind.PING, 'srv-ping'));
  assert.equal(ws.frames[4].kind, Kind.PONG);
  assert.equal(text(ws.frames[4].payload), 'srv-ping');

  // A container received.
  let cont = null;
  c.onmessage = (m) => (cont = m.container());
  ws.deliver(encodeFrame(Kind.DATA, encodeContainer({ header: { source_id: 'go' }, values: [value('big', 'uint64', 2n ** 64n - 1n)] })));
  assert.equal(cont.header.source_id, 'go');
  assert.equal(cont.values[0].value, 2n ** 64n - 1n);

  c.close('bye');
  assert.equal(c.state, 'closed');
  const last = ws.frames[ws.frames.length - 1];
  assert.equal(last.kind, Kind.DISCONNECT);
  assert.equal(text(last.payload), 'bye');
  assert.deepEqual(ws.closed, { code: 1000, reason: 'client closed' });
  assert.throws(() => c.sendText('after'), /closed/);
});

test('client: server_full refuses connect', async () => {
  const c = newClient();
  const p = c.connect();
  await until('a socket', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  const ws = FakeWebSocket.sockets[0];
  ws.deliver(
    encodeFrame(Kind.ERROR, JSON.stringify({ code: 'server_full', message: 'server at max connections' })),
    encodeFrame(Kind.DISCONNECT, 'server full'),
  );
  ws.close(1000);
  await assert.rejects(p, (e) => e instanceof ProtocolError && e.code === 'server_full');
  assert.equal(c.state, 'closed');
  assert.equal(FakeWebSocket.sockets.length, 1, 'a refused first connect is not retried');
});

test('client: bad frame from the server is an error and a lost connection', async () => {
  const c = newClient({ reconnect: false });
  const errors = [];
  c.onerror = (e) => errors.push(e.code);
  let closed = null;
  c.onclose = (e) => (closed = e);
  const p = c.connect();
  await until('a socket', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  const ws = FakeWebSocket.sockets[0];
  ws.welcome();
  await p;
  const bad = encodeFrame(Kind.DATA, 'x');
  bad[1] = 0;
  ws.deliver(bad);
  assert.deepEqual(errors, ['bad_frame']);
  assert.equal(closed.willReconnect, false);
  assert.equal(c.state, 'closed');
});

test('client: reconnects with backoff, sends what was buffered, in order, in one message', async () => {
  const c = newClient({ reconnect: { base: 5, max: 20 } });
  const events = [];
  c.onclose = (e) => events.push(`close ${e.code} ${e.willReconnect}`);
  c.onreconnect = (w) => events.push(`reconnect ${w.session_id}`);
  c.onstatechange = (s) => events.push(s);
  const p = c.connect();
  await until('a socket', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  FakeWebSocket.sockets[0].welcome();
  await p;
  FakeWebSocket.sockets[0].drop();
  assert.equal(c.state, 'reconnecting');
  c.sendText('b1');
  c.sendText('b2');
  // The first retry fails before a welcome: retried again, silently.
  await until('a second socket', () => FakeWebSocket.sockets[1]?.frames.length === 1);
  FakeWebSocket.sockets[1].drop();
  await until('a third socket', () => FakeWebSocket.sockets[2]?.frames.length === 1);
  const ws = FakeWebSocket.sockets[2];
  assert.deepEqual(JSON.parse(text(ws.frames[0].payload)), { op: 'hello', client_id: 'web_1', features: ['request'] });
  ws.welcome({ session_id: 'again' });
  assert.equal(c.state, 'open');
  assert.equal(ws.sent.length, 2, 'hello, then the buffer in one message');
  assert.deepEqual(ws.frames.slice(1).map((f) => text(f.payload)), ['b1', 'b2']);
  assert.deepEqual(events, ['connecting', 'open', 'close 1006 true', 'reconnecting', 'open', 'reconnect again']);
  c.close();
});

test('client: a heartbeat PING left unanswered drops the connection', async () => {
  const c = newClient({ heartbeat: 10, heartbeatTimeout: 30, reconnect: false });
  let closed = null;
  c.onclose = (e) => (closed = e);
  const p = c.connect();
  await until('a socket', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  const ws = FakeWebSocket.sockets[0];
  ws.welcome();
  await p;
  await until('a heartbeat PING', () => ws.frames.some((f) => f.kind === Kind.PING));
  // Answered PINGs keep it up.
  const first = ws.frames.find((f) => f.kind === Kind.PING);
  ws.deliver(encodeFrame(Kind.PONG, first.payload));
  await until('the connection to be dropped', () => closed !== null);
  assert.match(closed.reason, /heartbeat timeout/);
  assert.ok(ws.frames.filter((f) => f.kind === Kind.PING).length >= 2);
  assert.equal(c.state, 'closed');
});

test('client: a pending ping fails when the connection is lost', async () => {
  const c = newClient({ reconnect: false });
  const p = c.connect();
  await until('a socket', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  FakeWebSocket.sockets[0].welcome();
  await p;
  const rtt = c.ping(5000);
  FakeWebSocket.sockets[0].drop();
  await assert.rejects(rtt, /connection lost/);
});

// ---------------------------------------------------------------- request/reply

const u64 = (n) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
};
const idOf = (p) => new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0);
const replyFrame = (id, status, body) => encodeFrame(Kind.DATA, concatBytes([u64(id), new Uint8Array([status]), new TextEncoder().encode(body)]), Flag.REPLY);
const requestFrame = (id, body) => encodeFrame(Kind.DATA, concatBytes([u64(id), new TextEncoder().encode(body)]), Flag.REQUEST);

// connected returns an open client and its socket; the welcome grants
// what features says.
async function connected(opts = {}, features = ['request']) {
  const c = newClient(opts);
  const p = c.connect();
  await until('the hello', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  const ws = FakeWebSocket.sockets[0];
  ws.welcome(features ? { features } : {});
  await p;
  return { c, ws };
}

// sentRequests returns the request frames the client sent, as [id, body].
const sentRequests = (ws) => ws.frames.filter((f) => f.kind === Kind.DATA && f.flags === Flag.REQUEST).map((f) => [idOf(f.payload), text(f.payload.subarray(8))]);

test('request: ids count up, replies are matched by id in any order', async () => {
  const { c, ws } = await connected();
  assert.deepEqual(c.features, ['request']);
  const a = c.request('first');
  const b = c.request(new TextEncoder().encode('second'));
  assert.deepEqual(sentRequests(ws), [[1n, 'first'], [2n, 'second']]);
  ws.deliver(replyFrame(2, 0, 'reply two'), replyFrame(1, 0, 'reply one'));
  assert.equal((await a).text(), 'reply one');
  assert.equal((await b).text(), 'reply two');
  // A reply's body may be a container, and empty.
  const d = c.request('');
  ws.deliver(replyFrame(3, 0, ''));
  assert.deepEqual((await d).data, new Uint8Array(0));
  assert.equal(c.lateReplies, 0);
  c.close();
});

test('request: status 1 is a RemoteError with the peer message', async () => {
  const { c, ws } = await connected();
  const r = c.request('x');
  ws.deliver(replyFrame(1, 1, 'no request handler'));
  await assert.rejects(r, (e) => e instanceof RemoteError && e instanceof RequestError && e.code === 'remote' && e.remoteMessage === 'no request handler');
  c.close();
});

test('request: a timeout, then the late reply is counted and dropped', async () => {
  const { c, ws } = await connected();
  const r = c.request('slow', { timeoutMs: 20 });
  await assert.rejects(r, (e) => e instanceof RequestError && e.code === 'timeout');
  const next = c.request('next');
  ws.deliver(replyFrame(1, 0, 'too late'));
  assert.equal(c.lateReplies, 1);
  ws.deliver(replyFrame(2, 0, 'on time'));
  assert.equal((await next).text(), 'on time', 'the late reply went to no other request');
  c.close();
});

test('request: an AbortSignal', async () => {
  const { c, ws } = await connected();
  const ctl = new AbortController();
  const r = c.request('q', { signal: ctl.signal, timeoutMs: Infinity });
  await until('the request', () => sentRequests(ws).length === 1);
  ctl.abort(new Error('user gave up'));
  await assert.rejects(r, /user gave up/);
  ws.deliver(replyFrame(1, 0, 'late'));
  assert.equal(c.lateReplies, 1);
  // Already aborted: nothing is sent.
  await assert.rejects(c.request('never', { signal: AbortSignal.abort() }), (e) => e.name === 'AbortError');
  assert.equal(sentRequests(ws).length, 1);
  c.close();
});

test('request: refused before anything is sent', async () => {
  const { c, ws } = await connected({}, null); // a server that grants nothing
  assert.deepEqual(c.features, []);
  await assert.rejects(c.request('x'), (e) => e instanceof RequestError && e.code === 'not_negotiated');
  c.close();
  await assert.rejects(c.request('x'), (e) => e.code === 'not_open');

  const { c: c2, ws: ws2 } = await connected();
  await assert.rejects(c2.request(new Uint8Array(1024 - 8 + 1)), (e) => e instanceof ProtocolError && e.code === 'message_too_large');
  await assert.rejects(c2.request('x', { timeoutMs: 0 }), RangeError);
  await assert.rejects(c2.request('x', { timeoutMs: 2 ** 31 }), RangeError);
  await assert.rejects(c2.request(42), TypeError);
  assert.equal(sentRequests(ws2).length, 0);
  assert.equal(sentRequests(ws).length, 0);
  c2.close();

  const c3 = newClient();
  c3.connect().catch(() => {});
  await assert.rejects(c3.request('x'), (e) => e.code === 'not_open', 'not buffered while connecting');
  c3.close();
});

test('request: the connection ends: outstanding requests fail, ids start again at 1', async () => {
  const { c, ws } = await connected({ reconnect: { base: 1, max: 5 } });
  const a = c.request('a');
  const b = c.request('b');
  ws.drop();
  await assert.rejects(a, (e) => e instanceof RequestError && e.code === 'connection_lost');
  await assert.rejects(b, (e) => e.code === 'connection_lost');
  assert.equal(c.state, 'reconnecting');
  await until('a second socket', () => FakeWebSocket.sockets[1]?.frames.length === 1);
  const ws2 = FakeWebSocket.sockets[1];
  ws2.welcome({ features: ['request'] });
  const r = c.request('again');
  assert.deepEqual(sentRequests(ws2), [[1n, 'again']]);
  assert.equal(sentRequests(ws).length, 2, 'nothing re-sent');
  ws2.deliver(replyFrame(1, 0, 'ok'));
  assert.equal((await r).text(), 'ok');
  const pending = c.request('at close');
  c.close();
  await assert.rejects(pending, (e) => e.code === 'connection_lost' && /client closed/.test(e.message));
});

// repliesTo returns the reply frames the client sent, as [id, status, body].
const repliesTo = (ws) => ws.frames.filter((f) => f.kind === Kind.DATA && f.flags === Flag.REPLY).map((f) => [idOf(f.payload), f.payload[8], text(f.payload.subarray(9))]);

test('onrequest: answers, in order; failures are status 1', async () => {
  const { c, ws } = await connected();
  ws.deliver(requestFrame(7, 'nobody'));
  c.onrequest = (req) => {
    switch (req.text()) {
      case 'sync': return 'sync reply';
      case 'bytes': return new Uint8Array([0x62, 0x69, 0x6e]);
      case 'empty': return undefined;
      case 'throw': throw new Error('handler failed');
      case 'throw string': throw 'plain'; // eslint-disable-line no-throw-literal
      case 'bad': return 42;
      case 'big': return new Uint8Array(1024 - 9 + 1);
      default: return Promise.reject(new Error('async failure'));
    }
  };
  ws.deliver(requestFrame(8, 'sync'), requestFrame(9, 'bytes'), requestFrame(10, 'empty'), requestFrame(11, 'throw'));
  ws.deliver(requestFrame(12, 'throw string'), requestFrame(13, 'bad'), requestFrame(14, 'big'), requestFrame(15, 'reject'));
  await until('nine replies', () => repliesTo(ws).length === 9);
  assert.deepEqual(repliesTo(ws), [
    [7n, 1, 'no request handler'],
    [8n, 0, 'sync reply'],
    [9n, 0, 'bin'],
    [10n, 0, ''],
    [11n, 1, 'handler failed'],
    [12n, 1, 'plain'],
    [13n, 1, 'bad reply: payload must be a string, Uint8Array, ArrayBuffer or ArrayBufferView'],
    [14n, 1, 'reply exceeds the message size limit'],
    [15n, 1, 'async failure'],
  ]);
  c.close();
});

test('onrequest: an async handler; its reply is dropped if its connection is gone', async () => {
  const { c, ws } = await connected({ reconnect: { base: 1, max: 5 } });
  const release = [];
  c.onrequest = (req) => new Promise((resolve) => release.push(() => resolve(`done ${req.text()}`)));
  ws.deliver(requestFrame(1, 'a'), requestFrame(2, 'b'));
  assert.equal(release.length, 2, 'handlers run as requests arrive');
  release[1]();
  release[0]();
  await until('two replies', () => repliesTo(ws).length === 2);
  assert.deepEqual(repliesTo(ws), [[2n, 0, 'done b'], [1n, 0, 'done a']], 'sent as each settles');

  ws.deliver(requestFrame(3, 'c'));
  ws.drop();
  await until('a second socket', () => FakeWebSocket.sockets[1]?.frames.length === 1);
  const ws2 = FakeWebSocket.sockets[1];
  ws2.welcome({ features: ['request'] });
  release[2]();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(repliesTo(ws).length, 2);
  assert.equal(repliesTo(ws2).length, 0, 'not sent on another connection');
  c.close();
});

test('request/reply frames that are too short, or not negotiated, are answered ERROR', async () => {
  const { c, ws } = await connected();
  const errs = () => ws.frames.filter((f) => f.kind === Kind.ERROR).map((f) => JSON.parse(text(f.payload)).code);
  ws.deliver(encodeFrame(Kind.DATA, new Uint8Array(7), Flag.REQUEST), encodeFrame(Kind.DATA, new Uint8Array(8), Flag.REPLY));
  assert.deepEqual(errs(), ['bad_request', 'bad_request']);
  ws.deliver(encodeFrame(Kind.DATA, 'x', Flag.COMPRESSED));
  assert.deepEqual(errs(), ['bad_request', 'bad_request', 'unknown_type']);
  c.close();

  const got = [];
  const { c: c2, ws: ws2 } = await connected({}, null);
  c2.onmessage = (m) => got.push(m.text());
  c2.onrequest = () => 'never';
  ws2.deliver(requestFrame(1, 'not granted'), encodeFrame(Kind.DATA, 'plain'));
  assert.deepEqual(ws2.frames.filter((f) => f.kind === Kind.ERROR).map((f) => JSON.parse(text(f.payload)).code), ['unknown_type']);
  assert.equal(repliesTo(ws2).length, 0);
  assert.deepEqual(got, ['plain']);
  c2.close();
});

// ---------------------------------------------------------------- acknowledged delivery

const enc = (s) => new TextEncoder().encode(s);
const nameBytes = (s) => concatBytes([new Uint8Array([enc(s).length]), enc(s)]);
const pubAck = (first, last, status = 0, msg = '') => encodeFrame(Kind.DATA, concatBytes([u64(first), u64(last), new Uint8Array([status]), enc(msg)]), Flag.ACK);
const streamFrame = (stream, offset, body) => encodeFrame(Kind.DATA, concatBytes([nameBytes(stream), u64(offset), enc(body)]), Flag.STREAM);
const ctl = (obj) => encodeFrame(Kind.CONTROL, JSON.stringify(obj));
const BIG_EPOCH = '18446744073709551615'; // 2^64-1: a JS number would round it

// publishes returns the publish frames a socket carried, as [seq, stream, body].
const publishes = (ws) => ws.frames.filter((f) => f.kind === Kind.DATA && f.flags === Flag.PUBLISH).map((f) => {
  const n = f.payload[8];
  return [Number(idOf(f.payload)), text(f.payload.subarray(9, 9 + n)), text(f.payload.subarray(9 + n))];
});
// acks returns the subscriber acknowledgements a socket carried, as [stream, offset].
const acks = (ws) => ws.frames.filter((f) => f.kind === Kind.DATA && f.flags === Flag.ACK).map((f) => {
  const n = f.payload[0];
  return [text(f.payload.subarray(1, 1 + n)), Number(new DataView(f.payload.buffer, f.payload.byteOffset + 1 + n, 8).getBigUint64(0))];
});
// controls returns the CONTROL objects a socket carried after the hello.
const controls = (ws) => ws.frames.filter((f) => f.kind === Kind.CONTROL).slice(1).map((f) => JSON.parse(text(f.payload)));

async function reliableClient(opts = {}, features = ['request', 'reliable']) {
  return connected({ reliable: true, reconnect: { base: 1, max: 5 }, ...opts }, features);
}

// reconnectTo drops ws and returns the client's next socket, welcomed.
async function reconnectTo(ws, features = ['request', 'reliable']) {
  const i = FakeWebSocket.sockets.indexOf(ws) + 1;
  ws.drop();
  await until('a new socket', () => FakeWebSocket.sockets[i]?.frames.length === 1);
  const next = FakeWebSocket.sockets[i];
  next.welcome({ features });
  return next;
}

test('reliable: the hello asks for it and names a random publisher', async () => {
  const { c, ws } = await reliableClient();
  const hello = JSON.parse(text(ws.frames[0].payload));
  assert.deepEqual(hello.features, ['request', 'reliable']);
  assert.match(hello.publisher, /^[0-9a-f]{32}$/);
  assert.equal(hello.publisher, c.publisherId);
  assert.notEqual(newClient({ reliable: true }).publisherId, c.publisherId);
  assert.equal(newClient().publisherId, '');
  c.close();
});

test('publish: sequence numbers, acknowledged runs, pending and waitPublished', async () => {
  const { c, ws } = await reliableClient();
  const a = c.publish('group:room', 'one');
  const b = c.publish('group:room', new Uint8Array([0x74, 0x77, 0x6f]));
  const d = c.publish('client:web_1', '');
  assert.deepEqual(publishes(ws), [[1, 'group:room', 'one'], [2, 'group:room', 'two'], [3, 'client:web_1', '']]);
  assert.equal(c.pending, 3);
  let drained = false;
  const wait = c.waitPublished().then(() => (drained = true));
  ws.deliver(pubAck(1, 2));
  assert.equal(await a, undefined);
  await b;
  assert.equal(c.pending, 1);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(drained, false);
  // A later first acknowledges an earlier publish still held: its answer
  // was lost with a connection.
  const e = c.publish('group:room', 'four');
  ws.deliver(pubAck(4, 4));
  await d;
  await e;
  await wait;
  assert.equal(c.pending, 0);
  await c.waitPublished(); // nothing pending: at once
  c.close();
});

test('publish: refused for good, reported, and never sent again', async () => {
  const { c, ws } = await reliableClient();
  const failures = [];
  c.onpublishfailed = (f) => failures.push([f.stream, text(f.payload), f.error.code, f.error.remoteCode]);
  const bad = c.publish('nope', 'x');
  const good = c.publish('group:ok', 'y');
  ws.deliver(pubAck(1, 1, 1, 'bad_stream: a stream is group:<group> or client:<client id>'), pubAck(2, 2));
  await assert.rejects(bad, (e) => e instanceof StreamError && e.code === 'refused' && e.remoteCode === 'bad_stream' && e.stream === 'nope' && /bad_stream: a stream is/.test(e.message));
  await good;
  assert.deepEqual(failures, [['nope', 'x', 'refused', 'bad_stream']]);
  c.publish('nope', 'ignored'); // refused too, and never awaited: no unhandled rejection
  ws.deliver(pubAck(3, 3, 1, 'bad_stream: no'));
  assert.equal(failures.length, 2);
  const ws2 = await reconnectTo(ws);
  assert.deepEqual(publishes(ws2), [], 'nothing refused is sent again');
  c.close();
});

test('publish: unacknowledged ones are sent again after a reconnect, same seq, before anything newer', async () => {
  const { c, ws } = await reliableClient();
  c.subscribe('group:room');
  ws.deliver(ctl({ op: 'subscribed', stream: 'group:room', epoch: BIG_EPOCH, first: 1, last: 0, next: 1 }));
  const p1 = c.publish('group:room', 'm1');
  const p2 = c.publish('group:room', 'm2');
  const p3 = c.publish('group:room', 'm3');
  ws.deliver(pubAck(1, 1));
  await p1;
  ws.drop();
  assert.equal(c.state, 'reconnecting');
  const p4 = c.publish('group:room', 'm4'); // while reconnecting: waits
  c.sendText('plain'); // buffered plain messages go after them
  await until('a second socket', () => FakeWebSocket.sockets[1]?.frames.length === 1);
  const ws2 = FakeWebSocket.sockets[1];
  let sentInOpen = null;
  c.onstatechange = (s) => {
    if (s === 'open') sentInOpen = c.publish('group:room', 'm5'); // newer: after the resent ones
  };
  ws2.welcome({ features: ['request', 'reliable'] });
  assert.equal(ws2.sent.length, 3, 'hello, what a new connection sends first in one message, then m5');
  assert.deepEqual(controls(ws2), [{ op: 'sub', stream: 'group:room', epoch: BIG_EPOCH, after: 0 }]);
  assert.deepEqual(publishes(ws2), [[2, 'group:room', 'm2'], [3, 'group:room', 'm3'], [4, 'group:room', 'm4'], [5, 'group:room', 'm5']]);
  const kinds = ws2.frames.slice(1).map((f) => (f.kind === Kind.CONTROL ? 'sub' : f.flags === Flag.PUBLISH ? 'pub' : text(f.payload)));
  assert.deepEqual(kinds, ['sub', 'pub', 'pub', 'pub', 'plain', 'pub']);
  ws2.deliver(pubAck(2, 5));
  await Promise.all([p2, p3, p4, sentInOpen]);
  assert.equal(c.pending, 0);
  c.close();
});

test('publish: bounded by maxBytes; what cannot be taken throws', async () => {
  const { c, ws } = await reliableClient({ reliable: { maxBytes: 10 } });
  const a = c.publish('group:g', '123456');
  assert.throws(() => c.publish('group:g', '12345'), (e) => e instanceof StreamError && e.code === 'buffer_full' && /10 bytes/.test(e.message));
  assert.equal(c.pending, 1);
  assert.equal(publishes(ws).length, 1, 'nothing sent for the refused one');
  ws.deliver(pubAck(1, 1));
  await a;
  c.publish('group:g', '1234567890');
  assert.throws(() => c.publish('', 'x'), RangeError);
  assert.throws(() => c.publish('group:' + 'x'.repeat(250), 'x'), RangeError);
  assert.throws(() => c.publish('group:g', 42), TypeError);
  assert.throws(() => c.publish('group:g', new Uint8Array(1024)), (e) => e instanceof ProtocolError && e.code === 'message_too_large');
  assert.deepEqual(publishes(ws).map((p) => p[0]), [1, 2], 'no sequence number was used by what was refused');
  c.close();
  assert.throws(() => c.publish('group:g', 'x'), (e) => e.code === 'closed');

  const plain = newClient();
  assert.throws(() => plain.publish('group:g', 'x'), (e) => e instanceof StreamError && e.code === 'not_negotiated');
  await assert.rejects(plain.subscribe('group:g'), (e) => e instanceof StreamError && e.code === 'not_negotiated');
});

test('publish: not acknowledged within maxAgeMs expires, also while reconnecting', async () => {
  const { c, ws } = await reliableClient({ reliable: { maxAgeMs: 40 }, reconnect: { base: 10_000, max: 10_000 } });
  const failures = [];
  c.onpublishfailed = (f) => failures.push(f.error.code);
  const p = c.publish('group:g', 'x');
  await assert.rejects(p, (e) => e instanceof StreamError && e.code === 'expired');
  assert.deepEqual(failures, ['expired']);
  assert.equal(c.pending, 0);
  ws.drop();
  assert.equal(c.state, 'reconnecting');
  const q = c.publish('group:g', 'y');
  await assert.rejects(q, (e) => e.code === 'expired');
  await c.waitPublished({ timeoutMs: 1000 });
  c.close();
});

test('publish: close fails what waits; waitPublished ends', async () => {
  const { c } = await reliableClient();
  const failures = [];
  c.onpublishfailed = (f) => failures.push(f.error.code);
  const p = c.publish('group:g', 'x');
  const wait = c.waitPublished();
  await assert.rejects(c.waitPublished({ timeoutMs: 10 }), /1 publishes not acknowledged within 10 ms/);
  c.close();
  await assert.rejects(p, (e) => e instanceof StreamError && e.code === 'closed');
  await wait;
  assert.deepEqual(failures, ['closed']);
});

test('subscribe: delivered once, in order, acknowledged every 256 and when quiet; resumed after a reconnect', async () => {
  const { c, ws } = await reliableClient({ clientId: 'web_1' });
  const got = [];
  c.onstream = (m) => got.push([m.stream, m.epoch, m.offset, m.text(), m.replayed]);
  const infos = [];
  c.onsubscribed = (i) => infos.push(i);
  const sub = c.subscribe('group:room');
  assert.deepEqual(controls(ws), [{ op: 'sub', stream: 'group:room' }]);
  ws.deliver(ctl({ op: 'subscribed', stream: 'group:room', epoch: BIG_EPOCH, first: 1, last: 9, next: 10 }));
  const info = await sub;
  assert.deepEqual(info, { stream: 'group:room', epoch: BIG_EPOCH, first: 1, last: 9, next: 10, resumed: false });
  assert.deepEqual(infos, [info]);
  const frames = [];
  for (let off = 10; off < 10 + 300; off++) frames.push(streamFrame('group:room', off, `m${off}`));
  ws.deliver(...frames.slice(0, 260));
  ws.deliver(streamFrame('group:room', 100, 'a repeat'), streamFrame('group:other', 5, 'not subscribed'));
  ws.deliver(...frames.slice(250)); // overlaps: 250..259 again
  assert.equal(got.length, 300);
  got.forEach((g, i) => assert.deepEqual(g, ['group:room', BIG_EPOCH, 10 + i, `m${10 + i}`, false]));
  assert.deepEqual(acks(ws), [['group:room', 265]], 'one acknowledgement after 256 messages');
  await until('the quiet acknowledgement', () => acks(ws).length === 2);
  assert.deepEqual(acks(ws)[1], ['group:room', 309]);

  // After a reconnect: resumed after the last delivered; what the server
  // replays overlaps and is dropped; what was already in the stream is
  // marked replayed.
  const ws2 = await reconnectTo(ws);
  assert.deepEqual(controls(ws2), [{ op: 'sub', stream: 'group:room', epoch: BIG_EPOCH, after: 309 }]);
  ws2.deliver(ctl({ op: 'subscribed', stream: 'group:room', epoch: BIG_EPOCH, first: 1, last: 312, next: 310 }));
  ws2.deliver(streamFrame('group:room', 309, 'old'), streamFrame('group:room', 310, 'a'), streamFrame('group:room', 311, 'b'), streamFrame('group:room', 312, 'c'), streamFrame('group:room', 313, 'live'));
  assert.deepEqual(got.slice(300).map((g) => [g[2], g[3], g[4]]), [[310, 'a', true], [311, 'b', true], [312, 'c', true], [313, 'live', false]]);
  assert.equal(infos.at(-1).resumed, true);

  // Unsubscribed: nothing more is delivered, and it is not renewed.
  c.unsubscribe('group:room');
  assert.deepEqual(controls(ws2).at(-1), { op: 'unsub', stream: 'group:room' });
  ws2.deliver(streamFrame('group:room', 314, 'after'));
  assert.equal(got.length, 304);
  const ws3 = await reconnectTo(ws2);
  assert.deepEqual(controls(ws3), []);
  c.close();
});

test('subscribe: continuity lost on resuming and on a live subscription', async () => {
  const { c, ws } = await reliableClient();
  const lost = [];
  c.oncontinuitylost = (l) => lost.push(l);
  const got = [];
  c.onstream = (m) => got.push(m.offset);
  c.subscribe('group:news');
  ws.deliver(ctl({ op: 'subscribed', stream: 'group:news', epoch: '7', first: 1, last: 0, next: 1 }), streamFrame('group:news', 1, 'x'));
  const ws2 = await reconnectTo(ws);
  assert.deepEqual(controls(ws2), [{ op: 'sub', stream: 'group:news', epoch: '7', after: 1 }]);
  ws2.deliver(
    ctl({ op: 'subscribed', stream: 'group:news', epoch: '7', first: 22, last: 31, next: 22, lost: { code: 'continuity_lost', missed: 2, reason: 'the messages after its position have left retention' } }),
    streamFrame('group:news', 22, 'y'),
  );
  assert.deepEqual(lost, [{ stream: 'group:news', missed: 2, next: 22, epoch: '7', reason: 'the messages after its position have left retention' }]);
  // A live subscription that fell behind.
  ws2.deliver(ctl({ op: 'lost', stream: 'group:news', code: 'continuity_lost', epoch: BIG_EPOCH, next: 2001, missed: 23, reason: 'behind' }));
  assert.deepEqual(lost[1], { stream: 'group:news', missed: 23, next: 2001, epoch: BIG_EPOCH, reason: 'behind' });
  ws2.deliver(streamFrame('group:news', 1999, 'before next'), streamFrame('group:news', 2001, 'z'));
  assert.deepEqual(got, [1, 22, 2001]);
  const ws3 = await reconnectTo(ws2);
  assert.deepEqual(controls(ws3), [{ op: 'sub', stream: 'group:news', epoch: BIG_EPOCH, after: 2001 }]);
  c.close();
});

test('subscribe: refused, not granted, closed', async () => {
  const { c, ws } = await reliableClient({ clientId: 'me' });
  const p = c.subscribe('client:someone-else');
  ws.deliver(ctl({ op: 'refused', stream: 'client:someone-else', code: 'bad_stream', message: 'a session may subscribe only to its own client id\'s stream' }));
  await assert.rejects(p, (e) => e instanceof StreamError && e.code === 'refused' && e.remoteCode === 'bad_stream');
  const ws2 = await reconnectTo(ws);
  assert.deepEqual(controls(ws2), [], 'a refused subscription is forgotten');
  const pending = c.subscribe('group:later');
  c.close();
  await assert.rejects(pending, (e) => e.code === 'closed');
  await assert.rejects(c.subscribe('group:x'), (e) => e.code === 'closed');

  // A server without streams: subscriptions and publishes fail.
  const { c: c2 } = await reliableClient({}, ['request']);
  await assert.rejects(c2.subscribe('group:x'), (e) => e instanceof StreamError && e.code === 'not_negotiated');
  assert.throws(() => c2.publish('group:x', 'y'), (e) => e.code === 'not_negotiated');
  c2.close();
  const c3 = newClient({ reliable: true });
  const early = c3.publish('group:x', 'before connect'); // waits for the first connection
  const earlySub = c3.subscribe('group:x');
  const open = c3.connect();
  await until('the hello', () => FakeWebSocket.sockets[0]?.frames.length === 1);
  FakeWebSocket.sockets[0].welcome({ features: ['request'] });
  await open;
  await assert.rejects(early, (e) => e.code === 'not_negotiated');
  await assert.rejects(earlySub, (e) => e.code === 'not_negotiated');
  c3.close();
});

test('store_unavailable ends the session like a lost connection: reconnect, resubscribe, resend', async () => {
  const { c, ws } = await reliableClient();
  const events = [];
  c.onerror = (e) => events.push(`error ${e.code}`);
  c.onclose = (e) => events.push(`close ${e.reason} ${e.willReconnect}`);
  c.subscribe('group:g');
  ws.deliver(ctl({ op: 'subscribed', stream: 'group:g', epoch: '1', first: 1, last: 0, next: 1 }));
  const p = c.publish('group:g', 'kept');
  ws.deliver(
    encodeFrame(Kind.ERROR, JSON.stringify({ code: 'store_unavailable', message: 'stream store: disk on fire' })),
    encodeFrame(Kind.DISCONNECT, 'store_unavailable: stream store: disk on fire'),
  );
  ws.close(1000);
  await until('a second socket', () => FakeWebSocket.sockets[1]?.frames.length === 1);
  const ws2 = FakeWebSocket.sockets[1];
  ws2.welcome({ features: ['request', 'reliable'] });
  assert.deepEqual(events, ['error store_unavailable', 'close store_unavailable: stream store: disk on fire true']);
  assert.deepEqual(controls(ws2), [{ op: 'sub', stream: 'group:g', epoch: '1', after: 0 }]);
  assert.deepEqual(publishes(ws2), [[1, 'group:g', 'kept']]);
  ws2.deliver(pubAck(1, 1));
  await p;
  c.close();
});
