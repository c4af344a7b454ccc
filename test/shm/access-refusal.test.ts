/**
 * A hostile listener's refusal text reaches the client's error only as quoted, escaped, capped
 * text: control characters (terminal escapes, newlines that would forge log lines) are shown as
 * escapes, the length is capped, and the message says whose words they are ("the listener
 * said: …"). The hostile listener is this process, bound where a real one would be (the checks
 * of who listens pass: same uid, and for inproc this very process), answering every hello with
 * a refusal line of its own making.
 */

import { afterAll, expect, test } from "bun:test";
import { readdirSync, rmSync } from "node:fs";
import { AuthError, connect, ConnectError } from "../../src/index.ts";
import { MAX_REFUSAL_CHARS } from "../../src/segment/handshake.ts";
import { socketDir, socketDirOf } from "../../src/segment/socket-dir.ts";

const uid = process.geteuid!();
const prefix = `refusal-${process.pid}-`;
const HOSTILE = `\u001b[2J\u001b[31mroot password accepted\r\nINFO forged log line\u0007\u0000\u009b\u202e${"x".repeat(3000)}`;

afterAll(() => {
  expect(readdirSync(socketDirOf(uid)).filter((f) => f.includes(prefix))).toEqual([]);
});

/** A listener at `path` that answers any line with `reply`. */
function hostileListener(path: string, reply: object) {
  const server = Bun.listen({
    unix: path,
    socket: {
      data: (s) => {
        s.write(`${JSON.stringify(reply)}\n`);
        s.end();
      },
    },
  });
  return () => {
    server.stop(true);
    rmSync(path, { force: true });
  };
}

function expectTamed(e: unknown, kind: typeof AuthError | typeof ConnectError): void {
  expect(e).toBeInstanceOf(kind);
  const msg = (e as Error).message;
  expect(msg).toContain("the listener said: ");
  expect(msg).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
  expect(msg).toContain("\\u001b[2J\\u001b[31mroot password accepted\\u000d\\u000aINFO forged log line\\u0007\\u0000\\u009b\\u202e");
  expect(msg).toMatch(/… \(\d+ more characters\)/);
  expect(msg.length).toBeLessThan(MAX_REFUSAL_CHARS + 300);
}

for (const transport of ["shm", "inproc"] as const) {
  for (const refused of ["auth", "protocol"] as const) {
    test(`${transport}: a hostile listener's ${refused} refusal text is escaped, capped and attributed`, async () => {
      const name = `${prefix}${transport}-${refused}`;
      const dir = socketDir("test", uid, "listen");
      const path = transport === "shm" ? `${dir}/shm-${name}.sock` : `${dir}/inproc-${process.pid}-${name}.sock`;
      const stop = hostileListener(path, { error: HOSTILE, refused });
      try {
        const e = await connect(`${transport}://${name}`, { connectTimeoutMs: 5000 }).then(
          (c) => (c.close(), null),
          (x) => x,
        );
        expectTamed(e, refused === "auth" ? AuthError : ConnectError);
      } finally {
        stop();
      }
    }, 30_000);
  }
}
