/** Worker postMessage reference: echoes every message back to the parent. */
declare const self: Worker;
self.onmessage = (e: MessageEvent) => self.postMessage(e.data);
