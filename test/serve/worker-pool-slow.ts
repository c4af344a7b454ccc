/** Handlers module that takes 300 ms to load (a fixture of worker-pool-close.test.ts); method 1 echoes. */
import type { Handlers } from "../../src/index.ts";

await Bun.sleep(300);
const handlers: Handlers = { [1]: (h) => h.data };
export default handlers;
