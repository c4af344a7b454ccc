/**
 * For connection.test.ts: `bun linger-child.ts PORT` connects to a tcp listener that never
 * reads, queues output until trySend reports Full, closes, prints {"full": true, "closed": true}
 * and has nothing left to do: the process should exit at once, not when the linger ends.
 */

import { SEND_FULL, SEND_OK, connect } from "../../src/index.ts";

const conn = await connect(`tcp://127.0.0.1:${process.argv[2]}`);
const head = new Uint8Array(16);
const body = new Uint8Array(1 << 20);
let status: number = SEND_OK;
for (let i = 0; i < 256 && status === SEND_OK; i++) status = conn.trySend(head, body);
conn.close();
console.log(JSON.stringify({ full: status === SEND_FULL, closed: conn.closed }));
