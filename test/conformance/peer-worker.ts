/** The conformance test service in a Worker: serves the URL it is sent, posts {url} when listening. */
import { startTestService } from "./peer-server.ts";

declare const self: Worker;
self.onmessage = async (e: MessageEvent) => {
  const serving = await startTestService(e.data.url);
  self.postMessage({ url: serving.url });
};
