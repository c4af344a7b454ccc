/**
 * A kv server in a Worker (the inproc tests): post KvServerOptions; it posts {urls} back once
 * listening, or {error} when kvServe failed. The test terminates the Worker.
 */
import { kvServe } from "../../../src/kv/index.ts";

declare const self: Worker;
self.onmessage = async (e: MessageEvent) => {
  try {
    const s = await kvServe(e.data);
    self.postMessage({ urls: s.urls });
  } catch (err) {
    self.postMessage({ error: { name: (err as Error).name, message: (err as Error).message } });
  }
};
