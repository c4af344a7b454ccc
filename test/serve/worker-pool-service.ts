/** The service and method ids of worker-pool-handlers.ts (a fixture shared by the tests and the Workers). */
import { defineService, msgpack, struct } from "../../src/index.ts";

export const Calc = defineService({
  add: { id: 10, request: struct({ a: "u32", b: "u32" }), response: msgpack<{ sum: number; thread: number }>() },
});

export const M = { echo: 1, thread: 2, inSegment: 3, xor: 4, fail: 5, slow: 6, exit: 7, throwLater: 8 } as const;
