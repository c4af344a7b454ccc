/**
 * A child process's output read line by line as it arrives (test support): each line (without
 * its newline) parsed and kept in `seen`, in order; `next()` resolves at the next line or at EOF,
 * `done` at EOF (it rejects when `parse` threw).
 *
 *   const out = collectLines(p.stdout, JSON.parse);
 *   while (!out.seen.some((l) => l.step === "open")) await Promise.race([out.next(), Bun.sleep(50)]);
 *
 * Thread: the test's main thread.
 */
export interface CollectedLines<T> {
  readonly seen: T[];
  /** Resolves when the next line is in `seen`, or at EOF (never after EOF: race it with a sleep). */
  next(): Promise<void>;
  readonly done: Promise<void>;
}

export function collectLines<T>(stream: ReadableStream<Uint8Array>, parse: (line: string) => T): CollectedLines<T> {
  const seen: T[] = [];
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  const done = (async () => {
    let buf = "";
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        seen.push(parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
        wake();
      }
    }
  })().finally(wake);
  return { seen, done, next: () => new Promise<void>((r) => waiters.push(r)) };
}
