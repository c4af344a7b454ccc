/**
 * Shared-secret authentication for the network transports (tcp, ucx): an HMAC-SHA256
 * challenge-response over fresh nonces. The token itself never travels.
 *
 *   server → client   serverNonce (32 random bytes, new for every connection)
 *   client → server   clientNonce, clientProof = HMAC(token, "client", serverNonce, clientNonce)
 *   server → client   serverProof = HMAC(token, "server", serverNonce, clientNonce)
 *
 * The role word stops a proof being reflected back at its sender; the server's fresh nonce
 * stops a recorded client proof being replayed on a new connection; the server's proof lets
 * the client refuse an impostor that does not know the token. Proofs are compared in constant
 * time (crypto.timingSafeEqual).
 *
 * Example:
 *   const key = authKey("tcp listen", opts.auth);               // null when auth is off
 *   const sn = newNonce();                                      // sent in the server's hello
 *   const ok = proofMatches(authProof(key!, "client", sn, clientNonce), receivedProof);
 */

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { UsageError } from "../errors.ts";
import type { AuthOptions } from "./transport.ts";

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
/** A shorter token is guessable; 16 bytes is 128 bits of a random secret. */
export const MIN_TOKEN_BYTES = 16;
const DOMAIN = "hotpath-auth-v1";

/** The key bytes of `auth` (a copy), or null when `auth` is undefined. Throws UsageError for a bad token. */
export function authKey(where: string, auth: AuthOptions | undefined): Uint8Array | null {
  if (auth === undefined) return null;
  if (typeof auth !== "object" || auth === null) throw new UsageError(`${where}: auth must be { token }, got ${auth === null ? "null" : typeof auth}`);
  const t = auth.token;
  let key: Uint8Array;
  if (typeof t === "string") key = Buffer.from(t, "utf8");
  else if (t instanceof Uint8Array) key = Uint8Array.from(t);
  else throw new UsageError(`${where}: auth.token must be a string or a Uint8Array, got ${t === null ? "null" : typeof t}`);
  if (key.length < MIN_TOKEN_BYTES) throw new UsageError(`${where}: auth.token has ${key.length} bytes, at least ${MIN_TOKEN_BYTES} are needed`);
  return key;
}

/** NONCE_BYTES fresh random bytes. */
export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(NONCE_BYTES));
}

/** The proof `role` sends for this pair of nonces (PROOF_BYTES bytes, a new array). */
export function authProof(key: Uint8Array, role: "client" | "server", serverNonce: Uint8Array, clientNonce: Uint8Array): Uint8Array {
  const h = createHmac("sha256", key);
  h.update(`${DOMAIN}\0${role}\0`);
  h.update(serverNonce);
  h.update(clientNonce);
  return new Uint8Array(h.digest());
}

/** Whether `got` equals `expected`, in time that does not depend on where they differ. */
export function proofMatches(expected: Uint8Array, got: Uint8Array): boolean {
  return got.length === expected.length && timingSafeEqual(expected, got);
}
