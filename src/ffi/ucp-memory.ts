/**
 * Registered memory for one-sided access (ucp_mem_map / ucp_rkey_pack / ucp_mem_unmap), made
 * by UcpContext.memMap (ucp.ts).
 *
 * Ownership: the memory is a JS ArrayBuffer that UCX only registers (never
 * UCP_MEM_MAP_ALLOCATE), so close() deregisters it and nothing else: `view` stays valid memory
 * for as long as JS holds it, and the GC frees it when the last view goes. A view that outlives
 * the registration (a region kept after its connection closed) reads what was last written
 * instead of faulting.
 * UcpContext.memRegister registers memory the caller already has (a kv arena: an ArrayBuffer
 * or a huge-page mapping) the same way, with no allocation: this object keeps a reference to
 * the view, so the JS memory stays alive while it is registered.
 * Thread: the context's.
 *
 *   const mem = ctx.memMap(4096);  mem.view.fill(0);  send(mem.packRkey());  mem.close();
 *   const arena = ctx.memRegister(store.arena);  // the same bytes, registered in place
 */

import { ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import { check, lib, Out, Struct, UcxError } from "./ucp-lib.ts";
import { off, size, UCP } from "./ucp-layout.ts";

/** Registration pins whole pages: registered memory starts on a page of its own. */
const PAGE_BYTES = 4096;

export class UcpMemory {
  private memh: number;
  readonly address: number;
  readonly lenBytes: number;

  private constructor(
    private readonly ctxHandle: number,
    memh: number,
    private readonly registrations: { live: number },
    /** The registered bytes. */
    readonly view: Uint8Array,
  ) {
    this.memh = memh;
    this.address = Number(ptr(view));
    this.lenBytes = view.length;
  }

  /**
   * Allocates `lenBytes` of JS memory (an ArrayBuffer of its own: a small typed array's storage
   * could move) starting on a page boundary, and registers it with the context `ctxHandle`;
   * `registrations.live` counts it until close().
   */
  static map(ctxHandle: number, lenBytes: number, registrations: { live: number }): UcpMemory {
    const backing = new ArrayBuffer(lenBytes + PAGE_BYTES);
    const start = (PAGE_BYTES - (Number(ptr(new Uint8Array(backing))) % PAGE_BYTES)) % PAGE_BYTES;
    return UcpMemory.register(ctxHandle, new Uint8Array(backing, start, lenBytes), registrations);
  }

  /**
   * Registers `view`'s bytes as they are (ucp_mem_map with UCP_MEM_MAP_PARAM_FIELD_ADDRESS and
   * no UCP_MEM_MAP_ALLOCATE flag: UCX allocates nothing and never frees the memory); the object
   * keeps `view` reachable until the GC drops the object, so the memory outlives the
   * registration. `view` must not be empty and must be over an ArrayBuffer (or a mapping) whose
   * storage never moves: its `.buffer` is touched first, which pins a small typed array's bytes.
   */
  static register(ctxHandle: number, view: Uint8Array, registrations: { live: number }): UcpMemory {
    const lenBytes = view.length;
    if (lenBytes === 0) throw new UcxError("ucp_mem_map (empty memory)", UCP.UCS_ERR_INVALID_PARAM);
    void view.buffer; // a GC-heap typed array moves its bytes out of line once; never after
    const params = new Struct(size("ucp_mem_map_params_t"))
      .u64(off("ucp_mem_map_params_t.field_mask"), UCP.UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP.UCP_MEM_MAP_PARAM_FIELD_LENGTH)
      .ptrAt(off("ucp_mem_map_params_t.address"), ptr(view))
      .u64(off("ucp_mem_map_params_t.length"), lenBytes);
    const memh = new Out();
    check("ucp_mem_map", lib().ucp_mem_map(ctxHandle as Pointer, params.p, memh.p));
    registrations.live++;
    return new UcpMemory(ctxHandle, memh.value, registrations, view);
  }

  get closed(): boolean {
    return this.memh === 0;
  }

  /** The packed remote key a peer needs to reach this memory (a copy the caller owns). */
  packRkey(): Uint8Array {
    if (this.memh === 0) throw new UcxError("ucp_rkey_pack (memory already unmapped)", UCP.UCS_ERR_INVALID_PARAM);
    const buf = new Out();
    const len = new Out();
    check("ucp_rkey_pack", lib().ucp_rkey_pack(this.ctxHandle as Pointer, this.memh as Pointer, buf.p, len.p));
    const out = new Uint8Array(toArrayBuffer(buf.value as Pointer, 0, len.value)).slice();
    lib().ucp_rkey_buffer_release(buf.value as Pointer);
    return out;
  }

  /** Deregisters the memory (peers lose access); `view` stays valid. Twice is safe. */
  close(): void {
    if (this.memh === 0) return;
    const memh = this.memh;
    this.memh = 0;
    this.registrations.live--;
    check("ucp_mem_unmap", lib().ucp_mem_unmap(this.ctxHandle as Pointer, memh as Pointer));
  }
}
