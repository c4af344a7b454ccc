/**
 * What `fn` threw, for a test that looks into the error (its class and message together);
 * throws "expected a throw" when `fn` returned.
 *
 *   expect(thrown(() => decode(bytes)).message).toContain("20 bytes");
 *
 * Thread: any.
 */
export function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a throw");
}
