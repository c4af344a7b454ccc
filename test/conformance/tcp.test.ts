import { runConformance } from "./suite.ts";
import { tcpBlackhole } from "../helpers/blackhole.ts";

runConformance({
  name: "tcp",
  listenUrl: () => "tcp://127.0.0.1:0",
  async refusedUrl() {
    // A port that was just free: bind, note it, release.
    const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = s.port;
    s.stop(true);
    return `tcp://127.0.0.1:${port}`;
  },
  async blackhole() {
    const h = await tcpBlackhole();
    return { url: `tcp://${h.host}:${h.port}`, close: h.close };
  },
});
