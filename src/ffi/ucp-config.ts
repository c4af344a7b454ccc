/**
 * The UCX configuration a hotpath context is made with (ucp_config_read, then hotpath's
 * defaults and the UCX_* variables of process.env applied on top). See UcpContext.create().
 */

import { ptr, type Pointer } from "bun:ffi";
import { setCEnvironment } from "./libc.ts";
import { applyUcxLogLevel, check, cString, lib, Out } from "./ucp-lib.ts";

/**
 * UCX settings hotpath changes from UCX's defaults, each unless the user's environment sets it:
 * - PROTO_INDIRECT_ID=on: a failed endpoint's requests complete (see UcpContext.create()).
 * - TCP_PUT_ENABLE=n: UCX 1.13's tcp transport aborts the process (tcp_ep.c assertion
 *   `UCT_TCP_EP_FLAG_PUT_TX_WAITING_ACK`) when peers die or leave during rendezvous puts; with
 *   puts off, rendezvous over tcp lanes uses its get/AM protocols instead.
 */
const DEFAULT_UCX_CONFIG: ReadonlyArray<{ env: string; key: string; value: string }> = [
  { env: "UCX_PROTO_INDIRECT_ID", key: "PROTO_INDIRECT_ID", value: "on" },
  // A transport setting goes to ucp_config_modify by its name inside the transport's table.
  { env: "UCX_TCP_PUT_ENABLE", key: "PUT_ENABLE", value: "n" },
];

/**
 * Settings UCX reads with getenv only (a connection manager's configuration is read when a
 * worker is made, not from the ucp_config), so they go to the C environment, the user's value
 * from process.env if there is one, else hotpath's default:
 * - TCP_CM_REUSEADDR=y: the sockaddr listener sets SO_REUSEADDR, as tcp:// (Bun.listen) does;
 *   without it a ucx server restarted on its port cannot listen while the old server's
 *   connections sit in TIME_WAIT ("Device is busy"). test/pool/restart.test.ts.
 */
const DEFAULT_UCX_ENVIRONMENT: ReadonlyArray<{ env: string; value: string }> = [{ env: "UCX_TCP_CM_REUSEADDR", value: "y" }];

/**
 * A ucp_config_t for the environment now (the caller releases it with ucp_config_release):
 * UCX's log level first (applyUcxLogLevel), DEFAULT_UCX_ENVIRONMENT into the C environment,
 * then DEFAULT_UCX_CONFIG and every UCX_* variable of process.env through ucp_config_modify.
 * Thread: the caller's (the one making the context).
 */
export function readUcxConfig(): number {
  const c = lib();
  applyUcxLogLevel();
  for (const { env, value } of DEFAULT_UCX_ENVIRONMENT) setCEnvironment(env, process.env[env] ?? value);
  const config = new Out();
  check("ucp_config_read", c.ucp_config_read(null, null, config.p));
  const cfg = config.value as Pointer;
  try {
    for (const { env, key, value } of DEFAULT_UCX_CONFIG) {
      if (process.env[env] === undefined) check(`ucp_config_modify(${key})`, c.ucp_config_modify(cfg, ptr(cString(key)), ptr(cString(value))));
    }
    // process.env as this thread sees it now: Bun does not pass later changes to the C
    // environment that ucp_config_read reads, so each UCX_* variable is applied by name (a
    // name UCX's configuration does not know, e.g. a global option, is left to UCX's getenv).
    for (const [name, value] of Object.entries(process.env)) {
      if (!name.startsWith("UCX_") || value === undefined) continue;
      c.ucp_config_modify(cfg, ptr(cString(name.slice(4))), ptr(cString(value)));
    }
  } catch (e) {
    c.ucp_config_release(cfg);
    throw e;
  }
  return config.value;
}
