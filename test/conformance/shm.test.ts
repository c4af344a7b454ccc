import { afterAll } from "bun:test";
import { readdirSync } from "node:fs";
import { runConformance } from "./suite.ts";

let n = 0;
const unique = () => `conf-${process.pid}-${n++}`;

runConformance({
  name: "shm",
  listenUrl: () => `shm://${unique()}`,
  async refusedUrl() {
    return `shm://${unique()}`;
  },
  async blackhole() {
    // A listener socket that accepts and never answers the handshake.
    const name = unique();
    const l = Bun.listen({ unix: `\0hotpath-shm-${name}`, socket: { data() {} } });
    return { url: `shm://${name}`, close: () => l.stop(true) };
  },
});

afterAll(() => {
  const left = readdirSync("/dev/shm").filter((f) => f.startsWith("hotpath-"));
  if (left.length > 0) throw new Error(`segments left in /dev/shm: ${left.join(", ")}`);
});
