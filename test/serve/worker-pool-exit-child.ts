/**
 * Child of worker-pool.test.ts's "nothing keeps the process alive after close()": makes a pool of
 * one Worker, calls it, closes it, then arms an unref'd timer that can only fire while something
 * else (a timer close() left armed) keeps the process alive. Prints "closed" and, if that timer
 * fires, "still alive".
 */
import { workerPool } from "../../src/index.ts";
import { M } from "./worker-pool-service.ts";

const pool = await workerPool(new URL("./worker-pool-handlers.ts", import.meta.url), { size: 1 });
const out = await pool.request(M.echo, new Uint8Array([1, 2, 3]));
if (out.join() !== "1,2,3") throw new Error(`echo answered ${out.join()}`);
await pool.close();
console.log("closed");
setTimeout(() => console.log("still alive"), 300).unref();
