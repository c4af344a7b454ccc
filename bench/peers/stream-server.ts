/**
 * The stream benchmark's servers (bench/stream.bench.ts), one process each. Every stream starts
 * with the client's ask (peers/stream-pattern.ts: count, lenBytes); the server then sends `count`
 * messages of `lenBytes`, message i stamped with i, as fast as the stream's flow control lets it:
 *   bun bench/peers/stream-server.ts hotpath URL   serve() with a streamHandler on STREAM_METHOD:
 *                                                  trySend(), and on SEND_FULL `await send()`
 *   bun bench/peers/stream-server.ts grpc HOST     @grpc/grpc-js server stream (raw bytes, identity
 *                                                  serializers): write() until it returns false, then 'drain'
 *   bun bench/peers/stream-server.ts ws HOST       Bun.serve WebSocket: sendBinary() until it reports
 *                                                  backpressure (-1) or a drop (0, resent), then drain()
 * Prints {"url"} when ready; exits when stdin closes. HOTPATH_BENCH_CORRUPT_STREAM=N flips the
 * first byte of the N-th message of every stream (the byte check must fail that row).
 */

import { corruptAt, decodeAsk, GRPC_STREAM_PATH, STREAM_METHOD, stampMessage, streamMessage } from "./stream-pattern.ts";
import { servePeerUntilEof } from "./until-eof.ts";

const corrupt = corruptAt();

/** Message i of a stream, ready to send: stamped, and corrupted when the environment asks. */
function stamp(b: Uint8Array, i: number): Uint8Array {
  stampMessage(b, i);
  if (i + 1 === corrupt) b[0]! ^= 0xff;
  return b;
}

interface HotpathStream {
  read(): Promise<Uint8Array | null>;
  trySend(data: Uint8Array): number;
  send(data: Uint8Array): Promise<void>;
}

async function hotpath(url: string): Promise<{ url: string; close(): void }> {
  const hp = (await import("../../src/index.ts")) as Record<string, any>;
  const streamHandler = hp.streamHandler as ((fn: (s: HotpathStream) => Promise<void>) => unknown) | undefined;
  if (typeof streamHandler !== "function") throw new Error("stream-server: src/index.ts exports no streamHandler (hotpath streams not available)");
  const SEND_OK = hp.SEND_OK as number;
  const s = await hp.serve(url, {
    [STREAM_METHOD]: streamHandler(async (st) => {
      const first = await st.read();
      if (first === null) throw new Error("stream-server: the stream ended before its ask");
      const { count, lenBytes } = decodeAsk(first);
      const b = streamMessage(lenBytes);
      for (let i = 0; i < count; i++) {
        // trySend copies the bytes out before it returns; send() has sent them when it resolves.
        if (st.trySend(stamp(b, i)) !== SEND_OK) await st.send(b);
      }
    }),
  });
  return { url: s.url, close: () => s.close() };
}

async function grpc(host: string): Promise<{ url: string; close(): void }> {
  const g = await import("@grpc/grpc-js");
  const server = new g.Server();
  const pass = (b: Buffer) => b;
  type Call = { request: Buffer; write(b: Buffer): boolean; once(ev: "drain", f: () => void): void; end(): void; cancelled: boolean };
  server.addService(
    { feed: { path: GRPC_STREAM_PATH, requestStream: false, responseStream: true, requestSerialize: pass, requestDeserialize: pass, responseSerialize: pass, responseDeserialize: pass } },
    {
      feed: (call: Call) => {
        const { count, lenBytes } = decodeAsk(call.request);
        const base = streamMessage(lenBytes);
        let i = 0;
        const pump = () => {
          while (i < count) {
            if (call.cancelled) return;
            // write() keeps the Buffer queued until it is on the wire: a fresh copy per message.
            const b = Buffer.allocUnsafe(lenBytes);
            b.set(base);
            stamp(b, i++);
            if (!call.write(b)) return call.once("drain", pump);
          }
          call.end();
        };
        pump();
      },
    } as never,
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${host}:0`, g.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { url: `grpc://${host}:${port}`, close: () => server.forceShutdown() };
}

/** One WebSocket's stream in progress: asks on one socket run one after another. */
interface WsFeed {
  count: number;
  next: number;
  b: Uint8Array;
}

function ws(host: string): { url: string; close(): void } {
  // Sends until Bun reports backpressure (-1: queued, wait for drain) or a drop (0: not sent, resend at drain).
  const pump = (sock: import("bun").ServerWebSocket<{ feed: WsFeed | null }>) => {
    const f = sock.data.feed;
    if (f === null) return;
    while (f.next < f.count) {
      const r = sock.sendBinary(stamp(f.b, f.next));
      if (r === 0) return;
      f.next++;
      if (r === -1) return;
    }
    sock.data.feed = null;
  };
  const s = Bun.serve<{ feed: WsFeed | null }, never>({
    hostname: host,
    port: 0,
    fetch: (req, server) => (server.upgrade(req, { data: { feed: null } }) ? undefined : new Response("upgrade required", { status: 426 })),
    websocket: {
      message(sock, msg) {
        if (typeof msg === "string") return void sock.close(1003, "binary asks only");
        const { count, lenBytes } = decodeAsk(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength));
        sock.data.feed = { count, next: 0, b: streamMessage(lenBytes) };
        pump(sock);
      },
      drain: pump,
    },
  });
  return { url: `ws://${host}:${s.port}/`, close: () => s.stop(true) };
}

async function main(): Promise<{ url: string; close(): void }> {
  const [mode, where] = process.argv.slice(2) as [string, string];
  if (mode === "hotpath") return hotpath(where);
  if (mode === "grpc") return grpc(where);
  if (mode === "ws") return ws(where);
  throw new Error(`stream-server: unknown mode "${mode}" (hotpath URL | grpc HOST | ws HOST)`);
}

if (import.meta.main) servePeerUntilEof(await main());
