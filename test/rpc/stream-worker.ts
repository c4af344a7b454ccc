/** The stream test service (stream-peer.ts) in a Worker: serves the URL it is sent, posts {url} when listening. */
import { startStreamService } from "./stream-peer.ts";

declare const self: Worker;
self.onmessage = async (e: MessageEvent) => {
  const serving = await startStreamService(e.data.url);
  self.postMessage({ url: serving.url });
};
