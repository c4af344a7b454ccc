/**
 * `bun stream-client.ts <url> <method>`: opens a stream on `method` of the server at `url`,
 * sends one message, prints {"ready": true} once the first message came back, then keeps the
 * stream open until it is killed (the peer-death tests kill it with SIGKILL). In a Worker it
 * is sent {url, method} and posts the same object.
 */
import { rpcConnect } from "../../src/index.ts";

async function run(url: string, method: number, report: (o: object) => void): Promise<void> {
  const client = await rpcConnect(url);
  const s = client.stream(method);
  await s.send(new Uint8Array([1, 2, 3]));
  await s.read();
  report({ ready: true });
  await new Promise(() => {});
}

declare const self: Worker;
if (import.meta.main) {
  await run(process.argv[2]!, Number(process.argv[3]), (o) => console.log(JSON.stringify(o)));
} else {
  self.onmessage = (e: MessageEvent) => void run(e.data.url, e.data.method, (o) => self.postMessage(o));
}
