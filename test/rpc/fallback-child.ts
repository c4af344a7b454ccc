/**
 * `bun fallback-child.ts URL FALLBACK_JSON`: connects through the fallback chain, prints
 * conn.via (urls and reasons) as one JSON line on stdout and exits; whatever it printed to
 * stderr is the parent's to read.
 */

import { connect } from "../../src/index.ts";

const conn = await connect(process.argv[2]!, { fallback: JSON.parse(process.argv[3]!), connectTimeoutMs: 2000 });
console.log(JSON.stringify({ chosen: conn.via.chosen, skipped: conn.via.skipped.map((s) => ({ url: s.url, reason: s.reason })) }));
conn.close();
process.exit(0);
