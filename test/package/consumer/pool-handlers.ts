/**
 * The consumer project's worker pool handlers (pool.ts starts them in Workers): the Sum service
 * and its implementation, the module's default export. Copied into a temporary project by
 * pack.test.ts, where "hotpath" is the installed tarball.
 */
import { threadId } from "node:worker_threads";
import { defineService, implement, msgpack } from "hotpath";

export const Sum = defineService({
  /** Adds up the request's bytes in the Worker. */
  sum: { id: 1, response: msgpack<{ sum: number; thread: number }>() },
  /** Ends its Worker mid-call (process.exit). */
  exit: { id: 2 },
});

export default implement(Sum, {
  sum: (bytes) => {
    let sum = 0;
    for (const b of bytes) sum += b;
    return { sum, thread: threadId };
  },
  exit: () => process.exit(5),
});
