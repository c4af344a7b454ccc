/**
 * Child for test/rdma/wait-idle.test.ts, on the software RC TEST FIXTURE (its environment set by
 * the test): two connected pairs in this process share one runtime (one SRQ, one CQ pair, one
 * completion channel). While pair B echoes messages back and forth, pair A is idle and `a.wait(300)`
 * runs in each wait mode; it prints `{"step":"wait","mode",...,"ready","wallMs","busy"}` per mode.
 * An idle connection's wait() must time out with false however busy its runtime is.
 */
import { connect, listen, SEND_OK, type Connection } from "../../src/index.ts";

async function pair(url: string) {
  const listener = await listen(url);
  const accepted = new Promise<Connection>((resolve) => listener.onConnection(resolve));
  const a = await connect(listener.url);
  const b = await accepted;
  return { listener, a, b };
}

const A = await pair("rdma://127.0.0.1:0?mode=socket");
const B = await pair("rdma://127.0.0.1:0?mode=socket");
for (const c of [A.a, A.b]) c.setReceiver({ onMessage: (m) => m.release(), onClose() {} });
// Pair B: every message is answered, so completions keep arriving on the shared runtime.
let echoes = 0;
const ping = new Uint8Array([1, 2, 3, 4]);
B.b.setReceiver({ onMessage(m) { m.release(); B.b.trySend(ping); }, onClose() {} });
B.a.setReceiver({ onMessage(m) { m.release(); echoes++; }, onClose() {} });
const pump = setInterval(() => { for (let i = 0; i < 4; i++) if (B.a.trySend(ping) !== SEND_OK) break; }, 2);

for (const mode of ["adaptive", "async", "spin", "blocking"] as const) {
  A.a.setWaitPolicy({ mode, spinNs: 50_000 });
  const before = echoes;
  const t0 = performance.now();
  // spin and blocking hold the thread, so pair B's completions are handled inside this very wait.
  const ready = await A.a.wait(300);
  const wallMs = performance.now() - t0;
  if (mode === "spin" || mode === "blocking") await Bun.sleep(20); // let pair B's echoes flow on the event loop again
  console.log(JSON.stringify({ step: "wait", mode, ready, wallMs: Math.round(wallMs), busy: echoes - before }));
}
clearInterval(pump);
for (const p of [A, B]) {
  p.a.close();
  p.b.close();
  p.listener.close(true);
}
await Bun.sleep(100);
console.log(JSON.stringify({ step: "done" }));
process.exit(0);
