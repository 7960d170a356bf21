// msgnet.js: a msgnet client for browsers and Node, speaking msgnet's
// frame protocol over WebSocket (see docs/PROTOCOL.md, docs/TRANSPORTS.md
// and README.md beside it; types in msgnet.d.ts). An ES module with no
// dependencies and no build step:
//
//   import { Client } from './msgnet.js';
//   const c = new Client('wss://example.com/ws', { clientId: 'web_1' });
//   c.onmessage = (msg) => console.log(msg.text());
//   await c.connect();
//   c.sendText('hello');
//   const rtt = await c.ping();
//   const reply = await c.request('status?', { timeoutMs: 5000 });
//   c.onrequest = (req) => 'answer to ' + req.text();
//
// With { reliable: true } it also has acknowledged delivery
// (docs/PROTOCOL.md 6.7): publish() to streams, kept until the server
// acknowledges and sent again after a reconnect; subscribe() to streams,
// resumed where they left off, each message delivered once and in order.
//
// It also exports the frame codec (encodeFrame, FrameDecoder) and the
// container JSON form (containerToJSON, containerFromJSON, encodeContainer,
// decodeContainer; docs/CONTAINER.md), which need no WebSocket.

// ---------------------------------------------------------------- frames

export const MAGIC = 0x4d534749; // "MSGI"
export const HEADER_LEN = 10;

/** Message kinds: the low byte of a frame's type. */
export const Kind = Object.freeze({
  PING: 0x01,
  PONG: 0x02,
  DATA: 0x10,
  CONTROL: 0x20,
  ERROR: 0x30,
  HEARTBEAT: 0x40,
  DISCONNECT: 0x50,
});

/** Flag bits: the high byte of a frame's type (extensions; 0 in the core). */
export const Flag = Object.freeze({
  COMPRESSED: 0x01,
  ENCRYPTED: 0x02,
  REQUEST: 0x04,
  REPLY: 0x08,
  STREAM: 0x10, // reliable: a stream's message (server to client)
  ACK: 0x20, // reliable: a publish's answer (server to client), a subscriber's acknowledgement (client to server)
  PUBLISH: 0x40, // reliable: a publish (client to server)
});

const MAX_FRAME_PAYLOAD = 0xffffffff - HEADER_LEN;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();
const strictUTF8 = new TextDecoder('utf-8', { fatal: true });

/** An error in the protocol: code is the msgnet ERROR code it maps to. */
export class ProtocolError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

/**
 * A request that got no reply (docs/PROTOCOL.md 6.1). code says why:
 *   'not_open'        the client is not connected (requests are never buffered)
 *   'not_negotiated'  the server did not grant the "request" feature
 *   'timeout'         no reply within timeoutMs
 *   'connection_lost' the connection ended first (the server may or may not
 *                     have handled the request; it is never re-sent)
 *   'remote'          the server's handler failed: a RemoteError
 */
export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'RequestError';
    this.code = code;
  }
}

/**
 * The peer's request handler failed (reply status 1). remoteMessage is the
 * error text the peer sent, e.g. "no request handler".
 */
export class RemoteError extends RequestError {
  constructor(remoteMessage) {
    super('remote', `remote: ${remoteMessage}`);
    this.name = 'RemoteError';
    this.remoteMessage = remoteMessage;
  }
}

/**
 * A publish or a subscription that failed (docs/PROTOCOL.md 6.7). code says why:
 *   'buffer_full'    publish: the publishes not yet acknowledged hold
 *                    reliable.maxBytes already; nothing was queued (thrown)
 *   'refused'        the server refused it for good; remoteCode is its code
 *                    ('bad_stream', 'too_many_groups', 'rate_limited', ...)
 *   'expired'        publish: not acknowledged within reliable.maxAgeMs (it
 *                    may or may not have been stored)
 *   'not_negotiated' the client has no reliable option, or the server did
 *                    not grant "reliable"
 *   'closed'         the client was closed (or the stream unsubscribed)
 *                    first; a publish may or may not have been stored
 * stream names the stream.
 */
export class StreamError extends Error {
  constructor(code, message, stream = '', remoteCode = '') {
    super(message);
    this.name = 'StreamError';
    this.code = code;
    this.stream = stream;
    this.remoteCode = remoteCode;
  }
}

/**
 * Bytes of a payload: a string is UTF-8 encoded; Uint8Array, ArrayBuffer
 * (or SharedArrayBuffer) and other views are used as they are (not copied).
 */
export function toBytes(data) {
  if (data == null) return new Uint8Array(0);
  if (typeof data === 'string') return utf8Encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer || (typeof SharedArrayBuffer === 'function' && data instanceof SharedArrayBuffer)) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('payload must be a string, Uint8Array, ArrayBuffer or ArrayBufferView');
}

/** Encodes one frame: MSGI | u32 length | u8 flags | u8 kind | payload. */
export function encodeFrame(kind, payload, flags = 0) {
  const p = toBytes(payload);
  if (p.length > MAX_FRAME_PAYLOAD) throw new ProtocolError('message_too_large', 'payload too large for a frame');
  const out = new Uint8Array(HEADER_LEN + p.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC);
  dv.setUint32(4, HEADER_LEN + p.length);
  dv.setUint8(8, flags & 0xff);
  dv.setUint8(9, kind & 0xff);
  out.set(p, HEADER_LEN);
  return out;
}

/** Concatenates byte arrays. */
export function concatBytes(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * FrameDecoder turns received bytes into frames. A WebSocket message from
 * msgnet holds one or more whole frames; the decoder also accepts frames
 * split across pushes, so it works on any chunking of the stream. Like the
 * server, it checks the size limit from the header, before the payload
 * has arrived. After an error it is unusable.
 */
export class FrameDecoder {
  constructor({ maxPayload = 1 << 20 } = {}) {
    this.maxPayload = maxPayload;
    this._rest = null; // bytes of an incomplete frame
    this._err = null;
  }

  /** Bytes held from an incomplete frame. */
  get buffered() {
    return this._rest ? this._rest.length : 0;
  }

  /**
   * Takes a chunk (Uint8Array or ArrayBuffer) and returns the frames it
   * completes, each { kind, flags, payload: Uint8Array }. Throws
   * ProtocolError 'bad_frame' or 'message_too_large'.
   */
  push(chunk) {
    if (this._err) throw this._err;
    let b = toBytes(chunk);
    if (this._rest) {
      b = concatBytes([this._rest, b]);
      this._rest = null;
    }
    const frames = [];
    let off = 0;
    while (b.length - off >= HEADER_LEN) {
      const dv = new DataView(b.buffer, b.byteOffset + off, HEADER_LEN);
      if (dv.getUint32(0) !== MAGIC) throw this._fail('bad_frame', 'bad magic');
      const len = dv.getUint32(4);
      if (len < HEADER_LEN) throw this._fail('bad_frame', `length ${len} < ${HEADER_LEN}`);
      if (len - HEADER_LEN > this.maxPayload) {
        throw this._fail('message_too_large', `payload of ${len - HEADER_LEN} bytes exceeds ${this.maxPayload}`);
      }
      if (b.length - off < len) break;
      frames.push({
        flags: dv.getUint8(8),
        kind: dv.getUint8(9),
        payload: b.subarray(off + HEADER_LEN, off + len),
      });
      off += len;
    }
    if (off < b.length) this._rest = b.slice(off); // a copy: b may be reused by the caller
    return frames;
  }

  _fail(code, message) {
    this._err = new ProtocolError(code, message);
    return this._err;
  }
}

/** Parses an ERROR frame's payload: { code, message }. */
export function parseError(payload) {
  try {
    const o = JSON.parse(utf8Decoder.decode(toBytes(payload)));
    return { code: String(o.code ?? ''), message: String(o.message ?? '') };
  } catch {
    return { code: '', message: utf8Decoder.decode(toBytes(payload)) };
  }
}

/** Encodes a CONTROL frame with a JSON object payload. */
export function encodeControl(obj) {
  return encodeFrame(Kind.CONTROL, JSON.stringify(obj));
}

// ---------------------------------------------------------------- containers

const HEADER_KEYS = ['target_id', 'target_sub_id', 'source_id', 'source_sub_id', 'message_type', 'version'];
const TYPES = new Set([
  'null', 'bool', 'bytes', 'int16', 'uint16', 'int32', 'uint32', 'float32', 'float64',
  'string', 'container', 'int64', 'uint64', 'array',
]);
const INT_RANGE = {
  int16: [-32768, 32767],
  uint16: [0, 65535],
  int32: [-2147483648, 2147483647],
  uint32: [0, 4294967295],
};
const BIG_RANGE = {
  int64: [-(1n << 63n), (1n << 63n) - 1n],
  uint64: [0n, (1n << 64n) - 1n],
};
const MAX_DEPTH = 256;

/**
 * A container value, for building containers:
 *   { header: { source_id: 'web', message_type: 'chat' },
 *     values: [value('count', 'int32', 42), value('msg', 'string', 'hi')] }
 * JavaScript forms by type: null; bool: boolean; int16..uint32: number;
 * int64/uint64: bigint (numbers and decimal strings are accepted);
 * float32/float64: number; bytes: Uint8Array; string: string (or
 * Uint8Array for bytes that are not UTF-8); container: a container object;
 * array: an array of values.
 */
export function value(name, type, v = null) {
  return { name, type, value: v };
}

/** Encodes a container in msgnet's JSON form (docs/CONTAINER.md), as Go's MarshalJSON does. */
export function containerToJSON(c) {
  const out = [];
  writeContainer(out, c ?? {}, 0, true);
  return out.join('');
}

/** The container's JSON form as UTF-8 bytes: a DATA payload. */
export function encodeContainer(c) {
  return utf8Encoder.encode(containerToJSON(c));
}

/** Decodes the JSON form (a string, or UTF-8 bytes) into a container object. */
export function containerFromJSON(text) {
  if (typeof text !== 'string') text = utf8Decoder.decode(toBytes(text));
  return readContainer(JSON.parse(text), 0, true);
}

/** Decodes a DATA payload holding a container's JSON form. */
export function decodeContainer(bytes) {
  return containerFromJSON(utf8Decoder.decode(toBytes(bytes)));
}

function writeContainer(out, c, depth, top) {
  if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new TypeError('a container must be an object');
  const h = c.header ?? {};
  const fields = HEADER_KEYS.map((k) => h[k] ?? '');
  out.push('{');
  if (top || fields.some((f) => f.length > 0)) {
    out.push('"header":{');
    fields.forEach((f, i) => {
      if (i > 0) out.push(',');
      writeField(out, HEADER_KEYS[i], f);
    });
    out.push('},');
  }
  out.push('"values":[');
  (c.values ?? []).forEach((v, i) => {
    if (i > 0) out.push(',');
    writeValue(out, v, depth);
  });
  out.push(']}');
}

function writeValue(out, v, depth) {
  if (v === null || typeof v !== 'object') throw new TypeError('a value must be an object { name, type, value }');
  const { name = '', type } = v;
  if (!TYPES.has(type)) throw new TypeError(`value ${JSON.stringify(String(name))}: unknown type ${JSON.stringify(type)}`);
  const x = v.value;
  const fail = (why) => new RangeError(`value ${JSON.stringify(String(name))} (${type}): ${why}`);
  out.push('{');
  writeField(out, 'name', name);
  out.push(`,"type":"${type}",`);
  switch (type) {
    case 'string':
      writeField(out, 'value', x ?? '');
      out.push('}');
      return;
    case 'null':
      if (x != null) throw fail('a null value has no value');
      out.push('"value":null');
      break;
    case 'bool':
      if (typeof x !== 'boolean') throw fail('not a boolean');
      out.push(`"value":${x}`);
      break;
    case 'int16':
    case 'uint16':
    case 'int32':
    case 'uint32': {
      const n = typeof x === 'string' ? Number(x) : x;
      const [lo, hi] = INT_RANGE[type];
      if (typeof n !== 'number' || !Number.isInteger(n) || n < lo || n > hi) throw fail(`${x} is not an integer in [${lo}, ${hi}]`);
      out.push(`"value":${Object.is(n, -0) ? 0 : n}`);
      break;
    }
    case 'int64':
    case 'uint64': {
      const n = toBigInt(x);
      const [lo, hi] = BIG_RANGE[type];
      if (n === null || n < lo || n > hi) throw fail(`${x} is not an integer in [${lo}, ${hi}]`);
      out.push(`"value":"${n}"`);
      break;
    }
    case 'float32':
    case 'float64':
      if (typeof x !== 'number') throw fail('not a number');
      out.push(`"value":${formatFloat(x, type === 'float32')}`);
      break;
    case 'bytes':
      out.push(`"value":"${base64Encode(toBytes(x))}"`);
      break;
    case 'container':
      if (depth >= MAX_DEPTH) throw fail('nested too deep');
      out.push('"value":');
      writeContainer(out, x ?? {}, depth + 1, false);
      break;
    case 'array':
      if (depth >= MAX_DEPTH) throw fail('nested too deep');
      if (!Array.isArray(x)) throw fail('not an array of values');
      out.push('"value":[');
      x.forEach((e, i) => {
        if (i > 0) out.push(',');
        writeValue(out, e, depth + 1);
      });
      out.push(']');
      break;
  }
  out.push('}');
}

function toBigInt(x) {
  if (typeof x === 'bigint') return x;
  if (typeof x === 'number') return Number.isSafeInteger(x) ? BigInt(x) : null;
  if (typeof x === 'string' && /^-?\d+$/.test(x)) return BigInt(x);
  return null;
}

// writeField writes "key":"s", or "key_b64":"..." for bytes that are not
// UTF-8 (a Uint8Array that is valid UTF-8 is written as a string).
function writeField(out, key, s) {
  if (typeof s === 'string') {
    out.push(`"${key}":`, quote(s));
    return;
  }
  const b = toBytes(s);
  let text;
  try {
    text = strictUTF8.decode(b);
  } catch {
    out.push(`"${key}_b64":"${base64Encode(b)}"`);
    return;
  }
  out.push(`"${key}":`, quote(text));
}

// quote escapes exactly as msgnet's Go writer does: '"', '\', control
// characters, U+2028 and U+2029.
function quote(s) {
  let r = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc = null;
    if (c === 0x22) esc = '\\"';
    else if (c === 0x5c) esc = '\\\\';
    else if (c === 0x0a) esc = '\\n';
    else if (c === 0x0d) esc = '\\r';
    else if (c === 0x09) esc = '\\t';
    else if (c < 0x20) esc = '\\u00' + c.toString(16).padStart(2, '0');
    else if (c === 0x2028 || c === 0x2029) esc = '\\u' + c.toString(16);
    if (esc !== null) {
      r += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return r + s.slice(start) + '"';
}

/**
 * Formats a float as Go's strconv.FormatFloat(f, 'g', -1, 32 or 64) does,
 * which is what msgnet's JSON writer uses: the shortest decimal that reads
 * back to the same value (for float32: to the same float32), in exponent
 * form when the exponent is < -4 or >= 6 (1e+06, 1.5e-07). NaN and the
 * infinities become the strings the JSON form uses for them.
 */
export function formatFloat(f, isFloat32 = false) {
  if (Number.isNaN(f)) return '"NaN"';
  if (f === Infinity) return '"Infinity"';
  if (f === -Infinity) return '"-Infinity"';
  if (f === 0) return Object.is(f, -0) ? '-0' : '0';
  let e; // "d.ddde±x"
  if (isFloat32) {
    const v = Math.fround(f);
    for (let p = 0; p < 9; p++) {
      e = v.toExponential(p);
      if (Math.fround(Number(e)) === v) break;
    }
  } else {
    e = f.toExponential();
  }
  const neg = e[0] === '-';
  const m = /^-?(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(e);
  const digits = (m[1] + (m[2] ?? '')).replace(/0+$/, '') || '0';
  const exp = Number(m[3]);
  let s;
  if (exp < -4 || exp >= 6) {
    const ex = Math.abs(exp);
    s = digits[0] + (digits.length > 1 ? '.' + digits.slice(1) : '') + 'e' + (exp < 0 ? '-' : '+') + (ex < 10 ? '0' : '') + ex;
  } else if (exp < 0) {
    s = '0.' + '0'.repeat(-exp - 1) + digits;
  } else if (digits.length <= exp + 1) {
    s = digits + '0'.repeat(exp + 1 - digits.length);
  } else {
    s = digits.slice(0, exp + 1) + '.' + digits.slice(exp + 1);
  }
  return (neg ? '-' : '') + s;
}

function readContainer(o, depth, top) {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new SyntaxError('container: not a JSON object');
  const c = {};
  for (const k of Object.keys(o)) {
    if (k !== 'header' && k !== 'values') throw new SyntaxError(`container: unknown key ${JSON.stringify(k)}`);
  }
  const header = {};
  for (const k of HEADER_KEYS) header[k] = '';
  if (o.header != null) {
    if (typeof o.header !== 'object' || Array.isArray(o.header)) throw new SyntaxError('container: header is not an object');
    for (const [k, v] of Object.entries(o.header)) {
      const key = k.endsWith('_b64') ? k.slice(0, -4) : k;
      if (!HEADER_KEYS.includes(key)) throw new SyntaxError(`container: unknown header key ${JSON.stringify(k)}`);
      header[key] = readField(k, v);
    }
  }
  if (top || HEADER_KEYS.some((k) => header[k].length > 0)) c.header = header;
  const values = o.values ?? [];
  if (!Array.isArray(values)) throw new SyntaxError('container: values is not an array');
  c.values = values.map((v) => readValue(v, depth));
  return c;
}

function readField(key, v) {
  if (typeof v !== 'string') throw new SyntaxError(`container: ${key} is not a string`);
  return key.endsWith('_b64') ? base64Decode(v) : v;
}

function readValue(o, depth) {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new SyntaxError('container: a value is not an object');
  let name = '';
  let raw;
  let hasValue = false;
  let b64 = false;
  for (const [k, v] of Object.entries(o)) {
    switch (k) {
      case 'name':
      case 'name_b64':
        name = readField(k, v);
        break;
      case 'type':
        break;
      case 'value':
        raw = v;
        hasValue = true;
        break;
      case 'value_b64':
        raw = v;
        hasValue = true;
        b64 = true;
        break;
      default:
        throw new SyntaxError(`container: unknown value key ${JSON.stringify(k)}`);
    }
  }
  const type = o.type;
  const where = `value ${JSON.stringify(typeof name === 'string' ? name : '(bytes)')}`;
  if (!TYPES.has(type)) throw new SyntaxError(`container: ${where}: unknown type ${JSON.stringify(type)}`);
  if (b64 && type !== 'string') throw new SyntaxError(`container: ${where}: value_b64 on a ${type}`);
  if (!hasValue && type !== 'null') throw new SyntaxError(`container: ${where}: no value`);
  const bad = (why) => new SyntaxError(`container: ${where} (${type}): ${why}`);
  let v;
  switch (type) {
    case 'null':
      if (raw != null) throw bad('a null has no value');
      v = null;
      break;
    case 'bool':
      if (typeof raw !== 'boolean') throw bad('not a boolean');
      v = raw;
      break;
    case 'int16':
    case 'uint16':
    case 'int32':
    case 'uint32': {
      const n = typeof raw === 'string' && /^-?\d+$/.test(raw) ? Number(raw) : raw;
      const [lo, hi] = INT_RANGE[type];
      if (typeof n !== 'number' || !Number.isInteger(n) || n < lo || n > hi) throw bad(`${raw} is out of range`);
      v = n;
      break;
    }
    case 'int64':
    case 'uint64': {
      const n = typeof raw === 'number' && Number.isInteger(raw) ? BigInt(raw) : toBigInt(raw);
      const [lo, hi] = BIG_RANGE[type];
      if (n === null || n < lo || n > hi) throw bad(`${raw} is out of range`);
      v = n;
      break;
    }
    case 'float32':
    case 'float64': {
      let n = raw;
      if (raw === 'NaN' || raw === 'Infinity' || raw === '-Infinity') n = Number(raw);
      if (typeof n !== 'number') throw bad('not a number');
      v = type === 'float32' ? Math.fround(n) : n;
      break;
    }
    case 'bytes':
      if (typeof raw !== 'string') throw bad('not a base64 string');
      v = base64Decode(raw);
      break;
    case 'string':
      if (typeof raw !== 'string') throw bad('not a string');
      v = b64 ? base64Decode(raw) : raw;
      break;
    case 'container':
      if (depth >= MAX_DEPTH) throw bad('nested too deep');
      v = readContainer(raw, depth + 1, false);
      break;
    case 'array':
      if (depth >= MAX_DEPTH) throw bad('nested too deep');
      if (!Array.isArray(raw)) throw bad('not an array');
      v = raw.map((e) => readValue(e, depth + 1));
      break;
  }
  return { name, type, value: v };
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = new Map([...B64].map((ch, i) => [ch, i]));

/** Standard base64 with padding. */
export function base64Encode(b) {
  let s = '';
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    s += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i < b.length) {
    const n = (b[i] << 16) | ((i + 1 < b.length ? b[i + 1] : 0) << 8);
    s += B64[n >> 18] + B64[(n >> 12) & 63] + (i + 1 < b.length ? B64[(n >> 6) & 63] : '=') + '=';
  }
  return s;
}

/** Decodes standard base64 with padding; throws on anything else. */
export function base64Decode(s) {
  if (s.length % 4 !== 0) throw new SyntaxError('base64: length is not a multiple of 4');
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < s.length; i += 4) {
    let n = 0;
    for (let j = 0; j < 4; j++) {
      const ch = s[i + j];
      let d = B64_INDEX.get(ch);
      if (d === undefined) {
        if (ch === '=' && i + 4 === s.length && j >= 4 - pad) d = 0;
        else throw new SyntaxError(`base64: bad character ${JSON.stringify(ch)}`);
      }
      n = (n << 6) | d;
    }
    if (o < out.length) out[o++] = n >> 16;
    if (o < out.length) out[o++] = (n >> 8) & 255;
    if (o < out.length) out[o++] = n & 255;
  }
  return out;
}

// ---------------------------------------------------------------- client

/**
 * The delay before reconnect attempt number attempt (0-based):
 * base·2^attempt capped at max, half of it fixed and half random, as the
 * Go client does.
 */
export function backoff(attempt, base, max, random = Math.random) {
  const d = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return d / 2 + random() * (d / 2);
}

const now = () => (globalThis.performance ? globalThis.performance.now() : Date.now());
const HB_BIT = 1n << 63n;
const FEATURE_REQUEST = 'request';
const FEATURE_RELIABLE = 'reliable';
const ACK_EVERY = 256; // a subscription is acknowledged every this many messages...
const STREAM_TICK_MS = 50; // ...and this often when quiet; expired publishes are given up as often
const MAX_STREAM_NAME = 255; // bytes: its length is one byte on the wire
const BATCH_BYTES = 256 << 10; // what a new connection sends first goes in WebSocket messages of about this size
const pos0 = (v) => (Number.isSafeInteger(v) && v >= 0 ? v : 0);
const REPLY_OK = 0;
const REPLY_ERROR = 1;
const MAX_TIMEOUT = 0x7fffffff; // setTimeout's limit in ms

function abortReason(signal) {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

function errorText(e) {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

/** A received message: the DATA payload and ways to read it. */
export class Message {
  constructor(data) {
    /** The payload bytes. */
    this.data = data;
  }
  /** The payload as UTF-8 text. */
  text() {
    return utf8Decoder.decode(this.data);
  }
  /** The payload as a container in JSON form. */
  container() {
    return decodeContainer(this.data);
  }
}

/**
 * A message of a subscribed stream (docs/PROTOCOL.md 6.7): its stream, its
 * position (epoch, offset), and its payload (data, also as payload).
 * epoch is the stream's incarnation as the server writes it: a decimal
 * string, up to 2^64-1 (BigInt(epoch) for arithmetic; never a number,
 * which would round it). offset counts the stream's messages from 1.
 * replayed: the message was already in the stream when the server
 * answered this connection's subscription, so it comes from the stream's
 * log: after a reconnect, what was published while the client was away.
 */
export class StreamMessage extends Message {
  constructor(stream, epoch, offset, data, replayed = false) {
    super(data);
    this.stream = stream;
    this.epoch = epoch;
    this.offset = offset;
    this.replayed = replayed;
  }
  /** The payload bytes (the same as data). */
  get payload() {
    return this.data;
  }
}

/** The name of a group's stream: 'group:' + name. */
export function groupStream(name) {
  return `group:${name}`;
}

/** The name of the stream of messages addressed to a client id: 'client:' + id. */
export function clientStream(id) {
  return `client:${id}`;
}

// randomHex is n random bytes in hex. Without crypto.getRandomValues (Node
// 18 has it only behind a flag) Math.random serves: a publisher id must be
// unique, not secret.
function randomHex(n) {
  const b = new Uint8Array(n);
  if (typeof globalThis.crypto?.getRandomValues === 'function') globalThis.crypto.getRandomValues(b);
  else for (let i = 0; i < n; i++) b[i] = Math.floor(Math.random() * 256);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

// streamNameFrame is a stream's name as frames carry it: one byte of
// length, then the name.
function streamNameFrame(name) {
  const b = utf8Encoder.encode(name);
  const out = new Uint8Array(1 + b.length);
  out[0] = b.length;
  out.set(b, 1);
  return out;
}

/**
 * Client is a msgnet session over WebSocket, with hello/welcome, PING,
 * heartbeats, request/reply, and reconnect with backoff and jitter.
 *
 * Options:
 *   clientId       sent in the hello (default: none; the server uses the session id)
 *   reconnect      true (default), false, or { base: 250, max: 10000, attempts: Infinity } (ms)
 *   heartbeat      PING interval in ms; default a third of the server's idle timeout, at most 15 s; 0: off
 *   heartbeatTimeout  ms a heartbeat PING may go unanswered (default: the interval)
 *   connectTimeout ms for a connection's hello/welcome (default 10000)
 *   bufferBytes    bytes of sends kept while reconnecting (default 1 MiB)
 *   maxMessageSize largest payload accepted from the server (default 16 MiB)
 *   protocols      WebSocket subprotocols (default ['msgnet'])
 *   WebSocket      the WebSocket class (default globalThis.WebSocket)
 *   reliable       true or { maxBytes: 8 MiB, maxAgeMs: 60000 }: acknowledged
 *                  delivery (publish, subscribe; docs/PROTOCOL.md 6.7)
 *
 * Callbacks (assign them): onopen(welcome), onreconnect(welcome),
 * onmessage(Message), onrequest(Message) => reply, onerror({code,
 * message}), onclose({code, reason, willReconnect}), onstatechange(state);
 * with reliable: onstream(StreamMessage), onsubscribed({stream, epoch,
 * first, last, next, resumed}), oncontinuitylost({stream, missed, next,
 * epoch, reason}), onpublishfailed({stream, payload, error}).
 *
 * State: 'idle', 'connecting', 'open', 'reconnecting', 'closed'.
 */
export class Client {
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.clientId = options.clientId ?? '';
    const rc = options.reconnect ?? true;
    this._reconnect = rc === false ? null : { base: 250, max: 10000, attempts: Infinity, ...(rc === true ? {} : rc) };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') throw new TypeError('no WebSocket implementation (pass options.WebSocket)');
    this.state = 'idle';
    this.sessionId = '';
    this.serverId = '';
    this.maxMessageSize = 1 << 20;
    /** The extensions the server granted on this connection, e.g. ['request']. */
    this.features = [];
    this.onopen = null;
    this.onreconnect = null;
    this.onmessage = null;
    this.onrequest = null;
    this.onerror = null;
    this.onclose = null;
    this.onstatechange = null;

    this._ws = null;
    this._decoder = null;
    this._welcomed = false;
    this._everOpen = false;
    this._refusal = null;
    this._pending = []; // frames sent while not open
    this._pendingBytes = 0;
    this._pings = new Map(); // id (bigint) -> { resolve, reject, t0, timer }
    this._pingSeq = 0n;
    this._requests = new Map(); // id (bigint) -> { resolve, reject, finish }
    this._reqSeq = 0n; // the last request id on this connection
    this._canRequest = false; // "request" was granted on this connection
    this._lateReplies = 0;
    this._hbTimer = null;
    this._hbOutstanding = null;
    this._hbSentAt = 0;
    this._retryTimer = null;
    this._attempt = 0;
    this._connectWait = null; // { resolve, reject } of connect()
    this._disconnectReason = ''; // the server's DISCONNECT reason
    this._connectTimer = null;

    // Acknowledged delivery (reliable): kept across connections.
    const rel = options.reliable ?? false;
    this._reliable = rel === false || rel === null ? null : {
      maxBytes: rel.maxBytes > 0 ? rel.maxBytes : 8 << 20,
      maxAgeMs: rel.maxAgeMs > 0 ? rel.maxAgeMs : 60000,
    };
    /** The publisher id sent in the hello: random, for the client's life ('' without reliable). */
    this.publisherId = this._reliable ? randomHex(16) : '';
    this.onstream = null;
    this.onsubscribed = null;
    this.oncontinuitylost = null;
    this.onpublishfailed = null;
    this._canStream = false; // "reliable" was granted on this connection
    this._pubSeq = 0; // the last publish sequence number used
    this._pubs = []; // publishes not acknowledged, in order: { seq, stream, payload, frame, at, resolve, reject }
    this._pubBytes = 0; // their payload bytes
    this._pubWaiters = new Set(); // waitPublished() calls: functions called when _pubs empties
    this._subs = new Map(); // stream -> { epoch, last, acked, known, replayTo, waits }
    this._streamTimer = null;
  }

  /**
   * Opens the session; resolves with the welcome
   * ({ session_id, server_id, max_message_size, idle_timeout_ms }).
   * Rejects if the first connection fails (e.g. ProtocolError 'server_full');
   * later failures reconnect when enabled.
   */
  connect() {
    if (this.state !== 'idle') return Promise.reject(new Error(`connect: client is ${this.state}`));
    return new Promise((resolve, reject) => {
      this._connectWait = { resolve, reject };
      this._setState('connecting');
      if (this._reliable) this._streamTimer = setInterval(() => this._streamTick(), STREAM_TICK_MS);
      this._open();
    });
  }

  /** Sends a DATA message (bytes or a string, as UTF-8). */
  send(data) {
    const p = toBytes(data);
    if (p.length > this.maxMessageSize) {
      throw new ProtocolError('message_too_large', `${p.length} bytes exceeds the limit of ${this.maxMessageSize}`);
    }
    this._sendFrame(encodeFrame(Kind.DATA, p), true);
  }

  /** Sends a string as a DATA message, UTF-8 encoded. */
  sendText(text) {
    this.send(String(text));
  }

  /** Sends a container in its JSON form as a DATA message. */
  sendContainer(c) {
    this.send(encodeContainer(c));
  }

  /** Sends a PING; resolves with the round-trip time in ms. */
  ping(timeoutMs = 10000) {
    if (this.state !== 'open') return Promise.reject(new Error(`ping: client is ${this.state}`));
    const id = ++this._pingSeq;
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setBigUint64(0, id);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pings.delete(id);
        reject(new Error('ping: timed out'));
      }, timeoutMs);
      this._pings.set(id, { resolve, reject, t0: now(), timer });
      this._sendFrame(encodeFrame(Kind.PING, payload), false);
    });
  }

  /**
   * Sends a request (docs/PROTOCOL.md 6.1) and resolves with the server's
   * reply, a Message. Options: timeoutMs (default 30000; Infinity: none)
   * and signal (an AbortSignal; aborting rejects with its reason). Rejects
   * with RemoteError when the server's handler failed, and with
   * RequestError otherwise: 'not_open' (requests are not buffered while
   * connecting or reconnecting), 'not_negotiated', 'timeout',
   * 'connection_lost'. A reply that comes after its request gave up is
   * dropped and counted (lateReplies). Ids count up from 1 on each
   * connection; a request is never re-sent on another.
   */
  request(payload, { timeoutMs = 30000, signal } = {}) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      if (this.state !== 'open' || !this._ws) {
        reject(new RequestError('not_open', `request: client is ${this.state}`));
        return;
      }
      if (!this._canRequest) {
        reject(new RequestError('not_negotiated', 'request: the server did not grant request/reply'));
        return;
      }
      if (!(timeoutMs > 0) || (timeoutMs !== Infinity && timeoutMs > MAX_TIMEOUT)) {
        reject(new RangeError(`request: timeoutMs must be in (0, ${MAX_TIMEOUT}] or Infinity, not ${timeoutMs}`));
        return;
      }
      let body;
      try {
        body = toBytes(payload);
      } catch (e) {
        reject(e);
        return;
      }
      if (8 + body.length > this.maxMessageSize) {
        reject(new ProtocolError('message_too_large', `request of ${8 + body.length} bytes exceeds the limit of ${this.maxMessageSize}`));
        return;
      }
      const id = ++this._reqSeq;
      const frame = new Uint8Array(8 + body.length);
      new DataView(frame.buffer).setBigUint64(0, id);
      frame.set(body, 8);
      let timer = null;
      let onAbort = null;
      const finish = () => {
        this._requests.delete(id);
        clearTimeout(timer);
        if (onAbort) signal.removeEventListener('abort', onAbort);
      };
      if (timeoutMs !== Infinity) {
        timer = setTimeout(() => {
          finish();
          reject(new RequestError('timeout', `request: no reply within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      if (signal) {
        onAbort = () => {
          finish();
          reject(abortReason(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
      }
      this._requests.set(id, { resolve, reject, finish });
      try {
        this._ws.send(encodeFrame(Kind.DATA, frame, Flag.REQUEST));
      } catch (e) {
        finish();
        reject(new RequestError('connection_lost', `request: ${e.message ?? e}`));
      }
    });
  }

  /** Replies that arrived after their request had given up (timeout or abort), over the client's life. */
  get lateReplies() {
    return this._lateReplies;
  }

  // -- acknowledged delivery (docs/PROTOCOL.md 6.7)

  /**
   * Publishes payload to a stream (groupStream(name), clientStream(id)).
   * Needs the reliable option. The publish is kept until the server
   * acknowledges it, and sent again, with its sequence number, on the next
   * connection after a lost one, before anything newer; the server stores
   * it once. Returns a promise resolved when the server has stored it, and
   * rejected with a StreamError: 'refused' (status 1: e.g. remoteCode
   * 'bad_stream'; it is not sent again), 'expired' (not acknowledged within
   * maxAgeMs), 'closed', 'not_negotiated'. Failures also go to
   * onpublishfailed, and the promise may be ignored: it never becomes an
   * unhandled rejection.
   *
   * Throws, and keeps nothing, when the publish cannot be taken: StreamError
   * 'buffer_full' (the publishes waiting hold maxBytes), 'not_negotiated',
   * 'closed'; ProtocolError 'message_too_large'; RangeError for a stream
   * name of 0 or more than 255 bytes; TypeError for a payload that is not
   * a string or bytes. Before connect() and while reconnecting, publishes
   * wait and go out on the next connection.
   */
  publish(stream, payload) {
    const bad = this._streamCheck('publish', stream);
    if (bad) throw bad;
    if (this.state === 'closed') throw new StreamError('closed', 'publish: client is closed', stream);
    if (this._welcomed && !this._canStream) throw new StreamError('not_negotiated', 'publish: the server did not grant "reliable"', stream);
    const body = toBytes(payload);
    const name = streamNameFrame(stream);
    if (8 + name.length + body.length > this.maxMessageSize) {
      throw new ProtocolError('message_too_large', `publish of ${8 + name.length + body.length} bytes exceeds the limit of ${this.maxMessageSize}`);
    }
    if (this._pubBytes + body.length > this._reliable.maxBytes) {
      throw new StreamError('buffer_full', `publish: ${this._pubs.length} publishes (${this._pubBytes} bytes) wait for their acknowledgement; the limit is ${this._reliable.maxBytes} bytes`, stream);
    }
    const seq = ++this._pubSeq;
    const frame = encodeFrame(Kind.DATA, concatBytes([u64(seq), name, body]), Flag.PUBLISH);
    let resolve;
    let reject;
    const done = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => {}); // failures are also reported to onpublishfailed
    const p = { seq, stream, payload: frame.subarray(HEADER_LEN + 8 + name.length), frame, at: now(), resolve, reject };
    this._pubs.push(p);
    this._pubBytes += body.length;
    if (this.state === 'open' && this._ws) this._sendRaw(frame); // else first on the next connection
    return done;
  }

  /** How many publishes wait for their acknowledgement. */
  get pending() {
    return this._pubs.length;
  }

  /**
   * Resolves when no publish waits for its acknowledgement any more: each
   * was stored or failed (its own promise and onpublishfailed say which).
   * Options: timeoutMs (default Infinity) and signal; either rejects.
   */
  waitPublished({ timeoutMs = Infinity, signal } = {}) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      if (this._pubs.length === 0) {
        resolve();
        return;
      }
      let timer = null;
      let onAbort = null;
      const finish = () => {
        this._pubWaiters.delete(drained);
        clearTimeout(timer);
        if (onAbort) signal.removeEventListener('abort', onAbort);
      };
      const drained = () => {
        finish();
        resolve();
      };
      if (timeoutMs !== Infinity) {
        timer = setTimeout(() => {
          finish();
          reject(new Error(`waitPublished: ${this._pubs.length} publishes not acknowledged within ${timeoutMs} ms`));
        }, Math.min(timeoutMs, MAX_TIMEOUT));
      }
      if (signal) {
        onAbort = () => {
          finish();
          reject(abortReason(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
      }
      this._pubWaiters.add(drained);
    });
  }

  /**
   * Subscribes to a stream (groupStream(name), clientStream(this client's
   * id)); its messages go to onstream. Needs the reliable option. Resolves
   * when the server has confirmed it, with { stream, epoch, first, last,
   * next, resumed } (onsubscribed gets the same); rejects with a
   * StreamError: 'refused' (remoteCode 'bad_stream', 'too_many_groups'),
   * 'not_negotiated', 'closed'. A group's stream is delivered from now on;
   * the client's own, from the oldest message kept for it.
   *
   * The subscription lasts until unsubscribe() or close(): after a lost
   * connection the client renews it by itself, resuming after the last
   * message delivered, so that each message reaches onstream once, in
   * order. What left the stream's retention meanwhile is reported to
   * oncontinuitylost, never skipped silently. Before connect() and while
   * reconnecting, the subscription is made on the next connection.
   */
  subscribe(stream) {
    return new Promise((resolve, reject) => {
      const bad = this._streamCheck('subscribe', stream);
      if (bad) {
        reject(bad);
        return;
      }
      if (this.state === 'closed') {
        reject(new StreamError('closed', 'subscribe: client is closed', stream));
        return;
      }
      if (this._welcomed && !this._canStream) {
        reject(new StreamError('not_negotiated', 'subscribe: the server did not grant "reliable"', stream));
        return;
      }
      let sub = this._subs.get(stream);
      if (!sub) {
        sub = { epoch: '', last: 0, acked: 0, known: false, replayTo: 0, waits: [] };
        this._subs.set(stream, sub);
      }
      sub.waits.push({ resolve, reject });
      if (this.state === 'open' && this._ws) this._sendRaw(encodeControl(this._subMsg(stream, sub))); // else first on the next connection
    });
  }

  /** Ends a subscription: its messages are no longer delivered. */
  unsubscribe(stream) {
    const sub = this._subs.get(stream);
    if (!sub) return;
    this._subs.delete(stream);
    for (const w of sub.waits) w.reject(new StreamError('closed', `subscribe: unsubscribed from ${stream} first`, stream));
    if (this.state === 'open' && this._canStream && this._ws) this._sendRaw(encodeControl({ op: 'unsub', stream }));
  }

  /** Ends the session: DISCONNECT with reason, then a normal close. No reconnect. */
  close(reason = 'client closed') {
    if (this.state === 'closed') return;
    const ws = this._ws;
    if (ws && ws.readyState === 1 && this._welcomed) {
      try {
        ws.send(encodeFrame(Kind.DISCONNECT, reason));
      } catch {
        // closing anyway
      }
    }
    this._shutdown(new Error('client closed'), 'client closed');
    if (ws) {
      this._detach(ws);
      try {
        ws.close(1000, 'client closed');
      } catch {
        // already closing
      }
      this._emit('onclose', { code: 1000, reason, willReconnect: false });
    }
  }

  // -- internals

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('onstatechange', s);
  }

  _emit(name, arg) {
    const h = this[name];
    if (typeof h === 'function') {
      try {
        h.call(this, arg);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  _open() {
    this._welcomed = false;
    this._refusal = null;
    this._disconnectReason = '';
    this._decoder = new FrameDecoder({ maxPayload: this.options.maxMessageSize ?? 16 << 20 });
    let ws;
    try {
      ws = new this._WebSocket(this.url, this.options.protocols ?? ['msgnet']);
    } catch (e) {
      this._lost(null, { code: 1006, reason: String(e) });
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    ws.onopen = () => {
      const hello = { op: 'hello' };
      if (this.clientId) hello.client_id = this.clientId;
      hello.features = [FEATURE_REQUEST];
      if (this._reliable) {
        hello.features.push(FEATURE_RELIABLE);
        hello.publisher = this.publisherId;
      }
      ws.send(encodeControl(hello));
    };
    ws.onmessage = (ev) => this._onData(ws, ev.data);
    ws.onclose = (ev) => this._lost(ws, { code: ev.code, reason: ev.reason });
    ws.onerror = () => {}; // onclose follows
    this._connectTimer = setTimeout(() => {
      this._refusal = this._refusal ?? new Error('connect: timed out waiting for the welcome');
      this._abort(ws);
    }, this.options.connectTimeout ?? 10000);
  }

  _onData(ws, data) {
    if (ws !== this._ws) return;
    if (typeof data === 'string') {
      // Text messages only come to text peers; take each line as DATA.
      for (const line of data.split('\n')) this._handleFrame(ws, { kind: Kind.DATA, flags: 0, payload: toBytes(line) });
      return;
    }
    let frames;
    try {
      frames = this._decoder.push(data);
    } catch (e) {
      this._emit('onerror', { code: e.code ?? 'bad_frame', message: e.message });
      this._abort(ws);
      return;
    }
    for (const f of frames) {
      if (ws !== this._ws) return; // a handler closed the client
      this._handleFrame(ws, f);
    }
  }

  _handleFrame(ws, f) {
    switch (f.kind) {
      case Kind.CONTROL: {
        let msg;
        try {
          msg = JSON.parse(utf8Decoder.decode(f.payload));
        } catch {
          return;
        }
        if (msg === null || typeof msg !== 'object') return;
        if (msg.op === 'welcome' && !this._welcomed) this._welcome(msg);
        else if (this._welcomed && this._canStream) this._streamControl(msg);
        return;
      }
      case Kind.DATA:
        if (!this._welcomed) return;
        if (f.flags === 0) this._emit('onmessage', new Message(f.payload.slice()));
        else if (f.flags === Flag.REQUEST && this._canRequest) this._handleRequest(ws, f.payload);
        else if (f.flags === Flag.REPLY && this._canRequest) this._handleReply(ws, f.payload);
        else if (f.flags === Flag.STREAM && this._canStream) this._handleStream(ws, f.payload);
        else if (f.flags === Flag.ACK && this._canStream) this._handlePubAck(ws, f.payload);
        else this._sendError(ws, 'unknown_type', `DATA with flags 0x${f.flags.toString(16).padStart(2, '0')}, which were not negotiated`);
        return;
      case Kind.PING:
        this._sendFrame(encodeFrame(Kind.PONG, f.payload), false);
        return;
      case Kind.PONG: {
        if (f.payload.length !== 8) return;
        const id = new DataView(f.payload.buffer, f.payload.byteOffset, 8).getBigUint64(0);
        if (id & HB_BIT) {
          if (id === this._hbOutstanding) this._hbOutstanding = null;
          return;
        }
        const p = this._pings.get(id);
        if (p) {
          this._pings.delete(id);
          clearTimeout(p.timer);
          p.resolve(now() - p.t0);
        }
        return;
      }
      case Kind.ERROR: {
        const e = parseError(f.payload);
        if (!this._welcomed) this._refusal = new ProtocolError(e.code, e.message);
        this._emit('onerror', e);
        return;
      }
      case Kind.DISCONNECT:
        this._disconnectReason = utf8Decoder.decode(f.payload);
        if (!this._welcomed && !this._refusal) this._refusal = new Error(`disconnected: ${this._disconnectReason}`);
        return; // the server closes the socket next
      default:
        return; // HEARTBEAT, or a kind from a newer server
    }
  }

  // _handleRequest answers a request from the server with onrequest's
  // result: status 0 and the bytes it returned (or resolved with), or
  // status 1 and an error message when it threw (or rejected) or is not
  // set. Handlers are called in the order requests arrive; an async
  // handler's reply is sent when it settles, on the connection the
  // request came on (if that is gone, the reply is dropped).
  _handleRequest(ws, p) {
    if (p.length < 8) {
      this._sendError(ws, 'bad_request', 'request shorter than its id');
      return;
    }
    const id = p.slice(0, 8);
    const h = this.onrequest;
    if (typeof h !== 'function') {
      this._reply(ws, id, REPLY_ERROR, 'no request handler');
      return;
    }
    let result;
    try {
      result = h.call(this, new Message(p.slice(8)));
    } catch (e) {
      this._reply(ws, id, REPLY_ERROR, errorText(e));
      return;
    }
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
      result.then(
        (v) => this._reply(ws, id, REPLY_OK, v),
        (e) => this._reply(ws, id, REPLY_ERROR, errorText(e)),
      );
    } else {
      this._reply(ws, id, REPLY_OK, result);
    }
  }

  _reply(ws, id, status, body) {
    if (ws !== this._ws || !this._welcomed) return; // its connection is gone
    let b;
    try {
      b = toBytes(body);
    } catch (e) {
      status = REPLY_ERROR;
      b = toBytes(`bad reply: ${errorText(e)}`);
    }
    if (9 + b.length > this.maxMessageSize) {
      status = REPLY_ERROR;
      b = toBytes('reply exceeds the message size limit');
    }
    const p = new Uint8Array(9 + b.length);
    p.set(id, 0);
    p[8] = status;
    p.set(b, 9);
    try {
      ws.send(encodeFrame(Kind.DATA, p, Flag.REPLY));
    } catch {
      // onclose follows
    }
  }

  _handleReply(ws, p) {
    if (p.length < 9) {
      this._sendError(ws, 'bad_request', 'reply shorter than its header');
      return;
    }
    const id = new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0);
    const r = this._requests.get(id);
    if (!r) {
      this._lateReplies++; // its request timed out or was aborted
      return;
    }
    r.finish();
    const body = p.slice(9);
    if (p[8] === REPLY_ERROR) r.reject(new RemoteError(utf8Decoder.decode(body)));
    else r.resolve(new Message(body));
  }

  _sendError(ws, code, message) {
    try {
      ws.send(encodeFrame(Kind.ERROR, JSON.stringify({ code, message })));
    } catch {
      // onclose follows
    }
  }

  _failRequests(why) {
    const rs = [...this._requests.values()];
    this._requests.clear();
    for (const r of rs) {
      r.finish();
      r.reject(new RequestError('connection_lost', `request: ${why} before the reply`));
    }
  }

  _welcome(w) {
    clearTimeout(this._connectTimer);
    this._welcomed = true;
    this._attempt = 0;
    this.features = Array.isArray(w.features) ? w.features.filter((f) => typeof f === 'string') : [];
    this._canRequest = this.features.includes(FEATURE_REQUEST);
    this._reqSeq = 0n;
    this.sessionId = w.session_id ?? '';
    this.serverId = w.server_id ?? '';
    if (w.max_message_size > 0) this.maxMessageSize = w.max_message_size;
    this._canStream = this._reliable !== null && this.features.includes(FEATURE_RELIABLE);
    const reconnected = this._everOpen;
    this._everOpen = true;
    // Before any callback can send something newer: the subscriptions and
    // the unacknowledged publishes, then what was sent while not open.
    const frames = this._reliable ? this._resumeStreams() : [];
    if (this._pending.length > 0) {
      frames.push(...this._pending);
      this._pending = [];
      this._pendingBytes = 0;
    }
    this._sendBatch(frames);
    this._setState('open');
    this._startHeartbeat(w.idle_timeout_ms ?? 0);
    if (this._connectWait) {
      const { resolve } = this._connectWait;
      this._connectWait = null;
      resolve(w);
    }
    this._emit(reconnected ? 'onreconnect' : 'onopen', w);
  }

  // _sendFrame sends now when open; DATA (buffer set) sent while connecting
  // or reconnecting waits, in order, within bufferBytes.
  _sendFrame(frame, buffer) {
    if (this.state === 'open' && this._ws) {
      this._ws.send(frame);
      return;
    }
    if (!buffer || (this.state !== 'connecting' && this.state !== 'reconnecting')) {
      throw new Error(`send: client is ${this.state}`);
    }
    const limit = this.options.bufferBytes ?? 1 << 20;
    if (this._pendingBytes + frame.length > limit) throw new Error('send: reconnect buffer full');
    this._pending.push(frame);
    this._pendingBytes += frame.length;
  }

  _startHeartbeat(idleMs) {
    this._stopHeartbeat();
    let interval = this.options.heartbeat;
    if (interval === undefined) interval = idleMs > 0 ? Math.min(15000, idleMs / 3) : 15000;
    if (!interval) return;
    const timeout = this.options.heartbeatTimeout ?? interval;
    let seq = 0n;
    const ws = this._ws;
    this._hbTimer = setInterval(() => {
      if (this._hbOutstanding !== null) {
        if (now() - this._hbSentAt >= timeout) {
          this._refusal = new Error('heartbeat timeout');
          this._abort(ws);
        }
        return;
      }
      seq += 1n;
      this._hbOutstanding = HB_BIT | seq;
      this._hbSentAt = now();
      const p = new Uint8Array(8);
      new DataView(p.buffer).setBigUint64(0, this._hbOutstanding);
      try {
        ws.send(encodeFrame(Kind.PING, p));
      } catch {
        // onclose follows
      }
    }, interval);
  }

  _stopHeartbeat() {
    clearInterval(this._hbTimer);
    this._hbTimer = null;
    this._hbOutstanding = null;
  }

  // _abort drops a connection that failed on our side; onclose of the
  // socket is not waited for.
  _abort(ws) {
    if (ws !== this._ws) return;
    try {
      ws.close(4000, 'msgnet client: connection failed');
    } catch {
      // already closing
    }
    this._lost(ws, { code: 4000, reason: this._refusal ? this._refusal.message : 'aborted' });
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this._ws === ws) this._ws = null;
  }

  _lost(ws, ev) {
    if (ws && ws !== this._ws) return;
    if (ws) this._detach(ws);
    clearTimeout(this._connectTimer);
    this._stopHeartbeat();
    const wasOpen = this._welcomed;
    this._welcomed = false;
    this._canRequest = false;
    this._canStream = false;
    this.features = [];
    this._failRequests('connection lost');
    for (const p of this._pings.values()) {
      clearTimeout(p.timer);
      p.reject(new Error('ping: connection lost'));
    }
    this._pings.clear();
    const reason = this._refusal ?? new Error(`connection closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`);

    if (this._connectWait) {
      // The first connection failed: connect() reports it.
      const { reject } = this._connectWait;
      this._connectWait = null;
      this._shutdown(reason);
      reject(reason);
      return;
    }
    const rc = this._reconnect;
    const willReconnect = rc !== null && this._attempt < rc.attempts;
    if (wasOpen || !willReconnect) {
      this._emit('onclose', { code: ev.code, reason: ev.reason || this._disconnectReason || reason.message, willReconnect });
    }
    if (!willReconnect) {
      this._shutdown(reason);
      return;
    }
    this._setState('reconnecting');
    const delay = backoff(this._attempt++, rc.base, rc.max);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._open();
    }, delay);
  }

  _shutdown(reason, why = 'connection lost') {
    clearTimeout(this._retryTimer);
    clearTimeout(this._connectTimer);
    this._stopHeartbeat();
    this._pending = [];
    this._pendingBytes = 0;
    this._canRequest = false;
    this._failRequests(why);
    for (const p of this._pings.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this._pings.clear();
    if (this._connectWait) {
      this._connectWait.reject(reason);
      this._connectWait = null;
    }
    clearInterval(this._streamTimer);
    this._streamTimer = null;
    this._canStream = false;
    this._failStreams('closed', `${reason.message ?? reason}`);
    this._setState('closed');
  }

  // _sendBatch sends frames on the open socket, several whole frames to a
  // WebSocket message.
  _sendBatch(frames) {
    let i = 0;
    while (i < frames.length) {
      const batch = [];
      let n = 0;
      while (i < frames.length && (batch.length === 0 || n + frames[i].length <= BATCH_BYTES)) {
        n += frames[i].length;
        batch.push(frames[i++]);
      }
      this._sendRaw(batch.length === 1 ? batch[0] : concatBytes(batch));
    }
  }

  // _sendRaw sends on the open socket; on one that is closing it sends
  // nothing (a browser would drop it and log an error), and if the send
  // fails, onclose follows: what must be sent again is, on the next
  // connection.
  _sendRaw(bytes) {
    if (!this._ws || this._ws.readyState !== 1) return;
    try {
      this._ws.send(bytes);
    } catch {
      // onclose follows
    }
  }

  // -- acknowledged delivery: internals

  _streamCheck(what, stream) {
    if (!this._reliable) return new StreamError('not_negotiated', `${what}: the client was made without the reliable option`, String(stream));
    if (typeof stream !== 'string') return new TypeError(`${what}: a stream name is a string`);
    const n = utf8Encoder.encode(stream).length;
    if (n === 0 || n > MAX_STREAM_NAME) return new RangeError(`${what}: a stream name is 1 to ${MAX_STREAM_NAME} bytes, not ${n}`);
    return null;
  }

  // _subMsg is the sub for a stream, naming where it resumes once the
  // server has told its position.
  _subMsg(stream, sub) {
    const m = { op: 'sub', stream };
    if (sub.known) {
      m.epoch = sub.epoch;
      m.after = sub.last;
    }
    return m;
  }

  // _resumeStreams returns what a new connection sends first: a sub for
  // each subscription (resuming it), then the publishes not acknowledged,
  // in order, with their sequence numbers. On a server that did not grant
  // "reliable", they fail instead.
  _resumeStreams() {
    if (!this._canStream) {
      this._failStreams('not_negotiated', 'the server did not grant "reliable"');
      return [];
    }
    this._expirePublishes();
    const frames = [];
    for (const [stream, sub] of this._subs) frames.push(encodeControl(this._subMsg(stream, sub)));
    const tooLarge = this._pubs.filter((p) => p.frame.length - HEADER_LEN > this.maxMessageSize);
    for (const p of tooLarge) {
      this._dropPublish(p);
      this._publishFailed(p, new StreamError('refused', `publish: larger than the server's limit of ${this.maxMessageSize} bytes`, p.stream, 'message_too_large'));
    }
    for (const p of this._pubs) frames.push(p.frame);
    this._checkDrained();
    return frames;
  }

  // _failStreams fails every publish waiting and every subscription not
  // confirmed yet, and forgets the subscriptions.
  _failStreams(code, why) {
    const pubs = this._pubs;
    this._pubs = [];
    this._pubBytes = 0;
    for (const p of pubs) this._publishFailed(p, new StreamError(code, `publish: ${why}`, p.stream));
    const subs = [...this._subs];
    this._subs.clear();
    for (const [stream, sub] of subs) {
      for (const w of sub.waits) w.reject(new StreamError(code, `subscribe: ${why}`, stream));
    }
    this._checkDrained();
  }

  _dropPublish(p) {
    const i = this._pubs.indexOf(p);
    if (i >= 0) {
      this._pubs.splice(i, 1);
      this._pubBytes -= p.payload.length;
    }
  }

  _publishFailed(p, err) {
    p.reject(err);
    this._emit('onpublishfailed', { stream: p.stream, payload: p.payload, error: err });
  }

  _checkDrained() {
    if (this._pubs.length > 0) return;
    for (const f of [...this._pubWaiters]) f();
  }

  // _expirePublishes gives up the publishes older than maxAgeMs.
  _expirePublishes() {
    const limit = now() - this._reliable.maxAgeMs;
    const expired = [];
    while (this._pubs.length > 0 && this._pubs[0].at <= limit) {
      const p = this._pubs.shift();
      this._pubBytes -= p.payload.length;
      expired.push(p);
    }
    for (const p of expired) {
      this._publishFailed(p, new StreamError('expired', `publish to ${p.stream}: not acknowledged within ${this._reliable.maxAgeMs} ms`, p.stream));
    }
    if (expired.length > 0) this._checkDrained();
  }

  // _streamTick runs every STREAM_TICK_MS from connect() to the end:
  // acknowledges what was delivered and not yet acknowledged (so that a
  // quiet stream is acknowledged too), and gives up expired publishes,
  // also while reconnecting.
  _streamTick() {
    if (this._welcomed && this._canStream) {
      for (const [stream, sub] of this._subs) {
        if (sub.known && sub.last > sub.acked) {
          sub.acked = sub.last;
          this._sendAck(stream, sub.last);
        }
      }
    }
    this._expirePublishes();
  }

  _sendAck(stream, offset) {
    this._sendRaw(encodeFrame(Kind.DATA, concatBytes([streamNameFrame(stream), u64(offset)]), Flag.ACK));
  }

  // _handleStream delivers a stream's message, once: an offset not above
  // the last one delivered is a repeat (a replay overlapping what was
  // had) and is dropped. It is acknowledged after onstream returns, every
  // ACK_EVERY messages (and by _streamTick).
  _handleStream(ws, p) {
    const n = p.length > 0 ? p[0] : 0;
    if (n === 0 || p.length < 1 + n + 8) {
      this._sendError(ws, 'bad_stream', 'a stream message is a stream name, an offset and a payload');
      return;
    }
    const stream = utf8Decoder.decode(p.subarray(1, 1 + n));
    const offset = Number(new DataView(p.buffer, p.byteOffset + 1 + n, 8).getBigUint64(0));
    const sub = this._subs.get(stream);
    if (!sub || (sub.known && offset <= sub.last)) return;
    sub.last = offset;
    sub.known = true;
    this._emit('onstream', new StreamMessage(stream, sub.epoch, offset, p.slice(1 + n + 8), offset <= sub.replayTo));
    if (ws !== this._ws || this._subs.get(stream) !== sub) return; // closed or unsubscribed meanwhile
    if (sub.last - sub.acked >= ACK_EVERY) {
      sub.acked = sub.last;
      this._sendAck(stream, sub.last);
    }
  }

  // _handlePubAck takes the server's answer to a run of publishes, first
  // to last. Status 0 also acknowledges any earlier one still held: its
  // answer was lost with a connection.
  _handlePubAck(ws, p) {
    if (p.length < 17) {
      this._sendError(ws, 'bad_stream', 'a publish acknowledgement is two sequence numbers and a status');
      return;
    }
    const dv = new DataView(p.buffer, p.byteOffset, 16);
    const first = Number(dv.getBigUint64(0));
    const last = Number(dv.getBigUint64(8));
    const ok = p[16] === 0;
    const keep = [];
    const answered = [];
    for (const q of this._pubs) {
      if ((q.seq >= first && q.seq <= last) || (ok && q.seq < first)) {
        this._pubBytes -= q.payload.length;
        answered.push(q);
      } else {
        keep.push(q);
      }
    }
    this._pubs = keep;
    if (ok) {
      for (const q of answered) q.resolve();
    } else {
      const text = utf8Decoder.decode(p.subarray(17));
      const i = text.indexOf(': ');
      const remoteCode = i > 0 ? text.slice(0, i) : '';
      for (const q of answered) this._publishFailed(q, new StreamError('refused', `publish to ${q.stream} refused: ${text}`, q.stream, remoteCode));
    }
    this._checkDrained();
  }

  // _streamControl takes the server's CONTROL frames of streams:
  // subscribed, refused, lost.
  _streamControl(m) {
    const sub = typeof m.stream === 'string' ? this._subs.get(m.stream) : undefined;
    const pos = (v) => (Number.isSafeInteger(v) && v >= 0 ? v : null);
    switch (m.op) {
      case 'subscribed': {
        const next = pos(m.next);
        if (!sub || next === null || next === 0) return;
        const info = {
          stream: m.stream,
          epoch: String(m.epoch ?? ''),
          first: pos(m.first) ?? next,
          last: pos(m.last) ?? next - 1,
          next,
          resumed: sub.known,
        };
        sub.epoch = info.epoch;
        sub.last = next - 1;
        sub.acked = sub.last;
        sub.known = true;
        sub.replayTo = info.last;
        const waits = sub.waits;
        sub.waits = [];
        if (m.lost && typeof m.lost === 'object') this._continuityLost(m.stream, m.lost.missed, next, info.epoch, m.lost.reason);
        this._emit('onsubscribed', info);
        for (const w of waits) w.resolve(info);
        return;
      }
      case 'refused': {
        if (!sub) return;
        const code = String(m.code ?? '');
        const waits = sub.waits;
        sub.waits = [];
        if (!sub.known) this._subs.delete(m.stream);
        for (const w of waits) w.reject(new StreamError('refused', `subscribe to ${m.stream} refused: ${code}${m.message ? ': ' + m.message : ''}`, m.stream, code));
        return;
      }
      case 'lost': {
        const next = pos(m.next);
        if (!sub || next === null || next === 0) return;
        sub.epoch = String(m.epoch ?? '');
        sub.last = next - 1;
        sub.acked = sub.last;
        sub.known = true;
        this._continuityLost(m.stream, m.missed, next, sub.epoch, m.reason);
        return;
      }
    }
  }

  _continuityLost(stream, missed, next, epoch, reason) {
    this._emit('oncontinuitylost', { stream, missed: pos0(missed), next, epoch, reason: String(reason ?? '') });
  }
}
