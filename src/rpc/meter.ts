/**
 * CallMeter: how a Client (or a stream, or a server handle) feeds RpcMetrics (metrics.ts) per
 * call. The start of each call is kept per slot in typed arrays, so a metered hot-path call
 * allocates nothing once its method is known to the registry.
 *
 * Contract: start(slot, ...) when a call goes out, end(slot, ...) exactly once when it
 * completes (a response, an error, a timeout, a close); record() for a whole call measured by
 * its caller. Latency is performance.now() based. The owner's thread.
 *
 * Example: const m = new CallMeter(new RpcMetrics(), "shm", 256); m.start(3, 1, 32); m.end(3, 32, null);
 */

import { UsageError } from "../errors.ts";
import { RpcMetrics, errorCodeName } from "./metrics.ts";

export class CallMeter {
  private readonly startMs: Float64Array;
  private readonly method: Uint32Array;
  private readonly bytesOut: Float64Array;

  constructor(
    readonly metrics: RpcMetrics,
    readonly transport: string,
    slots: number,
  ) {
    this.startMs = new Float64Array(slots);
    this.method = new Uint32Array(slots);
    this.bytesOut = new Float64Array(slots);
  }

  start(slot: number, method: number, bytesOut: number): void {
    this.startMs[slot] = performance.now();
    this.method[slot] = method;
    this.bytesOut[slot] = bytesOut;
  }

  /** The call in `slot` completed: `error` null when it succeeded. */
  end(slot: number, bytesIn: number, error: unknown): void {
    const ms = performance.now() - this.startMs[slot]!;
    this.metrics.record(this.transport, this.method[slot]!, error == null ? null : errorCodeName(error), bytesIn, this.bytesOut[slot]!, ms > 0 ? ms * 1e6 : 0);
  }

  /** One whole call that started at `startMs` (performance.now()). */
  record(method: number, error: unknown, bytesIn: number, bytesOut: number, startMs: number): void {
    const ms = performance.now() - startMs;
    this.metrics.record(this.transport, method, error == null ? null : errorCodeName(error), bytesIn, bytesOut, ms > 0 ? ms * 1e6 : 0);
  }
}

/** ClientOptions.metrics / ServerOptions.metrics: true for a registry of its own, a registry to share, or off (null). */
export function metricsOption(opt: boolean | RpcMetrics | undefined, what: string): RpcMetrics | null {
  if (opt === undefined || opt === false) return null;
  if (opt === true) return new RpcMetrics();
  if (opt instanceof RpcMetrics) return opt;
  throw new UsageError(`${what}: metrics must be true, false or an RpcMetrics, got ${typeof opt}`);
}
