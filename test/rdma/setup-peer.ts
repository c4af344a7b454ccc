/**
 * A test peer for test/rdma/setup.test.ts over the softrc TEST FIXTURE (the parent sets
 * HOTPATH_IBVERBS / HOTPATH_RDMACM / SOFTRC_DIR): takes JSON commands on stdin, one a line, and
 * answers each with one JSON line (peer-common.ts's loop). A listener echoes every message back.
 *
 *   { cmd: "listen", url, opts?, throwOnConnection? } → { url } (its onConnection throws for the first N)
 *   { cmd: "stats" }                          → { stats, refusals: [{ reason, name, message }], open, closed: ["Class: message"] }
 *   { cmd: "connect", url, opts?, bodyBytes? } → { ok, echoed, transport, peer, caps, via } | { error, name, message }
 *   { cmd: "hold", url, opts? }               → connects and keeps the connection: { ok } | { error }
 *   { cmd: "held" }                           → { closedWith } of the held connections (null: open)
 *   { cmd: "close" }                          → closes the listener and the held connections
 *   { cmd: "probe" }                          → the fixture's live objects and fds (peer-common.ts)
 *   { cmd: "bareQp" }                         → { qpNum } of a QP made with the verbs wrappers alone (kept
 *                                               until exit): a real QP number for a raw client's hello
 *   { cmd: "fault", spec }                    → {} after softrc_fault(spec) in this process
 *   { cmd: "qpAttrs" }                        → { server: [attrs], held: [attrs] }: ibv_query_qp of each open
 *                                               connection's QP ({ minRnrTimer, maxRdAtomic, maxDestRdAtomic, pathMtu, rnrRetry })
 */
import { connect, listen } from "../../src/connect/registry.ts";
import type { Connection, ConnectOptions, Listener, ListenOptions } from "../../src/contract/transport.ts";
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { VerbsContext } from "../../src/ffi/ibverbs.ts";
import { off, size } from "../../src/ffi/verbs-layout.ts";
import { errName, fault, probe, serveCommands, waitFor } from "./peer-common.ts";

const queryLib = dlopen(process.env.HOTPATH_IBVERBS!, { ibv_query_qp: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.ptr], returns: FFIType.i32 } });

/** ibv_query_qp of an rdma connection's QP: the attributes the control path set. */
function qpAttrs(c: Connection) {
  const qp = (c as unknown as { qp: { handle: number } }).qp;
  const attr = new Uint8Array(size("ibv_qp_attr"));
  const init = new Uint8Array(size("ibv_qp_init_attr"));
  const rc = queryLib.symbols.ibv_query_qp(qp.handle as unknown as Pointer, attr, 0x1fffff, init);
  if (rc !== 0) throw new Error(`ibv_query_qp: ${rc}`);
  const dv = new DataView(attr.buffer);
  return {
    minRnrTimer: attr[off("ibv_qp_attr.min_rnr_timer")],
    maxRdAtomic: attr[off("ibv_qp_attr.max_rd_atomic")],
    maxDestRdAtomic: attr[off("ibv_qp_attr.max_dest_rd_atomic")],
    pathMtu: dv.getUint32(off("ibv_qp_attr.path_mtu"), true),
    rnrRetry: attr[off("ibv_qp_attr.rnr_retry")],
  };
}

let listener: Listener | null = null;
const refusals: Array<{ reason: string; name: string; message: string }> = [];
const serverConns: Connection[] = [];
/** How the listener's connections closed ("local", or "Class: message"), in order. */
const serverClosed: string[] = [];
const held: Array<{ conn: Connection; closedWith: string | null }> = [];
let bare: VerbsContext | null = null;

/** Echoes every message back on the connection it came on. */
function echo(c: Connection): void {
  serverConns.push(c);
  c.setReceiver({
    onMessage(m) {
      const head = m.head.slice();
      const body = m.body.slice();
      m.release();
      c.trySend(head, body);
    },
    onClose(e) {
      serverClosed.push(e === null ? "local" : `${errName(e)}: ${e.message}`);
    },
  });
}

function failure(e: unknown) {
  return { ok: false, error: true, name: errName(e), message: e instanceof Error ? e.message : String(e) };
}

await serveCommands(
  {
    async listen(a) {
      listener = await listen(a.url, (a.opts ?? {}) as ListenOptions);
      let throwFor = Number(a.throwOnConnection ?? 0);
      listener.onConnection((c) => {
        if (throwFor-- > 0) throw new Error("the application's onConnection failed");
        echo(c);
      });
      listener.onRefused((e, reason) => refusals.push({ reason, name: errName(e)!, message: e.message }));
      return { url: listener.url };
    },
    stats() {
      return { stats: listener?.stats ?? null, refusals, open: serverConns.filter((c) => !c.closed).length, closed: serverClosed };
    },
    async connect(a) {
      let c: Connection;
      try {
        c = await connect(a.url, (a.opts ?? {}) as ConnectOptions);
      } catch (e) {
        return failure(e);
      }
      const body = new Uint8Array(a.bodyBytes ?? 1000).map((_, i) => (i * 31 + 7) & 0xff);
      let back: Uint8Array | null = null;
      c.setReceiver({
        onMessage(m) {
          back = m.body.slice();
          m.release();
        },
        onClose() {},
      });
      const sent = c.trySend(new Uint8Array([7, 7]), body);
      await waitFor(() => (c.poll(), back !== null), 10_000);
      const got = back as Uint8Array | null;
      const echoed = got !== null && got.length === body.length && got.every((b, i) => b === body[i]);
      const out = { ok: true, sent, echoed, transport: c.transport, peer: c.peer, caps: c.caps, via: (c as { via?: { chosen: string; skipped: Array<{ url: string; reason: string }> } }).via ?? null };
      c.close();
      return out;
    },
    async hold(a) {
      let c: Connection;
      try {
        c = await connect(a.url, (a.opts ?? {}) as ConnectOptions);
      } catch (e) {
        return failure(e);
      }
      const h = { conn: c, closedWith: null as string | null };
      c.setReceiver({
        onMessage(m) {
          m.release();
        },
        onClose(e) {
          h.closedWith = e === null ? "local" : `${errName(e)}: ${e.message}`;
        },
      });
      held.push(h);
      return { ok: true };
    },
    async held(a) {
      await waitFor(() => (held.forEach((h) => h.conn.closed || h.conn.poll()), held.every((h) => h.closedWith !== null)), a.waitMs ?? 0);
      return { closedWith: held.map((h) => h.closedWith) };
    },
    close(a) {
      listener?.close(a.closeConnections === true);
      for (const h of held) h.conn.close();
      return {};
    },
    probe() {
      return probe();
    },
    fault(a) {
      fault(String(a.spec));
      return {};
    },
    qpAttrs() {
      return { server: serverConns.filter((c) => !c.closed).map(qpAttrs), held: held.filter((h) => !h.conn.closed).map((h) => qpAttrs(h.conn)) };
    },
    bareQp() {
      bare ??= VerbsContext.open();
      const pd = bare.allocPd();
      const cq = bare.createCq(16);
      return { qpNum: pd.createQp({ sendCq: cq, recvCq: cq, maxSendWr: 4, maxRecvWr: 4 }).qpNum };
    },
  },
  () => {
    bare?.close();
    listener?.close(true);
    for (const h of held) h.conn.close();
  },
);
