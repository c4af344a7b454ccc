/** A handlers module that throws at load while the flag file flakyFlag() (per process) exists (a fixture). */
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The flag file of this process (a Worker's process.pid is its process's). */
export const flakyFlag = (): string => join(tmpdir(), `hotpath-wp-flaky-${process.pid}`);

if (existsSync(flakyFlag())) throw new Error("the flag file says fail");
export default { 1: (h: { data: Uint8Array }) => h.data };
