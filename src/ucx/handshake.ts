/**
 * The ucx handshake (control path): the hello exchange of hello.ts and, with a shared token,
 * the HMAC challenge-response of src/contract/auth.ts, over the connection's endpoint before
 * any message is delivered. One state machine per side, fed the handshake's Active Messages by
 * UcxConnection.onAm; no UCX calls of its own beyond the connection's sends.
 *
 *   client → server  HELLO      limits, flags; with a token HELLO_FLAG_AUTH + clientNonce
 *   server → client  HELLO_ACK  limits; with a token HELLO_FLAG_AUTH + serverNonce (fresh per
 *                               endpoint), and nothing that depends on the token
 *   client → server  AUTH       clientProof = HMAC(token, "client", sn, cn)
 *   server → client  VERDICT    VERDICT_ACCEPTED + serverProof = HMAC(token, "server", sn, cn),
 *                               or VERDICT_WRONG_PROOF (no proof)
 *
 * The client proves first (as tcp does): a peer that does not know the token never receives a
 * proof made with it, so it has nothing to guess the token against offline. The server's proof
 * comes only in the VERDICT that accepts a correct client proof; the client checks it before
 * connect() resolves and refuses a server whose proof is wrong or missing (an impostor, or a
 * replayed answer: the proof covers the client's fresh nonce). The other direction is inherent
 * to proving first: a client that connects to an impostor hands it one client proof, which the
 * impostor can test guesses against offline; a token of random bytes defeats that.
 *
 * Without a token on either side HELLO and HELLO_ACK are the whole handshake. A listener with
 * a token answers a HELLO without one with VERDICT_TOKEN_REQUIRED; a listener without a token
 * answers a HELLO that offers one with a plain HELLO_ACK and admits nothing (the client refuses
 * a server that does not authenticate: it could be anybody). The server admits the connection
 * (Listener.onConnection) only once the client's proof matched, and delivers nothing the client
 * sent before: a message before that is a ProtocolError for that endpoint. The client's
 * connect() resolves only on a VERDICT_ACCEPTED whose proof it checked (or the plain HELLO_ACK
 * without a token). A listener that refuses sends its refusal and lingers until the client,
 * having read it, closes the endpoint (REFUSAL_LINGER_MS at most), so a refusal always arrives
 * before the disconnect; a client that refuses the server closes its endpoint at once (nothing
 * of the server's is waiting on it: the server either refused this client already or admitted it).
 *
 * Errors quote nothing the peer sent (numbers only: lengths, versions, kinds), so a hostile
 * peer's bytes never reach a log or an error message.
 *
 * What it does not do: authenticate or encrypt anything after the handshake, or gate UCX's
 * own traffic on the endpoint (wire-up, and RMA for a runtime that has it: see runtime.ts).
 *
 * Example (server): conn.handshake = new ServerHandshake(conn, key, { accept, refuse });
 *
 * Ownership: one per connection, on the connection's thread, inside UCX callbacks.
 */

import { AuthError, ProtocolError, type HotpathError } from "../errors.ts";
import { authProof, newNonce, proofMatches } from "../contract/auth.ts";
import type { Capabilities, RefusalReason } from "../contract/transport.ts";
import {
  decodeAuth,
  decodeHello,
  decodeVerdict,
  encodeAuth,
  encodeHello,
  encodeVerdict,
  HELLO_FLAG_AUTH,
  HELLO_FLAG_PEER_ERRORS,
  VERDICT_ACCEPTED,
  VERDICT_TOKEN_REQUIRED,
  VERDICT_WRONG_PROOF,
  type Hello,
} from "./hello.ts";
import { AM_AUTH, AM_HELLO, AM_HELLO_ACK, AM_VERDICT, type UcxRuntime } from "./runtime.ts";

/**
 * What a handshake needs of its connection (UcxConnection implements it). Declared here so
 * that this file imports nothing of connection.ts (connection.ts imports this one).
 */
export interface HandshakeConnection {
  readonly caps: Capabilities;
  readonly peer: string;
  readonly rt: Pick<UcxRuntime, "waiters">;
  /** Sends a handshake message (UCX holds `bytes` until the send completes). */
  sendControl(id: number, bytes: Uint8Array): void;
  /** The handshake passed: learn the peer's limits and open the data path. */
  establish(h: Hello): void;
}

/** A refusing side waits this long for its peer to read the refusal and close; a peer that does not close is cut then. */
export const REFUSAL_LINGER_MS = 1000;
/** Handshake messages are at most 56 bytes: a longer AM header is not one (and is not copied). */
export const MAX_HANDSHAKE_BYTES = 256;

const AM_NAMES: Record<number, string> = { [AM_HELLO]: "HELLO", [AM_HELLO_ACK]: "HELLO_ACK", [AM_AUTH]: "AUTH", [AM_VERDICT]: "VERDICT" };
function amName(id: number): string {
  return AM_NAMES[id] ?? `a message (Active Message ${id})`;
}

function limits(conn: HandshakeConnection, flags: number, nonce?: Uint8Array): Uint8Array {
  return encodeHello({ maxMessageBytes: conn.caps.maxMessageBytes, maxHeadBytes: conn.caps.maxHeadBytes, flags, nonce });
}

export interface ServerHandshakeEvents {
  /** The client passed: the connection is established and may be handed to the application. */
  accept(): void;
  /**
   * The client is refused. `linger` true: this side sent a refusal and keeps the endpoint until
   * the client closes it (or REFUSAL_LINGER_MS); false: close it now.
   */
  refuse(error: HotpathError, reason: RefusalReason, linger: boolean): void;
}

/** The listener's side of one endpoint's handshake. */
export class ServerHandshake {
  private state: "hello" | "auth" | "done" = "hello";
  private hello: Hello | null = null;
  private serverNonce: Uint8Array | null = null;

  constructor(
    private readonly conn: HandshakeConnection,
    /** The token's key bytes (authKey), or null when the listener admits anyone. */
    private readonly key: Uint8Array | null,
    private readonly events: ServerHandshakeEvents,
  ) {}

  /** What the handshake waits for, for the reaping message. */
  get waitingFor(): string {
    return this.state === "hello" ? "HELLO" : "token proof (AUTH)";
  }

  /** A handshake Active Message; `bytes` null for one that is not (AM_DATA, or over MAX_HANDSHAKE_BYTES). */
  onAm(id: number, bytes: Uint8Array | null): void {
    if (this.state === "done") return;
    const from = `ucx connection from ${this.conn.peer}`;
    const expected = this.state === "hello" ? AM_HELLO : AM_AUTH;
    if (id !== expected || bytes === null) {
      return this.refuse(new ProtocolError(`${from}: ${amName(id)} of ${bytes === null ? "more than " + MAX_HANDSHAKE_BYTES : bytes.length} bytes before the handshake completed (expected ${amName(expected)})`), "protocol", false);
    }
    if (this.state === "hello") return this.onHello(bytes, from);
    this.onAuth(bytes, from);
  }

  private onHello(bytes: Uint8Array, from: string): void {
    const h = decodeHello(bytes, false);
    if (typeof h === "string") return this.refuse(new ProtocolError(`${from}: ${h}`), "protocol", false);
    const flags = h.flags & HELLO_FLAG_PEER_ERRORS;
    const offered = (h.flags & HELLO_FLAG_AUTH) !== 0;
    if (this.key === null) {
      this.conn.sendControl(AM_HELLO_ACK, limits(this.conn, flags));
      // A client that offers a token refuses a listener without one; it is not admitted only to be dropped.
      if (offered) return this.refuse(new AuthError(`${from}: the client offered a token, and this listener has no auth configured`), "auth", true);
      return this.pass(h);
    }
    if (!offered) {
      this.conn.sendControl(AM_VERDICT, encodeVerdict(VERDICT_TOKEN_REQUIRED, null));
      return this.refuse(new AuthError(`${from}: the client sent no token proof, and this listener requires auth`), "auth", true);
    }
    this.hello = h;
    this.serverNonce = newNonce();
    this.state = "auth";
    // No proof of this side's yet: the client proves first (see the module comment).
    this.conn.sendControl(AM_HELLO_ACK, limits(this.conn, flags | HELLO_FLAG_AUTH, this.serverNonce));
  }

  private onAuth(bytes: Uint8Array, from: string): void {
    const a = decodeAuth(bytes);
    if (typeof a === "string") return this.refuse(new ProtocolError(`${from}: ${a}`), "protocol", false);
    const h = this.hello!;
    const sn = this.serverNonce!;
    if (!proofMatches(authProof(this.key!, "client", sn, h.nonce!), a.proof)) {
      this.conn.sendControl(AM_VERDICT, encodeVerdict(VERDICT_WRONG_PROOF, null));
      return this.refuse(new AuthError(`${from}: wrong token proof (a wrong token, or a replayed handshake)`), "auth", true);
    }
    this.conn.sendControl(AM_VERDICT, encodeVerdict(VERDICT_ACCEPTED, authProof(this.key!, "server", sn, h.nonce!)));
    this.pass(h);
  }

  private pass(h: Hello): void {
    this.state = "done";
    this.conn.establish(h);
    this.events.accept();
  }

  private refuse(error: HotpathError, reason: RefusalReason, linger: boolean): void {
    this.state = "done";
    this.events.refuse(error, reason, linger);
  }
}

/** The connecting side's handshake: starts with hello(), ends with `error` or the connection established. */
export class ClientHandshake {
  private state: "hello" | "auth" | "done" = "hello";
  private readonly clientNonce: Uint8Array | null;
  private ack: Hello | null = null;
  /** Why the handshake failed (AuthError: refused for who either side is; ProtocolError: not a hotpath peer of this version). */
  error: HotpathError | null = null;

  constructor(
    private readonly conn: HandshakeConnection,
    /** The token's key bytes (authKey), or null for a connect without auth. */
    private readonly key: Uint8Array | null,
  ) {
    this.clientNonce = key === null ? null : newNonce();
  }

  /** The HELLO to send first. */
  hello(peerErrors: boolean): Uint8Array {
    const flags = (peerErrors ? HELLO_FLAG_PEER_ERRORS : 0) | (this.key !== null ? HELLO_FLAG_AUTH : 0);
    return limits(this.conn, flags, this.clientNonce ?? undefined);
  }

  /** A handshake Active Message from the server; `bytes` null for one that is not. */
  onAm(id: number, bytes: Uint8Array | null): void {
    if (this.state === "done") return;
    const to = `the server`;
    if (bytes !== null && id === AM_VERDICT) return this.onVerdict(bytes, to);
    if (bytes === null || id !== AM_HELLO_ACK || this.state !== "hello") {
      return this.fail(new ProtocolError(`${to} sent ${amName(id)} of ${bytes === null ? "more than " + MAX_HANDSHAKE_BYTES : bytes.length} bytes before the handshake completed`));
    }
    const h = decodeHello(bytes, true);
    if (typeof h === "string") return this.fail(new ProtocolError(`${to} answered with ${h}`));
    const challenged = (h.flags & HELLO_FLAG_AUTH) !== 0;
    if (this.key === null) {
      if (challenged) return this.fail(new AuthError(`${to} requires a token, and this connect has no auth`));
      return this.pass(h);
    }
    // A listener without auth has refused this side already and waits for it to close.
    if (!challenged) return this.fail(new AuthError(`${to} does not authenticate (no token configured there), and this connect asked for auth: refused`));
    this.ack = h;
    this.state = "auth";
    this.conn.sendControl(AM_AUTH, encodeAuth(authProof(this.key, "client", h.nonce!, this.clientNonce!)));
  }

  private onVerdict(bytes: Uint8Array, to: string): void {
    const v = decodeVerdict(bytes);
    if (typeof v === "string") return this.fail(new ProtocolError(`${to} sent ${v}`));
    if (v.verdict === VERDICT_TOKEN_REQUIRED) {
      return this.fail(new AuthError(`${to} requires a token${this.key === null ? ", and this connect has no auth" : " (it refused this connect's)"}`));
    }
    if (this.state !== "auth") return this.fail(new ProtocolError(`${to} sent a VERDICT before it was asked for one`));
    if (v.verdict === VERDICT_WRONG_PROOF) return this.fail(new AuthError(`${to} refused this connect's token proof (the tokens differ)`));
    // VERDICT_ACCEPTED: the server must prove it knows the token too, for this connect's nonce.
    const h = this.ack!;
    if (v.proof === null || !proofMatches(authProof(this.key!, "server", h.nonce!, this.clientNonce!), v.proof)) {
      return this.fail(new AuthError(`${to} accepted this connect but could not prove it knows the token (${v.proof === null ? "it sent no proof" : "a wrong proof: an impostor, or a replayed answer"}): refused`));
    }
    this.pass(h);
  }

  private pass(h: Hello): void {
    this.state = "done";
    this.conn.establish(h);
  }

  private fail(error: HotpathError): void {
    this.state = "done";
    this.error = error;
    this.conn.rt.waiters.wake(true); // a connect() sleeping until its handshake ends (setup.ts)
  }
}
