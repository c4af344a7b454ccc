/**
 * The softrc TEST FIXTURE (test/rdma/softrc/, never shipped) on its own, independent of the
 * bindings: builds it and its C selftest, runs the selftest as two real processes (server and
 * client roles, connected over a TCP socket on 127.0.0.1) and asserts every check each side
 * reports, then kill -9s the server while the client has WRs outstanding and asserts the
 * client's report of them; the same for rdma_cm (cm-server / cm-client) and for injected
 * faults (fault-server / fault-client). Each test runs with its own SOFTRC_DIR (the fixture's
 * segment registry), which must be empty afterwards.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import type { Subprocess } from "bun";
import { collectLines } from "../helpers/stream-lines.ts";
import { useSoftRc } from "./softrc/use-fixture.ts";

const fx = useSoftRc();

/** Collects a process's stdout lines; resolves `wait(line)` when that line has appeared. */
function lines(p: Subprocess<"ignore", "pipe", "inherit">) {
  const { seen, next, done } = collectLines(p.stdout, (l) => l);
  const wait = async (pred: (l: string) => boolean): Promise<string> => {
    for (;;) {
      const hit = seen.find(pred);
      if (hit !== undefined) return hit;
      if (p.exitCode !== null || p.signalCode !== null) {
        await done;
        const late = seen.find(pred);
        if (late !== undefined) return late;
        throw new Error(`exited (${p.exitCode ?? p.signalCode}) before the line; saw:\n${seen.join("\n")}`);
      }
      await Promise.race([next(), Bun.sleep(50)]);
    }
  };
  return { seen, wait, done };
}

function spawn(args: string[], env: Record<string, string>) {
  const p = fx.track(Bun.spawn([fx.rc.selftest, ...args], { stdin: "ignore", stdout: "pipe", stderr: "inherit", env: { ...process.env, ...env, LD_LIBRARY_PATH: fx.rc.dir } }));
  return { proc: p, ...lines(p) };
}

test("the fixture builds as libibverbs.so.1 / librdmacm.so.1 and exports the verbs the bindings use", async () => {
  const nm = Bun.spawnSync(["nm", "-D", "--defined-only", fx.rc.ibverbs]).stdout.toString();
  for (const sym of ["softrc_fault", "softrc_live", "ibv_get_device_list", "ibv_open_device", "ibv_query_port", "ibv_query_gid", "ibv_reg_mr", "ibv_reg_mr_iova2",
    "ibv_create_cq", "ibv_get_cq_event", "ibv_create_srq", "ibv_modify_srq", "ibv_create_qp", "ibv_modify_qp", "ibv_get_async_event",
    "ibv_is_fork_initialized"]) {
    expect({ sym, found: new RegExp(` T ${sym}$`, "m").test(nm) }).toEqual({ sym, found: true });
  }
  const ld = Bun.spawnSync(["readelf", "-d", fx.rc.rdmacm]).stdout.toString();
  expect(ld).toContain("[$ORIGIN]");
  expect(ld).toContain("libibverbs.so.1");
});

test("two processes: verbs semantics, RNR, channels, SRQ limit, bad rkey, signal batching, kill -9 of the peer", async () => {
  const dir = fx.registry();
  const env = { SOFTRC_DIR: dir };
  const server = spawn(["server", "0"], env);
  const port = (await server.wait((l) => l.startsWith("port "))).split(" ")[1]!;
  const client = spawn(["client", port], env);
  await client.wait((l) => l === "posted" || l.startsWith("FAIL fatal"));
  await server.wait((l) => l === "killme" || l.startsWith("FAIL"));
  server.proc.kill(9);
  await client.wait((l) => l.startsWith("done "));
  await client.proc.exited;
  await server.done;
  const fails = [...server.seen, ...client.seen].filter((l) => l.startsWith("FAIL"));
  expect(fails).toEqual([]);
  const oks = [...server.seen, ...client.seen].filter((l) => l.startsWith("ok ")).map((l) => l.slice(3));
  for (const name of [
    "post_send in RESET fails", "RESET->RTR is EINVAL", "live counts", "busy PD, CQ, SRQ refuse destroy (EBUSY)", "then destroy in order",
    "live counts after destroy", "INIT without its mask is EINVAL", "post_send in INIT fails", "INIT->RTS is EINVAL",
    "srq recv small", "srq recv 64 KiB", "rq recv", "send inline completes", "send 64 KiB completes", "inline over max_inline is EINVAL",
    "write completes", "write landed", "write_with_imm recv", "write_with_imm bytes", "read bytes", "cas returns old", "cas mismatch keeps value",
    "cas swapped once", "rnr retried until a recv was posted", "recv after rnr", "completion channel wakes", "completion after wake",
    "srq limit event", "rnr retry exceeded", "rest flushed", "QP in ERR after rnr", "post in ERR flushes", "bad rkey is REM_ACCESS_ERR",
    "requester QP in ERR after bad rkey", "responder QP in ERR after bad rkey", "peer death fails outstanding WRs", "QP in ERR after peer death",
    "peer death raises IBV_EVENT_QP_FATAL",
    "one signaled completion for 64 WRs", "a send queue full of unsignaled WRs refuses the next post (ENOMEM)",
  ]) expect(oks).toContain(name);
  expect(client.proc.exitCode).toBe(0);
  // The survivor unlinked the dead peer's segments; its own went with its QPs and its exit.
  expect(readdirSync(dir)).toEqual([]);
}, 60_000);

test("rdma_cm between two processes: resolve, connect/accept with private data, reject, address error, disconnect", async () => {
  const dir = fx.registry();
  const server = spawn(["cm-server", "0"], { SOFTRC_DIR: dir });
  const port = (await server.wait((l) => l.startsWith("port "))).split(" ")[1]!;
  const client = spawn(["cm-client", port], { SOFTRC_DIR: dir });
  await Promise.all([client.proc.exited, server.proc.exited]);
  await Promise.all([client.done, server.done]);
  const all = [...server.seen, ...client.seen];
  expect(all.filter((l) => l.startsWith("FAIL"))).toEqual([]);
  for (const name of [
    "cm connect request", "cm request private data", "cm accept", "cm server established", "cm client established", "cm accept private data",
    "cm send over the connected QP", "cm recv over the connected QP", "cm rejected", "cm reject private data", "cm non-loopback address error",
    "cm no listener is rejected", "cm REQ private data over 56 bytes is EINVAL", "cm no listener: status 8 (invalid service id)", "cm disconnect", "cm client disconnected", "cm server disconnected", "cm QP in ERR after disconnect", "cm empty channel is EAGAIN",
  ]) expect(all).toContain(`ok ${name}`);
  expect([server.proc.exitCode, client.proc.exitCode]).toEqual([0, 0]);
  expect(readdirSync(dir)).toEqual([]);
}, 60_000);

test("injected faults: RNR storm (SOFTRC_FAULTS and softrc_fault), QP to ERR, CQ overrun, flush", async () => {
  const dir = fx.registry();
  const server = spawn(["fault-server", "0"], { SOFTRC_DIR: dir, SOFTRC_FAULTS: "rnr_storm=3" });
  const port = (await server.wait((l) => l.startsWith("port "))).split(" ")[1]!;
  const client = spawn(["fault-client", port], { SOFTRC_DIR: dir });
  await Promise.all([client.proc.exited, server.proc.exited]);
  await Promise.all([client.done, server.done]);
  const all = [...server.seen, ...client.seen];
  expect(all.filter((l) => l.startsWith("FAIL"))).toEqual([]);
  for (const name of [
    "rnr storm absorbed", "send through an rnr storm completes", "rnr storm past rnr_retry is RNR_RETRY_EXC_ERR",
    "qp_err_after moved the QP to ERR", "QP to ERR flushed its posted receive", "a peer QP in ERR is RETRY_EXC_ERR (timeout)",
    "cq overrun raises IBV_EVENT_CQ_ERR", "the overrun completion is lost", "the sender of an overrun completion succeeds",
    "flush completes outstanding WRs with WR_FLUSH_ERR", "flush leaves the QP in ERR",
  ]) expect(all).toContain(`ok fault: ${name}`);
  expect([server.proc.exitCode, client.proc.exitCode]).toEqual([0, 0]);
  expect(readdirSync(dir)).toEqual([]);
}, 60_000);

test("segments: none left by a process that destroys its QPs and exits without destructors; a killed lone process's are swept by the next start", async () => {
  const dir = fx.registry();
  const quick = spawn(["lone", "exit"], { SOFTRC_DIR: dir });
  await quick.proc.exited;
  await quick.done;
  expect(quick.seen).toEqual(["done ok"]);
  expect(readdirSync(dir)).toEqual([]);
  const held = spawn(["lone", "hold"], { SOFTRC_DIR: dir });
  const qpn = (await held.wait((l) => l.startsWith("held "))).split(" ")[1];
  const uid = process.getuid!();
  expect(readdirSync(dir).sort()).toEqual([`softrc-${uid}-bell-${held.proc.pid}`, `softrc-${uid}-qp-${qpn}`]);
  held.proc.kill(9);
  await held.proc.exited;
  expect(readdirSync(dir).length).toBe(2); // nobody was connected to clean up after it
  const next = spawn(["lone", "exit"], { SOFTRC_DIR: dir });
  await next.proc.exited;
  expect(readdirSync(dir)).toEqual([]);
}, 60_000);

test("poll_cq drives progress itself: a send completes with the engine thread idle (a busy-polling consumer cannot starve it)", async () => {
  const dir = fx.registry();
  const p = spawn(["lone", "progress"], { SOFTRC_DIR: dir });
  await p.proc.exited;
  await p.done;
  expect(p.seen).toEqual(["ok poll_cq makes progress with the engine thread idle", "done ok"]);
  expect(p.proc.exitCode).toBe(0);
  expect(readdirSync(dir)).toEqual([]);
}, 60_000);
