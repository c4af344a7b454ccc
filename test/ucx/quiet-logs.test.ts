/**
 * UCX's own logging is quiet by default (issue 10, item 5): a ucx candidate that fails to
 * connect, with a fallback that then succeeds over tcp, leaves nothing but the program's own
 * output on stdout (UCX logs there by default) and nothing on stderr; a server whose clients
 * are killed mid-transfer prints nothing either. UCX_LOG_LEVEL set by the user is honoured,
 * from the environment and from process.env before hotpath loads libucp. Each case runs in a
 * child process: UCX's level is process-wide and libucs reads the environment once.
 */
import { expect, test } from "bun:test";

const INDEX = new URL("../../src/index.ts", import.meta.url).pathname;
/** A child's watchdog: a hang fails the test instead of holding it. */
const CHILD_TIMEOUT_MS = 20_000;

// Connects to a ucx port nothing listens on (a listener just closed), falling back to a real
// tcp listener; prints one JSON line with what connect chose and passed over.
const FALLBACK = (preamble: string) => `
${preamble}
const { connect, listen } = await import("${INDEX}");
const l = await listen("tcp://127.0.0.1:0");
const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
const dead = probe.port;
probe.stop(true);
const c = await connect("ucx://127.0.0.1:" + dead, { fallback: [l.url] });
console.log(JSON.stringify({ marker: "result", chosen: c.via.chosen, tcp: l.url, skipped: c.via.skipped.map((s) => s.url) }));
c.close();
l.close(true);
`;

function childEnv(level: string | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== "UCX_LOG_LEVEL") env[k] = v;
  if (level !== undefined) env.UCX_LOG_LEVEL = level;
  return env;
}

function runChild(script: string, level: string | undefined) {
  const r = Bun.spawnSync(["bun", "-e", script], { env: childEnv(level), timeout: CHILD_TIMEOUT_MS });
  const stdout = r.stdout.toString();
  const result = stdout
    .split("\n")
    .filter((l) => l.includes('"marker":"result"'))
    .map((l) => JSON.parse(l));
  return { exitCode: r.exitCode, stdout, stderr: r.stderr.toString(), result };
}

test("a failed ucx candidate followed by a tcp fallback prints nothing of UCX's (default level)", () => {
  const r = runChild(FALLBACK(""), undefined);
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  expect(r.result.length).toBe(1);
  const [out] = r.result;
  expect(out.chosen).toBe(out.tcp);
  expect(out.skipped.length).toBe(1);
  expect(out.skipped[0]).toMatch(/^ucx:\/\/127\.0\.0\.1:\d+$/);
  // Exactly the program's own line: no "UCX  ERROR ..." before or after it.
  expect(r.stdout).toBe(JSON.stringify(out) + "\n");
});

test("UCX_LOG_LEVEL=info set by the user: UCX's lines appear", () => {
  const r = runChild(FALLBACK(""), "info");
  expect(r.exitCode).toBe(0);
  expect(r.result.length).toBe(1);
  expect(r.stdout + r.stderr).toMatch(/UCX {2}INFO {2}Version \d+\.\d+/);
});

test("UCX_LOG_LEVEL=warn set by the user: the failed connect's UCX ERROR line appears", () => {
  const r = runChild(FALLBACK(""), "warn");
  expect(r.exitCode).toBe(0);
  expect(r.result.length).toBe(1);
  expect(r.stdout + r.stderr).toContain("UCX  ERROR");
});

test("UCX_LOG_LEVEL set through process.env before hotpath loads libucp is honoured too", () => {
  // libucs reads the real environment when it loads; process.env writes do not reach it.
  const r = runChild(FALLBACK(`process.env.UCX_LOG_LEVEL = "info";`), undefined);
  expect(r.exitCode).toBe(0);
  expect(r.result.length).toBe(1);
  expect(r.stdout + r.stderr).toMatch(/UCX {2}INFO {2}Version \d+\.\d+/);
});

// A ucx echo server; clients in their own processes send 1 MiB requests (rendezvous) and are
// killed while those move; the server then closes. Its whole output must be its ready line.
const SERVER = `
const { serve } = await import("${INDEX}");
const serving = await serve("ucx://127.0.0.1:0", { 1: (h) => h.data });
console.log(JSON.stringify({ url: serving.url }));
for await (const _ of Bun.stdin.stream()) {}
await serving.close();
process.exit(0);
`;
const CLIENT = `
const { rpcConnect } = await import("${INDEX}");
const c = await rpcConnect(process.argv[1]);
const req = new Uint8Array(1 << 20).fill(3);
for (let i = 0; i < 16; i++) c.request(1, req).catch(() => {});
console.log("sent");
setInterval(() => {}, 1000);
`;
/** Killed clients, and how long after sending each is killed (while its requests move). */
const KILLS = 3;
const KILL_AFTER_MS = 20;
/** Time for the server to see the deaths (its endpoints fail, their flushes time out). */
const SETTLE_MS = 1500;

for (const tls of ["tcp,self", "shm,self,tcp"]) {
  test(`a ucx server whose clients are killed prints nothing of UCX's (UCX_TLS=${tls})`, async () => {
    const env = { ...childEnv(undefined), UCX_TLS: tls };
    const server = Bun.spawn(["bun", "-e", SERVER], { stdin: "pipe", stdout: "pipe", stderr: "pipe", env });
    const watchdog = setTimeout(() => server.kill(9), CHILD_TIMEOUT_MS);
    const clients: number[] = [];
    try {
      const reader = server.stdout.getReader();
      const decoder = new TextDecoder();
      let out = "";
      while (!out.includes("\n")) {
        const chunk = await reader.read();
        if (chunk.done) break;
        out += decoder.decode(chunk.value, { stream: true });
      }
      const { url } = JSON.parse(out.split("\n")[0]!);
      for (let k = 0; k < KILLS; k++) {
        const c = Bun.spawn(["bun", "-e", CLIENT, url], { stdout: "pipe", stderr: "pipe", env });
        clients.push(c.pid);
        await c.stdout.getReader().read(); // "sent"
        await Bun.sleep(KILL_AFTER_MS);
        c.kill(9);
        await c.exited;
      }
      await Bun.sleep(SETTLE_MS);
      server.stdin.end();
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        out += decoder.decode(chunk.value, { stream: true });
      }
      expect(await server.exited).toBe(0);
      expect(await new Response(server.stderr).text()).toBe("");
      expect(out).toBe(JSON.stringify({ url }) + "\n");
    } finally {
      clearTimeout(watchdog);
      server.kill(9);
      for (const pid of clients) {
        try {
          process.kill(pid, 9);
        } catch {}
      }
    }
  }, CHILD_TIMEOUT_MS + 5000);
}
