/** One line about the machine a benchmark ran on. */
import { cpus, release } from "node:os";

export function os(): string {
  const c = cpus();
  return `${c[0]?.model ?? "unknown CPU"}, ${c.length} cores, Linux ${release()}, Bun ${Bun.version}`;
}
