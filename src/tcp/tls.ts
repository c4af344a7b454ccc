/**
 * TLS for the tcp transport (control path), through Bun's own TLS: which URLs and options mean
 * TLS, the options checked and turned into Bun's, and TLS handshake failures turned into text a
 * caller can act on.
 *
 * `tcps://` and `tls://` URLs always use TLS; a `tcp://` URL uses TLS when `tls` options are
 * given (as the contract's option docs say). A listener needs `tls.cert` and `tls.key`; its
 * `tls.ca` is handed to Bun (chain building), and client certificates are not requested. A
 * client verifies the server's certificate against the system's CAs plus `tls.ca`, and its name
 * against `tls.serverName` (default: the URL's host; an IP address is matched against the
 * certificate's IP SANs). The hotpath hello and the token proofs travel inside TLS.
 *
 * Every function here is pure (options in, options or text out): any thread.
 *
 * Example:
 *   const tls = listenTls(url, opts.tls);        // null for a plain listener; UsageError if incomplete
 *   Bun.listen({ hostname, port, tls: tls ?? undefined, socket });
 */

import { UsageError } from "../errors.ts";
import type { TlsConnectOptions, TlsListenOptions } from "../contract/transport.ts";

/** The schemes the tcp transport registers; every one but "tcp" means TLS. */
export const TCP_SCHEMES = ["tcp", "tcps", "tls"] as const;

/** Whether the URL's scheme alone asks for TLS (`tcps:` or `tls:`). */
export function isTlsScheme(url: URL): boolean {
  return url.protocol !== "tcp:";
}

type Pem = string | Uint8Array;

function pem(where: string, name: string, v: unknown, required: boolean): Pem | undefined {
  if (v === undefined && !required) return undefined;
  if (typeof v === "string" || v instanceof Uint8Array) return v;
  throw new UsageError(`${where}: tls.${name} must be PEM text (a string or a Uint8Array), got ${v === null ? "null" : typeof v}`);
}

function caList(where: string, v: unknown): Pem | Pem[] | undefined {
  if (!Array.isArray(v)) return pem(where, "ca", v, false);
  return v.map((x, i) => pem(where, `ca[${i}]`, x, true)!);
}

function checkObject(where: string, v: unknown): Record<string, unknown> {
  if (typeof v !== "object" || v === null) throw new UsageError(`${where}: tls must be an object, got ${v === null ? "null" : typeof v}`);
  return v as Record<string, unknown>;
}

/**
 * Bun's TLS options for a listener, or null for a plain one; UsageError for a TLS URL without
 * cert and key, or mistyped options. The PEM values are passed on as given (not copied).
 */
export function listenTls(url: URL, tls: TlsListenOptions | undefined): { cert: Pem; key: Pem; ca?: Pem | Pem[] } | null {
  const where = `tcp listen ${url.href}`;
  if (tls === undefined) {
    if (isTlsScheme(url)) throw new UsageError(`${where}: a ${url.protocol}// listener needs tls: { cert, key } (PEM)`);
    return null;
  }
  const o = checkObject(where, tls);
  const ca = caList(where, o.ca);
  return { cert: pem(where, "cert", o.cert, true)!, key: pem(where, "key", o.key, true)!, ...(ca === undefined ? {} : { ca }) };
}

/** Bun's TLS options for a connect (verification always on), or null for a plain one; UsageError for mistyped options. */
export function connectTls(url: URL, tls: TlsConnectOptions | undefined): { ca?: Pem | Pem[]; serverName?: string; rejectUnauthorized: true } | null {
  if (tls === undefined && !isTlsScheme(url)) return null;
  const where = `tcp connect ${url.href}`;
  const o = tls === undefined ? {} : checkObject(where, tls);
  const ca = caList(where, o.ca);
  if (o.serverName !== undefined && (typeof o.serverName !== "string" || o.serverName === "")) {
    throw new UsageError(`${where}: tls.serverName must be a non-empty string, got ${JSON.stringify(o.serverName)}`);
  }
  return {
    rejectUnauthorized: true,
    ...(ca === undefined ? {} : { ca }),
    ...(o.serverName === undefined ? {} : { serverName: o.serverName as string }),
  };
}

/** An error Bun threw for PEM it could not load (a caller's bad cert, key or CA). */
export function isPemError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_OSSL");
}

/** Certificate verification failures (OpenSSL's X509_V_ERR names as Node reports them). */
const VERIFY_CODES = /CERT|ISSUER|SELF_SIGNED|UNABLE_TO_VERIFY|CHAIN/;

/**
 * A failed TLS handshake in words that follow "tcp connect <url>: " (role "connect") or
 * "tcp listener <url>: client <peer> " (role "accept"), with what to do about it.
 */
export function tlsFailureText(role: "connect" | "accept", error: unknown, serverName: string): string {
  const e = error as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  const message = typeof e?.message === "string" ? e.message : String(error);
  const detail = code ? `${code}: ${message}` : message;
  const plain = /WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|PACKET_LENGTH_TOO_LONG/.test(message);
  const disconnected = code === "ECONNRESET" || /disconnected before secure TLS/.test(message);
  if (role === "accept") {
    if (plain) return `failed the TLS handshake: it does not speak TLS (a plain tcp:// client?) (${detail})`;
    if (disconnected) return `closed the connection during the TLS handshake (a client that does not trust this listener's certificate?) (${detail})`;
    return `failed the TLS handshake (${detail})`;
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return `TLS handshake failed: the server's certificate does not carry the name "${serverName}"; connect by a name it carries or set tls.serverName (${detail})`;
  }
  if (VERIFY_CODES.test(code)) return `TLS handshake failed: the server's certificate did not verify; trust the CA that signed it with tls.ca (${detail})`;
  if (plain) return `TLS handshake failed: the peer does not speak TLS (a plain tcp:// listener?) (${detail})`;
  if (disconnected) return `TLS handshake failed: the peer closed the connection during the TLS handshake (a listener at its connection limit closes TLS clients at once) (${detail})`;
  return `TLS handshake failed (${detail})`;
}
