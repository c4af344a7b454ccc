/**
 * Request bodies of the Bun.serve benchmark (bench/serve.bench.ts), shared by its load
 * generator (serve-load.ts), its wrk script (serve-wrk.lua builds the same bytes) and its KV
 * front (serve-front.ts kv / redis): `ID:SEQ:` in hex (4 and 12 digits), padded with "x" to
 * BYTES. Echo rows use every sequence number (each body unique to its connection and request);
 * KV rows use KV_SEQS of them per id, so the KV_IDS × KV_SEQS bodies are the keys the front
 * stores beforehand with the key itself as the value (a KV response must equal its request).
 *
 *   body(3, 17, 32) // "0003:000000000011:xxxxxxxxxxxxxx"
 */

const enc = new TextEncoder();

/** Connection ids of the KV key set (the load generator's 64 connections). */
export const KV_IDS = 64;
/** Sequence numbers per id in the KV key set: 64 × 16 = 1024 keys, a set the store holds many times over. */
export const KV_SEQS = 16;

/** The body for connection `id`, request `seq`, `bytes` long (≥ 18 for the prefix to survive). */
export function body(id: number, seq: number, bytes: number): Uint8Array {
  return enc.encode(`${id.toString(16).padStart(4, "0")}:${seq.toString(16).padStart(12, "0")}:`.padEnd(bytes, "x").slice(0, bytes));
}

/** The KV rows' sequence number for a connection's n-th request (1-based): cycles through 1..KV_SEQS. */
export const kvSeq = (n: number): number => ((n - 1) % KV_SEQS) + 1;

/** Every key of the KV set, for the front to store before it serves. */
export function kvKeys(bytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let id = 0; id < KV_IDS; id++) for (let s = 1; s <= KV_SEQS; s++) out.push(body(id, s, bytes));
  return out;
}
