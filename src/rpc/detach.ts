/**
 * Handlers that must get their request out of transport memory before they run: serve()
 * detaches the request of every `async function` handler and of every handler marked with
 * detachFirst() (a wrapper around an async one, as implement() makes), so views of `h.data`
 * they keep across an await stay valid.
 *
 * Example: serve(url, { 1: detachFirst((h) => later(h)) });
 */

const DETACH_FIRST = Symbol("hotpath.detachFirst");

/**
 * Marks a handler whose request must leave transport memory before it runs (it keeps views of
 * `h.data` across an await). serve() treats `async function` handlers this way by itself; a
 * wrapper around one (as implement() makes) marks itself with this.
 */
export function detachFirst<F extends Function>(fn: F): F {
  (fn as unknown as Record<symbol, boolean>)[DETACH_FIRST] = true;
  return fn;
}

/** True for `async function`s and for handlers marked with detachFirst(). */
export function wantsDetachFirst(fn: Function): boolean {
  return fn.constructor?.name === "AsyncFunction" || (fn as unknown as Record<symbol, boolean>)[DETACH_FIRST] === true;
}
