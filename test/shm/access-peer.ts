/**
 * A peer process for the access tests (possibly run as another Unix user): prints one JSON line
 * with what it saw, and (for `listen`) keeps serving until its stdin closes. Errors are reported
 * as {error: {name, code, message}}, never thrown.
 *
 *   rpc <url> [expectUid]            rpcConnect, one echo call (method 1): {echo, creds}
 *   listen <url> [allowUid] [allowGid]
 *                                    serve(url, {1: echo}, {allow}): {url, pid}; its refusals are
 *                                    printed as further lines {refused: {reason, name, message}}
 *   listen-connect <url>             tries listen(url), then connect(url): {listen, connect}
 * One-shot commands exit once they have printed.
 *
 *   raw <socketPath> <helloJSON> <segment>
 *                                    a hand-made handshake: connects, sends helloJSON with `fd`
 *                                    (and `bytes`) filled in from <segment>, prints every reply
 *                                    line: {lines, closed}. <segment> is one of
 *                                      none          nothing filled in
 *                                      sealed        a sealed memfd with a valid header
 *                                      leased        the same, with a read lease on it (see lease)
 *                                      unsealed      the same, without seals
 *                                      size:<delta>  sealed, but the hello claims size + delta
 *                                      sparse:<n>    a sealed memfd of n bytes (sparse: only the
 *                                                    header page is ever written) whose header
 *                                                    describes the default layout; bytes n
 *                                      fd:<n>        fd n as it is (inherited, or not open)
 *                                      file:<path>   an fd of the file at path, opened here
 *   hold-socket <url>                connects (transport level), then starts `sleep 60` holding a
 *                                    copy of its control socket, so the socket outlives this
 *                                    process: {pid, holder}; exits when stdin closes
 *   truncate <url>                   connects, one echo call, then ftruncates its own session
 *                                    segment to 0 bytes and reports {truncate: "EPERM" | "done"
 *                                    | ...}, then exits without closing anything
 *   lease <socketPath>               a raw hello with a valid sealed segment on which it holds a
 *                                    read lease (F_SETSIG to SIGURG, which is ignored, so a lease
 *                                    break cannot kill it): an open(2) of that file by anyone
 *                                    else blocks until lease-break-time. Prints {sent, lease} as
 *                                    it writes the hello, then {lines, closed, lease} (the lease it
 *                                    still holds after the reply: "none" once someone broke it)
 *   hello-exit <socketPath>          a raw hello with a valid sealed segment, then exits at once
 *                                    (the hello stays queued on the socket): {pid, fd}
 *   flood <socketPath> <count>       opens count connections and sends nothing; once all have
 *                                    settled prints {opened, closed, errors} (closed: by the
 *                                    server so far) and holds the rest open until stdin closes
 *   reopen <pid> <fd>                the /proc fallback of the server's segment open
 *                                    (reopenThroughProc) on fd of process pid: {ok, ms} or
 *                                    {error, ms}
 */

import { openSync } from "node:fs";
import { connect, listen, rpcConnect, serve, type HotpathError } from "../../src/index.ts";
import { NativeError } from "../../src/errors.ts";
import { getLease, memfdCreate, pidfdOpen, setLease, ShmMapping, truncateFd } from "../../src/ffi/libc.ts";
import { computeLayout, DEFAULT_SEGMENT_CONFIG, SEGMENT_VERSION, writeHeader } from "../../src/segment/layout.ts";

const out = (v: unknown) => console.log(JSON.stringify(v));
const described = (e: unknown) => ({ name: (e as Error)?.name, code: (e as HotpathError)?.code, message: (e as Error)?.message ?? String(e) });
const echo = { 1: (h: { data: Uint8Array }) => h.data };

function exitWhenStdinCloses(cleanup: () => void): void {
  (async () => {
    for await (const _ of Bun.stdin.stream()) {
      // only EOF matters
    }
    cleanup();
    process.exit(0);
  })();
}

/** SIGURG: ignored by default, so the lease-break signal it replaces SIGIO with is harmless. */
const SIGURG = 23;

/** The fd and size a raw hello names for `spec` (see the module comment); keeps what it made alive. */
function segmentFor(spec: string): { fd?: number; bytes?: number; keep?: unknown } {
  const layout = computeLayout(DEFAULT_SEGMENT_CONFIG);
  if (spec === "none") return {};
  if (spec === "sealed" || spec === "unsealed" || spec === "leased" || spec.startsWith("size:")) {
    const fd = memfdCreate("hotpath-access-peer", layout.totalBytes, spec !== "unsealed");
    const m = ShmMapping.fromFd("access-peer", fd, layout.totalBytes);
    writeHeader(new Uint32Array(m.buffer, 0, 32), layout, 1);
    if (spec === "leased") setLease(m.fd, "read", SIGURG);
    const delta = spec.startsWith("size:") ? Number(spec.slice(5)) : 0;
    return { fd: m.fd, bytes: layout.totalBytes + delta, keep: m };
  }
  if (spec.startsWith("sparse:")) {
    const bytes = Number(spec.slice(7));
    const fd = memfdCreate("hotpath-access-sparse", bytes, true);
    const m = ShmMapping.fromFd("access-peer-sparse", fd, 4096); // only the header page is touched
    writeHeader(new Uint32Array(m.buffer, 0, 32), layout, 1);
    return { fd: m.fd, bytes, keep: m };
  }
  if (spec.startsWith("fd:")) return { fd: Number(spec.slice(3)), bytes: layout.totalBytes };
  if (spec.startsWith("file:")) return { fd: openSync(spec.slice(5), "r+"), bytes: 4096 };
  throw new Error(`access-peer: unknown segment spec ${spec}`);
}

async function raw(path: string, helloJson: string, spec: string, onSending: (seg: { fd?: number }) => void = () => {}): Promise<{ lines: unknown[]; closed: boolean }> {
  const seg = segmentFor(spec);
  const hello = { ...JSON.parse(helloJson), version: SEGMENT_VERSION };
  if (seg.fd !== undefined) hello.fd = seg.fd;
  if (seg.bytes !== undefined && hello.bytes === undefined) hello.bytes = seg.bytes;
  let text = "";
  const closed = new Promise<void>((resolve, reject) => {
    Bun.connect({
      unix: path,
      socket: {
        open: (s) => {
          onSending(seg);
          s.write(`${JSON.stringify(hello)}\n`);
        },
        data: (s, d) => {
          text += Buffer.from(d).toString();
          if (text.startsWith('{"ok":true') && text.includes("\n")) {
            s.end(); // admitted: that is all this peer wanted to know
            resolve();
          }
        },
        close: () => resolve(),
        error: (_s, e) => reject(e),
      },
    }).catch(reject);
  });
  const watchdog = Bun.sleep(8000).then(() => "open");
  const how = await Promise.race([closed.then(() => "closed"), watchdog]);
  void seg.keep;
  return { lines: text.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l)), closed: how === "closed" };
}

/** This process's own session segment fd (its link names the memfd, or a /dev/shm file before memfds). */
async function ownSegmentFd(): Promise<number> {
  const { readdirSync, readlinkSync } = await import("node:fs");
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).includes("hotpath-")) return Number(fd);
    } catch {
      // closed meanwhile
    }
  }
  throw new Error("no session segment fd found");
}

const [cmd, a, b, c] = process.argv.slice(2);
try {
  if (cmd === "rpc") {
    const client = await rpcConnect(a!, b === undefined ? {} : { expectUid: Number(b) });
    const got = await client.request(1, new Uint8Array([1, 2, 3]));
    out({ echo: [...got], creds: client.conn.peerCredentials });
    client.close();
  } else if (cmd === "listen") {
    const allow = { uids: b ? [Number(b)] : [], gids: c ? [Number(c)] : [] };
    const s = await serve(a!, echo, { allow });
    s.listener.onRefused((e, reason) => out({ refused: { reason, ...described(e) } }));
    out({ url: s.url, pid: process.pid });
    exitWhenStdinCloses(() => s.close());
  } else if (cmd === "listen-connect") {
    const l = await listen(a!).then(
      (x) => (x.close(true), null),
      (e) => described(e),
    );
    const k = await connect(a!).then(
      (x) => (x.close(), null),
      (e) => described(e),
    );
    out({ listen: l, connect: k });
  } else if (cmd === "raw") {
    out(await raw(a!, b!, c!));
  } else if (cmd === "lease") {
    let leased = -1;
    const got = await raw(a!, JSON.stringify({ hello: "hotpath-shm" }), "leased", (seg) => {
      leased = seg.fd!;
      out({ sent: true, lease: getLease(leased) });
    });
    out({ ...got, lease: leased >= 0 ? getLease(leased) : null });
  } else if (cmd === "hello-exit") {
    const seg = segmentFor("sealed");
    await Bun.connect({
      unix: a!,
      socket: {
        open: (s) => {
          s.write(`${JSON.stringify({ hello: "hotpath-shm", version: SEGMENT_VERSION, fd: seg.fd, bytes: seg.bytes })}\n`);
          out({ pid: process.pid, fd: seg.fd });
          process.exit(0);
        },
        data: () => {},
      },
    });
  } else if (cmd === "flood") {
    const count = Number(b);
    let opened = 0;
    let closed = 0;
    const errors: string[] = [];
    const held: Array<{ end(): void }> = [];
    await Promise.all(
      Array.from({ length: count }, () =>
        Bun.connect({ unix: a!, socket: { open: () => void opened++, data: () => {}, close: () => void closed++ } }).then(
          (s) => void held.push(s),
          (e) => void errors.push(String((e as { code?: string }).code ?? e)),
        ),
      ),
    );
    await Bun.sleep(300); // closes the server made at once have arrived
    out({ opened, closed, errors: errors.length, firstError: errors[0] ?? null });
    exitWhenStdinCloses(() => held.forEach((s) => s.end()));
  } else if (cmd === "reopen") {
    const { reopenThroughProc } = await import("../../src/shm/setup.ts");
    const pid = Number(a);
    const pidfd = pidfdOpen(pid);
    const t0 = performance.now();
    try {
      const fd = reopenThroughProc("access-peer reopen", { pid, uid: process.geteuid!(), gid: process.getegid!() }, pidfd, Number(b));
      out({ ok: fd >= 0, ms: performance.now() - t0 });
    } catch (e) {
      out({ error: described(e), ms: performance.now() - t0 });
    }
  } else if (cmd === "hold-socket") {
    const conn = await connect(a!);
    conn.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
    const { readdirSync, readlinkSync } = await import("node:fs");
    const sockets = readdirSync("/proc/self/fd").filter((fd) => {
      if (Number(fd) <= 2) return false; // stdio may be socketpairs too
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith("socket:");
      } catch {
        return false;
      }
    });
    if (sockets.length !== 1) throw new Error(`expected one socket, found fds ${sockets.join(", ")}`);
    const holder = Bun.spawn(["sleep", "60"], { stdio: ["ignore", "ignore", "ignore", Number(sockets[0])] });
    out({ pid: process.pid, holder: holder.pid });
    exitWhenStdinCloses(() => holder.kill(9));
  } else if (cmd === "truncate") {
    const client = await rpcConnect(a!);
    await client.request(1, new Uint8Array([9]));
    const fd = await ownSegmentFd();
    let result = "done";
    try {
      truncateFd(fd, 0);
    } catch (e) {
      result = e instanceof NativeError && e.errno === 1 ? "EPERM" : String(e);
    }
    out({ truncate: result });
    process.exit(0); // no close: the server finds out from the socket
  } else {
    throw new Error(`access-peer: unknown command ${cmd}`);
  }
} catch (e) {
  out({ error: described(e) });
}
if (cmd !== "listen" && cmd !== "hold-socket" && cmd !== "flood") process.exit(0); // one-shot: leave no timer or socket waiting
