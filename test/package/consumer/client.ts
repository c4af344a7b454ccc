/**
 * The consumer's client: `bun client.ts <main url> <hot url>`. Uses the public API a service
 * uses (typed service, hot path, errors, auth, fallback, RMA over ucx), checks every answer,
 * prints "ok <scheme>" and exits by itself (everything it opened is closed).
 */
import {
  AuthError,
  bindService,
  Client,
  ConnectError,
  connect,
  HotpathError,
  parseUrl,
  RemoteError,
  registerError,
  rpcConnect,
  SEND_OK,
  TimeoutError,
  TransportClosedError,
  transports,
  UsageError,
  type CasResult,
  type ChosenConnection,
  type ConnectOptions,
  type OnResponse,
  type RemoteRegion,
  type UcxConnection,
} from "hotpath";
import * as hotpath from "hotpath";
import { HOT_ECHO, HOT_LATER, Kv, OUT_OF_STOCK, OutOfStock, TOKEN } from "./service.js";

function check(ok: boolean, what: string): void {
  if (!ok) {
    console.error(`consumer check failed: ${what}`);
    process.exit(1);
  }
}

async function rejects(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  return null;
}

const mainUrl = process.argv[2]!;
const hotUrl = process.argv[3]!;
const scheme = parseUrl(mainUrl).protocol.slice(0, -1);
check((await transports()).some((t) => t.scheme === scheme && t.unavailableReason === null), `${scheme} is available`);
registerError(OutOfStock, { name: OUT_OF_STOCK });
// Error names are class names: a bundle must not have renamed them.
for (const [name, value] of Object.entries(hotpath)) {
  if (typeof value === "function" && value.prototype instanceof Error) check(value.name === name, `class ${name} is named ${value.name}`);
}

// ---------------------------------------------------------------- typed service, convenient path
const rma: ConnectOptions = scheme === "ucx" ? { ucx: { rma: true } } : {};
const client = await rpcConnect(mainUrl, { service: Kv, fallback: [], timeoutMs: 10_000, ...rma });
check(client.via.chosen === mainUrl, `via.chosen ${client.via.chosen}`);
const got = await client.svc.get({ key: 7n, shard: 3, tag: new Uint8Array([1, 2, 3, 4]) }, { timeoutMs: 5000 });
check(got.value === "v7/3" && got.tag.join() === "1,2,3,4", `get: ${JSON.stringify(got)}`);
check((await client.svc.echo(new Uint8Array([9, 8, 7]))).join() === "9,8,7", "echo");
check((await client.svc.slow(new Uint8Array([5]))).join() === "5", "a reply that arrives while idle");

const failed = await rejects(client.svc.fail(new Uint8Array(0)));
check(failed instanceof OutOfStock && failed instanceof RemoteError && failed.message === "no widgets left", `registered error class: ${String(failed)}`);
const badStruct = await rejects(client.svc.get({ key: 1n, shard: 300, tag: new Uint8Array(4) }));
check(badStruct instanceof UsageError && /shard/.test(badStruct.message), `struct range: ${String(badStruct)}`);
const late = await rejects(client.svc.never(new Uint8Array(0), { timeoutMs: 50 }));
check(late instanceof TimeoutError, `deadline: ${String(late)}`);
const unknown = await rejects(client.request(999, new Uint8Array(1)));
check(unknown instanceof RemoteError && unknown.remoteName === "UnknownMethodError", `unknown method: ${String(unknown)}`);
check((await client.svc.reported(new Uint8Array(0))).includes("handler"), "the server's onError saw the handler's throw");

// ---------------------------------------------------------------- hot path: call / poll / onResponse / wait
const answers: number[] = [];
const onResponse: OnResponse<number> = (userData, data, error) => {
  check(error === null && data.length === 32 && data[0] === userData, `hot-path response ${userData}`);
  answers.push(userData);
};
client.onResponse = onResponse;
for (let i = 0; i < 16; i++) check(client.call(2, new Uint8Array(32).fill(i), i) === SEND_OK, `call ${i}`);
while (answers.length < 16) {
  client.poll(); // delivers completions inline
  if (answers.length < 16) await client.wait(100); // lets responses arrive
}
check(answers.length === 16, "16 hot-path responses");

// ---------------------------------------------------------------- RMA over ucx
if (scheme === "ucx") {
  const descriptor = await client.svc.region(new Uint8Array(0));
  const remote: RemoteRegion = (client.conn as UcxConnection).attachRegion(descriptor);
  check((await remote.get(0, 16)).every((b) => b === 7), "rma get");
  await remote.put(8, new Uint8Array(8).fill(1));
  const cas: CasResult = await remote.cas(8, 0x0101010101010101n, 42n);
  check(cas.swapped && cas.value === 0x0101010101010101n, `rma cas ${JSON.stringify({ swapped: cas.swapped, value: String(cas.value) })}`);
  check((await remote.get(8, 8)).join() === "42,0,0,0,0,0,0,0", "rma get after cas");
}

// ---------------------------------------------------------------- raw connect, auth, Client, bindService
const secured = scheme !== "shm";
if (secured) {
  const wrong = await rejects(connect(hotUrl, { auth: { token: "not-the-token-not-the-token-000" }, fallback: [] }));
  check(wrong instanceof AuthError && wrong instanceof ConnectError, `wrong token: ${String(wrong)}`);
} else {
  const other = await rejects(connect(hotUrl, { expectUid: process.getuid!() + 1, fallback: [] }));
  check(other instanceof HotpathError, `expectUid of another user: ${String(other)}`);
}
const conn: ChosenConnection = await connect(hotUrl, secured ? { auth: { token: TOKEN } } : { expectUid: process.getuid!() });
const hot = new Client<string>(conn, { window: 8 });
check((await hot.request(HOT_ECHO, new Uint8Array([1, 2]))).join() === "1,2", "hot server echo");
check((await hot.request(HOT_LATER, new Uint8Array([1, 2, 3]))).join() === "3,2,1", "hot server detach + later reply");
const svcOverHot = bindService(hot, Kv);
const noMethod = await rejects(svcOverHot.echo(new Uint8Array(1)));
check(noMethod instanceof RemoteError && noMethod.remoteName === "UnknownMethodError", `hot server error reply: ${String(noMethod)}`);
const stats = await client.svc.refusals(new Uint8Array(0));
check(stats.accepted >= 1, `listener.stats.accepted ${stats.accepted}`);
if (secured) check(stats.refusedAuth >= 1 && stats.reasons.includes("auth:AuthError"), `listener refusals ${JSON.stringify(stats)}`);
hot.close();
const closed = await rejects(hot.request(HOT_ECHO, new Uint8Array(1)));
check(closed instanceof TransportClosedError, `request on a closed client: ${String(closed)}`);

// ---------------------------------------------------------------- fallback to a whole URL
const viaFallback = await connect("tcp://127.0.0.1:1", { fallback: [mainUrl], connectTimeoutMs: 2000, ...rma });
check(viaFallback.via.chosen === mainUrl && viaFallback.via.skipped.length === 1, `fallback: ${JSON.stringify(viaFallback.via.chosen)}`);
viaFallback.close();

client.close();
console.log(`ok ${scheme}`);
