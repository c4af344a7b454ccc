/**
 * A TCP port on 127.0.0.1 whose connects never complete: a listening socket with backlog 0
 * that never accepts, its accept queue filled first, so the kernel drops further SYNs. Run in
 * a python3 child (Bun's listeners always accept); killed by pid on close().
 */

export async function tcpBlackhole(): Promise<{ host: string; port: number; close(): void }> {
  const script = `
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
port = s.getsockname()[1]
fill = []
for _ in range(8):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", port))
    except BlockingIOError: pass
    fill.append(c)
time.sleep(0.2)
print(port, flush=True)
sys.stdin.read()
`;
  const proc = Bun.spawn(["python3", "-c", script], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("blackhole helper exited before reporting its port");
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return {
    host: "127.0.0.1",
    port: Number(text.trim()),
    close() {
      proc.kill(9);
    },
  };
}
