/**
 * The lines of this process's stdin, as they arrive (without the newline), ending at EOF: how a
 * test's peer process takes commands from its parent.
 *
 *   for await (const line of stdinLines()) if (line === "quit") break;
 *
 * Thread: the main thread of a peer process; read stdin through this only.
 */
export async function* stdinLines(): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of Bun.stdin.stream()) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
}
