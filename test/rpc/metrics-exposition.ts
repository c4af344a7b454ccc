/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for the metrics tests (client
 * recording, the `hotpath metrics` command, metricsHandler over HTTP).
 *
 * Strict means: the text ends with a newline; every line is blank, a comment, a `# HELP name
 * text` / `# TYPE name type` line (at most one of each per family, TYPE before the family's
 * samples) or a sample line `name{label="value",...} value` whose family has a TYPE; label names
 * are valid and not repeated, label values use only the \\ \" \n escapes; values are numbers or
 * +Inf / -Inf / NaN; no series appears twice. Histograms, per label set without `le`: buckets
 * in increasing `le`, cumulative, the last one le="+Inf" equal to `_count`, and a `_sum`.
 * Anything else throws an Error naming the line.
 *
 *   const { types, samples } = parseExposition(text);
 *   sampleValue(samples, "hotpath_rpc_calls_total", { role: "client", transport: "tcp", method: "1" });
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  /** TYPE per family name. */
  types: Map<string, string>;
  /** HELP text per family name (escapes undone). */
  helps: Map<string, string>;
  samples: Sample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const SAMPLE_LINE = new RegExp(`^(${NAME})(?:\\{([^]*)\\})? (\\S+)$`);
const META_LINE = new RegExp(`^# (HELP|TYPE) (${NAME})(?: ([^]*))?$`);
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,?)/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** A sample value: a decimal or exponent number, +Inf, -Inf or NaN. */
export function parseSampleValue(t: string): number {
  if (t === "+Inf") return Infinity;
  if (t === "-Inf") return -Infinity;
  if (t === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t)) throw new Error(`bad sample value ${JSON.stringify(t)}`);
  return Number(t);
}

function parseLabels(text: string, line: string): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  let rest = text;
  while (rest !== "") {
    const m = LABEL.exec(rest);
    if (m === null) throw new Error(`bad labels in ${JSON.stringify(line)}`);
    if (m[1]! in out) throw new Error(`label ${m[1]} twice in ${JSON.stringify(line)}`);
    out[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    rest = rest.slice(m[0].length);
    if (m[3] === "," && rest === "") throw new Error(`trailing comma in ${JSON.stringify(line)}`);
    if (m[3] === "" && rest !== "") throw new Error(`labels not separated by a comma in ${JSON.stringify(line)}`);
  }
  return out;
}

const seriesKey = (labels: Record<string, string>, without = ""): string =>
  JSON.stringify(Object.keys(labels).filter((k) => k !== without).sort().map((k) => [k, labels[k]]));

/** Parses `text` strictly (see the module comment); throws an Error naming the first violation. */
export function parseExposition(text: string): Exposition {
  if (text !== "" && !text.endsWith("\n")) throw new Error("the exposition must end with a newline");
  const types = new Map<string, string>();
  const helps = new Map<string, string>();
  const sampled = new Set<string>();
  const series = new Set<string>();
  const samples: Sample[] = [];
  const familyOf = (name: string): string => {
    for (const suffix of ["_bucket", "_sum", "_count"]) {
      if (name.endsWith(suffix) && types.get(name.slice(0, -suffix.length)) === "histogram") return name.slice(0, -suffix.length);
    }
    return name;
  };
  for (const line of text.split("\n").slice(0, -1)) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = META_LINE.exec(line);
      if (m === null) {
        if (/^#\s*(HELP|TYPE)\b/.test(line)) throw new Error(`malformed ${JSON.stringify(line)}`);
        continue; // a plain comment
      }
      const [, what, family, rest = ""] = m;
      if (what === "TYPE") {
        if (!TYPES.has(rest)) throw new Error(`bad type in ${JSON.stringify(line)}`);
        if (types.has(family!)) throw new Error(`second TYPE for ${family}`);
        if (sampled.has(family!)) throw new Error(`TYPE for ${family} after its samples`);
        types.set(family!, rest);
      } else {
        if (helps.has(family!)) throw new Error(`second HELP for ${family}`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ""))) throw new Error(`bad escape in ${JSON.stringify(line)}`);
        helps.set(family!, rest.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c)));
      }
      continue;
    }
    const m = SAMPLE_LINE.exec(line);
    if (m === null) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const family = familyOf(m[1]!);
    if (!types.has(family)) throw new Error(`sample ${m[1]} without a TYPE line for ${family} before it`);
    sampled.add(family);
    const s: Sample = { name: m[1]!, labels: parseLabels(m[2] ?? "", line), value: parseSampleValue(m[3]!) };
    const key = `${s.name}${seriesKey(s.labels)}`;
    if (series.has(key)) throw new Error(`duplicate series ${JSON.stringify(line)}`);
    series.add(key);
    samples.push(s);
  }
  for (const [family, type] of types) {
    if (type !== "histogram") continue;
    const groups = new Map<string, { les: number[]; counts: number[]; count?: number; sum?: number }>();
    const group = (labels: Record<string, string>) => {
      const k = seriesKey(labels, "le");
      let g = groups.get(k);
      if (g === undefined) groups.set(k, (g = { les: [], counts: [] }));
      return g;
    };
    for (const s of samples) {
      if (s.name === `${family}_bucket`) {
        if (s.labels.le === undefined) throw new Error(`${family}_bucket without le`);
        const g = group(s.labels);
        g.les.push(parseSampleValue(s.labels.le));
        g.counts.push(s.value);
      } else if (s.name === `${family}_count`) group(s.labels).count = s.value;
      else if (s.name === `${family}_sum`) group(s.labels).sum = s.value;
      else if (s.name === family) throw new Error(`histogram ${family} has a plain sample`);
    }
    for (const [k, g] of groups) {
      for (let i = 1; i < g.les.length; i++) {
        if (!(g.les[i]! > g.les[i - 1]!)) throw new Error(`${family} ${k}: le not increasing`);
        if (g.counts[i]! < g.counts[i - 1]!) throw new Error(`${family} ${k}: buckets not cumulative`);
      }
      if (g.les.length === 0 || g.les.at(-1) !== Infinity) throw new Error(`${family} ${k}: no le="+Inf" bucket last`);
      if (g.count !== g.counts.at(-1)) throw new Error(`${family} ${k}: _count ${g.count} is not the +Inf bucket's ${g.counts.at(-1)}`);
      if (g.sum === undefined) throw new Error(`${family} ${k}: no _sum`);
    }
  }
  return { types, helps, samples };
}

/** The value of the one sample named `name` with exactly `labels`, or undefined. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  const want = seriesKey(labels);
  return samples.find((s) => s.name === name && seriesKey(s.labels) === want)?.value;
}

/** The histogram `family`'s cumulative buckets for one label set (without le), in order. */
export function bucketsOf(samples: Sample[], family: string, labels: Record<string, string>): Array<{ le: number; count: number }> {
  const want = seriesKey(labels);
  return samples
    .filter((s) => s.name === `${family}_bucket` && seriesKey(s.labels, "le") === want)
    .map((s) => ({ le: parseSampleValue(s.labels.le!), count: s.value }));
}
