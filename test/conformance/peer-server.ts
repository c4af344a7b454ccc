/**
 * The conformance test service (methods.ts). `startTestService(url)` serves it in the calling
 * thread; run as a script it serves argv[2] in its own process (argv[3]: listen options as
 * JSON, optional), prints {"url": ...} when listening, and exits when its stdin closes;
 * peer-worker.ts does the same in a Worker.
 */

import { serve, type Serving } from "../../src/index.ts";
import type { ListenOptions } from "../../src/contract/transport.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";
import * as m from "./methods.ts";

export async function startTestService(url: string, opts: ListenOptions = {}): Promise<Serving> {

const reversing: Array<() => void> = [];
let cancels = 0;
let recordCount = 0;
let recordBytes = 0;
let errorReports = 0;

const hostileError = (part: "name" | "message") => {
  const e = new Error("hostile");
  Object.defineProperty(e, part, { get: () => { throw new Error(`${part} getter throws`); } });
  return e;
};
/** An object every inspection of which throws (instanceof, typeof .then, Array.isArray of a revoked one). */
function hostileProxy(): unknown {
  const trap = () => {
    throw new Error("trap");
  };
  return new Proxy({}, { get: trap, getPrototypeOf: trap, has: trap, ownKeys: trap, getOwnPropertyDescriptor: trap });
}
/** Values a misbehaving handler throws, rejects with or returns, by M_MISBEHAVE case (methods.ts). */
const misbehave: Array<() => unknown> = [
  () => { throw Object.create(null); },
  () => Promise.reject(Object.create(null)),
  () => { throw hostileError("name"); },
  () => Promise.reject(hostileError("name")),
  () => "a string",
  () => 12345,
  () => ({}),
  () => [1, 2, 3],
  async () => "a string",
  () => { throw hostileError("message"); },
  () => hostileProxy(),
  async () => hostileProxy(),
];
const gated: Array<() => void> = [];

return serve(url, {
  [m.M_NEVER]: () => new Promise<Uint8Array>(() => {}),
  [m.M_MISBEHAVE]: (h) => misbehave[h.data[0]!]!() as Uint8Array,
  [m.M_ERROR_COUNT]: () => m.u32(errorReports),
  [m.M_GATE]: (h) => new Promise<Uint8Array>((resolve) => gated.push(() => resolve(h.data))),
  [m.M_OPEN_GATE]: () => {
    const n = gated.length;
    for (const open of gated.splice(0)) open();
    return m.u32(n);
  },
  [m.M_ECHO]: (h) => h.data,
  // Replies even when the client cancelled, as a slow server that never looks would.
  [m.M_DELAY_ECHO]: async (h) => {
    await Bun.sleep(m.readU32(h.data));
    h.reply(h.data);
  },
  [m.M_THROW]: (h) => {
    throw new TypeError(new TextDecoder().decode(h.data));
  },
  [m.M_REVERSE]: (h) =>
    new Promise<Uint8Array>((resolve) => {
      reversing.push(() => resolve(h.data));
      if (reversing.length >= h.data[0]!) for (const r of reversing.splice(0).reverse()) r();
    }),
  [m.M_WAIT_CANCEL]: (h) =>
    new Promise<Uint8Array>((resolve) => {
      h.signal.addEventListener("abort", () => {
        cancels++;
        resolve(new Uint8Array(0));
      });
    }),
  [m.M_CANCEL_COUNT]: () => m.u32(cancels),
  [m.M_APP_HEADER]: (h) => h.appHeader.slice(),
  [m.M_RECORD]: (h) => {
    recordCount++;
    recordBytes += h.data.length;
  },
  [m.M_RECORD_COUNT]: () => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(0, recordCount, true);
    new DataView(b.buffer).setUint32(4, recordBytes, true);
    return b;
  },
  [m.M_CLOSE_SESSION]: (h) => {
    h.drop();
    h.session.conn.close();
  },
  [m.M_DIGEST]: (h) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(0, h.data.length, true);
    new DataView(b.buffer).setUint32(4, m.checksum(h.data), true);
    return b;
  },
}, { ...opts, onError: () => void errorReports++ });
}

if (import.meta.main) {
  const serving = await startTestService(process.argv[2]!, process.argv[3] ? (JSON.parse(process.argv[3]) as ListenOptions) : {});
  console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
  exitWhenParentGoes(() => serving.close());
}
