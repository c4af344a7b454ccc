/**
 * The worker-address wire-up of ucx (control path): a small TCP socket over which a listener
 * hands each client its UCX worker address, so that the client's endpoint is made with
 * ucp_ep_create(REMOTE_ADDRESS) instead of a sockaddr connect through UCX's connection manager.
 * Any transport UCX_TLS allows then carries the connection, `UCX_TLS=shm,self` included (the
 * sockaddr mode needs a tcp lane for its connection manager).
 *
 *   client connects (TCP) ─────────────────────────────▶ listener's socket
 *   client ◀── ADDRESS: magic "HPUW", u32 version, bindId[16], u32 addrLen, worker address
 *   client: ep = ucp_ep_create(address); AM_BIND(bindId) then the usual HELLO over that ep
 *   server: the AM_BIND's reply endpoint becomes the connection's endpoint (UcpWorker.adopt)
 *
 * The socket stays open, silent, for the connection's lifetime: it is the liveness token.
 * Either side closing it, or the kernel closing it when a process dies, fails the connection
 * on the other side (UCX reports no errors for an address-made endpoint in
 * UCP_ERR_HANDLING_MODE_NONE, and the shared-memory transports have no keepalive). The bindId
 * is 16 random bytes per socket: only the client that received it can claim the endpoint. The
 * hello and the HMAC handshake of handshake.ts run unchanged over the endpoint afterwards.
 *
 * Mode choice (wireupMode): `?wireup=address` or `?wireup=sockaddr` on the URL; otherwise
 * "address" when UCX_TLS names no transport a connection manager can run over (tcp, the
 * InfiniBand ones, or "all"), else "sockaddr". A listener in address mode says so in its URL,
 * so a client given `listener.url` picks the same mode.
 *
 * Threading: the JS thread of the runtime; the socket's events arrive on its event loop.
 */

import type { Socket, TCPSocketListener } from "bun";
import { ProtocolError } from "../errors.ts";

export type UcxWireup = "sockaddr" | "address";

const MAGIC = 0x57555048; // "HPUW" read as a little-endian u32
const VERSION = 1;
export const BIND_ID_BYTES = 16;
const FIXED_BYTES = 12 + BIND_ID_BYTES;
/** A UCX worker address is a few hundred bytes (one entry per device and transport); more than this is no address of ours. */
const MAX_ADDRESS_BYTES = 64 << 10;

/** UCX_TLS entries whose transports carry a connection manager (sockaddr wire-up). */
const CM_CAPABLE = /^(all|tcp|rc|ud|dc|ib)/;

/**
 * The wire-up a URL asks for: its `wireup` query parameter, else "address" when `ucxTls` (the
 * UCX_TLS in effect) lists no transport a connection manager runs over, else "sockaddr".
 * UsageError-worthy values are reported as a string.
 */
export function wireupMode(url: URL, ucxTls: string | undefined): UcxWireup | string {
  const asked = url.searchParams.get("wireup");
  if (asked !== null) return asked === "address" || asked === "sockaddr" ? asked : `ucx url "${url.href}": wireup must be "address" or "sockaddr"`;
  if (ucxTls === undefined || ucxTls.trim() === "" || ucxTls.trim().startsWith("^")) return "sockaddr";
  const names = ucxTls.split(",").map((t) => t.trim().replace(/^\\/, ""));
  return names.some((t) => CM_CAPABLE.test(t)) ? "sockaddr" : "address";
}

/** The ADDRESS frame a listener sends to a client: a new buffer. */
export function encodeAddress(bindId: Uint8Array, address: Uint8Array): Uint8Array {
  const out = new Uint8Array(FIXED_BYTES + address.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, VERSION, true);
  out.set(bindId, 8);
  dv.setUint32(8 + BIND_ID_BYTES, address.length, true);
  out.set(address, FIXED_BYTES);
  return out;
}

/**
 * The ADDRESS frame at the start of `b`: null while incomplete, a string saying why it is not
 * one (nothing the peer sent is quoted), or the bind id and address (copies).
 */
export function decodeAddress(b: Uint8Array): { bindId: Uint8Array; address: Uint8Array } | string | null {
  if (b.length < 8) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) return "an answer without the hotpath worker-address magic (not a hotpath ucx listener in address mode)";
  const v = dv.getUint32(4, true);
  if (v !== VERSION) return `a worker-address frame of version ${v}, this side speaks version ${VERSION}`;
  if (b.length < FIXED_BYTES) return null;
  const len = dv.getUint32(8 + BIND_ID_BYTES, true);
  if (len === 0 || len > MAX_ADDRESS_BYTES) return `a worker address of ${len} bytes (expected 1..${MAX_ADDRESS_BYTES})`;
  if (b.length < FIXED_BYTES + len) return null;
  return { bindId: b.slice(8, 8 + BIND_ID_BYTES), address: b.slice(FIXED_BYTES, FIXED_BYTES + len) };
}

/** Hex of a bind id (the key listeners file pending binds under). */
export function bindKey(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString("hex");
}

/** The client's side of the socket: resolves with the listener's worker address once it arrived; the socket stays open. */
export interface AddressLink {
  bindId: Uint8Array;
  address: Uint8Array;
  socket: Socket<unknown>;
  /** Called once when the socket closes (the peer closed it, or died). Replaces the previous one. */
  onClose(cb: () => void): void;
  /** Closes the socket (the peer's connection fails). Idempotent. */
  close(): void;
}

/**
 * Connects to `host:port` and reads the listener's ADDRESS frame. Rejects with a ProtocolError
 * for a frame that is not one, or an Error naming the socket failure or the timeout
 * (`timeoutMs`, the caller's connect timeout).
 */
export function fetchAddress(host: string, port: number, timeoutMs: number): Promise<AddressLink> {
  return new Promise((resolve, reject) => {
    let buf = new Uint8Array(0);
    let settled = false;
    let closeCb: (() => void) | null = null;
    let closed = false;
    let sock: Socket<unknown> | null = null;
    let fail = (e: Error) => {
      if (settled) return;
      settled = true;
      sock?.end();
      reject(e);
    };
    const timer = setTimeout(() => fail(new Error(`no worker address within ${timeoutMs} ms`)), timeoutMs);
    const fail0 = fail;
    fail = (e: Error) => {
      clearTimeout(timer);
      fail0(e);
    };
    Bun.connect({
      hostname: host,
      port,
      socket: {
        data(s, chunk) {
          if (settled) return; // the link is silent after the frame: anything more is ignored
          const next = new Uint8Array(buf.length + chunk.length);
          next.set(buf);
          next.set(chunk, buf.length);
          buf = next;
          const got = decodeAddress(buf);
          if (got === null) return;
          if (typeof got === "string") return fail(new ProtocolError(got));
          settled = true;
          clearTimeout(timer);
          resolve({
            ...got,
            socket: s,
            onClose: (cb) => {
              closeCb = cb;
              if (closed) cb();
            },
            close: () => s.end(),
          });
        },
        close() {
          closed = true;
          if (!settled) return fail(new Error("the listener closed the socket before it sent its worker address"));
          const cb = closeCb;
          closeCb = null;
          cb?.();
        },
        error(_s, e) {
          fail(e);
        },
        connectError(_s, e) {
          fail(e);
        },
      },
    }).then(
      (s) => {
        sock = s;
        if (settled && !closed && buf.length === 0) s.end(); // aborted while connecting
      },
      (e) => fail(e instanceof Error ? e : new Error(String(e))),
    );
  });
}

/** The listener's socket: each accepted socket gets `onSocket`, and `onClose` when it closes. */
export function listenAddress(host: string, port: number, events: { onSocket(s: Socket<unknown>): void; onClose(s: Socket<unknown>): void }): TCPSocketListener<unknown> {
  return Bun.listen({
    hostname: host,
    port,
    socket: {
      open: (s) => events.onSocket(s),
      data() {}, // clients say nothing on this socket
      close: (s) => events.onClose(s),
      error: (s) => void s.end(),
    },
  });
}
