/**
 * The consumer's server: `bun server.ts <tcp|shm|ucx>`. Serves Kv (serve + implement) and a
 * hot-path Server over listen() with auth; prints one JSON line {main, hot} when ready and
 * exits when its stdin closes.
 */
import {
  implement,
  listen,
  registerError,
  serve,
  Server,
  type HotpathError,
  type ListenOptions,
  type LocalRegion,
  type RefusalReason,
  type RequestHandle,
  type ServerErrorContext,
  type UcxConnection,
} from "hotpath";
import { HOT_ECHO, HOT_LATER, Kv, OUT_OF_STOCK, OutOfStock, TOKEN } from "./service.js";

const scheme = process.argv[2] ?? "tcp";
const url = (tag: string): string => (scheme === "shm" ? `shm://consumer-${tag}-${process.pid}` : `${scheme}://127.0.0.1:0`);
registerError(OutOfStock, { name: OUT_OF_STOCK });

const reported: string[] = [];
const refusals: string[] = [];
const regions: LocalRegion[] = [];

const hotOpts: ListenOptions = scheme === "shm" ? { allow: { uids: [process.getuid!()] } } : { auth: { token: TOKEN } };
const hotListener = await listen(url("hot"), hotOpts);
hotListener.onRefused((error: HotpathError, reason: RefusalReason) => refusals.push(`${reason}:${error.name}`));

const main = await serve(
  url("main"),
  implement(Kv, {
    get: ({ key, shard, tag }) => ({ value: `v${key}/${shard}`, tag: Array.from(tag) }),
    echo: (data) => data,
    fail: () => {
      throw new OutOfStock("no widgets left");
    },
    slow: async (data) => {
      await Bun.sleep(100);
      return data;
    },
    region: (_data, h) => {
      const region = (h.session.conn as UcxConnection).registerMemory(4096);
      region.view.fill(7);
      regions.push(region);
      return region.descriptor();
    },
    never: () => new Promise<Uint8Array>(() => {}),
    refusals: () => ({ accepted: hotListener.stats.accepted, refusedAuth: hotListener.stats.refusedAuth, reasons: refusals }),
    reported: () => reported,
  }),
  {
    ...(scheme === "ucx" ? { ucx: { rma: true } } : {}),
    onError: (_error: unknown, ctx: ServerErrorContext) => void reported.push(ctx.source),
  },
);

// Hot path: no handler table; requests queue for recv().
const hot = new Server();
hot.attach(hotListener);
let open = true;
const later: RequestHandle[] = [];
const hotLoop = (async () => {
  while (open) {
    hot.poll();
    for (let h = hot.recv(); h !== null; h = hot.recv()) {
      if (h.method === HOT_ECHO) h.reply(h.data);
      else if (h.method === HOT_LATER) {
        h.detach(); // its request leaves transport memory; answered later
        later.push(h);
        setTimeout(() => {
          const held = later.shift();
          held?.reply(held.data.slice().reverse());
        }, 20);
      } else h.replyError("UnknownMethodError", `no hot method ${h.method}`);
    }
    await hot.wait(50);
  }
})();

console.log(JSON.stringify({ main: main.url, hot: hotListener.url }));
for await (const _ of Bun.stdin.stream()) {
  // the test closes stdin to stop the server
}
open = false;
await hotLoop;
for (const r of regions) r.close();
hot.close();
main.close();
