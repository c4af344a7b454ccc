/**
 * Checks of values that enter the RPC API (method ids, data, deadlines), each a UsageError
 * that names the value, and a safe description of any value for those messages.
 */

import { UsageError } from "../errors.ts";

/** UsageError unless `method` is an integer method id in 0..2^32-1. */
export function checkMethod(method: number, what: string): void {
  if (typeof method !== "number" || method >>> 0 !== method) {
    throw new UsageError(`${what}: method ${String(method)} is not an integer in 0..${2 ** 32 - 1}`);
  }
}

/** UsageError unless `data` is a Uint8Array (a Buffer is one). */
export function checkBytes(data: unknown, what: string): void {
  if (!(data instanceof Uint8Array)) throw new UsageError(`${what}: data must be a Uint8Array, got ${describeValue(data)}`);
}

/** A short description of a value for error messages: its type, and its constructor for objects. */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  try {
    if (Array.isArray(v)) return "an array";
  } catch {
    return "a value that cannot be inspected"; // a revoked Proxy
  }
  if (typeof v !== "object") return `a ${typeof v}`;
  let ctor: string | undefined;
  try {
    ctor = Object.getPrototypeOf(v)?.constructor?.name;
  } catch {
    ctor = undefined;
  }
  return ctor ? `an object (${ctor})` : "an object with a null prototype";
}

/** The deadline in ms (0: none); UsageError for anything but a number ≥ 0. */
export function checkTimeout(timeoutMs: unknown, what: string): number {
  if (typeof timeoutMs !== "number" || !(timeoutMs >= 0)) {
    throw new UsageError(`${what}: timeoutMs ${String(timeoutMs)} must be a number ≥ 0 (0 or Infinity: no deadline)`);
  }
  return timeoutMs === Infinity ? 0 : timeoutMs;
}
