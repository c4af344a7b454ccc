/**
 * What the rdma control-path tests share (test/rdma/setup*.test.ts): a setup-peer.ts child over
 * the softrc TEST FIXTURE driven by JSON commands, a raw TCP client playing a hostile or silent
 * peer, and the fixture's rdma_cm side-socket frames (their layout is test/rdma/softrc/cm.c's).
 *
 *   const server = spawnSetupPeer(fx, fx.registry());
 *   const { url } = await server.ask("listen", { url: "rdma://127.0.0.1:0?mode=socket" });
 */
import type { Socket } from "bun";
import { encodeHello, HELLO_SOCKET_BYTES, type HelloFields } from "../../src/rdma/hello.ts";
import { until } from "../helpers/peer.ts";
import { collectLines } from "../helpers/stream-lines.ts";
import type { SoftRcFixture } from "./softrc/use-fixture.ts";

const PEER = new URL("./setup-peer.ts", import.meta.url).pathname;
/** Watchdog for one child's command (a hang fails the test instead of blocking it). */
export const ANSWER_WATCHDOG_MS = 20_000;
/** Watchdog for a raw client's wait on the listener's bytes or close (a hang fails the test). */
export const UNTIL_MS = 10_000;
/** The fixture's GID[0] (::ffff:127.0.0.1): what a raw client's socket-mode hello names. */
export const FIXTURE_GID = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 127, 0, 0, 1]);

/** Frame types of the fixture's rdma_cm side socket (test/rdma/softrc/cm.c). */
export const F_REQ = 1, F_REP = 2, F_REJ = 3, F_RTU = 4, F_DREQ = 5;

/** A frame of the fixture's rdma_cm side socket (cm.c: type, pdlen, resp_res, init_depth, rnr_retry, pad[3], qpn, private data); a REQ by default. */
export function reqFrame(privateData: Uint8Array, qpn: number, type = F_REQ, respRes = 0, initDepth = 0): Uint8Array {
  const f = new Uint8Array(12 + privateData.length);
  f[0] = type;
  f[1] = privateData.length;
  f[2] = respRes;
  f[3] = initDepth;
  f[4] = 3;
  new DataView(f.buffer).setUint32(8, qpn, true);
  f.set(privateData, 12);
  return f;
}

/** A setup-peer.ts child over the fixture: `ask(cmd)` sends one command and resolves with its answer. */
export function spawnSetupPeer(fx: SoftRcFixture, dir: string) {
  const p = fx.track(Bun.spawn(["bun", PEER], { stdin: "pipe", stdout: "pipe", stderr: "inherit", env: fx.env(dir) }));
  const out = collectLines<Record<string, any>>(p.stdout, JSON.parse);
  const lines = out.seen;
  return {
    proc: p,
    async ask(cmd: string, args: Record<string, unknown> = {}): Promise<Record<string, any>> {
      p.stdin.write(JSON.stringify({ cmd, ...args }) + "\n");
      p.stdin.flush();
      const end = Date.now() + ANSWER_WATCHDOG_MS;
      for (;;) {
        const i = lines.findIndex((l) => l.cmd === cmd);
        if (i >= 0) return lines.splice(i, 1)[0]!;
        if (p.exitCode !== null || p.signalCode !== null) throw new Error(`peer exited (${p.exitCode ?? p.signalCode}) before answering ${cmd}`);
        if (Date.now() > end) throw new Error(`peer: no answer to ${cmd} within ${ANSWER_WATCHDOG_MS} ms`);
        await Promise.race([out.next(), Bun.sleep(50)]);
      }
    },
    async end(): Promise<number | null> {
      p.stdin.end();
      return p.exited;
    },
  };
}

/** A raw TCP client: what it received and whether the other side closed. */
export async function rawClient(port: number) {
  const got: number[] = [];
  const state = { closed: false };
  const s: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      binaryType: "uint8array",
      data(_s, chunk: Uint8Array) {
        got.push(...chunk);
      },
      close() {
        state.closed = true;
      },
      error() {
        state.closed = true;
      },
    },
  });
  return { s, got, state };
}

/**
 * Two setup-peer.ts children on one registry: `server` listening with `listenArgs` (its `url`), and
 * `other` holding a bare QP (`qpNum`) a raw client's hello can name, so the listener's QP has a
 * real one to connect to. `idle` is the server's probe() before any client, when `probeIdle`.
 */
export async function listenerWithBareQp(fx: SoftRcFixture, listenArgs: Record<string, unknown>, probeIdle = true) {
  const dir = fx.registry();
  const server = spawnSetupPeer(fx, dir);
  const other = spawnSetupPeer(fx, dir);
  const { url } = (await server.ask("listen", listenArgs)) as { url: string };
  const idle = probeIdle ? await server.ask("probe") : {};
  const { qpNum } = (await other.ask("bareQp")) as { qpNum: number };
  return { server, other, url, idle, qpNum };
}

/** A raw socket-mode client of the listener at `url` that has sent its hello (`fields`, length-prefixed as socket-mode.ts frames it). */
export async function rawSocketHello(url: string, fields: HelloFields) {
  const raw = await rawClient(Number(new URL(url).port));
  const h = encodeHello(fields, "socket");
  raw.s.write(new Uint8Array([h.length, 0, ...h]));
  return raw;
}

/** rawSocketHello, then waits (bounded) until the listener's own framed hello has arrived: the next step is READY. */
export async function rawSocketHelloAnswered(url: string, fields: HelloFields) {
  const raw = await rawSocketHello(url, fields);
  await until(() => raw.got.length >= 2 + HELLO_SOCKET_BYTES, "the listener's hello", UNTIL_MS);
  return raw;
}
