/** Bun.spawn IPC peer: every message from the parent is sent straight back. */
process.on("message", (m) => process.send!(m));
