/**
 * An RPC peer over rdma:// on the softrc TEST FIXTURE, for test/rdma/faults.test.ts and
 * flow.test.ts: a server (serve() of the conformance methods this file needs, each session's
 * close error recorded) and/or a client (rpcConnect), driven by commands on stdin
 * (peer-common.ts). Prints `{ pid, ...probe }` when ready.
 *
 * Commands:
 *   serve {url, opts}         listen; -> {url}
 *   connect {url, opts}       a new client (the last one is "the" client); -> {} or {error}
 *   calls {n, inFlight, size} n echo calls, inFlight at a time, each checked; -> {ok, wrong, maxInFlight, errors}
 *   pend {n, method}          starts n calls that the server never answers; -> {started}
 *   call {timeoutMs}          one echo call; -> {ok} or {failure: class, message}
 *   callUntilError {max}      echo calls one after another until one rejects; -> {calls, failure: class, message}
 *   waitClosed {timeoutMs}    until the client closed and its pending calls settled; -> {closed, closeError, pending}
 *   waitSessions {n, timeoutMs} until the server has n open sessions; -> {sessions}
 *   close                     closes the client
 *   fault {spec}              softrc_fault(spec)
 *   stats                     -> {sessions, sessionErrors, ...probe}
 */
import { Client, rpcConnect, serve, type Serving } from "../../src/index.ts";
import * as m from "../conformance/methods.ts";
import { errName, errText, fault, probe, out, serveCommands, waitFor } from "./peer-common.ts";

let serving: Serving | null = null;
const sessionErrors: Array<string | null> = [];
let client: Client<any> | null = null;
let pending: Array<Promise<string | null>> = [];
let outcomes: Array<string | null> = [];

const pattern = (i: number, size: number) => {
  const b = new Uint8Array(size);
  for (let k = 0; k < size; k++) b[k] = (i * 31 + k) & 0xff;
  if (size >= 4) new DataView(b.buffer).setUint32(0, i, true);
  return b;
};

function needClient(): Client<any> {
  if (!client) throw new Error("no client: connect first");
  return client;
}

out({ pid: process.pid, ...probe() });
await serveCommands(
  {
    async serve(a) {
      serving = await serve(
        a.url,
        {
          [m.M_ECHO]: (h) => h.data,
          [m.M_NEVER]: () => new Promise<Uint8Array>(() => {}),
          [m.M_DIGEST]: (h) => {
            const b = new Uint8Array(8);
            new DataView(b.buffer).setUint32(0, h.data.length, true);
            new DataView(b.buffer).setUint32(4, m.checksum(h.data), true);
            return b;
          },
        },
        { ...(a.opts ?? {}), onSessionClose: (_s, e) => void sessionErrors.push(errName(e)) },
      );
      return { url: serving.url };
    },
    async connect(a) {
      client = await rpcConnect(a.url, a.opts ?? {});
      pending = [];
      outcomes = [];
      return {};
    },
    async calls(a) {
      const c = needClient();
      const n: number = a.n;
      const size: number = a.size ?? 8;
      let next = 0;
      let ok = 0;
      let wrong = 0;
      let maxInFlight = 0;
      const errors: string[] = [];
      const worker = async () => {
        while (next < n) {
          const i = next++;
          const data = pattern(i, size);
          try {
            const p = c.request(m.M_ECHO, data, { timeoutMs: 30_000 });
            maxInFlight = Math.max(maxInFlight, c.inFlight);
            const got = await p;
            if (got.length === size && Buffer.from(got).equals(Buffer.from(data))) ok++;
            else wrong++;
          } catch (e) {
            errors.push(errText(e));
            if (errors.length > 3) return;
          }
        }
      };
      await Promise.all(Array.from({ length: a.inFlight ?? 1 }, worker));
      return { ok, wrong, maxInFlight, errors };
    },
    pend(a) {
      const c = needClient();
      for (let i = 0; i < a.n; i++) {
        const p = c.request(a.method ?? m.M_NEVER, m.u32(i), { timeoutMs: 120_000 }).then(
          () => "resolved",
          (e) => errName(e),
        );
        pending.push(p);
        p.then((o) => void outcomes.push(o));
      }
      return { started: a.n };
    },
    async call(a) {
      try {
        const r = await needClient().request(m.M_ECHO, m.u32(7), { timeoutMs: a.timeoutMs ?? 30_000 });
        return { ok: m.readU32(r) === 7 };
      } catch (e) {
        return { failure: errName(e), message: errText(e) };
      }
    },
    async callUntilError(a) {
      const c = needClient();
      for (let calls = 0; calls < (a.max ?? 1000); calls++) {
        try {
          await c.request(m.M_ECHO, m.u32(calls), { timeoutMs: a.timeoutMs ?? 30_000 });
        } catch (e) {
          return { calls, failure: errName(e), message: errText(e) };
        }
      }
      return { calls: a.max ?? 1000, failure: null };
    },
    async waitClosed(a) {
      const c = needClient();
      const closed = await waitFor(() => c.closed && outcomes.length === pending.length, a.timeoutMs ?? 20_000);
      return { closed, closeError: errName(c.conn.closeError), closeText: c.conn.closeError?.message ?? null, pending: outcomes };
    },
    async waitSessions(a) {
      const ok = await waitFor(() => (serving?.server.sessions.size ?? 0) === a.n, a.timeoutMs ?? 20_000);
      return { ok, sessions: serving?.server.sessions.size ?? 0, sessionErrors };
    },
    close() {
      client?.close();
      return {};
    },
    fault(a) {
      fault(a.spec);
      return {};
    },
    stats() {
      return { sessions: serving?.server.sessions.size ?? 0, sessionErrors, ...probe() };
    },
  },
  () => {
    client?.close();
    serving?.close();
  },
);
