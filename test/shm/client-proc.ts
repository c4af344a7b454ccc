/** A client process for crash tests: connects to argv[2], sends argv[3] slow requests of method argv[4], reports, waits to be killed. */
import { rpcConnect } from "../../src/index.ts";

const [url, count, method] = process.argv.slice(2);
const c = await rpcConnect(url!, { timeoutMs: 0 });
for (let i = 0; i < Number(count); i++) c.request(Number(method), new Uint8Array([i])).catch(() => {});
c.poll();
console.log(JSON.stringify({ sent: Number(count), pid: process.pid }));
setInterval(() => {}, 1 << 30);
