/**
 * `bun listen-child.ts URL [LISTEN_OPTIONS_JSON]`: listens on URL with the options, prints
 * {"url"} on stdout, closes the listener and exits; whatever the listener printed to stderr
 * is the parent's to read (the warning tests).
 */

import { listen } from "../../src/index.ts";

const listener = await listen(process.argv[2]!, process.argv[3] ? JSON.parse(process.argv[3]) : {});
console.log(JSON.stringify({ url: listener.url }));
listener.close(true);
