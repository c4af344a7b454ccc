/**
 * The tcp handshake (control path): the hello exchange (hello.ts) and, when a token is in play,
 * the HMAC challenge-response of src/contract/auth.ts, as a byte-driven state machine with no
 * socket of its own. A TcpConnection feeds it every byte that arrives until it passed or failed.
 *
 *   both at once     hello (flags: AUTH_REQUIRED from a listener with a token, AUTH_OFFERED from
 *                    a client with one; each side's nonce, fresh when it has a token)
 *   client → server  clientProof (PROOF_BYTES) = HMAC(token, "client", serverNonce, clientNonce)
 *   server → client  auth reply (AUTH_REPLY_BYTES): u32 LE AUTH_OK then
 *                    serverProof = HMAC(token, "server", serverNonce, clientNonce),
 *                    or AUTH_DENIED then zeros, and the listener closes
 *
 * Without a token on either side the hellos are the whole handshake. A token on one side only
 * fails it with an auth failure on both: a listener with a token admits only clients that prove
 * it; a client with a token refuses a listener that cannot prove it knows the token (one without
 * auth included: it could be anybody), and such a listener refuses that client itself rather
 * than admit a connection the client is about to drop. The listener's fresh nonce makes a
 * recorded client proof worthless on a new connection; the client's makes a recorded server
 * proof worthless. Proofs are compared in constant time. No frame is sent or delivered before
 * the handshake passed on this side; a client passes only after it checked the server's proof.
 *
 * A peer that is not hotpath is told apart from its first bytes: as soon as one byte differs
 * from the magic, the failure quotes what arrived (describeForeignBytes).
 *
 * Example:
 *   const hs = new TcpHandshake("connect", key, maxMessageBytes, (b) => socket.write(b));
 *   socket.write(hs.hello);
 *   const at = hs.push(chunk);   // ≥ 0: passed, frames begin at `at`; -1: more to come or hs.failure
 *
 * Ownership: one per connection, driven from the connection's thread only.
 */

import { readU16, readU32, writeU32 } from "../bytes.ts";
import { AuthError, ConnectError, ProtocolError, type HotpathError } from "../errors.ts";
import { DEFAULT_MAX_HEAD_BYTES } from "../contract/transport.ts";
import { NONCE_BYTES, PROOF_BYTES, authProof, newNonce, proofMatches } from "../contract/auth.ts";
import {
  HELLO_AUTH_OFFERED,
  HELLO_AUTH_REQUIRED,
  HELLO_BYTES,
  HELLO_MAGIC,
  HELLO_OK,
  HELLO_PREFIX_BYTES,
  HELLO_STATUS_OFFSET,
  checkHelloPrefix,
  decodeHello,
  describeForeignBytes,
  encodeHello,
  type PeerHello,
} from "./hello.ts";

export const AUTH_OK = 0;
export const AUTH_DENIED = 1;
export const AUTH_REPLY_STATUS_OFFSET = 0;
export const AUTH_REPLY_PROOF_OFFSET = 4;
export const AUTH_REPLY_BYTES = AUTH_REPLY_PROOF_OFFSET + PROOF_BYTES;

/** The magic as it arrives on the wire, to compare byte by byte. */
const MAGIC_BYTES = new Uint8Array(4);
writeU32(MAGIC_BYTES, 0, HELLO_MAGIC);

const S_HELLO = 0;
const S_PROOF = 1;
const S_REPLY = 2;
const S_DONE = 3;
const S_FAILED = 4;

/** Why a handshake failed: "auth" (who the peer is) or "protocol" (what it sent, or did not). */
export interface HandshakeFailure {
  readonly reason: "auth" | "protocol";
  /**
   * What went wrong, phrased to follow "tcp connect <url>: " on a client and
   * "tcp listener <url>: client <peer> " on a listener.
   */
  readonly text: string;
  /** Bytes to hand the peer before closing (a listener's AUTH_DENIED), or null. */
  readonly farewell: Uint8Array | null;
}

/** One connection's handshake, on either side (see the module comment). */
export class TcpHandshake {
  /** This side's hello: written first (inside TLS when the connection has it). */
  readonly hello: Uint8Array;
  /** The peer's hello, once it arrived and passed. */
  peer: PeerHello | null = null;
  failure: HandshakeFailure | null = null;
  /** Bytes of the peer's handshake taken so far (for messages). */
  receivedBytes = 0;

  private state = S_HELLO;
  private readonly nonce: Uint8Array;
  private peerNonce: Uint8Array | null = null;
  private readonly buf = new Uint8Array(Math.max(HELLO_BYTES, AUTH_REPLY_BYTES));
  private fill = 0;

  /**
   * `key`: the token's bytes (authKey) or null; `send` writes a handshake message to the peer
   * (the connection queues what the socket does not take at once).
   */
  constructor(
    private readonly role: "connect" | "accept",
    private readonly key: Uint8Array | null,
    maxMessageBytes: number,
    private readonly send: (bytes: Uint8Array) => void,
  ) {
    this.nonce = key === null ? new Uint8Array(NONCE_BYTES) : newNonce();
    const flags = key === null ? 0 : role === "accept" ? HELLO_AUTH_REQUIRED : HELLO_AUTH_OFFERED;
    this.hello = encodeHello(HELLO_OK, maxMessageBytes, DEFAULT_MAX_HEAD_BYTES, flags, this.nonce);
  }

  /**
   * Takes handshake bytes from `chunk`. Returns the offset in `chunk` where frames begin once
   * the handshake passed on this side (chunk.length when nothing follows), or -1: more bytes
   * are needed, or it failed (`failure` says why; the caller closes the connection).
   */
  push(chunk: Uint8Array): number {
    let at = 0;
    while (at < chunk.length) {
      if (this.state === S_DONE) return at;
      if (this.state === S_FAILED) return -1;
      const need = this.state === S_HELLO ? HELLO_BYTES : this.state === S_PROOF ? PROOF_BYTES : AUTH_REPLY_BYTES;
      const take = Math.min(need - this.fill, chunk.length - at);
      if (this.state === S_HELLO && !this.checkEarly(chunk, at, take)) return -1;
      this.buf.set(chunk.subarray(at, at + take), this.fill);
      this.fill += take;
      this.receivedBytes += take;
      at += take;
      if (this.fill < need) return -1;
      this.fill = 0;
      if (this.state === S_HELLO) this.onHello();
      else if (this.state === S_PROOF) this.onProof();
      else this.onReply();
    }
    return this.state === S_DONE ? at : -1;
  }

  /** Ends the handshake unpassed for `text` (the peer closed, a timer gave up, TLS failed); returns the failure. */
  abandon(text: string): HandshakeFailure {
    this.state = S_FAILED;
    this.failure ??= { reason: "protocol", text, farewell: null };
    return this.failure;
  }

  /** What the peer's closing the connection means at this point of the handshake. */
  closedText(): string {
    const closed = this.role === "connect" ? "the peer closed the connection" : "closed the connection";
    if (this.state === S_HELLO && this.fill === 0) return `${closed} before its hello arrived`;
    if (this.state === S_HELLO) return `${closed} after ${this.fill} of the ${HELLO_BYTES} hello bytes (${describeForeignBytes(this.buf.subarray(0, this.fill))})`;
    if (this.state === S_PROOF) return `${closed} before sending its token proof`;
    return `${closed} before answering this client's token proof`;
  }

  /**
   * Checks the hello bytes about to be taken (before they are stored) against the magic and,
   * once HELLO_PREFIX_BYTES are in, the version and status; false when the handshake failed.
   */
  private checkEarly(chunk: Uint8Array, at: number, take: number): boolean {
    for (let i = 0; i < take && this.fill + i < MAGIC_BYTES.length; i++) {
      if (chunk[at + i] !== MAGIC_BYTES[this.fill + i]) {
        const seen = new Uint8Array(this.fill + chunk.length - at);
        seen.set(this.buf.subarray(0, this.fill));
        seen.set(chunk.subarray(at), this.fill);
        this.fail("protocol", this.foreignText(seen));
        return false;
      }
    }
    if (this.fill < HELLO_PREFIX_BYTES && this.fill + take >= HELLO_PREFIX_BYTES) {
      const prefix = new Uint8Array(HELLO_PREFIX_BYTES);
      prefix.set(this.buf.subarray(0, this.fill));
      prefix.set(chunk.subarray(at, at + HELLO_PREFIX_BYTES - this.fill), this.fill);
      const bad = this.role === "connect" ? checkHelloPrefix(prefix) : checkClientPrefix(prefix);
      if (bad !== null) {
        this.fail("protocol", this.role === "connect" ? `the peer ${bad}` : bad);
        return false;
      }
    }
    return true;
  }

  private foreignText(seen: Uint8Array): string {
    const what = describeForeignBytes(seen);
    const tls = what.startsWith("a TLS");
    if (this.role === "connect") return `not a hotpath server: got ${what}${tls ? "; it speaks TLS: connect with a tcps:// URL" : ""}`;
    return `is not a hotpath client: sent ${what}${tls ? "; a TLS client, and this listener is plain tcp (listen with tls options or a tcps:// URL)" : ""}`;
  }

  private onHello(): void {
    const peer = decodeHello(this.buf);
    this.peerNonce = peer.nonce.slice();
    this.peer = { ...peer, nonce: this.peerNonce };
    const required = (peer.flags & HELLO_AUTH_REQUIRED) !== 0;
    const offered = (peer.flags & HELLO_AUTH_OFFERED) !== 0;
    if (this.role === "connect") {
      if (required && this.key === null) return this.fail("auth", "the listener requires a token: connect with { auth: { token } }");
      if (!required && this.key !== null) {
        return this.fail("auth", "the listener does not authenticate, so it cannot prove it knows auth.token; refusing it (connect without auth to reach an unauthenticated listener)");
      }
      if (this.key === null) return this.pass();
      this.send(authProof(this.key, "client", this.peerNonce, this.nonce));
      this.state = S_REPLY;
      return;
    }
    if (this.key !== null && !offered) return this.fail("auth", "offered no token, and this listener requires one (auth)", denied());
    if (this.key === null && offered) {
      return this.fail("auth", "offered a token, and this listener does not authenticate (the client would refuse it)");
    }
    if (this.key === null) return this.pass();
    this.state = S_PROOF;
  }

  /** Listener: the client's proof arrived. */
  private onProof(): void {
    const expected = authProof(this.key!, "client", this.nonce, this.peerNonce!);
    if (!proofMatches(expected, this.buf.subarray(0, PROOF_BYTES))) {
      return this.fail("auth", "sent a token proof that does not match this listener's token", denied());
    }
    const reply = new Uint8Array(AUTH_REPLY_BYTES);
    writeU32(reply, AUTH_REPLY_STATUS_OFFSET, AUTH_OK);
    reply.set(authProof(this.key!, "server", this.nonce, this.peerNonce!), AUTH_REPLY_PROOF_OFFSET);
    this.send(reply);
    this.pass();
  }

  /** Client: the listener's answer to its proof arrived. */
  private onReply(): void {
    const status = readU32(this.buf, AUTH_REPLY_STATUS_OFFSET);
    if (status === AUTH_DENIED) return this.fail("auth", "the listener refused this client's token (auth.token differs from the listener's)");
    if (status !== AUTH_OK) return this.fail("protocol", `the peer answered the token proof with unknown status ${status}`);
    const expected = authProof(this.key!, "server", this.peerNonce!, this.nonce);
    if (!proofMatches(expected, this.buf.subarray(AUTH_REPLY_PROOF_OFFSET, AUTH_REPLY_BYTES))) {
      return this.fail("auth", "the server could not prove it knows the token (its proof does not match); refusing it");
    }
    this.pass();
  }

  private pass(): void {
    this.state = S_DONE;
  }

  private fail(reason: "auth" | "protocol", text: string, farewell: Uint8Array | null = null): void {
    this.state = S_FAILED;
    this.failure = { reason, text, farewell };
  }
}

/** A listener's check of a client's hello prefix: its version, and a status only OK may have. */
function checkClientPrefix(prefix: Uint8Array): string | null {
  const bad = checkHelloPrefix(prefix);
  if (bad === null || bad.startsWith("speaks")) return bad;
  return `sent a hello with status ${readU16(prefix, HELLO_STATUS_OFFSET)} (a client's is always ${HELLO_OK})`;
}

function denied(): Uint8Array {
  const b = new Uint8Array(AUTH_REPLY_BYTES);
  writeU32(b, AUTH_REPLY_STATUS_OFFSET, AUTH_DENIED);
  return b;
}

/** The typed error for a failed handshake: AuthError for "auth"; else ConnectError on a client, ProtocolError on a listener. */
export function handshakeError(role: "connect" | "accept", peer: string, local: string, f: HandshakeFailure): HotpathError {
  if (role === "connect") {
    const msg = `tcp connect ${peer}: ${f.text}`;
    return f.reason === "auth" ? new AuthError(msg) : new ConnectError(msg);
  }
  const msg = `tcp listener ${local}: client ${peer} ${f.text}; refused`;
  return f.reason === "auth" ? new AuthError(msg) : new ProtocolError(msg);
}
