/**
 * Test peer for address-mode.test.ts: connects to argv[2] (token argv[3], "-": none), checks
 * echoes of every size in argv[4] (comma-separated) byte for byte, and prints one JSON line:
 * { ok, url, sizes, wireup, error? }. Run with UCX_TLS in its environment (UCX reads it from
 * the process environment at start, which a parent's process.env changes do not reach).
 */
import { rpcConnect } from "../../src/index.ts";

const [url, token, sizesArg] = [process.argv[2]!, process.argv[3]!, process.argv[4] ?? "32"];
const sizes = sizesArg.split(",").map(Number);
try {
  const c = await rpcConnect(url, { connectTimeoutMs: 10_000, ...(token === "-" ? {} : { auth: { token } }) });
  const checked: number[] = [];
  for (const n of sizes) {
    const data = new Uint8Array(n);
    for (let i = 0; i < n; i++) data[i] = (i * 31 + n) & 0xff;
    const back = await c.request(1, data);
    if (back.length !== n || back.some((b, i) => b !== data[i])) throw new Error(`echo of ${n} bytes came back wrong`);
    checked.push(n);
  }
  c.close();
  console.log(JSON.stringify({ ok: true, sizes: checked }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: `${(e as Error).name}: ${(e as Error).message}` }));
}
process.exit(0);
