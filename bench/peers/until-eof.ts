/**
 * How a benchmark peer process lives: it prints `{"url": ...}` as its one line of output (the
 * bench reads it to connect), serves until its stdin closes (the bench ends it by closing the
 * pipe, or by dying), then closes and exits 0.
 *
 * Example: if (import.meta.main) servePeerUntilEof(await startMyServer(url));
 */

export function servePeerUntilEof(s: { url: string; close(): void | Promise<void> }): void {
  console.log(JSON.stringify({ url: s.url }));
  (async () => {
    for await (const _ of Bun.stdin.stream()) {
      // EOF ends the benchmark
    }
    await s.close();
    process.exit(0);
  })();
}
