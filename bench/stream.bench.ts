/**
 * Stream throughput (issue 16): server streaming, one stream at a time. The client asks for N
 * messages of 32 B or 64 KiB (peers/stream-pattern.ts), the server sends them as fast as the
 * stream's flow control lets it, the client consumes and checks each one (its length and the
 * three stamps of its index: a wrong, missing, reordered or cut message fails the row). Rows,
 * the server in its own process for every row (peers/stream-server.ts), all in the same run:
 *   hotpath over shm, tcp, ucx (UCX_TLS=tcp,self and shm,self, as bench's ucx rows): serve() with
 *     a streamHandler (trySend, `await send()` on SEND_FULL); client.stream(), `for await`;
 *     the default stream window (1024 messages / 1 MiB);
 *   gRPC: @grpc/grpc-js server stream (raw bytes, identity serializers), client 'data' events;
 *   WebSocket: Bun.serve pushing binary messages, honouring backpressure (send's -1 / 0, drain());
 *     the client is Bun's WebSocket.
 * Figures per row: messages/s and MB/s (10^6 bytes) over the whole transfer of its timed
 * streams (totals, no percentiles), and the ratio of messages/s to the gRPC row and to the
 * WebSocket row of the same message size. Each row's timed count is chosen from two warm-up
 * streams on the same connection (about 1 s of messages, --quick 0.1 s); the full run measures two rounds
 * (fresh servers, the second in reverse order) and adds their totals. A row that cannot run here
 * (no ucx, no hotpath streams yet) is skipped with its reason; a row that fails (a wrong message)
 * is measured no further, and the part throws StreamRowsFailed naming it once all rows ran.
 *
 *   bun bench/stream.bench.ts [--quick] [--json PATH]
 *   import { measureStream } from "./stream.bench.ts"     // the part, for bench/run.ts
 */

import { writeFileSync } from "node:fs";
import { os } from "./os.ts";
import type { PartReport } from "./report.ts";
import { startPeer, type BenchPeer } from "./spawn.ts";
import { checkMessage, CORRUPT_ENV, encodeAsk, GRPC_STREAM_PATH, STREAM_METHOD } from "./peers/stream-pattern.ts";

const SERVER = new URL("./peers/stream-server.ts", import.meta.url).pathname;
const HOST = "127.0.0.1";
export const STREAM_SIZES = [32, 64 << 10] as const;
/** UCX families of the ucx rows, as bench/targets.ts's ucx rows: UCX_TLS=<family>,self on both sides. */
const UCX_FAMILIES = ["tcp", "shm"] as const;

/** A message failed its check (bytes, length, order, count): fails its row. */
export class StreamMismatch extends Error {
  override name = "StreamMismatch";
}

/** One or more rows failed; `report` holds the rows that were measured and `failed` the reasons. */
export class StreamRowsFailed extends Error {
  override name = "StreamRowsFailed";
  constructor(
    readonly failed: Array<{ id: string; reason: string }>,
    readonly report: PartReport & { skipped: Array<{ id: string; reason: string }> },
  ) {
    super(`stream rows failed: ${failed.map((f) => `${f.id}: ${f.reason}`).join("; ")}`);
  }
}

export interface StreamRow {
  id: string;
  label: string;
  kind: "hotpath" | "reference";
  lenBytes: number;
  messages: number;
  seconds: number;
  messagesPerS: number;
  mbPerS: number;
  /** messages/s over the gRPC row's (same size), null without it. */
  vsGrpc: number | null;
  vsWs: number | null;
  layout: string;
}

/** One connection to a row's server: run() is one stream of `count` messages, checked; resolves when the last arrived. */
interface Feed {
  run(count: number, lenBytes: number): Promise<void>;
  close(): Promise<void> | void;
}

interface RowSpec {
  id: string;
  label: string;
  kind: "hotpath" | "reference";
  layout: string;
  unavailable(): Promise<string | null>;
  /** The server's mode and address for peers/stream-server.ts, and its environment. */
  server: { args: string[]; env?: Record<string, string> };
  connect(url: string): Promise<Feed>;
}

const bad = (what: string | null) => {
  if (what !== null) throw new StreamMismatch(what);
};
const short = (got: number, count: number) => new StreamMismatch(`the stream ended after ${got} of ${count} messages`);

async function grpcFeed(url: string): Promise<Feed> {
  const g = await import("@grpc/grpc-js");
  const pass = (b: Buffer) => b;
  const Ctor = g.makeGenericClientConstructor(
    { feed: { path: GRPC_STREAM_PATH, requestStream: false, responseStream: true, requestSerialize: pass, requestDeserialize: pass, responseSerialize: pass, responseDeserialize: pass } },
    "Stream",
  );
  type Call = { on(ev: "data", f: (m: Buffer) => void): void; on(ev: "end", f: () => void): void; on(ev: "error", f: (e: Error) => void): void; cancel(): void };
  const client = new Ctor(new URL(url).host, g.credentials.createInsecure()) as unknown as { feed(req: Buffer): Call; close(): void };
  return {
    run: (count, lenBytes) =>
      new Promise<void>((resolve, reject) => {
        const call = client.feed(Buffer.from(encodeAsk(count, lenBytes)));
        let i = 0;
        let failed = false;
        const fail = (e: Error) => {
          if (failed) return;
          failed = true;
          call.cancel();
          reject(e);
        };
        call.on("data", (m) => {
          if (failed) return;
          const why = checkMessage(m, i, lenBytes);
          if (why !== null) return fail(new StreamMismatch(why));
          i++;
        });
        call.on("end", () => (i === count ? resolve() : fail(short(i, count))));
        call.on("error", fail);
      }),
    close: () => client.close(),
  };
}

function wsFeed(url: string): Promise<Feed> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onerror = () => reject(new Error(`websocket ${url}: connection failed`));
    ws.onopen = () => {
      ws.onerror = null;
      resolve({
        run: (count, lenBytes) =>
          new Promise<void>((done, fail) => {
            let i = 0;
            ws.onmessage = (e) => {
              if (i < 0) return;
              const why = checkMessage(new Uint8Array(e.data as ArrayBuffer), i, lenBytes);
              if (why !== null) {
                i = -1;
                return fail(new StreamMismatch(why));
              }
              if (++i === count) done();
            };
            ws.onclose = () => i >= 0 && i < count && fail(short(i, count));
            ws.send(encodeAsk(count, lenBytes));
          }),
        close: () => ws.close(),
      });
    };
  });
}

/** The hotpath stream API as this bench uses it (spec: client.stream(), for-await over the stream). */
interface HotpathClientStream extends AsyncIterable<Uint8Array> {
  send(data: Uint8Array): Promise<void>;
  end(): void;
}

let hotpathMod: Record<string, any> | null = null;
/** Null when hotpath's streams can run here, else why not. */
async function hotpathStreamsReason(): Promise<string | null> {
  try {
    hotpathMod ??= (await import("../src/index.ts")) as Record<string, any>;
  } catch (e) {
    return `hotpath streams not available (${e instanceof Error ? e.message : String(e)})`;
  }
  const streams = typeof hotpathMod.streamHandler === "function" && typeof hotpathMod.Client?.prototype?.stream === "function";
  return streams ? null : "hotpath streams not available";
}

async function hotpathFeed(url: string, ucxTls?: string): Promise<Feed> {
  const hp = hotpathMod!;
  // The UCP context is chosen by the UCX_* environment at connect; put it back afterwards.
  const saved = process.env.UCX_TLS;
  if (ucxTls) process.env.UCX_TLS = ucxTls;
  let client: { stream(method: number): HotpathClientStream; close(): void };
  try {
    client = await hp.rpcConnect(url);
  } finally {
    if (ucxTls) {
      if (saved === undefined) delete process.env.UCX_TLS;
      else process.env.UCX_TLS = saved;
    }
  }
  return {
    async run(count, lenBytes) {
      const s = client.stream(STREAM_METHOD);
      await s.send(encodeAsk(count, lenBytes));
      s.end();
      let i = 0;
      // A throw inside the loop returns the iterator, which cancels the stream.
      for await (const m of s) bad(checkMessage(m, i++, lenBytes));
      if (i !== count) throw short(i, count);
    },
    close: () => client.close(),
  };
}

async function transportReason(scheme: string): Promise<string | null> {
  const t = ((await hotpathMod!.transports()) as Array<{ scheme: string; unavailableReason: string | null }>).find((x) => x.scheme === scheme);
  return t === undefined ? `no ${scheme} transport registered` : t.unavailableReason;
}

let ucxFamilies: Set<string> | null = null;
/** UCX transport families this machine offers, from `ucx_info -d` (tcp and shm when it is missing), as bench/targets.ts reads them. */
function ucxFamilyOffered(tl: string): boolean {
  if (ucxFamilies === null) {
    ucxFamilies = new Set(Bun.which("ucx_info") === null ? ["tcp", "shm"] : []);
    if (Bun.which("ucx_info") !== null) {
      for (const m of Bun.spawnSync(["ucx_info", "-d"]).stdout.toString().matchAll(/Transport:\s*(\S+)/g)) {
        if (m[1] === "tcp") ucxFamilies.add("tcp");
        else if (m[1] === "posix" || m[1] === "sysv" || m[1] === "xpmem") ucxFamilies.add("shm");
      }
    }
  }
  return ucxFamilies.has(tl);
}

const CLIENT = "client: this process (event loop)";
let names = 0;

function rowSpecs(): RowSpec[] {
  const hotpathRow = (id: string, label: string, url: () => string, transport: string, ucxTls?: string): RowSpec => ({
    id,
    label,
    kind: "hotpath",
    layout: `${CLIENT}, client.stream() + for await; server: own process (peers/stream-server.ts hotpath: serve(), streamHandler, trySend then await send() on SEND_FULL), default wait policy and stream window${ucxTls ? `; UCX_TLS=${ucxTls} on both sides` : ""}`,
    async unavailable() {
      const why = await hotpathStreamsReason();
      if (why !== null) return why;
      const t = await transportReason(transport);
      if (t !== null || ucxTls === undefined) return t;
      const tl = ucxTls.split(",")[0]!;
      return ucxFamilyOffered(tl) ? null : `UCX offers no ${tl} transport on this machine (ucx_info -d)`;
    },
    get server() {
      return { args: ["hotpath", url()], ...(ucxTls ? { env: { UCX_TLS: ucxTls } } : {}) };
    },
    connect: (u) => hotpathFeed(u, ucxTls),
  });
  return [
    {
      id: "grpc",
      label: "gRPC server stream (@grpc/grpc-js both sides)",
      kind: "reference",
      layout: `${CLIENT}, 'data' events; server: own process (peers/stream-server.ts grpc: write() until false, then 'drain'); raw bytes, identity serializers`,
      unavailable: async () => null,
      server: { args: ["grpc", HOST] },
      connect: grpcFeed,
    },
    {
      id: "ws",
      label: "WebSocket stream (Bun.serve, Bun WebSocket client)",
      kind: "reference",
      layout: `${CLIENT}, onmessage; server: own process (peers/stream-server.ts ws: sendBinary() until backpressure, then drain())`,
      unavailable: async () => null,
      server: { args: ["ws", HOST] },
      connect: wsFeed,
    },
    hotpathRow("shm", "hotpath shm stream", () => `shm://bench-stream-${process.pid}-${names++}`, "shm"),
    hotpathRow("tcp", "hotpath tcp stream", () => `tcp://${HOST}:0`, "tcp"),
    ...UCX_FAMILIES.map((tl) => hotpathRow(`ucx-${tl}`, `hotpath ucx stream (UCX_TLS=${tl},self)`, () => `ucx://${HOST}:0`, "ucx", `${tl},self`)),
  ];
}

export interface StreamOptions {
  quick: boolean;
  log: (s: string) => void;
  /** @internal A fixed count per stream, warm-up and timed alike (tests), instead of the adaptive one. */
  messages?: number;
  /** @internal Only these rows (ids: grpc ws shm tcp ucx-tcp ucx-shm). */
  rows?: string[];
  /** @internal The peers of these rows corrupt message `message` of every stream (tests). */
  corrupt?: { rows: string[]; message: number };
}

/** A stream that has not finished by then fails its row (a hang, not a figure): far above the longest timed stream, about 1 s. */
const STREAM_LIMIT_MS = 60_000;

/** Seconds of one stream, checked throughout; rejects when it has not finished within STREAM_LIMIT_MS (the caller closes the feed). */
async function timed(feed: Feed, count: number, lenBytes: number): Promise<number> {
  const t0 = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`a stream of ${count} messages of ${lenBytes} bytes did not finish within ${STREAM_LIMIT_MS / 1000} s`)), STREAM_LIMIT_MS);
  });
  try {
    await Promise.race([feed.run(count, lenBytes), hang]);
  } finally {
    clearTimeout(timer);
  }
  return (performance.now() - t0) / 1000;
}

/** The part: every row at 32 B and 64 KiB, each beside the gRPC and WebSocket rows of the same run. */
export async function measureStream(opts: StreamOptions): Promise<PartReport & { skipped: Array<{ id: string; reason: string }> }> {
  const o = opts.quick ? { rounds: 1, targetS: 0.1, warm: { 32: 2_000, 65536: 200 } } : { rounds: 2, targetS: 1, warm: { 32: 20_000, 65536: 2_000 } };
  const specs = rowSpecs().filter((r) => opts.rows === undefined || opts.rows.includes(r.id));
  const skipped: Array<{ id: string; reason: string }> = [];
  const failed: Array<{ id: string; reason: string }> = [];
  const runnable: RowSpec[] = [];
  for (const r of specs) {
    const why = await r.unavailable();
    if (why === null) runnable.push(r);
    else {
      skipped.push({ id: r.id, reason: why });
      opts.log(`${r.id}: skipped (${why})`);
    }
  }
  // --corrupt-reply of bench/run.ts reaches every row's peer; a test names rows.
  const corruptAll = Number(process.env.HOTPATH_BENCH_CORRUPT_REPLY ?? 0);
  const totals = new Map<string, { messages: number; seconds: number }>();
  for (let round = 0; round < o.rounds; round++) {
    for (const r of round % 2 === 0 ? runnable : [...runnable].reverse()) {
      if (failed.some((f) => f.id === r.id)) continue;
      const corrupt = opts.corrupt?.rows.includes(r.id) ? opts.corrupt.message : corruptAll;
      const env = { ...r.server.env, ...(corrupt > 0 ? { [CORRUPT_ENV]: String(corrupt) } : {}) };
      let peer: BenchPeer | null = null;
      let feed: Feed | null = null;
      let lenBytes = 0;
      try {
        peer = await startPeer([SERVER, ...r.server.args], env);
        feed = await r.connect(peer.url);
        for (lenBytes of STREAM_SIZES) {
          const warm = opts.messages ?? o.warm[lenBytes as 32 | 65536];
          // Two warm-up streams (the first also pays for the JIT); the faster one sizes the timed stream.
          const warmS = Math.min(await timed(feed, warm, lenBytes), await timed(feed, warm, lenBytes));
          const count = opts.messages ?? Math.max(warm, Math.min(5_000_000, Math.round((warm / warmS) * o.targetS)));
          const seconds = await timed(feed, count, lenBytes);
          const t = totals.get(`${r.id}/${lenBytes}`) ?? { messages: 0, seconds: 0 };
          t.messages += count;
          t.seconds += seconds;
          totals.set(`${r.id}/${lenBytes}`, t);
          opts.log(`${r.id} ${fmtBytes(lenBytes)} round ${round + 1}: ${count} messages in ${seconds.toFixed(3)} s, ${kps(count / seconds)} msg/s, ${((count * lenBytes) / seconds / 1e6).toFixed(1)} MB/s`);
        }
      } catch (e) {
        const reason = `${fmtBytes(lenBytes || STREAM_SIZES[0])}: ${e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : String(e)}`;
        failed.push({ id: r.id, reason });
        opts.log(`${r.id}: FAILED (${reason})`);
      } finally {
        try {
          await feed?.close();
        } finally {
          await peer?.stop();
        }
      }
    }
  }
  const rows: StreamRow[] = [];
  for (const lenBytes of STREAM_SIZES) {
    for (const r of runnable) {
      const t = totals.get(`${r.id}/${lenBytes}`);
      if (t === undefined || failed.some((f) => f.id === r.id)) continue;
      const messagesPerS = t.messages / t.seconds;
      rows.push({ id: r.id, label: r.label, kind: r.kind, lenBytes, messages: t.messages, seconds: t.seconds, messagesPerS, mbPerS: (messagesPerS * lenBytes) / 1e6, vsGrpc: null, vsWs: null, layout: r.layout });
    }
    const of = rows.filter((x) => x.lenBytes === lenBytes);
    const grpc = of.find((x) => x.id === "grpc");
    const ws = of.find((x) => x.id === "ws");
    for (const x of of) {
      x.vsGrpc = grpc ? x.messagesPerS / grpc.messagesPerS : null;
      x.vsWs = ws ? x.messagesPerS / ws.messagesPerS : null;
    }
  }
  const report = { title: `Stream throughput: server streaming to one client stream, 32 B and 64 KiB messages, hotpath beside gRPC and WebSocket (${os()})`, lines: streamLines(rows, skipped, failed), targets: [], rows: rows as unknown as Record<string, unknown>[], skipped };
  if (failed.length > 0) throw new StreamRowsFailed(failed, report);
  return report;
}

const fmtBytes = (n: number) => (n >= 1024 ? `${n >> 10} KiB` : `${n} B`);
const kps = (v: number) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : `${(v / 1000).toFixed(1)}k`);
const ratio = (v: number | null) => (v === null ? "-" : v.toFixed(2));

/** The part's table: one line per row and size, then each row's layout, skipped and failed rows. */
export function streamLines(rows: StreamRow[], skipped: Array<{ id: string; reason: string }>, failed: Array<{ id: string; reason: string }>): string[] {
  const lines = [`${"size".padEnd(8)}${"row".padEnd(48)}${"messages".padStart(10)}${"s".padStart(8)}${"msg/s".padStart(10)}${"MB/s".padStart(10)}${"×grpc".padStart(8)}${"×ws".padStart(8)}`];
  for (const r of rows) {
    lines.push(`${fmtBytes(r.lenBytes).padEnd(8)}${r.label.padEnd(48)}${String(r.messages).padStart(10)}${r.seconds.toFixed(2).padStart(8)}${kps(r.messagesPerS).padStart(10)}${r.mbPerS.toFixed(1).padStart(10)}${ratio(r.vsGrpc).padStart(8)}${ratio(r.vsWs).padStart(8)}`);
  }
  lines.push("msg/s, MB/s (10^6 bytes): totals over each row's timed streams; ×grpc, ×ws: msg/s over the gRPC / WebSocket row of the same size, same run");
  const seen = new Set<string>();
  for (const r of rows) {
    if (seen.has(r.id)) continue;
    seen.add(r.id);
    lines.push(`  ${r.id}: ${r.layout}`);
  }
  for (const s of skipped) lines.push(`  skipped ${s.id}: ${s.reason}`);
  for (const f of failed) lines.push(`  FAILED ${f.id}: ${f.reason}`);
  return lines;
}

if (import.meta.main) {
  const quick = process.argv.includes("--quick");
  const jsonAt = process.argv.indexOf("--json");
  let part: PartReport;
  let code = 0;
  try {
    part = await measureStream({ quick, log: (s) => console.error(s) });
  } catch (e) {
    if (!(e instanceof StreamRowsFailed)) throw e;
    part = e.report;
    code = 1;
  }
  console.log(part.title);
  for (const l of part.lines) console.log(l);
  if (jsonAt >= 0 && process.argv[jsonAt + 1]) writeFileSync(process.argv[jsonAt + 1]!, JSON.stringify(part, null, 2));
  process.exit(code);
}
