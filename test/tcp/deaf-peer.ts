/**
 * A tcp peer that never reads, in its own process for the output-bound test: it listens on
 * 127.0.0.1 port 0, answers each connection with a valid server hello and then stops reading
 * (the socket is paused), prints {"url", "pid"} when listening and exits when its stdin closes.
 */

import { exitWhenParentGoes } from "../helpers/peer.ts";
import { hello } from "./raw.ts";

const l = Bun.listen({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(s) {
      s.write(hello());
      s.pause();
    },
    data() {},
  },
});
console.log(JSON.stringify({ url: `tcp://127.0.0.1:${l.port}`, pid: process.pid }));
exitWhenParentGoes(() => l.stop(true));
