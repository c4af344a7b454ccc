/**
 * Scripted ucx handshake peers for the auth tests (a fixture, in this process): raw UCP
 * endpoints of this thread's UcxRuntime that send whichever Active Messages a test chooses
 * (recorded, replayed, out of order) and record what comes back.
 *   RawUcxClient.open(url): an endpoint to a listener.
 *   rawUcxServer(answer): a bare UCP listener whose endpoints answer each message they get
 *   with what answer() returns (nothing for null).
 * Every wait has a watchdog; close() / stop() let go of everything (call them in finally).
 */
import { copyOut, type UcpEndpoint } from "../../src/ffi/ucp.ts";
import { UCP } from "../../src/ffi/ucp-layout.ts";
import { AM_HELLO, UcxRuntime, type AmSink } from "../../src/ucx/runtime.ts";

const WATCHDOG_MS = 15_000;

/** One raw endpoint and what arrived on it. */
class RawEndpoint implements AmSink {
  readonly got: Array<{ id: number; bytes: Uint8Array }> = [];
  failedWith: number | null = null;
  ep!: UcpEndpoint;
  readonly wantsProgress = false;
  onMessage: ((id: number, bytes: Uint8Array) => void) | null = null;

  constructor(readonly rt: UcxRuntime) {}

  onAm(id: number, header: number, hlen: number): number {
    const bytes = copyOut(header, hlen);
    this.got.push({ id, bytes });
    this.onMessage?.(id, bytes);
    return UCP.UCS_OK;
  }

  send(id: number, header: Uint8Array, body: Uint8Array | null = null): void {
    this.ep.amSend(id, header, body, () => {});
  }

  /** Progresses until `done()` holds; throws after the watchdog. */
  async until(what: string, done: () => boolean, ms = WATCHDOG_MS): Promise<void> {
    const deadline = Date.now() + ms;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`watchdog: ${what} within ${ms} ms`);
      this.rt.progress();
      await Bun.sleep(2);
    }
  }

  /** The next message with Active Message id `id` (earlier ones of other ids are kept). */
  async next(id: number): Promise<Uint8Array> {
    let at = -1;
    await this.until(`no Active Message ${id}`, () => (at = this.got.findIndex((m) => m.id === id)) >= 0);
    return this.got.splice(at, 1)[0]!.bytes;
  }

  /** Waits for the endpoint's error callback (the peer closed it). */
  untilClosedByPeer(ms?: number): Promise<void> {
    return this.until("the peer did not close the endpoint", () => this.failedWith !== null, ms);
  }

  close(): void {
    this.rt.sinks.delete(this.ep.handle);
    this.ep.close(this.failedWith !== null);
  }
}

export class RawUcxClient extends RawEndpoint {
  /** An endpoint to the ucx listener at `url` (no HELLO sent yet). The caller closes it. */
  static open(url: string): RawUcxClient {
    const u = new URL(url);
    const c = new RawUcxClient(UcxRuntime.acquire());
    c.ep = c.rt.worker.connect({ host: u.hostname, port: Number(u.port) }, false, (status) => (c.failedWith = status));
    c.rt.sinks.set(c.ep.handle, c);
    return c;
  }

  override close(): void {
    super.close();
    this.rt.release();
  }
}

/** What a scripted server sends back for one message ([Active Message id, header bytes]), or null for nothing. */
export type RawAnswer = (id: number, bytes: Uint8Array) => [number, Uint8Array] | null;

/** A raw server that answers a HELLO (and nothing else) with `reply`. */
export function answerHello(reply: [number, Uint8Array]): RawAnswer {
  return (id) => (id === AM_HELLO ? reply : null);
}

/**
 * A bare UCP listener (no hotpath handshake of its own): each client endpoint records what
 * arrives and answers each message with `answer(id, bytes)` (e.g. a HELLO_ACK for the HELLO, a
 * VERDICT for the AUTH). `stop()` closes the endpoints and the listener. Its endpoints progress
 * only when this thread's runtime does (a connect from this thread progresses it).
 */
export function rawUcxServer(answer: RawAnswer): { url: string; endpoints: RawEndpoint[]; stop(): void } {
  const rt = UcxRuntime.acquire();
  const endpoints: RawEndpoint[] = [];
  const listener = rt.worker.listen("127.0.0.1", 0, (req) => {
    const e = new RawEndpoint(rt);
    e.ep = rt.worker.connect({ connRequest: req }, null, (status) => (e.failedWith = status));
    rt.sinks.set(e.ep.handle, e);
    e.onMessage = (id, bytes) => {
      const reply = answer(id, bytes);
      if (reply !== null) e.send(...reply);
    };
    endpoints.push(e);
  });
  return {
    url: `ucx://127.0.0.1:${listener.port}`,
    endpoints,
    stop() {
      listener.close();
      for (const e of endpoints) e.close();
      rt.release();
    },
  };
}
