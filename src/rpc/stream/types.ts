/**
 * The shapes of streams, shared by the stream engine (client-stream.ts, server-stream.ts), the
 * interceptors (interceptors.ts) and the client options (pending.ts). Types only: this file
 * imports no runtime code, so every side may depend on it.
 *
 * A stream is a call whose id stays open (wire.ts: STREAM_START, MSG, CREDIT, END): both sides
 * send messages under per-stream credit (a window of messages and bytes the receiver grants as
 * its consumer reads), so a slow reader never grows memory and never blocks other streams or
 * calls on the connection.
 *
 * Example:
 *   const s = client.stream(M_ECHO, { window: { messages: 32, bytes: 1 << 20 } });
 *   await s.send(bytes); s.end();
 *   for await (const m of s) use(m);
 */

import type { SendStatus } from "../../contract/transport.ts";
import type { Metadata, MetadataInit } from "../metadata.ts";

/** A receive window: how many messages and bytes the peer may send before it gets more credit. */
export interface StreamWindow {
  readonly messages: number;
  readonly bytes: number;
}

/**
 * What ClientStream and ServerStream share. The owning thread only.
 *
 * Iterating (`for await (const m of s)`) reads until the peer's END. Leaving the loop early
 * (break, return, a throw) differs by side: a ClientStream is cancelled (CancelledError both
 * ways); a ServerStream only stops reading: later messages are dropped (their credit still
 * granted, so the client's sends complete), read() gives null, and the handler may still
 * send and end().
 */
export interface RpcStream extends AsyncIterable<Uint8Array> {
  readonly method: number;
  /** Sends one message: waits for credit and transport room; rejects with the stream's error (UsageError after end()). `data` is copied before it resolves. */
  send(data: Uint8Array): Promise<void>;
  /** Hot path: SEND_OK, SEND_FULL (no credit, or the transport is full: retry later) or SEND_CLOSED (the stream ended). */
  trySend(data: Uint8Array): SendStatus;
  /** A writable buffer in transport memory (zero-copy where the transport has it), or null. */
  allocBuffer(lenBytes: number): Uint8Array | null;
  /** trySend() of a buffer from allocBuffer(), its first lenBytes without a copy. Ok/Closed: the transport owns it; Full: the caller keeps it. */
  trySendBuffer(buffer: Uint8Array, lenBytes?: number): SendStatus;
  /** Ends this side's sending (client: half-close; server: the stream finished OK), with trailing metadata. */
  end(metadata?: MetadataInit | Metadata): void;
  /** Ends the stream on both sides with CancelledError. */
  cancel(reason?: unknown): void;
  /** The next message (the caller owns it), or null after the peer's END. Rejects with the stream's error. */
  read(): Promise<Uint8Array | null>;
  /** Resolves once the stream ended cleanly both ways; rejects with its error. */
  readonly closed: Promise<void>;
  /** Aborts when the stream ends with an error (cancel, deadline, peer gone). */
  readonly signal: AbortSignal;
  /** The credit this side may still send under. */
  readonly sendCredit: StreamWindow;
}

export interface ClientStream extends RpcStream {
  /** The server's END metadata, once it ended (null before, or when it failed). */
  readonly trailers: Metadata | null;
}

export interface ServerStream extends RpcStream {
  /** The client's START metadata (Metadata.EMPTY for none). */
  readonly metadata: Metadata;
  /** When the stream's deadline passes (performance.now() ms), or undefined: none. */
  readonly deadline: number | undefined;
  /** The peer, as the connection names it. */
  readonly peer: string;
  /** The transport's name ("shm", "tcp", ...). */
  readonly transport: string;
}

/** client.stream()'s options. */
export interface StreamOptions {
  /** Sent with STREAM_START (metadata.ts). */
  metadata?: MetadataInit | Metadata;
  /** The whole stream's deadline in ms (0 or Infinity, the default: none); it travels in `hp-deadline-ms`. */
  timeoutMs?: number;
  /** Aborting cancels the stream on both sides. */
  signal?: AbortSignal;
  /** This side's receive window (default DEFAULT_STREAM_WINDOW). */
  window?: StreamWindow;
  /** The call being served (a RequestHandle or ServerStream): the deadline is cut to its remaining one. */
  parent?: { readonly deadline: number | undefined };
}

/** One stream as a client interceptor sees it: replace fields by passing a new object to next(). */
export interface StreamCall {
  readonly method: number;
  readonly metadata: Metadata;
  readonly opts: StreamOptions | undefined;
}
