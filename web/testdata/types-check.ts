// Type-checked, never run: uses every export of msgnet.js through
// msgnet.d.ts, as a TypeScript user would, and marks misuse that must not
// compile with @ts-expect-error (tsc fails if such a line compiles).
// types.test.js runs tsc --noEmit --strict over it with no DOM or Node
// types (the declarations must stand alone) and again with the DOM lib.
import {
  Client,
  Flag,
  FrameDecoder,
  HEADER_LEN,
  Kind,
  MAGIC,
  Message,
  ProtocolError,
  RemoteError,
  RequestError,
  StreamError,
  StreamMessage,
  backoff,
  base64Decode,
  base64Encode,
  clientStream,
  concatBytes,
  containerFromJSON,
  containerToJSON,
  decodeContainer,
  encodeContainer,
  encodeControl,
  encodeFrame,
  formatFloat,
  groupStream,
  parseError,
  toBytes,
  value,
} from '@msgnet/client';
import type {
  AbortSignalLike,
  ClientOptions,
  ClientState,
  CloseInfo,
  Container,
  ContainerHeader,
  ContainerInput,
  ContainerValue,
  ContainerValueInput,
  ContinuityLost,
  ControlMessage,
  ErrorCode,
  ErrorInfo,
  FlagValue,
  Frame,
  FrameDecoderOptions,
  HeaderField,
  KindValue,
  Name,
  Payload,
  PublishFailure,
  ReconnectOptions,
  ReliableOptions,
  ReplyBody,
  RequestErrorCode,
  RequestOptions,
  StreamErrorCode,
  Subscribed,
  TopContainer,
  ValueInputs,
  ValueType,
  ValueTypes,
  WaitOptions,
  Welcome,
  WebSocketConstructor,
  WebSocketLike,
} from '@msgnet/client';

// ---------------------------------------------------------------- constants and frames

const magic: 0x4d534749 = MAGIC;
const headerLen: 10 = HEADER_LEN;
const data: KindValue = Kind.DATA;
const request: FlagValue = Flag.REQUEST;
const flags: number = Flag.REQUEST | Flag.REPLY | Flag.COMPRESSED | Flag.ENCRYPTED;
// @ts-expect-error Kind is read-only
Kind.DATA = 0x11;
// @ts-expect-error no such kind
Kind.NOPE;

const frame: Uint8Array = encodeFrame(Kind.DATA, 'hi');
encodeFrame(Kind.PING);
encodeFrame(Kind.DATA, new Uint8Array([1]), Flag.REQUEST);
encodeFrame(Kind.DATA, new ArrayBuffer(2));
encodeFrame(Kind.DATA, new DataView(new ArrayBuffer(2)));
// @ts-expect-error kind is one of Kind's values
encodeFrame('DATA', 'hi');
// @ts-expect-error 0x99 is no kind
encodeFrame(0x99, 'hi');
// @ts-expect-error a payload is a string or bytes
encodeFrame(Kind.DATA, 42);
// @ts-expect-error a payload is a string or bytes
encodeFrame(Kind.DATA, [1, 2]);

const control: ControlMessage = { op: 'hello', client_id: 'c1', features: ['request'] };
encodeControl(control);
// @ts-expect-error a CONTROL object needs a string op
encodeControl({ client_id: 'c1' });

const decoderOptions: FrameDecoderOptions = { maxPayload: 100 };
const decoder = new FrameDecoder(decoderOptions);
new FrameDecoder();
const frames: Frame[] = decoder.push(frame);
decoder.push(frame.buffer);
const buffered: number = decoder.buffered;
for (const f of frames) {
  const k: number = f.kind;
  const fl: number = f.flags;
  const p: Uint8Array = f.payload;
}
// @ts-expect-error buffered is read-only
decoder.buffered = 1;
// @ts-expect-error the decoder takes bytes
decoder.push('text');

const joined: Uint8Array = concatBytes([frame, toBytes('x'), toBytes(null), toBytes(undefined), toBytes(new ArrayBuffer(1))]);
// @ts-expect-error concatBytes takes Uint8Arrays
concatBytes(['a']);
const b64: string = base64Encode(joined);
const raw: Uint8Array = base64Decode(b64);

const err: ErrorInfo = parseError(raw);
const code: ErrorCode = err.code;
const known: ErrorCode = 'server_full';
const newer: ErrorCode = 'a_code_from_a_newer_server';

// ---------------------------------------------------------------- errors

const pe = new ProtocolError('message_too_large', 'too big');
const peCode: ErrorCode = pe.code;
const asError: Error = pe;
const re = new RequestError('timeout', 'no reply');
const reCode: RequestErrorCode = re.code;
// @ts-expect-error not a request error code
new RequestError('bogus', 'x');
const remote = new RemoteError('no request handler');
const remoteCode: 'remote' = remote.code;
const remoteText: string = remote.remoteMessage;
const remoteIsRequestError: RequestError = remote;
const se = new StreamError('refused', 'publish to nope refused: bad_stream: ...', 'nope', 'bad_stream');
const seCode: StreamErrorCode = se.code;
const seStream: string = se.stream + se.remoteCode;
new StreamError('buffer_full', 'full');
// @ts-expect-error not a stream error code
new StreamError('full', 'x');

// ---------------------------------------------------------------- containers

const values: ContainerValueInput[] = [
  value('n', 'null'),
  value('n2', 'null', null),
  value('t', 'bool', true),
  value('i16', 'int16', -1),
  value('u16', 'uint16', 1),
  value('i32', 'int32', 42),
  value('u32', 'uint32', 42),
  value('i64', 'int64', 9007199254740993n),
  value('i64s', 'int64', '-5'),
  value('i64n', 'int64', 5),
  value('u64', 'uint64', 2n ** 64n - 1n),
  value('f32', 'float32', 0.1),
  value('f64', 'float64', -0),
  value('bytes', 'bytes', new Uint8Array([0, 255])),
  value('s', 'string', 'hi'),
  value('raw', 'string', new Uint8Array([0xff])),
  value(new Uint8Array([0xfe]), 'string', 'name in bytes'),
  value('nested', 'container', { values: [value('x', 'int16', 1)] }),
  value('list', 'array', [value('', 'uint16', 7), value('', 'bool', false)]),
  { name: 'literal', type: 'float64', value: 1.5 },
  { type: 'null' },
];
// @ts-expect-error a bool is a boolean
value('t', 'bool', 1);
// @ts-expect-error an int32 is a number, not a bigint
value('i', 'int32', 1n);
// @ts-expect-error decimal is no value type
value('d', 'decimal', 1);
// @ts-expect-error a value other than null needs its value
value('s', 'string');
// @ts-expect-error an array holds values
value('a', 'array', [1, 2]);
// @ts-expect-error the value's form follows its type
const wrong: ContainerValueInput = { name: 'x', type: 'int64', value: true };

const header: Partial<Record<HeaderField, Name>> = { source_id: 'web_1', message_type: 'chat' };
const input: ContainerInput = { header, values };
const json: string = containerToJSON(input);
containerToJSON(null);
containerToJSON({});
// @ts-expect-error no such header field
containerToJSON({ header: { sender: 'x' } });
const payload: Uint8Array = encodeContainer(input);

const decoded: TopContainer = containerFromJSON(json);
containerFromJSON(payload);
const top: ContainerHeader = decoded.header;
const source: Name = top.source_id;
const asContainer: Container = decodeContainer(payload);
// A decoded container can be written back.
containerToJSON(decoded);
for (const v of decoded.values) {
  const any: ContainerValue = v;
  switch (v.type) {
    case 'int64':
    case 'uint64': {
      const n: bigint = v.value;
      break;
    }
    case 'int16': {
      const n: number = v.value;
      break;
    }
    case 'string': {
      const s: string | Uint8Array = v.value;
      // @ts-expect-error a string value may be bytes that are not UTF-8
      const t: string = v.value;
      break;
    }
    case 'bytes': {
      const b: Uint8Array = v.value;
      break;
    }
    case 'container': {
      const c: Container = v.value;
      const h: ContainerHeader | undefined = c.header;
      break;
    }
    case 'array': {
      const a: ContainerValue[] = v.value;
      break;
    }
    case 'null': {
      const n: null = v.value;
      break;
    }
  }
}
const typeName: ValueType = 'float32';
const f32: ValueTypes['float32'] = 1;
const u64in: ValueInputs['uint64'] = '18446744073709551615';
const one: ContainerValue<'bool'> = { name: 'b', type: 'bool', value: true };
const floatText: string = formatFloat(0.1) + formatFloat(0.1, true);
// @ts-expect-error formatFloat takes a number
formatFloat('0.1');

// ---------------------------------------------------------------- client

const delay: number = backoff(3, 100, 5000) + backoff(0, 100, 5000, () => 0.5);

// A WebSocket of one's own: the structural type is all the client needs.
class MySocket implements WebSocketLike {
  readyState = 0;
  binaryType = 'blob';
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {}
  send(data: Uint8Array): void {}
  close(code?: number, reason?: string): void {}
}
const ctor: WebSocketConstructor = MySocket;

const reconnect: ReconnectOptions = { base: 100, max: 5000, attempts: 10 };
const options: ClientOptions = {
  clientId: 'web_1',
  reconnect,
  heartbeat: 10000,
  heartbeatTimeout: 5000,
  connectTimeout: 5000,
  bufferBytes: 1 << 20,
  maxMessageSize: 16 << 20,
  protocols: ['msgnet'],
  WebSocket: MySocket,
};
new Client('ws://localhost:8081/ws');
new Client('ws://localhost:8081/ws', { reconnect: false, protocols: 'msgnet' });
// @ts-expect-error reconnect is a boolean or its backoff
new Client('ws://x/ws', { reconnect: 'yes' });
// @ts-expect-error no such option (clientId is spelled so)
new Client('ws://x/ws', { client_id: 'c' });
// @ts-expect-error a WebSocket option is a class
new Client('ws://x/ws', { WebSocket: {} });
// @ts-expect-error the URL is a string
new Client(8081);

const c = new Client('ws://localhost:8081/ws', options);
const state: ClientState = c.state;
const ids: string = c.url + c.clientId + c.sessionId + c.serverId;
const limit: number = c.maxMessageSize + c.lateReplies;
const features: string[] = c.features;
const opts: ClientOptions = c.options;
// @ts-expect-error state is read-only
c.state = 'open';
// @ts-expect-error lateReplies is read-only
c.lateReplies = 0;

c.onopen = (w: Welcome) => {
  const sid: string = w.session_id;
  const server: string = w.server_id;
  const max: number = w.max_message_size;
  const idle: number = w.idle_timeout_ms;
  const granted: string[] | undefined = w.features;
};
c.onreconnect = function (w) {
  const self: Client = this;
  const sid: string = w.session_id;
};
c.onmessage = (m: Message) => {
  const bytes: Uint8Array = m.data;
  const t: string = m.text();
  const ct: TopContainer = m.container();
};
c.onerror = (e) => {
  const code: ErrorCode = e.code;
  const msg: string = e.message;
};
c.onclose = (info: CloseInfo) => {
  const n: number = info.code;
  const r: string = info.reason;
  const again: boolean = info.willReconnect;
};
c.onstatechange = (s) => {
  const st: ClientState = s;
};
c.onopen = null;
// @ts-expect-error onmessage gets a Message, not a string
c.onmessage = (m: string) => {};

// Request handlers: bytes, text, nothing, or a promise of one of them.
c.onrequest = (req) => req.text().toUpperCase();
c.onrequest = (req) => req.data;
c.onrequest = () => {};
c.onrequest = async (req) => encodeContainer({ values: [value('n', 'int32', req.data.length)] });
c.onrequest = null;
const body: ReplyBody = new ArrayBuffer(1);
// @ts-expect-error a reply is bytes or a string
c.onrequest = () => 42;
// @ts-expect-error a reply is bytes or a string, also when async
c.onrequest = async () => ({ ok: true });

async function use(signal: AbortSignalLike): Promise<void> {
  const w: Welcome = await c.connect();
  c.send('text');
  c.send(new Uint8Array([1, 2]));
  c.send(new ArrayBuffer(2));
  c.sendText('hello');
  c.sendContainer({ values: [value('msg', 'string', 'hi')] });
  // @ts-expect-error send takes a string or bytes
  c.send({ text: 'hi' });
  // @ts-expect-error sendText takes a string
  c.sendText(5);
  const rtt: number = await c.ping();
  await c.ping(1000);

  const reqOptions: RequestOptions = { timeoutMs: 5000, signal };
  const reply: Message = await c.request('status?', reqOptions);
  await c.request(new Uint8Array(0));
  await c.request('x', { timeoutMs: Infinity });
  // @ts-expect-error the timeout is a number of ms
  await c.request('x', { timeoutMs: '5s' });
  // @ts-expect-error the option is timeoutMs
  await c.request('x', { timeout: 5000 });
  // @ts-expect-error a request payload is a string or bytes
  await c.request(42);
  try {
    await c.request('x');
  } catch (e) {
    if (e instanceof RemoteError) {
      const m: string = e.remoteMessage;
    } else if (e instanceof RequestError) {
      const why: RequestErrorCode = e.code;
      if (why === 'timeout' || why === 'connection_lost' || why === 'not_open' || why === 'not_negotiated') {
        // retry later
      }
    }
  }
  c.close();
  c.close('bye');
  // @ts-expect-error close takes a reason, not a code
  c.close(1000);
}

// Acknowledged delivery.
const reliable: ReliableOptions = { maxBytes: 1 << 20, maxAgeMs: 30000 };
const rc = new Client('ws://localhost:8081/ws', { clientId: 'web_1', reliable });
new Client('ws://localhost:8081/ws', { reliable: true });
// @ts-expect-error the option is maxAgeMs, in ms
new Client('ws://x/ws', { reliable: { maxAge: 1000 } });
const room: 'group:room' = groupStream('room');
const inbox: 'client:web_1' = clientStream('web_1');
const publisher: string = rc.publisherId;
const waiting: number = rc.pending;
// @ts-expect-error pending is read-only
rc.pending = 0;
rc.onstream = (m: StreamMessage) => {
  const s: string = m.stream;
  const epoch: bigint = BigInt(m.epoch);
  const off: number = m.offset;
  const again: boolean = m.replayed;
  const p: Uint8Array = m.payload;
  const d: Uint8Array = m.data;
  const t: string = m.text();
  // @ts-expect-error an epoch is a decimal string, never a number
  const n: number = m.epoch;
};
rc.onsubscribed = (info: Subscribed) => {
  const span: number = info.last - info.first + info.next;
  const e: string = info.epoch;
  const r: boolean = info.resumed;
};
rc.oncontinuitylost = (lost: ContinuityLost) => {
  const missed: number = lost.next - lost.missed;
  const why: string = lost.stream + lost.epoch + lost.reason;
};
rc.onpublishfailed = (f: PublishFailure) => {
  const why: StreamErrorCode = f.error.code;
  const bytes: Uint8Array = f.payload;
  const s: string = f.stream;
};
rc.onstream = null;

async function streams(signal: AbortSignalLike): Promise<void> {
  const info: Subscribed = await rc.subscribe(room);
  await rc.subscribe(inbox);
  const done: Promise<void> = rc.publish(room, 'hello');
  rc.publish('group:room', new Uint8Array([1]));
  await done;
  // @ts-expect-error a payload is a string or bytes
  rc.publish(room, 42);
  const wait: WaitOptions = { timeoutMs: 5000, signal };
  await rc.waitPublished(wait);
  await rc.waitPublished();
  try {
    await rc.publish('nope', 'x');
  } catch (e) {
    if (e instanceof StreamError && e.code === 'refused') {
      const remoteCode: ErrorCode = e.remoteCode;
    }
  }
  rc.unsubscribe(room);
  // @ts-expect-error unsubscribe takes a stream name
  rc.unsubscribe();
  const own = new StreamMessage('group:room', '18446744073709551615', 1, toBytes('x'), true);
}

// A message of one's own, e.g. in tests.
const m = new Message(toBytes('x'));
// @ts-expect-error a message's data is read-only
m.data = new Uint8Array(0);

export {
  magic, headerLen, data, request, flags, buffered, known, newer, code, peCode, asError, reCode, remoteCode, remoteText,
  remoteIsRequestError, wrong, source, asContainer, typeName, f32, u64in, one, floatText, delay, ctor, state, ids, limit,
  features, opts, body, use, seCode, seStream, room, inbox, publisher, waiting, streams,
};
