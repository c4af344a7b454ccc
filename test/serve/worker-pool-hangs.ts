/** Handlers module that never finishes loading (a fixture of worker-pool-crash.test.ts): a top-level await that never settles, a live timer. */
setInterval(() => {}, 1_000);
await new Promise(() => {});
export default {};
