/**
 * Output for a raw Bun socket in the benchmarks' reference peers: Bun's write() takes what the
 * kernel accepts and returns the count, so the rest is queued (in order) and written on drain.
 * Queued chunks are held by reference: callers pass memory they no longer change.
 */

import type { Socket } from "bun";

export class WriteQueue {
  private readonly chunks: Uint8Array[] = [];

  constructor(private readonly socket: Socket<unknown>) {}

  write(data: Uint8Array): void {
    if (this.chunks.length > 0) {
      this.chunks.push(data);
      return;
    }
    const n = this.socket.write(data);
    if (n < data.length) this.chunks.push(data.subarray(Math.max(n, 0)));
  }

  /** Call from the socket's drain handler. */
  flush(): void {
    while (this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const n = this.socket.write(chunk);
      if (n < chunk.length) {
        this.chunks[0] = chunk.subarray(Math.max(n, 0));
        return;
      }
      this.chunks.shift();
    }
  }
}
