/**
 * Counts the timers a piece of code creates: globalThis.setTimeout is wrapped while `run` runs
 * (each call counted, then passed on) and put back afterwards, also when `run` throws.
 */
export async function countTimeouts(run: () => Promise<void>): Promise<number> {
  const real = globalThis.setTimeout;
  let created = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    created++;
    return real(...args);
  }) as typeof setTimeout;
  try {
    await run();
  } finally {
    globalThis.setTimeout = real;
  }
  return created;
}
