/**
 * The ucx handshake messages, each sent as an Active Message header, little-endian. The
 * client's HELLO and the server's HELLO_ACK share one layout; each side states the limits it
 * accepts, so a sender refuses what its peer would not take (contract item 6). With a shared
 * token (handshake.ts) the client proves first: HELLO carries the client's nonce, HELLO_ACK the
 * server's nonce (nothing that depends on the token), AUTH the client's proof, and only the
 * VERDICT that accepts that proof carries the server's proof.
 *
 *   HELLO / HELLO_ACK (AM_HELLO / AM_HELLO_ACK)
 *   0   magic "HPUX"
 *   4   u32 version (HELLO_VERSION)
 *   8   u64 maxMessageBytes (largest body this side accepts; below 2^53)
 *   16  u32 maxHeadBytes (largest head this side accepts)
 *   20  u32 flags: HELLO_FLAG_PEER_ERRORS (the client's endpoint uses UCP_ERR_HANDLING_MODE_PEER),
 *       HELLO_FLAG_AUTH (a token challenge follows)
 *   24  with HELLO_FLAG_AUTH: HELLO: clientNonce[32]; HELLO_ACK: serverNonce[32]
 *   24 / 56  end (plain, with auth)
 *
 *   AUTH (AM_AUTH, client → server)          VERDICT (AM_VERDICT, server → client)
 *   0   magic, 4 u32 version                 0   magic, 4 u32 version
 *   8   u32 AUTH_PROOF                       8   u32 VERDICT_ACCEPTED, VERDICT_WRONG_PROOF
 *   12  u32 0                                    or VERDICT_TOKEN_REQUIRED
 *   16  clientProof[32]                      12  u32 0
 *   48  end                                  16  VERDICT_ACCEPTED: serverProof[32]; a refusal: end
 *                                            48  end (VERDICT_ACCEPTED)
 *
 * Example:
 *   ep.amSend(AM_HELLO, encodeHello({ maxMessageBytes, maxHeadBytes, flags: 0 }), null, done);
 *   const hello = decodeHello(copyOut(header, hlen), true); // a string: why it is no HELLO_ACK of this version
 *
 * Threading: pure functions over bytes; any thread.
 */

import { NONCE_BYTES, PROOF_BYTES } from "../contract/auth.ts";

/**
 * 4: the client proves first (HELLO_ACK carries no proof; the accepting VERDICT carries the
 * server's). 3 sent the server's proof in HELLO_ACK, before the client proved anything: an
 * offline token-guessing oracle for anyone. A peer of another version is refused.
 */
export const HELLO_VERSION = 4;
export const HELLO_BYTES = 24;
export const HELLO_FLAG_PEER_ERRORS = 1;
export const HELLO_FLAG_AUTH = 2;
export const AUTH_BYTES = 16 + PROOF_BYTES;
/** A refusing VERDICT; an accepting one carries the server's proof after these bytes. */
export const VERDICT_BYTES = 16;
export const VERDICT_PROOF_OFFSET = VERDICT_BYTES;
export const VERDICT_ACCEPTED_BYTES = VERDICT_PROOF_OFFSET + PROOF_BYTES;
/** The one AUTH kind: the client's proof (the field leaves room for others in later versions). */
export const AUTH_PROOF = 1;
export const VERDICT_ACCEPTED = 0;
export const VERDICT_WRONG_PROOF = 1;
export const VERDICT_TOKEN_REQUIRED = 2;
const MAGIC = 0x58555048; // "HPUX" read as a little-endian u32

export interface Hello {
  maxMessageBytes: number;
  maxHeadBytes: number;
  flags: number;
  /** HELLO with HELLO_FLAG_AUTH: the client's nonce. HELLO_ACK with it: the server's. */
  nonce?: Uint8Array;
}

/** A decoded VERDICT: its value, and with VERDICT_ACCEPTED the server's proof (a copy). */
export interface Verdict {
  verdict: number;
  proof: Uint8Array | null;
}

function start(len: number, b = new Uint8Array(len)): { b: Uint8Array; dv: DataView } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, HELLO_VERSION, true);
  return { b, dv };
}

/**
 * Why `b` is not a message of this version with `len` bytes (null when it is). A peer of
 * another version is named as such, so the error says which side to upgrade.
 */
function problem(b: Uint8Array, what: string, lens: number[]): string | null {
  if (b.length < 8) return `a ${what} of ${b.length} bytes is not a hotpath ${what}`;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) return `a ${what} of ${b.length} bytes without the hotpath magic`;
  const v = dv.getUint32(4, true);
  if (v !== HELLO_VERSION) return `a ${what} of protocol version ${v}, this side speaks version ${HELLO_VERSION}`;
  if (!lens.includes(b.length)) return `a ${what} of ${b.length} bytes (expected ${lens.join(" or ")})`;
  return null;
}

/** A new buffer holding `h` (its nonce after the fixed part when given); the send owns it from then on. */
export function encodeHello(h: Hello): Uint8Array {
  const { b, dv } = start(HELLO_BYTES + (h.nonce?.length ?? 0));
  dv.setBigUint64(8, BigInt(h.maxMessageBytes), true);
  dv.setUint32(16, h.maxHeadBytes, true);
  dv.setUint32(20, h.flags, true);
  if (h.nonce) b.set(h.nonce, HELLO_BYTES);
  return b;
}

/**
 * The hello in `b` (a HELLO when `ack` is false, else a HELLO_ACK), or a string saying why it
 * is not a well-formed one of this version. The nonce is a copy.
 */
export function decodeHello(b: Uint8Array, ack: boolean): Hello | string {
  const what = ack ? "HELLO_ACK" : "HELLO";
  const withAuth = HELLO_BYTES + NONCE_BYTES;
  const why = problem(b, what, [HELLO_BYTES, withAuth]);
  if (why !== null) return why;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const maxMessageBytes = dv.getBigUint64(8, true);
  if (maxMessageBytes > BigInt(Number.MAX_SAFE_INTEGER)) return `a ${what} with maxMessageBytes ${maxMessageBytes} (above 2^53)`;
  const flags = dv.getUint32(20, true);
  if (((flags & HELLO_FLAG_AUTH) !== 0) !== (b.length === withAuth)) return `a ${what} of ${b.length} bytes whose auth flag is ${flags & HELLO_FLAG_AUTH ? "set" : "clear"}`;
  const h: Hello = { maxMessageBytes: Number(maxMessageBytes), maxHeadBytes: dv.getUint32(16, true), flags };
  if (b.length === withAuth) h.nonce = b.slice(HELLO_BYTES, withAuth);
  return h;
}

/** A new AUTH message carrying the client's proof (PROOF_BYTES). */
export function encodeAuth(proof: Uint8Array): Uint8Array {
  const { b, dv } = start(AUTH_BYTES);
  dv.setUint32(8, AUTH_PROOF, true);
  b.set(proof, 16);
  return b;
}

/** The AUTH in `b` (the proof a copy), or a string saying why it is not one. */
export function decodeAuth(b: Uint8Array): { kind: number; proof: Uint8Array } | string {
  const why = problem(b, "AUTH", [AUTH_BYTES]);
  if (why !== null) return why;
  const kind = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(8, true);
  if (kind !== AUTH_PROOF) return `an AUTH of unknown kind ${kind}`;
  return { kind, proof: b.slice(16, AUTH_BYTES) };
}

/** A new VERDICT message: VERDICT_ACCEPTED with the server's proof, or a refusal (`proof` null). */
export function encodeVerdict(verdict: number, proof: Uint8Array | null): Uint8Array {
  const { b, dv } = start(proof === null ? VERDICT_BYTES : VERDICT_ACCEPTED_BYTES);
  dv.setUint32(8, verdict, true);
  if (proof !== null) b.set(proof, VERDICT_PROOF_OFFSET);
  return b;
}

/**
 * The verdict in `b` (the proof a copy), or a string saying why it is not a well-formed
 * VERDICT. A refusal carries no proof; a VERDICT_ACCEPTED without one decodes with `proof`
 * null (the client refuses such a server: it did not prove it knows the token).
 */
export function decodeVerdict(b: Uint8Array): Verdict | string {
  const why = problem(b, "VERDICT", [VERDICT_BYTES, VERDICT_ACCEPTED_BYTES]);
  if (why !== null) return why;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(8, true);
  if (v !== VERDICT_ACCEPTED && v !== VERDICT_WRONG_PROOF && v !== VERDICT_TOKEN_REQUIRED) return `a VERDICT of unknown value ${v}`;
  const proof = b.length === VERDICT_ACCEPTED_BYTES ? b.slice(VERDICT_PROOF_OFFSET) : null;
  if (proof !== null && v !== VERDICT_ACCEPTED) return `a refusing VERDICT (${v}) of ${b.length} bytes (a refusal carries no proof: ${VERDICT_BYTES} bytes)`;
  return { verdict: v, proof };
}
