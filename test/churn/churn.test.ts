/**
 * Churn (issue 8, defect 10): per transport, a server in its own process serves the churn
 * service; CLIENTS clients connect, keep 64 calls in flight (slow replies among them) and are
 * then killed (kill -9, or Worker.terminate for inproc, with replies in flight) or close
 * cleanly, alternating, BATCH at a time. Afterwards the server must be back at its baseline:
 * no sessions, fds and hotpath segment mappings as before, no segment left in /dev/shm, RSS
 * within RSS_BOUND_MIB, ~0 CPU while idle, and a fresh client is served.
 *
 * The baseline is taken after a warm-up of WARMUP clients (one-time costs: JIT, allocator
 * arenas, UCX's first endpoint), after Bun.gc(true) in the server. One line of figures per
 * transport is printed ("churn <transport>: ...") whether the assertions pass or not.
 *
 * inproc clients must be Workers of the server's process: the server starts and stops them on
 * command (churn-server.ts). Set CHURN_CLIENTS to change the client count.
 */

import { afterAll, describe, expect, test } from "bun:test";
import { spawnPeer, type Peer } from "../helpers/peer.ts";
import type { ProcFigures } from "../helpers/proc-figures.ts";
import { devShmEntries } from "../helpers/proc-figures.ts";

const SERVER = new URL("./churn-server.ts", import.meta.url).pathname;
const CLIENT = new URL("./churn-client.ts", import.meta.url).pathname;

/** The issue asks for 100 clients per transport. */
const CLIENTS = Number(process.env.CHURN_CLIENTS ?? 100);
/** Diagnosis: CHURN_ONLY=kill or CHURN_ONLY=close ends every client that way (default: alternate). */
const ONLY = process.env.CHURN_ONLY;
/** CHURN_VERBOSE=1 prints how long each batch took to start and to end. */
const VERBOSE = process.env.CHURN_VERBOSE === "1";
/** Clients alive at once: several sessions overlap, within what 2 cores start quickly. */
const BATCH = 10;
/**
 * Warm-up clients before the baseline (half killed, half closed): one whole batch, so the
 * baseline already holds what BATCH concurrent sessions make the allocator and UCX keep (a
 * plateau: 40, 100 and 300 ucx clients ended within 3 MiB of each other, while a 4-client
 * warm-up left the 100-client figure 5–18 MiB above it depending on load).
 */
const WARMUP = BATCH;
/** Fds the server may hold beyond baseline (a lazily opened runtime fd, not one per client). */
const FD_SLACK = 2;
/** RSS growth allowed over baseline, MiB: below 50 kills × the 0.4 MiB/kill leak seen over shm. */
const RSS_BOUND_MIB = 16;
/**
 * inproc's clients are Workers of the server's own process: starting and ending 100 threads
 * leaves the allocator ~16 MiB above a clean baseline, and 300 threads ~22 MiB (measured: a
 * plateau, not growth per session; the per-session signals, ArrayBuffers, fds and maps, stay
 * flat). Per-session leaks are still far above this: 0.4 MiB × 50 kills was the shm leak, and
 * issue 8's inproc leak was 8–11 MiB per kill.
 */
const RSS_BOUND_WORKERS_MIB = 32;
/** Idle CPU allowed over one second, percent of one core. */
const IDLE_CPU_PERCENT = 5;
/** How long peers get to notice deaths and closes before the server is measured. */
const SETTLE_MS = 1000;
/** Watchdog for one control command (a start waits for a client's first calls). */
const COMMAND_MS = 30_000;

interface Fixture {
  name: string;
  url: () => string;
  env?: Record<string, string>;
  /** Clients are Workers of the server's process (inproc). */
  workers?: boolean;
  /** The /dev/shm name prefix of this server's segments, if it makes any. */
  shmPrefix?: string;
}

let n = 0;
const unique = () => `churn-${process.pid}-${n++}`;
const shmName = unique();
const fixtures: Fixture[] = [
  { name: "shm", url: () => `shm://${shmName}`, shmPrefix: `hotpath-${shmName}-` },
  { name: "inproc", url: () => `inproc://${unique()}`, workers: true },
  { name: "tcp", url: () => "tcp://127.0.0.1:0" },
  { name: "ucx", url: () => "ucx://127.0.0.1:0", env: { UCX_TLS: "tcp,self" } },
];

/** Commands to a churn server over its stdin, answers matched by id from its stdout. */
class Control {
  private next = 0;
  private readonly waiting = new Map<number, (v: any) => void>();
  private exited = false;
  constructor(readonly peer: Peer) {
    (async () => {
      for (;;) {
        let line: string;
        try {
          line = await peer.nextLine(3_600_000);
        } catch {
          break; // exited
        }
        let msg: any;
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        this.waiting.get(msg.id)?.(msg);
        this.waiting.delete(msg.id);
      }
      this.exited = true;
      for (const w of this.waiting.values()) w({ error: `server exited (${peer.proc.exitCode ?? peer.proc.signalCode})` });
      this.waiting.clear();
    })();
  }

  ask(cmd: Record<string, unknown>, timeoutMs = COMMAND_MS): Promise<any> {
    const id = this.next++;
    if (this.exited) return Promise.reject(new Error(`churn server: ${JSON.stringify(cmd)}: server exited (${this.peer.proc.exitCode ?? this.peer.proc.signalCode})`));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`churn server: no answer to ${JSON.stringify(cmd)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, (v) => {
        clearTimeout(t);
        if (v.error) reject(new Error(`churn server: ${JSON.stringify(cmd)}: ${v.error}`));
        else resolve(v);
      });
      this.peer.proc.stdin.write(`${JSON.stringify({ id, ...cmd })}\n`);
      this.peer.proc.stdin.flush();
    });
  }
}

/** Every process this file started; killed by pid when a test ends, whatever happened. */
const alive: Peer[] = [];
async function killAll(): Promise<void> {
  for (const p of alive.splice(0)) await p.kill(9);
}
afterAll(killAll);

interface ChurnClient {
  kill(): Promise<void>;
  /** Closes cleanly; resolves to the client's report. */
  close(): Promise<{ ok: number; mismatches: number; otherErrors: string[] }>;
}

async function startClient(fx: Fixture, ctl: Control, url: string): Promise<ChurnClient> {
  if (fx.workers) {
    const { client } = await ctl.ask({ cmd: "start" });
    return {
      kill: async () => void (await ctl.ask({ cmd: "kill", client })),
      close: async () => (await ctl.ask({ cmd: "close", client })).report,
    };
  }
  const p = await spawnPeer(CLIENT, [url], fx.env, COMMAND_MS); // ready: its first calls answered, 64 in flight
  alive.push(p);
  return {
    kill: () => p.kill(9),
    async close() {
      p.proc.stdin.end();
      const line = await p.nextLine(COMMAND_MS);
      await p.proc.exited;
      try {
        return JSON.parse(line);
      } catch {
        throw new Error(`churn client: report is not JSON: ${line}`);
      }
    },
  };
}

const fmt = (r: { figures: ProcFigures; sessions: number; heap: { arrayBuffers: number; promises: number; externalMiB: number } }) =>
  `fds ${r.figures.fds} maps ${r.figures.hotpathMaps} shm-maps-other ${r.figures.otherShmMaps} rss ${r.figures.rssMiB.toFixed(1)} MiB ` +
  `threads ${r.figures.threads} sessions ${r.sessions} heap ${r.heap.arrayBuffers} ArrayBuffers ${r.heap.promises} Promises ${r.heap.externalMiB.toFixed(1)} MiB external`;


for (const fx of fixtures) {
  describe(`churn: ${fx.name}`, () => {
    test(
      `${CLIENTS} clients killed mid-stream or closed: server back at baseline`,
      async () => {
        const server = await spawnPeer(SERVER, [fx.url()], fx.env);
        alive.push(server);
        const ctl = new Control(server);
        const url = server.ready.url as string;
        const failures: string[] = [];
        const reports: Array<{ ok: number; mismatches: number; otherErrors: string[] }> = [];

        const churn = async (count: number) => {
          for (let first = 0; first < count; first += BATCH) {
            const t0 = performance.now();
            const idx = Array.from({ length: Math.min(BATCH, count - first) }, (_, i) => first + i);
            const clients = await Promise.all(idx.map(() => startClient(fx, ctl, url)));
            const t1 = performance.now();
            await Promise.all(
              clients.map(async (c, i) => {
                if (ONLY === undefined ? idx[i]! % 2 === 0 : ONLY === "kill") await c.kill();
                else reports.push(await c.close());
              }),
            );
            if (VERBOSE) console.log(`churn ${fx.name}: clients ${first}..${first + idx.length - 1}: started in ${(t1 - t0).toFixed(0)} ms, ended in ${(performance.now() - t1).toFixed(0)} ms`);
          }
        };

        await churn(WARMUP);
        await Bun.sleep(SETTLE_MS / 2);
        const before = await ctl.ask({ cmd: "figures", gc: true });
        const idleBefore = (await ctl.ask({ cmd: "idle", ms: 1000 })).cpuPercent as number;

        let churnError: Error | null = null;
        await churn(CLIENTS).catch((e) => (churnError = e));
        if (churnError) failures.push(`churn: ${(churnError as Error).message}`);

        await Bun.sleep(SETTLE_MS);
        let afterNoGc: any = null;
        let after: any = null;
        let idleAfter = NaN;
        let fresh: { ok: number; mismatches: number; otherErrors: string[] } | null = null;
        try {
          afterNoGc = await ctl.ask({ cmd: "figures", gc: false });
          after = await ctl.ask({ cmd: "figures", gc: true });
          idleAfter = (await ctl.ask({ cmd: "idle", ms: 1000 })).cpuPercent;
          fresh = await (await startClient(fx, ctl, url)).close();
        } catch (e) {
          failures.push((e as Error).message);
        }

        const b: ProcFigures = before.figures;
        const leftInShm = fx.shmPrefix ? devShmEntries(fx.shmPrefix) : [];
        console.log(
          `churn ${fx.name}: ${CLIENTS} clients (${ONLY === undefined ? `${Math.ceil(CLIENTS / 2)} killed, ${Math.floor(CLIENTS / 2)} closed` : `all ${ONLY}`}); ` +
            `before: ${fmt(before)} idle-cpu ${idleBefore.toFixed(1)}%; ` +
            (afterNoGc ? `after, before gc: maps ${afterNoGc.figures.hotpathMaps} rss ${afterNoGc.figures.rssMiB.toFixed(1)} MiB; ` : "") +
            (after ? `after: ${fmt(after)} idle-cpu ${idleAfter.toFixed(1)}%; ` : "after: (no answer); ") +
            `/dev/shm left ${leftInShm.length}; server ${server.proc.exitCode === null && server.proc.signalCode === null ? "alive" : `exited ${server.proc.exitCode ?? server.proc.signalCode}`}`,
        );
        if (after) {
          const a: ProcFigures = after.figures;
          if (after.sessions !== before.sessions) failures.push(`server sessions ${before.sessions} → ${after.sessions}`);
          if (a.fds > b.fds + FD_SLACK) failures.push(`fds ${b.fds} → ${a.fds} (${JSON.stringify(b.fdKinds)} → ${JSON.stringify(a.fdKinds)})`);
          if (a.hotpathMaps > b.hotpathMaps) failures.push(`hotpath segment mappings ${b.hotpathMaps} → ${a.hotpathMaps}`);
          // Closing a session unmaps its segment (DESIGN: map anonymous pages back over it), not a later GC.
          const m = afterNoGc.figures.hotpathMaps;
          if (m > b.hotpathMaps) failures.push(`hotpath segment mappings ${b.hotpathMaps} → ${m} until a GC runs (segments of gone peers stay mapped)`);
          const rssBound = fx.workers ? RSS_BOUND_WORKERS_MIB : RSS_BOUND_MIB;
          if (a.rssMiB > b.rssMiB + rssBound) failures.push(`RSS ${b.rssMiB.toFixed(1)} → ${a.rssMiB.toFixed(1)} MiB (bound +${rssBound})`);
          if (!(idleAfter < IDLE_CPU_PERCENT)) failures.push(`idle CPU ${idleAfter.toFixed(1)}% of a core over 1 s (bound ${IDLE_CPU_PERCENT}%)`);
        }
        if (leftInShm.length > 0) failures.push(`/dev/shm entries left: ${leftInShm.join(", ")}`);
        if (server.proc.exitCode !== null || server.proc.signalCode !== null) {
          failures.push(`server process exited: ${server.proc.exitCode ?? server.proc.signalCode}`);
        }
        if (fresh && (fresh.ok === 0 || fresh.mismatches > 0 || fresh.otherErrors.length > 0)) failures.push(`fresh client: ${JSON.stringify(fresh)}`);
        const bad = reports.filter((r) => r.mismatches > 0 || r.otherErrors.length > 0);
        if (bad.length > 0) failures.push(`${bad.length} closed clients saw wrong replies or errors, e.g. ${JSON.stringify(bad[0])}`);

        await killAll();
        expect(failures).toEqual([]);
      },
      120_000,
    );
  });
}
