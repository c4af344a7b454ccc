/**
 * ucx token authentication (handshake.ts), over UCX's tcp and then its shared-memory
 * transports: servers in child processes (one with the token, one with another token, one
 * without auth), a client with the right token connected and calling throughout, and scripted
 * raw peers (raw-handshake.ts) for what no well-behaved peer does: a replayed handshake, an
 * impostor replaying a real server's answers or accepting without a proof, a handshake left
 * half done, a message sent before the server admitted its sender. What an unauthenticated
 * client can get out of the server is in auth-hostile.test.ts.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { AuthError, connect, listen, rpcConnect, UsageError, wire, type RpcClient } from "../../src/index.ts";
import { authProof, newNonce } from "../../src/contract/auth.ts";
import { AM_AUTH, AM_DATA, AM_HELLO, AM_HELLO_ACK, AM_VERDICT } from "../../src/ucx/runtime.ts";
import { decodeHello, decodeVerdict, encodeAuth, encodeHello, encodeVerdict, HELLO_FLAG_AUTH, VERDICT_ACCEPTED, VERDICT_WRONG_PROOF, type Hello, type Verdict } from "../../src/ucx/hello.ts";
import { useEnv } from "../helpers/env.ts";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import { answerHello, RawUcxClient, rawUcxServer } from "./raw-handshake.ts";

const SERVER = new URL("./auth-server.ts", import.meta.url).pathname;
const TOKEN = "a shared secret of 32 bytes, ok!";
const OTHER = "another secret, also 32 bytes ok";
/** Long enough for any honest handshake on a loaded machine, short enough to watch a reaping. */
const HANDSHAKE_TIMEOUT_MS = 1500;
const KEY = new TextEncoder().encode(TOKEN);

interface Figures {
  stats: { accepted: number; refusedAuth: number; refusedProtocol: number; refusedBusy: number };
  refusals: Array<{ reason: string; name: string; message: string }>;
  marks: number;
  /** How many figures() connections this test file has made to that server (each one is accepted). */
  call: number;
}

/** Accepted between two figures, beyond figures()' own connections. */
function acceptedBeyondFigures(before: Figures, after: Figures): number {
  return after.stats.accepted - before.stats.accepted - (after.call - before.call);
}

function clientHello(nonce: Uint8Array): Uint8Array {
  return encodeHello({ maxMessageBytes: 1 << 20, maxHeadBytes: 4096, flags: HELLO_FLAG_AUTH, nonce });
}

// Above the watchdogs (15 s), which fail a hang with a message first.
setDefaultTimeout(30_000);

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  describe(`ucx auth (UCX_TLS=${tls})`, () => {
    useEnv({ UCX_TLS: tls });
    let server: Peer;
    let impostor: Peer;
    let open: Peer;
    /** Connected with the right token before the first test, calling after every test. */
    let keeper: RpcClient<{}>;
    let keeperCalls = 0;
    const figureCalls = new Map<Peer, number>();

    async function figures(p: Peer = server): Promise<Figures> {
      const call = (figureCalls.get(p) ?? 0) + 1;
      figureCalls.set(p, call);
      const c = await rpcConnect(p.ready.url, p === open ? {} : { auth: { token: p === impostor ? OTHER : TOKEN } });
      try {
        return { ...JSON.parse(new TextDecoder().decode(await c.request(2))), call };
      } finally {
        c.close();
      }
    }

    /** Progresses until the server's figures satisfy `done` (its refusals are counted as its peers' messages arrive). */
    async function figuresUntil(done: (f: Figures) => boolean, p: Peer = server): Promise<Figures> {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const f = await figures(p);
        if (done(f)) return f;
        if (Date.now() > deadline) throw new Error(`watchdog: the server's figures never got there: ${JSON.stringify(f)}`);
        await Bun.sleep(20);
      }
    }

    async function keeperStillServed(): Promise<void> {
      const data = new Uint8Array([keeperCalls++ & 0xff, 1, 2, 3]);
      expect(await keeper.request(1, data, { timeoutMs: 10_000 })).toEqual(data);
    }

    beforeAll(async () => {
      server = await spawnPeer(SERVER, ["ucx://127.0.0.1:0", TOKEN, String(HANDSHAKE_TIMEOUT_MS)], { UCX_TLS: tls });
      impostor = await spawnPeer(SERVER, ["ucx://127.0.0.1:0", OTHER, String(HANDSHAKE_TIMEOUT_MS)], { UCX_TLS: tls });
      open = await spawnPeer(SERVER, ["ucx://127.0.0.1:0", "-", String(HANDSHAKE_TIMEOUT_MS)], { UCX_TLS: tls });
      keeper = await rpcConnect(server.ready.url, { auth: { token: TOKEN } });
    });
    afterAll(async () => {
      keeper?.close();
      await Promise.all([server?.kill(), impostor?.kill(), open?.kill()]);
    });

    test("the right token: connect resolves once admitted, calls work, the server counts it accepted", async () => {
      const before = await figures();
      const c = await rpcConnect(server.ready.url, { auth: { token: new TextEncoder().encode(TOKEN) } });
      try {
        const data = new Uint8Array(5000).fill(9);
        expect(await c.request(1, data)).toEqual(data);
      } finally {
        c.close();
      }
      const after = await figures();
      expect(acceptedBeyondFigures(before, after)).toBe(1);
      expect(after.stats.refusedAuth).toBe(before.stats.refusedAuth);
      await keeperStillServed();
    });

    test("a wrong token: connect rejects with AuthError; the server refuses it and counts it as auth", async () => {
      const before = await figures();
      const err = await rpcConnect(server.ready.url, { auth: { token: OTHER } }).catch((e) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect(err.code).toBe("E_AUTH");
      expect(err.message).toMatch(/refused this connect's token proof \(the tokens differ\)/);
      const after = await figuresUntil((f) => f.stats.refusedAuth > before.stats.refusedAuth);
      expect(after.stats.refusedAuth - before.stats.refusedAuth).toBe(1);
      expect(acceptedBeyondFigures(before, after)).toBe(0);
      expect(after.refusals.at(-1)).toMatchObject({ reason: "auth", name: "AuthError" });
      expect(after.refusals.at(-1)!.message).toMatch(/wrong token proof/);
      await keeperStillServed();
    });

    test("no token: connect rejects with AuthError (the server requires one), counted as auth", async () => {
      const before = await figures();
      const err = await connect(server.ready.url).catch((e) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect(err.message).toMatch(/requires a token/);
      const after = await figuresUntil((f) => f.stats.refusedAuth > before.stats.refusedAuth);
      expect(after.refusals.at(-1)).toMatchObject({ reason: "auth", name: "AuthError" });
      expect(after.refusals.at(-1)!.message).toMatch(/sent no token proof/);
      await keeperStillServed();
    });

    test("a client with a token refuses a server without auth (AuthError); that server admits it to nothing", async () => {
      const before = await figures(open);
      const err = await connect(open.ready.url, { auth: { token: TOKEN } }).catch((e) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect(err.message).toMatch(/does not authenticate/);
      const after = await figuresUntil((f) => f.stats.refusedAuth > before.stats.refusedAuth, open);
      expect(acceptedBeyondFigures(before, after)).toBe(0);
      expect(after.refusals.at(-1)!.message).toMatch(/offered a token/);
      // Token-less clients still get in there.
      const c = await rpcConnect(open.ready.url);
      expect(await c.request(1, new Uint8Array([4]))).toEqual(new Uint8Array([4]));
      c.close();
      await keeperStillServed();
    });

    test("a server with another token refuses the client's proof: AuthError on the client, counted as auth there", async () => {
      const before = await figures(impostor);
      const err = await connect(impostor.ready.url, { auth: { token: TOKEN } }).catch((e) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect(err.message).toMatch(/refused this connect's token proof/);
      const f = await figuresUntil((x) => x.stats.refusedAuth > before.stats.refusedAuth, impostor);
      expect(acceptedBeyondFigures(before, f)).toBe(0);
      expect(f.refusals.at(-1)!.message).toMatch(/wrong token proof/);
      await keeperStillServed();
    });

    test("an impostor replaying a real server's HELLO_ACK and accepting VERDICT is refused (the server's proof covers the client's fresh nonce)", async () => {
      // Record a real server's answers to a genuine handshake...
      const rec = RawUcxClient.open(server.ready.url);
      let ack: Uint8Array;
      let verdict: Uint8Array;
      try {
        const cn = newNonce();
        rec.send(AM_HELLO, clientHello(cn));
        ack = await rec.next(AM_HELLO_ACK);
        rec.send(AM_AUTH, encodeAuth(authProof(KEY, "client", (decodeHello(ack, true) as Hello).nonce!, cn)));
        verdict = await rec.next(AM_VERDICT);
        expect((decodeVerdict(verdict) as Verdict).verdict).toBe(VERDICT_ACCEPTED);
      } finally {
        rec.close();
      }
      // ...and play them back to a client as a server that does not know the token.
      const fake = rawUcxServer((id) => (id === AM_HELLO ? [AM_HELLO_ACK, ack] : id === AM_AUTH ? [AM_VERDICT, verdict] : null));
      try {
        const err = await connect(fake.url, { auth: { token: TOKEN }, connectTimeoutMs: 10_000 }).catch((e) => e);
        expect(err).toBeInstanceOf(AuthError);
        expect(err.message).toMatch(/could not prove it knows the token \(a wrong proof/);
        expect(fake.endpoints[0]!.got.some((m) => m.id === AM_AUTH)).toBe(true);
      } finally {
        fake.stop();
      }
      await keeperStillServed();
    });

    test("an impostor that accepts without a proof, or answers HELLO with a VERDICT_ACCEPTED, is refused", async () => {
      const ack = encodeHello({ maxMessageBytes: 1 << 20, maxHeadBytes: 4096, flags: HELLO_FLAG_AUTH, nonce: newNonce() });
      const noProof = rawUcxServer((id) => (id === AM_HELLO ? [AM_HELLO_ACK, ack] : id === AM_AUTH ? [AM_VERDICT, encodeVerdict(VERDICT_ACCEPTED, null)] : null));
      try {
        const err = await connect(noProof.url, { auth: { token: TOKEN }, connectTimeoutMs: 10_000 }).catch((e) => e);
        expect(err).toBeInstanceOf(AuthError);
        expect(err.message).toMatch(/could not prove it knows the token \(it sent no proof\)/);
      } finally {
        noProof.stop();
      }
      const early = rawUcxServer(answerHello([AM_VERDICT, encodeVerdict(VERDICT_ACCEPTED, new Uint8Array(32))]));
      try {
        for (const auth of [undefined, { token: TOKEN }]) {
          const err = await connect(early.url, { auth, connectTimeoutMs: 10_000 }).catch((e) => e);
          expect(err).not.toBeInstanceOf(AuthError);
          expect(err.message).toMatch(/sent a VERDICT before it was asked for one/);
        }
      } finally {
        early.stop();
      }
      await keeperStillServed();
    });

    test("a replayed handshake is refused: the server's nonce is fresh per endpoint", async () => {
      const before = await figures();
      const cn = newNonce();
      const hello = clientHello(cn);
      let auth: Uint8Array;
      let firstNonce: Uint8Array;
      // A genuine handshake, recorded.
      const a = RawUcxClient.open(server.ready.url);
      try {
        a.send(AM_HELLO, hello);
        const ack = decodeHello(await a.next(AM_HELLO_ACK), true) as Hello;
        firstNonce = ack.nonce!;
        auth = encodeAuth(authProof(KEY, "client", ack.nonce!, cn));
        a.send(AM_AUTH, auth);
        expect((decodeVerdict(await a.next(AM_VERDICT)) as Verdict).verdict).toBe(VERDICT_ACCEPTED);
      } finally {
        a.close();
      }
      // The same bytes again, on a new endpoint.
      const b = RawUcxClient.open(server.ready.url);
      try {
        b.send(AM_HELLO, hello);
        const ack = decodeHello(await b.next(AM_HELLO_ACK), true) as Hello;
        expect(ack.nonce).not.toEqual(firstNonce);
        b.send(AM_AUTH, auth);
        expect(decodeVerdict(await b.next(AM_VERDICT))).toEqual({ verdict: VERDICT_WRONG_PROOF, proof: null });
      } finally {
        b.close();
      }
      const after = await figuresUntil((f) => f.stats.refusedAuth > before.stats.refusedAuth);
      expect(after.stats.refusedAuth - before.stats.refusedAuth).toBe(1);
      expect(acceptedBeyondFigures(before, after)).toBe(1); // the genuine one
      expect(after.refusals.at(-1)).toMatchObject({ reason: "auth", name: "AuthError" });
      expect(after.refusals.at(-1)!.message).toMatch(/wrong token proof/);
      await keeperStillServed();
    });

    test("a message sent before the server admitted its sender is never delivered: that endpoint is refused (protocol)", async () => {
      const before = await figures();
      const p = RawUcxClient.open(server.ready.url);
      try {
        const cn = newNonce();
        p.send(AM_HELLO, clientHello(cn));
        const ack = decodeHello(await p.next(AM_HELLO_ACK), true) as Hello;
        // A well-formed request for method 3, then the right proof: too late.
        const head = new Uint8Array(wire.WIRE_HEADER_BYTES);
        wire.writeWireHeader(head, wire.KIND_REQUEST, 3, 0, 0, 0, 0);
        p.send(AM_DATA, head);
        p.send(AM_AUTH, encodeAuth(authProof(KEY, "client", ack.nonce!, cn)));
        await p.untilClosedByPeer();
        expect(p.got.some((m) => m.id === AM_VERDICT)).toBe(false);
      } finally {
        p.close();
      }
      const after = await figuresUntil((f) => f.stats.refusedProtocol > before.stats.refusedProtocol);
      expect(after.marks).toBe(0);
      expect(acceptedBeyondFigures(before, after)).toBe(0);
      expect(after.refusals.at(-1)).toMatchObject({ reason: "protocol", name: "ProtocolError" });
      expect(after.refusals.at(-1)!.message).toMatch(/before the handshake completed/);
      await keeperStillServed();
    });

    test("a peer that never completes its handshake is reaped after handshakeTimeoutMs and counted as protocol", async () => {
      const before = await figures();
      const p = RawUcxClient.open(server.ready.url);
      try {
        p.send(AM_HELLO, clientHello(newNonce()));
        await p.next(AM_HELLO_ACK);
        // No AUTH: the server closes the endpoint once its handshake timeout passed.
        await p.untilClosedByPeer();
      } finally {
        p.close();
      }
      const after = await figuresUntil((f) => f.stats.refusedProtocol > before.stats.refusedProtocol);
      expect(after.refusals.at(-1)).toMatchObject({ reason: "protocol", name: "ProtocolError" });
      expect(after.refusals.at(-1)!.message).toMatch(new RegExp(`no token proof \\(AUTH\\) within ${HANDSHAKE_TIMEOUT_MS} ms`));
      await keeperStillServed();
    });

    test("bad tokens are a UsageError on connect and listen, before anything is set up", async () => {
      for (const token of ["short", "", 42, null] as unknown[]) {
        await expect(connect(server.ready.url, { auth: { token } as never })).rejects.toBeInstanceOf(UsageError);
        await expect(listen("ucx://127.0.0.1:0", { auth: { token } as never })).rejects.toBeInstanceOf(UsageError);
      }
      await keeperStillServed();
    });

    test("the client connected with the right token before every test was served throughout", async () => {
      await keeperStillServed();
      expect(keeperCalls).toBeGreaterThan(9);
      expect(server.proc.exitCode).toBeNull();
      expect(server.proc.signalCode).toBeNull();
    });
  });
}
