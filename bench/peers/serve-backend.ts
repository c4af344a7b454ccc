/**
 * Backend of the Bun.serve benchmark (bench/serve.bench.ts): hotpath serve() on URL,
 * method 1 echoing its data, in the wait policy given as JSON (default: the transport's default).
 *   bun bench/peers/serve-backend.ts URL ['{"spinNs":0}']
 * Prints {"url", "pid"} when ready; exits when stdin closes.
 */

import { serve } from "../../src/index.ts";
import { ECHO_METHOD } from "./methods.ts";

const [url, waitJson] = process.argv.slice(2);
const wait = waitJson ? JSON.parse(waitJson) : undefined;
const serving = await serve(url!, { [ECHO_METHOD]: (h) => h.data }, wait ? { wait } : {});
console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
for await (const _ of Bun.stdin.stream());
serving.close();
process.exit(0);
