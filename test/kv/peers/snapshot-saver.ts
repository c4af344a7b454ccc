/**
 * A process that saves a large store again and again, for the crash-during-save test:
 * `bun test/kv/peers/snapshot-saver.ts PATH MiB`. Fills a store with about MiB of values,
 * prints {"pid"} and then saves to PATH in a loop (at most MAX_SAVES times, yielding between
 * saves so a closed stdin ends it); the test kills it with SIGKILL mid-save.
 */
import { KvStore } from "../../../src/kv/store.ts";

/** Bounds the loop should the test die before killing it. */
const MAX_SAVES = 200;
const path = process.argv[2]!;
const mib = Number(process.argv[3]!);
const store = KvStore.create({ memoryBytes: (mib * 2 + 16) << 20 });
const value = new Uint8Array(60 << 10).fill(9); // below 64 KiB with its entry header: one slab class of 64 KiB
for (let i = 0; i < mib * 16; i++) store.put(new TextEncoder().encode(`key-${i}`), value);
console.log(JSON.stringify({ pid: process.pid }));
(async () => {
  for await (const _ of Bun.stdin.stream()) {
    // input is ignored; EOF ends the process
  }
  process.exit(0);
})();
for (let i = 0; i < MAX_SAVES; i++) {
  store.save(path);
  await new Promise((r) => setImmediate(r));
}
process.exit(0);
