// Type declarations for msgnet.js, msgnet's JavaScript client (see
// README.md beside this file, docs/PROTOCOL.md and docs/TRANSPORTS.md).
//
// Self-contained: they need no DOM or Node types, only an ES2020 lib
// (bigint). Interop types (WebSocketLike, AbortSignalLike) are structural,
// so a browser's or Node's WebSocket and AbortSignal fit them.

// ---------------------------------------------------------------- bytes

/**
 * What may be sent as a payload: a string (sent as UTF-8), or bytes
 * (Uint8Array, ArrayBuffer, SharedArrayBuffer or any other
 * ArrayBufferView; not copied).
 */
export type Payload = string | ArrayBufferLike | ArrayBufferView;

/** Bytes of a payload: a string is UTF-8 encoded; null and undefined are empty. */
export declare function toBytes(data: Payload | null | undefined): Uint8Array;

/** Concatenates byte arrays into a new one. */
export declare function concatBytes(parts: readonly Uint8Array[]): Uint8Array;

/** Standard base64 with padding. */
export declare function base64Encode(bytes: Uint8Array): string;

/** Decodes standard base64 with padding; throws SyntaxError on anything else. */
export declare function base64Decode(s: string): Uint8Array;

// ---------------------------------------------------------------- frames

/** "MSGI", the first 4 bytes of every frame. */
export declare const MAGIC: 0x4d534749;

/** Bytes of a frame's header: magic, length, flags, kind. */
export declare const HEADER_LEN: 10;

/** Message kinds: the low byte of a frame's type. */
export declare const Kind: Readonly<{
  PING: 0x01;
  PONG: 0x02;
  DATA: 0x10;
  CONTROL: 0x20;
  ERROR: 0x30;
  HEARTBEAT: 0x40;
  DISCONNECT: 0x50;
}>;

/** One of the kinds in Kind. */
export type KindValue = (typeof Kind)[keyof typeof Kind];

/** Flag bits: the high byte of a frame's type, each owned by an extension. */
export declare const Flag: Readonly<{
  COMPRESSED: 0x01;
  ENCRYPTED: 0x02;
  REQUEST: 0x04;
  REPLY: 0x08;
  /** reliable: a stream's message (server to client). */
  STREAM: 0x10;
  /** reliable: a publish's answer (server to client), a subscriber's acknowledgement (client to server). */
  ACK: 0x20;
  /** reliable: a publish (client to server). */
  PUBLISH: 0x40;
}>;

/** One of the flag bits in Flag. */
export type FlagValue = (typeof Flag)[keyof typeof Flag];

/** A decoded frame. kind and flags may hold values newer servers add. */
export interface Frame {
  kind: number;
  flags: number;
  payload: Uint8Array;
}

/** Encodes one frame: MSGI | u32 length | u8 flags | u8 kind | payload. */
export declare function encodeFrame(kind: KindValue, payload?: Payload | null, flags?: number): Uint8Array;

/** Encodes a CONTROL frame whose payload is obj as JSON. */
export declare function encodeControl(obj: ControlMessage): Uint8Array;

/** A CONTROL frame's JSON object: a string "op" and any other fields. */
export interface ControlMessage {
  op: string;
  [field: string]: unknown;
}

/** FrameDecoder options. */
export interface FrameDecoderOptions {
  /** Largest payload accepted, decided from the header (default 1 MiB). */
  maxPayload?: number;
}

/**
 * Turns received bytes into frames, on any chunking of the stream. Throws
 * ProtocolError 'bad_frame' or 'message_too_large'; after that it is
 * unusable.
 */
export declare class FrameDecoder {
  constructor(options?: FrameDecoderOptions);
  maxPayload: number;
  /** Bytes held from an incomplete frame. */
  readonly buffered: number;
  /** Takes a chunk and returns the frames it completes. */
  push(chunk: ArrayBufferLike | ArrayBufferView): Frame[];
}

/** An ERROR frame's payload. */
export interface ErrorInfo {
  /** A msgnet error code, e.g. 'server_full' (docs/PROTOCOL.md). */
  code: ErrorCode;
  message: string;
}

/** The ERROR codes msgnet sends; others may come from newer servers. */
export type ErrorCode =
  | 'bad_frame'
  | 'message_too_large'
  | 'unknown_type'
  | 'bad_control'
  | 'server_full'
  | 'bad_request'
  | 'bad_container'
  | 'bad_compression'
  | 'decrypt_failed'
  | 'encryption_required'
  | 'auth_required'
  | 'auth_failed'
  | 'rate_limited'
  | 'per_ip_limit'
  | 'filter_failed'
  | 'bad_client_id'
  | 'too_many_groups'
  | 'bad_group'
  | 'server_busy'
  | 'bad_stream'
  | 'continuity_lost'
  | 'store_unavailable'
  | (string & {});

/** Parses an ERROR frame's payload; a payload that is not JSON becomes the message. */
export declare function parseError(payload: Payload): ErrorInfo;

// ---------------------------------------------------------------- errors

/** An error in the protocol: code is the msgnet ERROR code it maps to. */
export declare class ProtocolError extends Error {
  constructor(code: ErrorCode, message?: string);
  readonly code: ErrorCode;
}

/** Why a request got no reply (RequestError.code). */
export type RequestErrorCode = 'not_open' | 'not_negotiated' | 'timeout' | 'connection_lost' | 'remote';

/**
 * A request that got no reply: 'not_open' (not connected; requests are
 * never buffered), 'not_negotiated' (the server did not grant "request"),
 * 'timeout', 'connection_lost' (the server may or may not have handled
 * it), 'remote' (a RemoteError).
 */
export declare class RequestError extends Error {
  constructor(code: RequestErrorCode, message: string);
  readonly code: RequestErrorCode;
}

/** The peer's request handler failed: reply status 1. */
export declare class RemoteError extends RequestError {
  constructor(remoteMessage: string);
  readonly code: 'remote';
  /** The error text the peer sent, e.g. "no request handler". */
  readonly remoteMessage: string;
}

/**
 * Why a publish or a subscription failed (StreamError.code):
 * 'buffer_full' (publish: the publishes waiting hold maxBytes; thrown),
 * 'refused' (by the server, for good: see remoteCode), 'expired' (publish:
 * not acknowledged within maxAgeMs), 'not_negotiated' (no reliable option,
 * or the server did not grant it), 'closed' (the client was closed, or the
 * stream unsubscribed, first).
 */
export type StreamErrorCode = 'buffer_full' | 'refused' | 'expired' | 'not_negotiated' | 'closed';

/** A publish or a subscription that failed (docs/PROTOCOL.md 6.7). */
export declare class StreamError extends Error {
  constructor(code: StreamErrorCode, message: string, stream?: string, remoteCode?: string);
  readonly code: StreamErrorCode;
  /** The stream it was for. */
  readonly stream: string;
  /** With 'refused': the server's code, e.g. 'bad_stream', 'too_many_groups', 'rate_limited'; '' otherwise. */
  readonly remoteCode: ErrorCode;
}

// ---------------------------------------------------------------- containers

/** The type names of container values (docs/CONTAINER.md). */
export type ValueType = keyof ValueTypes;

/** The JavaScript form of each value type, as decoded. */
export interface ValueTypes {
  null: null;
  bool: boolean;
  int16: number;
  uint16: number;
  int32: number;
  uint32: number;
  /** Exact as a bigint, also beyond 2^53. */
  int64: bigint;
  uint64: bigint;
  float32: number;
  float64: number;
  bytes: Uint8Array;
  /** A Uint8Array when the bytes are not UTF-8. */
  string: string | Uint8Array;
  container: Container;
  array: ContainerValue[];
}

/** What each value type accepts when a container is written. */
export interface ValueInputs {
  null: null;
  bool: boolean;
  int16: number;
  uint16: number;
  int32: number;
  uint32: number;
  /** A bigint, a safe integer number, or a decimal string. */
  int64: bigint | number | string;
  uint64: bigint | number | string;
  float32: number;
  float64: number;
  bytes: Payload;
  string: string | Uint8Array;
  container: ContainerInput;
  array: readonly ContainerValueInput[];
}

/** A name of a value or a header field: a Uint8Array when not UTF-8. */
export type Name = string | Uint8Array;

/** The header fields of a container. */
export type HeaderField = 'target_id' | 'target_sub_id' | 'source_id' | 'source_sub_id' | 'message_type' | 'version';

/** A decoded container header: every field, '' when absent. */
export type ContainerHeader = Record<HeaderField, Name>;

/** A decoded value: type tells the form of value. */
export type ContainerValue<T extends ValueType = ValueType> = {
  [K in T]: { name: Name; type: K; value: ValueTypes[K] };
}[T];

/** A decoded container. A nested one has a header only when a field is set. */
export interface Container {
  header?: ContainerHeader;
  values: ContainerValue[];
}

/** A decoded top-level container: it always has its header. */
export interface TopContainer extends Container {
  header: ContainerHeader;
}

/** A value to write; build it with value(name, type, v). */
export type ContainerValueInput<T extends ValueType = ValueType> = {
  [K in T]: K extends 'null'
    ? { name?: Name; type: K; value?: null }
    : { name?: Name; type: K; value: ValueInputs[K] };
}[T];

/** A container to write. Missing header fields are ''. */
export interface ContainerInput {
  header?: Partial<Record<HeaderField, Name>>;
  values?: readonly ContainerValueInput[];
}

/** A null value. */
export declare function value(name: Name, type: 'null', v?: null): ContainerValueInput<'null'>;
/** A value of the given type: value('n', 'int64', 9007199254740993n). */
export declare function value<T extends Exclude<ValueType, 'null'>>(name: Name, type: T, v: ValueInputs[T]): ContainerValueInput<T>;

/** Encodes a container in msgnet's JSON form, byte for byte as Go's MarshalJSON. */
export declare function containerToJSON(c: ContainerInput | null | undefined): string;

/** The JSON form as UTF-8 bytes: a DATA payload. */
export declare function encodeContainer(c: ContainerInput | null | undefined): Uint8Array;

/** Decodes the JSON form (a string or UTF-8 bytes); throws SyntaxError on bad input. */
export declare function containerFromJSON(text: Payload): TopContainer;

/** Decodes a DATA payload holding a container's JSON form. */
export declare function decodeContainer(bytes: Payload): TopContainer;

/** Formats a float as Go's strconv.FormatFloat(f, 'g', -1, 32 or 64); NaN and infinities as quoted strings. */
export declare function formatFloat(f: number, isFloat32?: boolean): string;

// ---------------------------------------------------------------- client

/**
 * The delay in ms before reconnect attempt number attempt (0-based):
 * base·2^attempt capped at max, half of it fixed and half random.
 */
export declare function backoff(attempt: number, base: number, max: number, random?: () => number): number;

/** A received message, request or reply: the payload and ways to read it. */
export declare class Message {
  constructor(data: Uint8Array);
  /** The payload bytes. */
  readonly data: Uint8Array;
  /** The payload as UTF-8 text. */
  text(): string;
  /** The payload as a container in JSON form; throws SyntaxError if it is not one. */
  container(): TopContainer;
}

/**
 * A message of a subscribed stream: its stream, its position, its payload
 * (data, also as payload).
 */
export declare class StreamMessage extends Message {
  constructor(stream: string, epoch: string, offset: number, data: Uint8Array, replayed?: boolean);
  /** 'group:<name>' or 'client:<id>'. */
  readonly stream: string;
  /**
   * The stream's incarnation: a decimal string up to 2^64-1, as the server
   * writes it (BigInt(epoch) for arithmetic). Offsets of two epochs are not
   * comparable.
   */
  readonly epoch: string;
  /** The message's place in the stream, from 1, contiguous within an epoch. */
  readonly offset: number;
  /**
   * It was already in the stream when this connection's subscription was
   * answered: after a reconnect, it was published while the client was away.
   */
  readonly replayed: boolean;
  /** The payload bytes (the same as data). */
  readonly payload: Uint8Array;
}

/** The name of a group's stream: 'group:' + name. */
export declare function groupStream<N extends string>(name: N): `group:${N}`;

/** The name of the stream of messages addressed to a client id: 'client:' + id. */
export declare function clientStream<I extends string>(id: I): `client:${I}`;

/** What the reliable option bounds. */
export interface ReliableOptions {
  /** Payload bytes of publishes kept until acknowledged (default 8 MiB); past it publish throws 'buffer_full'. */
  maxBytes?: number;
  /** ms a publish may wait for its acknowledgement (default 60000); then it fails with 'expired'. */
  maxAgeMs?: number;
}

/** A subscription the server confirmed (subscribe()'s result, onsubscribed). */
export interface Subscribed {
  stream: string;
  /** The stream's epoch, a decimal string. */
  epoch: string;
  /** The retained range when the server answered: first to last (first = last + 1 when empty). */
  first: number;
  last: number;
  /** The first offset to be delivered. */
  next: number;
  /** A renewal of a subscription that had a position (after a reconnect). */
  resumed: boolean;
}

/** What oncontinuitylost gets: messages missed..next-1 left retention before they were delivered. */
export interface ContinuityLost {
  stream: string;
  /** The first offset that was wanted; 0 when the stream's epoch changed (its log was lost). */
  missed: number;
  /** Where delivery goes on. */
  next: number;
  /** The stream's epoch now. */
  epoch: string;
  reason: string;
}

/** What onpublishfailed gets. */
export interface PublishFailure {
  stream: string;
  payload: Uint8Array;
  error: StreamError;
}

/** Options of waitPublished(). */
export interface WaitOptions {
  /** ms to wait (default Infinity). */
  timeoutMs?: number;
  /** Aborting it rejects with the signal's reason. */
  signal?: AbortSignalLike;
}

/** The client's state. */
export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The server's welcome (docs/PROTOCOL.md 3), as received. */
export interface Welcome {
  op: 'welcome';
  session_id: string;
  server_id: string;
  max_message_size: number;
  idle_timeout_ms: number;
  /** The extensions granted, e.g. ['request']. */
  features?: string[];
  [field: string]: unknown;
}

/** What onclose gets. */
export interface CloseInfo {
  /** The WebSocket close code (1000 normal, 1006 dropped, 4000 dropped by the client). */
  code: number;
  /** The close reason, the server's DISCONNECT reason, or what failed. */
  reason: string;
  /** Whether the client will try to reconnect. */
  willReconnect: boolean;
}

/** Reconnect backoff, in ms: base·2^attempt capped at max, for at most attempts tries in a row. */
export interface ReconnectOptions {
  /** Default 250. */
  base?: number;
  /** Default 10000. */
  max?: number;
  /** Default Infinity. */
  attempts?: number;
}

/** Options of request(). */
export interface RequestOptions {
  /** ms to wait for the reply (default 30000; Infinity: no limit). */
  timeoutMs?: number;
  /** Aborting it rejects the request with the signal's reason. */
  signal?: AbortSignalLike;
}

/** What an onrequest handler may return (or resolve with): the reply body. */
export type ReplyBody = Payload | null | undefined | void;

/** An AbortSignal (browsers' and Node's fit this). */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

type Listener<E> = { bivarianceHack(event: E): unknown }['bivarianceHack'];

/** What the client needs of a WebSocket: browsers', Node's (22+) and the ws package's fit. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  /** Always gets a Uint8Array over an ArrayBuffer (one or more whole frames). */
  send(data: Uint8Array & { readonly buffer: ArrayBuffer }): void;
  close(code?: number, reason?: string): void;
  onopen: Listener<unknown> | null;
  onmessage: Listener<{ data: unknown }> | null;
  onclose: Listener<{ code: number; reason: string }> | null;
  onerror: Listener<unknown> | null;
}

/** A WebSocket class: new (url, protocols). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Client options; every one is optional. */
export interface ClientOptions {
  /** Sent in the hello (default none: the server uses the session id). */
  clientId?: string;
  /** true (default), false, or the backoff. */
  reconnect?: boolean | ReconnectOptions;
  /** PING interval in ms (default a third of the server's idle timeout, at most 15000; 0: off). */
  heartbeat?: number;
  /** ms a heartbeat PING may go unanswered (default the interval). */
  heartbeatTimeout?: number;
  /** ms for a connection's hello/welcome (default 10000). */
  connectTimeout?: number;
  /** Bytes of sends kept while connecting or reconnecting (default 1 MiB). */
  bufferBytes?: number;
  /** Largest payload accepted from the server (default 16 MiB). */
  maxMessageSize?: number;
  /** WebSocket subprotocols (default ['msgnet']). */
  protocols?: string | string[];
  /** The WebSocket class (default globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
  /** Acknowledged delivery: publish() and subscribe() (default false). true takes the defaults. */
  reliable?: boolean | ReliableOptions;
}

/**
 * A msgnet session over WebSocket: hello/welcome, PING and heartbeats,
 * request/reply, reconnect with backoff and jitter.
 */
export declare class Client {
  /** Throws TypeError when there is no WebSocket (no global one and no options.WebSocket). */
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly options: ClientOptions;
  readonly clientId: string;
  readonly state: ClientState;
  /** The current (or last) session id, from the welcome. */
  readonly sessionId: string;
  readonly serverId: string;
  /** The server's message size limit (from the welcome; 1 MiB before). */
  readonly maxMessageSize: number;
  /** The extensions granted on the current connection, e.g. ['request']. */
  readonly features: string[];
  /** Replies that came after their request gave up, over the client's life. */
  readonly lateReplies: number;
  /** The publisher id the hello names: 32 random hex digits for the client's life ('' without reliable). */
  readonly publisherId: string;
  /** How many publishes wait for their acknowledgement. */
  readonly pending: number;

  /** The first session is open. */
  onopen: ((this: Client, welcome: Welcome) => void) | null;
  /** A new session after a reconnect. */
  onreconnect: ((this: Client, welcome: Welcome) => void) | null;
  /** A DATA message. */
  onmessage: ((this: Client, message: Message) => void) | null;
  /**
   * Answers the server's requests: the result (or what its promise
   * resolves with) is the reply; a throw or rejection is sent back as an
   * error (status 1). Without it, requests are answered "no request handler".
   */
  onrequest: ((this: Client, request: Message) => ReplyBody | PromiseLike<ReplyBody>) | null;
  /** An ERROR frame from the server, or a bad frame from it. */
  onerror: ((this: Client, error: ErrorInfo) => void) | null;
  /** A session ended (or the first connect failed for good). */
  onclose: ((this: Client, info: CloseInfo) => void) | null;
  onstatechange: ((this: Client, state: ClientState) => void) | null;
  /** A message of a subscribed stream: each once, in order. */
  onstream: ((this: Client, message: StreamMessage) => void) | null;
  /** The server confirmed a subscription (also each renewal after a reconnect). */
  onsubscribed: ((this: Client, info: Subscribed) => void) | null;
  /** A subscription could not go on where it left off: messages were lost to retention. */
  oncontinuitylost: ((this: Client, lost: ContinuityLost) => void) | null;
  /** A publish failed: refused, expired, or the client closed first. */
  onpublishfailed: ((this: Client, failure: PublishFailure) => void) | null;

  /**
   * Opens the session; resolves with the welcome. Rejects if the first
   * connection fails (e.g. ProtocolError 'server_full'), or if the client
   * is not idle.
   */
  connect(): Promise<Welcome>;
  /** Sends a DATA message; buffered while connecting or reconnecting. Throws when closed, too large, or the buffer is full. */
  send(data: Payload): void;
  /** Sends a string as a UTF-8 DATA message. */
  sendText(text: string): void;
  /** Sends a container in its JSON form. */
  sendContainer(c: ContainerInput): void;
  /** Sends a PING; resolves with the round-trip time in ms. */
  ping(timeoutMs?: number): Promise<number>;
  /** Sends a request and resolves with the reply (docs/PROTOCOL.md 6.1). */
  request(payload: Payload, options?: RequestOptions): Promise<Message>;
  /**
   * Publishes to a stream (reliable option): kept until the server has
   * stored it, and sent again after a reconnect. The promise resolves when
   * it is stored, and rejects with a StreamError ('refused', 'expired',
   * 'closed', 'not_negotiated'); it never becomes an unhandled rejection
   * (failures also go to onpublishfailed). Throws when it cannot be taken:
   * StreamError 'buffer_full', 'not_negotiated' or 'closed', ProtocolError
   * 'message_too_large', RangeError (stream name), TypeError (payload).
   */
  publish(stream: string, payload: Payload): Promise<void>;
  /** Resolves when no publish waits for its acknowledgement. */
  waitPublished(options?: WaitOptions): Promise<void>;
  /**
   * Subscribes to a stream (reliable option); messages go to onstream. The
   * client renews it after each reconnect, where it left off. Rejects with
   * a StreamError ('refused', 'not_negotiated', 'closed').
   */
  subscribe(stream: string): Promise<Subscribed>;
  /** Ends a subscription. */
  unsubscribe(stream: string): void;
  /** Ends the session: DISCONNECT with reason, then a normal close. No reconnect. */
  close(reason?: string): void;
}
