/**
 * A scripted hostile shm / inproc peer (the segment analogue of the tcp hostile peer in
 * test/conformance/tcp-hostile.test.ts): a REAL session, opened with connect() or accepted by a
 * real listener, whose segment this side then scribbles on as a hostile process could, one
 * attack at a time (SEGMENT_ATTACKS): descriptor sequences forged and heads moved, descriptors naming slots out
 * of range or reused, lengths past the slot or the descriptor, unknown flags, the header
 * rewritten. The victim must end only that session with a ProtocolError naming the fault.
 *
 *   const evil = new HostileSession(await connect(url, { segment: { ringSlots: 16 } }), "client");
 *   await evil.roundTrip();               // the session works
 *   await attack.run(evil, provoke);      // then the attack
 *
 * Run as a script (`bun hostile-shm.ts shm://name`) it is the victim server instead: the echo
 * service in its own process, printing {"url","pid"} when listening and one JSON line
 * {"closed","message","sessions"} for every session that ends; it exits when stdin closes.
 *
 * Threading: a HostileSession belongs to the thread of its connection.
 */

import { rpcConnect, serve, wire, type Connection, type RpcClient, type RxMessage } from "../../src/index.ts";
import type { SegmentConnection } from "../../src/segment/connection.ts";
import { seqOf } from "../../src/segment/ring.ts";
import {
  DESC_BODY_LEN,
  DESC_BYTES,
  DESC_FLAG_SLOT,
  DESC_LEN_FLAGS,
  DESC_SEQ,
  DESC_SLOT_GEN,
  HDR_CLASSES,
  HDR_RING_AB,
  HDR_RING_SLOTS,
  HDR_TOTAL_BYTES,
  RING_DESCS,
  RING_HEAD,
  SLOT_SENT,
  type SegmentLayout,
  type SlabLayout,
} from "../../src/segment/layout.ts";
import { M_ECHO, M_NEVER } from "../conformance/methods.ts";
import { exitWhenParentGoes } from "./peer.ts";

/** Attacker sessions use a small ring, so a victim fills it (and re-reads the head) after a few messages. */
export const ATTACK_RING_SLOTS = 16;
/** The well-behaved client calls this often: a steady trickle (back-to-back calls would load the server by themselves). */
const GOOD_CALL_GAP_MS = 5;
/** Body of the slot messages the attacks send: above the 56 inline bytes, within the first class. */
export const SLOT_BODY_BYTES = 200;

/** The attacker's end of one session: the raw connection, its segment, and a tiny rpc speaker on top. */
export class HostileSession {
  readonly words: Int32Array;
  readonly layout: SegmentLayout;
  /** Byte offsets of the ring this side produces on (tx) and consumes (rx). */
  readonly txRing: number;
  readonly rxRing: number;
  /** The slab this side sends from (the victim reads it) and the one it receives into. */
  readonly txSlab: SlabLayout;
  readonly rxSlab: SlabLayout;
  /** Messages received and kept unreleased while `holding` (the ring head stays put). */
  readonly held: RxMessage[] = [];
  holding = false;
  /** Responses received (as a client) and requests received (as a server). */
  received = 0;
  private readonly ringPeer: () => void;
  private nextCall = 1;

  constructor(
    readonly conn: Connection,
    /** "client": sends echo requests; "server": answers the victim's echo requests, drops M_NEVER. */
    readonly role: "client" | "server",
  ) {
    const seg = (conn as SegmentConnection).segmentForTests();
    this.words = seg.words;
    this.layout = seg.layout;
    const [tx, rx] = seg.side === "A" ? [0, 1] : [1, 0];
    this.txRing = this.layout.rings[tx]!;
    this.rxRing = this.layout.rings[rx]!;
    this.txSlab = this.layout.slabs[tx]!;
    this.rxSlab = this.layout.slabs[rx]!;
    this.ringPeer = seg.ring;
    conn.setReceiver({ onMessage: (m) => this.onMessage(m), onClose() {} });
  }

  private onMessage(m: RxMessage): void {
    this.received++;
    if (this.holding) return void this.held.push(m);
    if (this.role === "server" && wire.wireKind(m.head) === wire.KIND_REQUEST && wire.wireMethod(m.head) === M_ECHO) {
      const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
      wire.writeWireHeader(h, wire.KIND_RESPONSE, M_ECHO, wire.wireCallSlot(m.head), wire.wireCallGen(m.head), 0, m.body.length);
      this.conn.trySend(h, m.body);
    }
    m.release();
  }

  // ---- ring words
  /**
   * The ring's producer index. The segment has no tail word (each descriptor carries its
   * sequence, ring.ts): from the head, past every descriptor whose sequence says published.
   */
  tail(ring: number): number {
    let t = this.head(ring);
    for (let k = 0; k < this.layout.ringSlots; k++, t = (t + 1) | 0) {
      if (Atomics.load(this.words, this.descOf(ring, t) + DESC_SEQ / 4) !== seqOf(t)) break;
    }
    return t;
  }
  /** Stores descriptor `index`'s sequence word in the tx ring (what publishes it). */
  setSeq(index: number, seq: number): void {
    Atomics.store(this.words, this.desc(index) + DESC_SEQ / 4, seq | 0);
  }
  head(ring: number): number {
    return Atomics.load(this.words, (ring + RING_HEAD) >> 2);
  }
  setHead(ring: number, v: number): void {
    Atomics.store(this.words, (ring + RING_HEAD) >> 2, v | 0);
  }

  /** Word index of descriptor `index` of `ring`. */
  private descOf(ring: number, index: number): number {
    return (ring + RING_DESCS + (index & (this.layout.ringSlots - 1)) * DESC_BYTES) >> 2;
  }
  private desc(index: number): number {
    return this.descOf(this.txRing, index);
  }

  /**
   * Writes a descriptor at the tx ring's tail, publishes it (its sequence word last) and rings
   * the victim. `slot` makes it a slot message; the fields are masked to their widths.
   */
  publish(d: { headLen: number; bodyLen: number; flags?: number; slot?: number; gen?: number }): void {
    const t = this.tail(this.txRing);
    const i = this.desc(t);
    const flags = d.flags ?? 0;
    const low = (d.headLen & 0xff) | ((flags & 0xff) << 8);
    if (flags === DESC_FLAG_SLOT) {
      this.words[i + DESC_LEN_FLAGS / 4] = low | ((d.slot ?? 0) << 16);
      this.words[i + DESC_BODY_LEN / 4] = d.bodyLen;
      if (d.gen !== undefined) this.words[i + DESC_SLOT_GEN / 4] = d.gen;
    } else {
      this.words[i + DESC_LEN_FLAGS / 4] = low | (d.bodyLen << 16);
    }
    this.setSeq(t, seqOf(t));
    this.ring();
  }

  /** Publishes once more, unchanged, the last descriptor this side published (a replay). */
  replayLast(): void {
    const t = this.tail(this.txRing);
    // Every word but the sequence, then the sequence: the victim never sees a half-copied one.
    this.words.copyWithin(this.desc(t) + 1, this.desc(t - 1) + 1, this.desc(t - 1) + DESC_BYTES / 4);
    this.setSeq(t, seqOf(t));
    this.ring();
  }

  /** The (slot, generation) the last published descriptor names. */
  lastSlotRef(): { slot: number; gen: number } {
    const i = this.desc(this.tail(this.txRing) - 1);
    return { slot: this.words[i + DESC_LEN_FLAGS / 4]! >>> 16, gen: this.words[i + DESC_SLOT_GEN / 4]! };
  }

  setTxSlotState(slot: number, state: number, gen?: number): void {
    Atomics.store(this.words, (this.txSlab.statesOffset >> 2) + slot, state);
    if (gen !== undefined) this.words[(this.txSlab.gensOffset >> 2) + slot] = gen;
  }

  txSlotGen(slot: number): number {
    return this.words[(this.txSlab.gensOffset >> 2) + slot]!;
  }

  /** Rewrites every sizing word of the segment header (ring size, total bytes, offsets, classes). */
  rewriteHeader(): void {
    this.words[HDR_RING_SLOTS >> 2] = 3;
    this.words[HDR_TOTAL_BYTES >> 2] = 64;
    for (let off = HDR_RING_AB; off < HDR_CLASSES + 16; off += 4) this.words[off >> 2] = 0x7fffffff;
  }

  /** Rings the victim however it sleeps. */
  ring(): void {
    this.ringPeer();
  }

  /** Sends one message (an echo request unless told otherwise), retrying while Full; false once closed. */
  async send(bodyLen: number, kind = wire.KIND_REQUEST, method = M_ECHO): Promise<boolean> {
    const h = new Uint8Array(wire.WIRE_HEADER_BYTES);
    wire.writeWireHeader(h, kind, method, this.nextCall++ & 0xff, 1, 0, bodyLen);
    const body = new Uint8Array(bodyLen).fill(7);
    for (let i = 0; i < 5000; i++) {
      const s = this.conn.trySend(h, body);
      if (s === 0) return true;
      if (s === 2) return false;
      await Bun.sleep(1);
    }
    return false;
  }

  /** Client role: one echo request and its response; throws if none comes within the timeout. */
  async roundTrip(bodyLen = 8, timeoutMs = 5000): Promise<void> {
    const before = this.received;
    if (!(await this.send(bodyLen))) throw new Error("hostile session: send failed");
    await until(() => this.received > before, "the echo response", timeoutMs);
  }

  close(): void {
    for (const m of this.held.splice(0)) m.release();
    this.conn.close();
  }
}

import { until } from "./peer.ts";
export { until };

/** What an attack can make the victim do, however the test drives it. */
export interface Victim {
  /**
   * The victim sends `n` messages (responses to the attacker's requests, or requests); while the
   * attacker holds what arrives, the victim's tx ring fills and it re-reads the head.
   */
  provoke(n: number): Promise<void>;
  /** One exchange whose message to the attacker has its body in a slab slot (SLOT_BODY_BYTES). */
  slotExchange(): Promise<void>;
  /** `n` echo round trips between the victim and the attacker, one after the other. */
  exchanges(n: number): Promise<void>;
}

/** One attack: `run` scribbles on the attacker's segment; `fault` matches the victim's ProtocolError message. */
export interface SegmentAttack {
  name: string;
  fault: RegExp;
  run(evil: HostileSession, victim: Victim): Promise<void>;
}

/** Drives a victim client: calls to the attacker's server (M_NEVER ones it drops unanswered, or holds). */
export function clientVictim(evil: HostileSession, victim: RpcClient<{}>, failures: Array<Promise<unknown>>): Victim {
  return {
    async provoke(n) {
      const before = evil.received;
      for (let k = 0; k < n; k++) failures.push(victim.request(M_NEVER, new Uint8Array([k]), { timeoutMs: 30_000 }).catch((e) => e));
      if (!evil.holding) await until(() => evil.received >= before + n || victim.closed, `${n} requests at the hostile server`);
    },
    async slotExchange() {
      const data = new Uint8Array(SLOT_BODY_BYTES).fill(3);
      const r = await victim.request(M_ECHO, data, { timeoutMs: 5000 });
      if (r.length !== SLOT_BODY_BYTES) throw new Error(`hostile echo: ${r.length} bytes`);
    },
    async exchanges(n) {
      for (let k = 0; k < n; k++) await victim.request(M_ECHO, new Uint8Array([k]), { timeoutMs: 5000 });
    },
  };
}

/** Drives a victim server from the attacker's client session: echo requests the server answers. */
export function serverVictim(evil: HostileSession): Victim {
  return {
    async provoke(n) {
      const before = evil.received;
      for (let k = 0; k < n; k++) if (!(await evil.send(8))) return;
      if (!evil.holding) await until(() => evil.received >= before + n || evil.conn.closed, `${n} echo responses`);
    },
    async slotExchange() {
      await evil.roundTrip(SLOT_BODY_BYTES);
    },
    async exchanges(n) {
      for (let k = 0; k < n; k++) await evil.roundTrip();
    },
  };
}

const fill = ATTACK_RING_SLOTS + 4;
/** What the victim says of a forged sequence word. */
const SEQ_FAULT = /ring descriptor \d+ has sequence \d+, neither \d+ \(published\) nor \d+ \(not yet; ring size 16\)/;

export const SEGMENT_ATTACKS: SegmentAttack[] = [
  {
    name: "next descriptor's sequence 2^31 ahead",
    fault: SEQ_FAULT,
    async run(e) {
      const t = e.tail(e.txRing);
      e.setSeq(t, seqOf(t + 2 ** 31));
      e.ring();
    },
  },
  {
    // The attack of the issue (then on the tail index): every descriptor a valid one-way
    // message, then a forged publication far ahead; the server answered them all, pinned a
    // core, and stopped accepting clients.
    name: "a sequence 2^31 - 1 ahead after a ring of one-way messages",
    fault: SEQ_FAULT,
    async run(e, v) {
      // A server fills its ring with responses to the victim's calls instead.
      if (e.role === "server") await v.exchanges(2 * ATTACK_RING_SLOTS);
      else for (let i = 0; i < 2 * ATTACK_RING_SLOTS; i++) await e.send(8, wire.KIND_ONEWAY);
      await until(() => e.head(e.txRing) === e.tail(e.txRing), "the victim taking the one-way messages");
      const t = e.tail(e.txRing);
      e.setSeq(t, seqOf(t + 2 ** 31 - 1));
      e.ring();
    },
  },
  {
    name: "the sequence of the lap after next",
    fault: SEQ_FAULT,
    async run(e) {
      const t = e.tail(e.txRing);
      e.setSeq(t, seqOf(t + ATTACK_RING_SLOTS));
      e.ring();
    },
  },
  {
    name: "the sequence of two laps back",
    fault: SEQ_FAULT,
    async run(e) {
      const t = e.tail(e.txRing);
      e.setSeq(t, seqOf(t - 2 * ATTACK_RING_SLOTS));
      e.ring();
    },
  },
  {
    name: "head moved forward past the tail",
    fault: /ring head \d+ is past the tail \d+/,
    async run(e, v) {
      e.holding = true;
      e.setHead(e.rxRing, e.tail(e.rxRing) + 1000);
      await v.provoke(fill);
    },
  },
  {
    name: "head moved backwards",
    fault: /ring head moved back from \d+ to 0/,
    async run(e, v) {
      // The victim re-read the head at least once (its ring filled) before it moves back.
      await v.provoke(fill);
      e.holding = true;
      e.setHead(e.rxRing, 0);
      await v.provoke(fill);
    },
  },
  {
    name: "slot id out of range",
    fault: /descriptor names slot \d+, the slab has \d+/,
    async run(e) {
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: 100, flags: DESC_FLAG_SLOT, slot: e.txSlab.totalSlots, gen: 1 });
    },
  },
  {
    name: "slot id 2^16 - 1 (the largest the descriptor holds)",
    fault: /descriptor names slot 65535, the slab has \d+/,
    async run(e) {
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: 100, flags: DESC_FLAG_SLOT, slot: 0xffff, gen: 1 });
    },
  },
  {
    name: "a generation the slot does not have",
    fault: /descriptor names slot 0 generation 6, slot is in state 2 generation 5/,
    async run(e) {
      e.setTxSlotState(0, SLOT_SENT, 5);
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: 100, flags: DESC_FLAG_SLOT, slot: 0, gen: 6 });
    },
  },
  {
    name: "a slot descriptor replayed (its slot marked sent again, same generation: stale)",
    fault: /slot \d+ generation \d+ is stale: that message was delivered already/,
    async run(e, v) {
      await v.slotExchange();
      const { slot, gen } = e.lastSlotRef();
      e.setTxSlotState(slot, SLOT_SENT, gen);
      e.replayLast();
    },
  },
  {
    name: "body length past the slot",
    fault: /4097 bytes do not fit slot 0 of 4096/,
    async run(e) {
      const gen = e.txSlotGen(0) + 1;
      e.setTxSlotState(0, SLOT_SENT, gen);
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: 4097, flags: DESC_FLAG_SLOT, slot: 0, gen });
    },
  },
  {
    name: "body length 2^32 - 1 in a slot",
    fault: /4294967295 bytes do not fit slot 0 of 4096/,
    async run(e) {
      const gen = e.txSlotGen(0) + 1;
      e.setTxSlotState(0, SLOT_SENT, gen);
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: -1, flags: DESC_FLAG_SLOT, slot: 0, gen });
    },
  },
  {
    name: "inline lengths past the descriptor",
    fault: /inline message of 24\+33 bytes exceeds 56/,
    async run(e) {
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: 33 });
    },
  },
  {
    name: "inline body length 2^16 - 1 (the largest the descriptor holds)",
    fault: /inline message of 24\+65535 bytes exceeds 56/,
    async run(e) {
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: -1 });
    },
  },
  {
    name: "slot message head past its 48 bytes",
    fault: /descriptor head of 49 bytes exceeds 48/,
    async run(e) {
      e.publish({ headLen: 49, bodyLen: 100, flags: DESC_FLAG_SLOT, slot: 0, gen: 1 });
    },
  },
  {
    name: "unknown descriptor flags",
    fault: /descriptor flags 0x80 are not known/,
    async run(e) {
      e.publish({ headLen: wire.WIRE_HEADER_BYTES, bodyLen: 0, flags: 0x80 });
    },
  },
];

/** A well-behaved client calling an echo server every few ms throughout; every answer is checked. */
export class GoodClient {
  ok = 0;
  readonly failures: string[] = [];
  private stopped = false;
  private readonly done: Promise<void>;
  constructor(private readonly c: RpcClient<{}>) {
    this.done = this.loop();
  }
  private async loop(): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const data = new Uint8Array([i & 0xff, (i >> 8) & 0xff, 42]);
      try {
        const r = await this.c.request(M_ECHO, data, { timeoutMs: 5000 });
        if (r.length === 3 && r[0] === data[0] && r[1] === data[1] && r[2] === 42) this.ok++;
        else this.failures.push(`call ${i}: wrong bytes ${[...r]}`);
      } catch (e) {
        this.failures.push(`call ${i}: ${(e as Error).message}`);
      }
      await Bun.sleep(GOOD_CALL_GAP_MS);
    }
  }
  /** Resolves after the next answer this client gets right (a watchdog fails a stall). */
  async nextCall(): Promise<void> {
    const before = this.ok;
    await until(() => this.ok > before || this.failures.length > 0, "answer to the well-behaved client");
  }
  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
    this.c.close();
  }
}

/** A new client connects to `url`, gets one echo right and closes; throws otherwise. */
export async function newClientCalls(url: string): Promise<void> {
  const c = await rpcConnect(url, { connectTimeoutMs: 5000 });
  try {
    const r = await c.request(M_ECHO, new Uint8Array([9, 8, 7]), { timeoutMs: 5000 });
    if (r.length !== 3 || r[0] !== 9 || r[1] !== 8 || r[2] !== 7) throw new Error(`new client: wrong echo ${[...r]}`);
  } finally {
    c.close();
  }
}

/** Not an attack that ends the session: nothing re-reads the header after setup. */
export const HEADER_REWRITE = "the segment header rewritten after setup";

if (import.meta.main) {
  const serving = await serve(
    process.argv[2]!,
    {
      [M_ECHO]: (h) => h.data,
      [M_NEVER]: () => new Promise<Uint8Array>(() => {}),
    },
    {
      onSessionClose: (_s, e) => console.log(JSON.stringify({ closed: e?.name ?? null, message: e?.message ?? null, sessions: serving.server.sessions.size })),
    },
  );
  console.log(JSON.stringify({ url: serving.url, pid: process.pid }));
  exitWhenParentGoes(() => serving.close());
}
