/**
 * The shared HMAC challenge-response helpers (src/contract/auth.ts): token validation, proofs
 * checked against an independent HMAC-SHA256 (WebCrypto) over the documented input, each input
 * changing the proof, and the comparison.
 */

import { describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { MIN_TOKEN_BYTES, NONCE_BYTES, PROOF_BYTES, authKey, authProof, newNonce, proofMatches } from "../../src/contract/auth.ts";

const te = new TextEncoder();
const TOKEN = "0123456789abcdef-unit";

async function webCryptoHmac(key: Uint8Array<ArrayBuffer>, data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
}

describe("auth helpers", () => {
  test("authKey: undefined is no auth; strings are UTF-8; bytes are copied", () => {
    expect(authKey("t", undefined)).toBeNull();
    expect([...authKey("t", { token: TOKEN })!]).toEqual([...te.encode(TOKEN)]);
    expect(authKey("t", { token: "é".repeat(8) })!.length).toBe(16);
    const bytes = new Uint8Array(MIN_TOKEN_BYTES).fill(3);
    const key = authKey("t", { token: bytes })!;
    bytes.fill(4);
    expect([...key]).toEqual(new Array(MIN_TOKEN_BYTES).fill(3));
  });

  test("authKey: short tokens, wrong types and a non-object auth are UsageErrors naming the place", () => {
    const bad: unknown[] = [{ token: "x".repeat(MIN_TOKEN_BYTES - 1) }, { token: new Uint8Array(MIN_TOKEN_BYTES - 1) }, { token: 5 }, { token: null }, { token: [1, 2] }, {}, null, "a-token-as-a-string!", 7];
    for (const auth of bad) {
      let e: unknown;
      try {
        authKey("tcp listen x", auth as never);
      } catch (x) {
        e = x;
      }
      expect(e).toBeInstanceOf(UsageError);
      expect((e as Error).message).toStartWith("tcp listen x: auth");
      if (typeof auth !== "object" || auth === null) expect((e as Error).message).toContain("auth must be { token }");
    }
  });

  test("proofs are HMAC-SHA256(token, 'hotpath-auth-v1\\0' role '\\0' serverNonce clientNonce)", async () => {
    const key = authKey("t", { token: TOKEN })!;
    const sn = new Uint8Array(NONCE_BYTES).fill(1);
    const cn = new Uint8Array(NONCE_BYTES).fill(2);
    for (const role of ["client", "server"] as const) {
      const want = await webCryptoHmac(new Uint8Array(key), new Uint8Array([...te.encode(`hotpath-auth-v1\0${role}\0`), ...sn, ...cn]));
      const got = authProof(key, role, sn, cn);
      expect(got.length).toBe(PROOF_BYTES);
      expect([...got]).toEqual([...want]);
    }
  });

  test("every input changes the proof: the role, either nonce, the key", () => {
    const key = authKey("t", { token: TOKEN })!;
    const sn = newNonce();
    const cn = newNonce();
    const base = authProof(key, "client", sn, cn);
    const others = [
      authProof(key, "server", sn, cn),
      authProof(key, "client", newNonce(), cn),
      authProof(key, "client", sn, newNonce()),
      authProof(key, "client", cn, sn),
      authProof(authKey("t", { token: TOKEN + "!" })!, "client", sn, cn),
    ];
    for (const o of others) expect(proofMatches(base, o)).toBe(false);
    expect(proofMatches(base, authProof(key, "client", sn, cn))).toBe(true);
  });

  test("nonces are fresh and NONCE_BYTES long; proofMatches refuses other lengths", () => {
    const a = newNonce();
    const b = newNonce();
    expect(a.length).toBe(NONCE_BYTES);
    expect(proofMatches(a, b)).toBe(false);
    expect(proofMatches(a, a.slice())).toBe(true);
    expect(proofMatches(a, a.subarray(0, NONCE_BYTES - 1))).toBe(false);
    expect(proofMatches(a, new Uint8Array(0))).toBe(false);
  });
});
