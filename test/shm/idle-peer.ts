/**
 * Test peer for the idle-strategy tests: serve() on the URL given (argv[2]) in the default wait
 * mode, or the mode named in argv[3] (a JSON wait policy). Method 1 echoes its data; method 2
 * answers with the summed idle statistics (SegmentConnection.idleStats(): spins, spinNs,
 * paidSpins, parks, rings, earlyRings) of every session's connection, as JSON, taken before its own reply goes out.
 * Prints {"url"} when ready; exits when stdin closes.
 */

import { serve } from "../../src/index.ts";
import type { SegmentConnection } from "../../src/segment/connection.ts";

export const M_ECHO = 1;
export const M_IDLE_STATS = 2;

if (import.meta.main) {
  const wait = process.argv[3] ? JSON.parse(process.argv[3]) : undefined;
  const serving = await serve(
    process.argv[2]!,
    {
      [M_ECHO]: (h) => h.data,
      [M_IDLE_STATS]: () => {
        const sum = { spins: 0, spinNs: 0, paidSpins: 0, parks: 0, rings: 0, earlyRings: 0 };
        for (const s of serving.server.sessions) {
          const st = (s.conn as SegmentConnection).idleStats();
          sum.spins += st.spins;
          sum.spinNs += st.spinNs;
          sum.paidSpins += st.paidSpins;
          sum.parks += st.parks;
          sum.rings += st.rings;
          sum.earlyRings += st.earlyRings;
        }
        return new TextEncoder().encode(JSON.stringify(sum));
      },
    },
    wait ? { wait } : {},
  );
  console.log(JSON.stringify({ url: serving.url }));
  for await (const _ of Bun.stdin.stream());
  serving.close();
  process.exit(0);
}
