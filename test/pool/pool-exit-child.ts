/**
 * Makes a pooled call to argv[2] with keepalive, TTL and idle timers armed and prints "done";
 * once the parent has closed that server, leaves a call waiting (its 60 s deadline and the
 * reconnect backoff armed), prints "waiting" and never closes the pool: the process must then
 * exit on its own (no pool timer keeps it alive; an open connection would, as any socket does).
 */
import { ConnectionPool } from "../../src/pool/pool.ts";

const pool = new ConnectionPool({ keepaliveMs: 50, maxLifetimeMs: 60_000, idleTimeoutMs: 60_000, backoff: { initialMs: 30_000, minConnectTimeoutMs: 30_000 } });
const c = pool.client(process.argv[2]!);
await c.request(1, new Uint8Array([1]));
console.log("done");
while (c.state === "READY") await Bun.sleep(5);
c.request(1, new Uint8Array([2]), { timeoutMs: 60_000 }).catch(() => {});
console.log("waiting");
