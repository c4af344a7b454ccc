/** A handlers module whose default export is an async function making the handlers, once per Worker (a fixture). */
import { threadId } from "node:worker_threads";
export default async () => {
  await Bun.sleep(1);
  return { 1: () => new Uint8Array([threadId & 0xff, 42]) };
};
