/**
 * Test peer for connects to a ucx peer that never answers (a fixture): a bare UCP listener on
 * 127.0.0.1 that, with argv[2] "silent", accepts each client's endpoint and records what
 * arrives but never sends a byte of the handshake; with "deaf", never even accepts the
 * connection request. Its worker progresses on a timer (UCX runs the connection handler from
 * progress). Prints {"url"} when listening; exits when stdin closes.
 */
import { UcxRuntime } from "../../src/ucx/runtime.ts";
import { exitWhenParentGoes } from "../helpers/peer.ts";
import { rawUcxServer } from "./raw-handshake.ts";

/** Often enough that UCX's connection requests are taken promptly, rarely enough to cost nothing. */
const PROGRESS_EVERY_MS = 5;

const mode = process.argv[2];
if (mode !== "silent" && mode !== "deaf") throw new Error(`auth-silent-server: mode "${mode}" is not silent or deaf`);
const rt = UcxRuntime.acquire();
let url: string;
let stop: () => void;
if (mode === "silent") {
  const s = rawUcxServer(() => null);
  url = s.url;
  stop = () => s.stop();
} else {
  const listener = rt.worker.listen("127.0.0.1", 0, () => {});
  url = `ucx://127.0.0.1:${listener.port}`;
  stop = () => listener.close();
}
const timer = setInterval(() => rt.progress(), PROGRESS_EVERY_MS);
console.log(JSON.stringify({ url }));
exitWhenParentGoes(() => {
  clearInterval(timer);
  stop();
  rt.release();
});
