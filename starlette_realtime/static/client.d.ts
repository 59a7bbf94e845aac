// Type declarations for client.js, the starlette-realtime browser client (wire protocol v1).

export declare const PROTOCOL_VERSION: 1;

/** Connection states, in the order a connection usually goes through them. */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "offline" | "closed";

/** The value sent as CONNECT `auth`. A string becomes `{token: string}`; `null`/`undefined` send no auth. */
export type AuthValue = string | Record<string, unknown> | null | undefined;

/** An auth value, or a function (sync or async) asked on every connect and reconnect; it gets the namespace. */
export type AuthProvider = AuthValue | ((namespace: string) => AuthValue | Promise<AuthValue>);

/** Injectable time source, for tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The subset of the WebSocket API the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface RealtimeClientOptions {
  /** Namespaces to open on the connection. The first one is the default of on/emit/call. Default `["/"]`. */
  namespaces?: string[];
  /**
   * Auth payload per namespace (`{"/chat": provider}`: a plain object whose keys all start with "/"), or one
   * provider for every namespace (a string, a function, or a payload object such as `{token}`).
   */
  auth?: AuthProvider | Record<string, AuthProvider>;
  /** Auth providers for some namespaces (`{"/admin": provider}`), used instead of `auth` for those; as the Python client's `namespace_auth`. */
  namespaceAuth?: Record<string, AuthProvider>;
  /** Subprotocol: `rt.v1.json` (text frames) or `rt.v1.msgpack` (binary frames). Default "json". */
  encoding?: "json" | "msgpack";
  /** Reconnect after a retryable close. Default true. */
  reconnection?: boolean;
  /** Reconnect attempts in a row before giving up. Default Infinity. */
  reconnectionAttempts?: number;
  /** First reconnect delay in ms, doubled on each failed attempt. Default 1000. */
  reconnectionDelay?: number;
  /** Longest reconnect delay in ms. Default 30000. */
  reconnectionDelayMax?: number;
  /** Jitter: each delay is spread by ± this fraction. Default 0.5. */
  randomizationFactor?: number;
  /** Ms to wait for an ACK once an event is on the wire (paused while offline). Default 10000. */
  ackTimeout?: number;
  /** Ms an event may wait offline before it is dropped and counted in `dropped`. Default 60000. */
  queueTtl?: number;
  /** Most events queued or awaiting their ACK; beyond it emit/call reject with code "queue_full". Default 1000. */
  queueMax?: number;
  /** CONNECT retries after INVALID_TOKEN or a retryable CONNECT_ERROR, per connection. Default 2. */
  authRetries?: number;
  /**
   * Ms each connection attempt has to open the socket and get every namespace CONNECTED; past it the attempt is
   * given up (close 4000, a `connect_error` with code "timeout") and retried with backoff. `connect()` keeps
   * waiting. Default 20000.
   */
  connectTimeout?: number;
  /** WebSocket constructor; default `globalThis.WebSocket` (pass one in Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Time source (tests). */
  clock?: Clock;
  /** Random source for jitter, in [0, 1) (tests). */
  random?: () => number;
  /** Where errors thrown by handlers and listeners go; default `reportError` or `console.error`. */
  onError?: (error: unknown) => void;
}

/** Where an event comes from. `room`, `epoch` and `offset` are set for broadcasts (room streams). */
export interface EventMeta {
  room: string | null;
  epoch: string | null;
  offset: number | null;
  namespace: string;
}

export interface StateInfo {
  /** Events queued or awaiting their ACK. */
  queued: number;
  /** Events dropped after waiting offline longer than `queueTtl`. */
  dropped: number;
  /** Reconnect attempts since the last successful connect. */
  attempt: number;
  /** Close code of the last closed WebSocket (1006 when it had none), or null. */
  lastCloseCode: number | null;
  /** State "offline": ms until the next attempt. */
  delay?: number;
  /** State "closed": why. */
  error?: RealtimeError;
  /** Set when a namespace's session could not be resumed (state unchanged, notification only). */
  namespace?: string;
  recoveryFailed?: boolean;
}

export interface ServerInfo {
  node: string;
  /** Seconds. */
  pingInterval: number;
  /** Seconds. */
  pingTimeout: number;
  /** Bytes. */
  maxMessageSize: number;
}

export interface NamespaceOption {
  /** Default: the first of `options.namespaces`. */
  namespace?: string;
}

export interface CallOptions extends NamespaceOption {
  /** Ack time-out in ms, overriding `ackTimeout`. */
  timeout?: number;
}

export interface EmitOptions extends CallOptions {
  /** Send only if connected, without id, queueing or ACK. */
  volatile?: boolean;
}

/** Data of the events the client itself delivers to `on()` handlers. */
export interface ClientEvents {
  connect: { sid: string; recovered: boolean; recoveryFailed: boolean };
  disconnect: { reason: string; code: number | null };
  /** `code` "timeout": the attempt exceeded `connectTimeout` (a client-side code). */
  connect_error: { code: string; message: string; retryable: boolean };
  recovery_failed: { sid: string };
  error: { code: string; message: string };
  $resync: { room: string; epoch: string };
  /** `seq` orders a room's presence changes: skip events with a `seq` at most the one of your last `$presence.list`. */
  $presence: { room: string; user: string; status: "online" | "offline"; meta: unknown; seq?: number };
}

export type Handler<T = any> = (data: T, meta: EventMeta) => unknown;

export declare class RealtimeClient {
  /** `url`: where the router is mounted, e.g. `ws://host/realtime`; a trailing slash is added to the path. */
  constructor(url: string, options?: RealtimeClientOptions);
  /** The URL the client connects to, with the trailing slash. */
  readonly url: string;
  readonly options: Required<Omit<RealtimeClientOptions, "WebSocket" | "clock" | "onError">> & RealtimeClientOptions;
  readonly state: ConnectionState;
  /** Events queued offline or sent and not acknowledged yet. */
  readonly queued: number;
  /** Events dropped after waiting offline longer than `queueTtl`. */
  readonly dropped: number;
  /** The server's HELLO values (defaults until HELLO arrives). */
  readonly server: ServerInfo;

  /** Resolves when every namespace is CONNECTED; rejects on a terminal failure. Retries at once when offline. */
  connect(): Promise<void>;
  /**
   * Close for good: DISCONNECT (reason "client disconnect") for each connected namespace, then close 1000; the
   * server forgets the sessions. Queued events and waiting connect() calls reject with code "closed".
   */
  close(): void;
  /**
   * Send a fresh credential from the `auth` provider as `$auth` on the open connection. Resolves `true` when the
   * server accepted it, `false` when the namespace is not connected; rejects with RealtimeAckError
   * ("INVALID_TOKEN", "forbidden", "rate_limited"...), AckTimeout, or the provider's error.
   */
  refreshAuth(namespace?: string, options?: { timeout?: number }): Promise<boolean>;
  /** Volatile: resolves to whether the event was sent. */
  emit(event: string, data: unknown, options: EmitOptions & { volatile: true }): Promise<boolean>;
  /**
   * At-least-once: resolves with the ACK data; never causes an unhandled rejection. An error ACK rejects,
   * "duplicate" included (handled already, answer no longer known).
   */
  emit<T = unknown>(event: string, data?: unknown, options?: EmitOptions): Promise<T>;
  /**
   * Rejects with AckTimeout, RealtimeAckError or RealtimeError. A call whose reply was lost with the connection is
   * resent with the same id after the reconnect; RealtimeAckError "duplicate" means the server handled it but no
   * longer has the answer.
   */
  call<T = unknown>(event: string, data?: unknown, options?: CallOptions): Promise<T>;
  on<K extends keyof ClientEvents>(event: K, handler: Handler<ClientEvents[K]>, options?: NamespaceOption): () => void;
  on<T = any>(event: string, handler: Handler<T>, options?: NamespaceOption): () => void;
  off(event: string, handler: Handler, options?: NamespaceOption): void;
  onState(listener: (state: ConnectionState, info: StateInfo) => void): () => void;
  /** The connection id in a namespace, null until CONNECTED. */
  sid(namespace?: string): string | null;
  /** Whether the last CONNECTED of the namespace resumed its session with nothing lost. */
  recovered(namespace?: string): boolean;
}

/**
 * Base error. Local codes: "closed", "expired", "queue_full", "message_too_large", "connection_closed",
 * "connection_lost", "reconnect_failed", "disconnected", "unsupported_version", "invalid_url", "ids_exhausted".
 * Throw one from a handler of a server call to answer with that code and message.
 */
export declare class RealtimeError extends Error {
  constructor(code: string, message?: string, extra?: Record<string, unknown>);
  code: string;
  /** Set for "connection_closed", "connection_lost" and "reconnect_failed". */
  closeCode?: number;
  /** Set for "message_too_large". */
  size?: number;
  max?: number;
  /** Set for "disconnected". */
  namespace?: string;
}

export declare class AckTimeout extends RealtimeError {
  constructor(event: string, timeout: number);
  code: "timeout";
  event: string;
  timeout: number;
}

/** An error ACK from the server: `invalid_payload`, `unknown_event`, `forbidden`, an application code... */
export declare class RealtimeAckError extends RealtimeError {
  constructor(code: string, message: string);
}

/** A CONNECT_ERROR that retrying did not fix. */
export declare class ConnectError extends RealtimeError {
  constructor(namespace: string, code: string, message: string, retryable: boolean);
  namespace: string;
  retryable: boolean;
}

/** Add a trailing slash to the URL's path (the router's mount point needs it): `ws://h/rt?q` -> `ws://h/rt/?q`. */
export declare function withTrailingSlash(url: string): string;

/** Whether to reconnect after a close with this code (docs/protocol.md, "Close codes"). */
export declare function isRetryable(code: number | null | undefined): boolean;

export declare function encodeMsgpack(value: unknown): Uint8Array;
export declare function decodeMsgpack(input: ArrayBuffer | ArrayBufferView): unknown;

export interface Codec {
  name: "json" | "msgpack";
  protocol: "rt.v1.json" | "rt.v1.msgpack";
  binary: boolean;
  encode(frame: unknown[]): string | Uint8Array;
  decode(data: unknown): unknown;
  /** Size in bytes of an encoded frame. */
  size(payload: string | Uint8Array): number;
}

export declare const codecs: { json: Codec; msgpack: Codec };

export declare class Backoff {
  constructor(options?: { min?: number; max?: number; factor?: number; jitter?: number; random?: () => number });
  attempts: number;
  /** The next delay in ms; counts an attempt. */
  duration(): number;
  reset(): void;
}

export interface QueueEntry {
  ns: string;
  id: number;
  createdAt?: number;
  inFlight?: boolean;
  [key: string]: unknown;
}

export declare class OfflineQueue<E extends QueueEntry = QueueEntry> {
  constructor(options?: { ttl?: number; max?: number; clock?: Clock; onExpire?: (entry: E) => void });
  readonly size: number;
  readonly full: boolean;
  dropped: number;
  push(entry: E): void;
  take(ns: string, id: number): E | undefined;
  remove(entry: E): void;
  entries(): E[];
  expire(): void;
  schedule(): void;
  clear(): E[];
}
