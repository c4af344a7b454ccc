/**
 * What an unauthenticated network peer can get out of a ucx listener with a token, scripted
 * with raw peers (raw-handshake.ts) against a server in a child process (auth-server.ts):
 * - the client proves first: a client that sets the auth flag and then sends no proof, or a
 *   wrong one, receives nothing that depends on the token (no server proof to guess the token
 *   from offline); the server's proof comes only in the VERDICT that accepts a correct proof;
 * - a flood of endpoints that never finish their handshake is capped (MAX_UCX_HANDSHAKING):
 *   beyond it an endpoint is closed at once and counted refused "busy", while a client
 *   connected before is served throughout and new clients get in again once the flood left;
 * - a server's bytes never reach the client's errors verbatim (no control characters, bounded).
 * Wire layouts are spelt out here (offsets, not hello.ts's helpers) so the test checks them.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { AuthError, connect, ConnectError, rpcConnect, type RpcClient } from "../../src/index.ts";
import { authProof, newNonce, NONCE_BYTES, PROOF_BYTES } from "../../src/contract/auth.ts";
import { AM_AUTH, AM_HELLO, AM_HELLO_ACK, AM_VERDICT } from "../../src/ucx/runtime.ts";
import { encodeHello, HELLO_BYTES, HELLO_FLAG_AUTH, HELLO_VERSION, VERDICT_ACCEPTED, VERDICT_TOKEN_REQUIRED, VERDICT_WRONG_PROOF } from "../../src/ucx/hello.ts";
import { MAX_UCX_HANDSHAKING } from "../../src/ucx/setup.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { answerHello, RawUcxClient, rawUcxServer } from "./raw-handshake.ts";

const SERVER = new URL("./auth-server.ts", import.meta.url).pathname;
const TOKEN = "a shared secret of 32 bytes, ok!";
const KEY = new TextEncoder().encode(TOKEN);
/** Short: the no-proof test waits for the reaping. */
const HANDSHAKE_TIMEOUT_MS = 1500;
/** The flood's server never reaps during the test. */
const PATIENT_TIMEOUT_MS = 120_000;
/** Endpoints beyond the cap in the flood. */
const EXTRA = 8;
const MAGIC = 0x58555048;
/** VERDICT: magic, version, u32 verdict, u32 0; with VERDICT_ACCEPTED the server's proof follows. */
const VERDICT_FIXED_BYTES = 16;

setDefaultTimeout(60_000);

function u32(b: Uint8Array, at: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
}

/** Whether `needle` occurs anywhere in `hay`. */
function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

function clientHello(nonce: Uint8Array | null): Uint8Array {
  return encodeHello({ maxMessageBytes: 1 << 20, maxHeadBytes: 4096, flags: nonce ? HELLO_FLAG_AUTH : 0, nonce: nonce ?? undefined });
}

/** AUTH: magic, version, u32 kind (1: a proof), u32 0, clientProof[32]. */
function authMessage(proof: Uint8Array): Uint8Array {
  const b = new Uint8Array(16 + PROOF_BYTES);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, HELLO_VERSION, true);
  dv.setUint32(8, 1, true);
  b.set(proof, 16);
  return b;
}

/** Everything a raw client received (next() takes messages out of `got`: keep them here too). */
function everything(p: RawUcxClient, taken: Uint8Array[]): Uint8Array[] {
  return [...taken, ...p.got.map((m) => m.bytes)];
}

describe("ucx auth against hostile clients (UCX_TLS=tcp,self)", () => {
  useEnv({ UCX_TLS: "tcp,self" });
  let server: Peer;
  let patient: Peer;
  let keeper: RpcClient<{}>;
  let keeperCalls = 0;

  async function keeperStillServed(): Promise<void> {
    const data = new Uint8Array([keeperCalls++ & 0xff, 7]);
    expect(await keeper.request(1, data, { timeoutMs: 10_000 })).toEqual(data);
  }

  beforeAll(async () => {
    server = await spawnPeer(SERVER, ["ucx://127.0.0.1:0", TOKEN, String(HANDSHAKE_TIMEOUT_MS)], { UCX_TLS: "tcp,self" });
    patient = await spawnPeer(SERVER, ["ucx://127.0.0.1:0", TOKEN, String(PATIENT_TIMEOUT_MS)], { UCX_TLS: "tcp,self" });
    keeper = await rpcConnect(patient.ready.url, { auth: { token: TOKEN } });
  });
  afterAll(async () => {
    keeper?.close();
    await Promise.all([server?.kill(), patient?.kill()]);
  });

  test("HELLO_ACK carries limits, flags and the server's nonce, and no proof", async () => {
    const p = RawUcxClient.open(server.ready.url);
    try {
      const cn = newNonce();
      p.send(AM_HELLO, clientHello(cn));
      const ack = await p.next(AM_HELLO_ACK);
      expect(u32(ack, 0)).toBe(MAGIC);
      expect(u32(ack, 20) & HELLO_FLAG_AUTH).toBe(HELLO_FLAG_AUTH);
      expect(ack.length).toBe(HELLO_BYTES + NONCE_BYTES);
      const sn = ack.slice(HELLO_BYTES, HELLO_BYTES + NONCE_BYTES);
      expect(contains(ack, authProof(KEY, "server", sn, cn))).toBe(false);
    } finally {
      p.close();
    }
  });

  test("a client that sets the auth flag and sends no proof gets nothing that depends on the token before it is reaped", async () => {
    const p = RawUcxClient.open(server.ready.url);
    const taken: Uint8Array[] = [];
    try {
      const cn = newNonce();
      p.send(AM_HELLO, clientHello(cn));
      const ack = await p.next(AM_HELLO_ACK);
      taken.push(ack);
      await p.untilClosedByPeer();
      const proof = authProof(KEY, "server", ack.slice(HELLO_BYTES, HELLO_BYTES + NONCE_BYTES), cn);
      for (const b of everything(p, taken)) expect(contains(b, proof)).toBe(false);
      expect(p.got.some((m) => m.id === AM_VERDICT)).toBe(false);
    } finally {
      p.close();
    }
  });

  test("a wrong proof gets a refusal (VERDICT_WRONG_PROOF) without a proof, and nothing else that depends on the token", async () => {
    const p = RawUcxClient.open(server.ready.url);
    const taken: Uint8Array[] = [];
    try {
      const cn = newNonce();
      p.send(AM_HELLO, clientHello(cn));
      const ack = await p.next(AM_HELLO_ACK);
      taken.push(ack);
      const sn = ack.slice(HELLO_BYTES, HELLO_BYTES + NONCE_BYTES);
      // A proof made with a guessed token, as an attacker would try.
      p.send(AM_AUTH, authMessage(authProof(new TextEncoder().encode("summer2024summer"), "client", sn, cn)));
      const verdict = await p.next(AM_VERDICT);
      taken.push(verdict);
      expect(verdict.length).toBe(VERDICT_FIXED_BYTES);
      expect(u32(verdict, 8)).toBe(VERDICT_WRONG_PROOF);
      await p.untilClosedByPeer();
      const proof = authProof(KEY, "server", sn, cn);
      for (const b of everything(p, taken)) expect(contains(b, proof)).toBe(false);
    } finally {
      p.close();
    }
  });

  test("no auth flag: VERDICT_TOKEN_REQUIRED without a proof, and no HELLO_ACK", async () => {
    const p = RawUcxClient.open(server.ready.url);
    try {
      p.send(AM_HELLO, clientHello(null));
      const verdict = await p.next(AM_VERDICT);
      expect(verdict.length).toBe(VERDICT_FIXED_BYTES);
      expect(u32(verdict, 8)).toBe(VERDICT_TOKEN_REQUIRED);
      await p.untilClosedByPeer();
      expect(p.got.some((m) => m.id === AM_HELLO_ACK)).toBe(false);
    } finally {
      p.close();
    }
  });

  test("the right proof: the VERDICT that accepts it carries the server's proof", async () => {
    const p = RawUcxClient.open(server.ready.url);
    try {
      const cn = newNonce();
      p.send(AM_HELLO, clientHello(cn));
      const ack = await p.next(AM_HELLO_ACK);
      const sn = ack.slice(HELLO_BYTES, HELLO_BYTES + NONCE_BYTES);
      p.send(AM_AUTH, authMessage(authProof(KEY, "client", sn, cn)));
      const verdict = await p.next(AM_VERDICT);
      expect(verdict.length).toBe(VERDICT_FIXED_BYTES + PROOF_BYTES);
      expect(u32(verdict, 8)).toBe(VERDICT_ACCEPTED);
      expect(Array.from(verdict.subarray(VERDICT_FIXED_BYTES))).toEqual(Array.from(authProof(KEY, "server", sn, cn)));
    } finally {
      p.close();
    }
  });

  test(`a flood of endpoints that never finish their handshake: beyond ${MAX_UCX_HANDSHAKING} each is closed at once and counted busy; a client connected before is served throughout, new ones get in once the flood left`, async () => {
    const figures = async () => JSON.parse(new TextDecoder().decode(await keeper.request(2, new Uint8Array(0), { timeoutMs: 10_000 })));
    const before = await figures();
    const flood: RawUcxClient[] = [];
    try {
      for (let i = 0; i < MAX_UCX_HANDSHAKING + EXTRA; i++) {
        const p = RawUcxClient.open(patient.ready.url);
        flood.push(p);
        p.send(AM_HELLO, clientHello(newNonce()));
        if (i % 32 === 31) await keeperStillServed();
      }
      // Each endpoint is either in its handshake (it got its HELLO_ACK) or turned away.
      const settled = () => flood.every((p) => p.failedWith !== null || p.got.some((m) => m.id === AM_HELLO_ACK));
      await flood[0]!.until("the flood's endpoints never all got an answer", settled, 30_000);
      const held = flood.filter((p) => p.got.some((m) => m.id === AM_HELLO_ACK)).length;
      const turnedAway = flood.filter((p) => p.failedWith !== null && !p.got.some((m) => m.id === AM_HELLO_ACK)).length;
      const during = await figures();
      console.log(`ucx flood of ${flood.length} half-open handshakes: ${held} held, ${turnedAway} closed at once; refusedBusy ${during.stats.refusedBusy - before.stats.refusedBusy}`);
      expect(held).toBe(MAX_UCX_HANDSHAKING);
      expect(turnedAway).toBe(EXTRA);
      expect(during.stats.refusedBusy - before.stats.refusedBusy).toBe(EXTRA);
      expect(during.refusals.at(-1)).toMatchObject({ reason: "busy", name: "ConnectError" });
      expect(during.refusals.at(-1).message).toMatch(new RegExp(`${MAX_UCX_HANDSHAKING} endpoints already in their handshake`));
      await keeperStillServed();
      // While the flood holds the cap, a new client is turned away too (a clear error, no hang).
      const err = await connect(patient.ready.url, { auth: { token: TOKEN }, connectTimeoutMs: 10_000 }).catch((e) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect(err).not.toBeInstanceOf(AuthError);
      await keeperStillServed();
    } finally {
      for (const p of flood) p.close();
    }
    // The flood left: its endpoints' handshakes end (counted "protocol"), and a new client gets in.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const f = await figures();
      if (f.stats.refusedProtocol - before.stats.refusedProtocol >= MAX_UCX_HANDSHAKING) break;
      if (Date.now() > deadline) throw new Error(`watchdog: the server never saw the flood leave: ${JSON.stringify(f.stats)}`);
      await Bun.sleep(20);
    }
    const c = await rpcConnect(patient.ready.url, { auth: { token: TOKEN } });
    try {
      expect(await c.request(1, new Uint8Array([1, 2]))).toEqual(new Uint8Array([1, 2]));
    } finally {
      c.close();
    }
    await keeperStillServed();
  });

  test("a server's bytes never reach the client's error verbatim: no control characters, bounded length", async () => {
    const junk = new TextEncoder().encode("HTTP/1.1 400 \x1b[2J\x1b[31mgotcha\r\n\x07\x00" + "A".repeat(200));
    const answers: Array<[number, Uint8Array]> = [
      [AM_HELLO_ACK, junk],
      [AM_VERDICT, junk],
      [AM_HELLO_ACK, Uint8Array.of(0x48, 0x50, 0x55, 0x58, 1, 0, 0, 0, 0x1b, 0x5b, 0x32, 0x4a)],
    ];
    for (const answer of answers) {
      for (const auth of [undefined, { token: TOKEN }]) {
        const fake = rawUcxServer(answerHello(answer));
        try {
          const err = await connect(fake.url, { auth, connectTimeoutMs: 10_000 }).catch((e) => e);
          expect(err).toBeInstanceOf(ConnectError);
          expect(err.message).not.toMatch(/[\x00-\x1f\x7f]/);
          expect(err.message).not.toMatch(/gotcha|AAAA/);
          expect(err.message.length).toBeLessThan(400);
        } finally {
          fake.stop();
        }
      }
    }
    await keeperStillServed();
  });
});
