/**
 * Instruction flags (`--from=x`, `--link`, `--mount=...` repeated) with
 * BuildKit's BFlags rules: `--` ends flags, unknown and duplicate flags are
 * errors, booleans take no value or true/false, strings need `=value`.
 */
import { LineParseError } from "./line-parsers.js";
import { suggest } from "./diagnostics.js";

export type FlagSpec = Readonly<Record<string, "bool" | "string" | "strings">>;

export interface ParsedFlags {
  strings: Record<string, string>;
  lists: Record<string, string[]>;
  bools: Record<string, boolean>;
  /** Names of the flags that were given. */
  used: Set<string>;
  /** Everything as a plain record: strings, lists, booleans as "true"/"false". */
  all: Record<string, string | string[]>;
}

export function parseFlags(instruction: string, raw: readonly string[], spec: FlagSpec): ParsedFlags {
  const out: ParsedFlags = { strings: {}, lists: {}, bools: {}, used: new Set(), all: {} };
  for (const a of raw) {
    if (a === "--") break;
    if (!a.startsWith("--")) throw new LineParseError("DOCKERFILE_FLAG", `arg should start with -- : ${a}`);
    const eq = a.indexOf("=");
    const flagName = eq < 0 ? a : a.slice(0, eq);
    const hasValue = eq >= 0;
    const value = hasValue ? a.slice(eq + 1) : "";
    const name = flagName.slice(2);
    if (!Object.hasOwn(spec, name)) {
      const known = Object.keys(spec);
      const near = suggest(name, known, true);
      throw new LineParseError("DOCKERFILE_UNKNOWN_FLAG", `unknown flag: ${flagName} for ${instruction.toUpperCase()}`, {
        hint:
          near !== undefined
            ? `did you mean --${near}?`
            : known.length > 0
              ? `${instruction.toUpperCase()} accepts ${known.map((k) => `--${k}`).join(", ")}`
              : `${instruction.toUpperCase()} takes no flags`,
      });
    }
    const type = spec[name]!;
    if (out.used.has(name) && type !== "strings") {
      throw new LineParseError("DOCKERFILE_FLAG", `duplicate flag specified: ${flagName}`);
    }
    out.used.add(name);
    switch (type) {
      case "bool": {
        if (hasValue && value === "") throw new LineParseError("DOCKERFILE_FLAG", `missing a value on flag: ${flagName}`);
        const v = value.toLowerCase();
        if (v !== "true" && v !== "" && v !== "false") {
          throw new LineParseError("DOCKERFILE_FLAG", `expecting boolean value for flag ${flagName}, not: ${value}`);
        }
        out.bools[name] = v !== "false";
        out.all[name] = v === "false" ? "false" : "true";
        break;
      }
      case "string":
        if (!hasValue) {
          throw new LineParseError("DOCKERFILE_FLAG", `missing a value on flag: ${flagName}`, { hint: `write ${flagName}=VALUE` });
        }
        out.strings[name] = value;
        out.all[name] = value;
        break;
      case "strings": {
        if (!hasValue) {
          throw new LineParseError("DOCKERFILE_FLAG", `missing a value on flag: ${flagName}`, { hint: `write ${flagName}=VALUE` });
        }
        const list = (out.lists[name] ??= []);
        list.push(value);
        out.all[name] = list;
        break;
      }
    }
  }
  return out;
}

const UNIT_NS: Record<string, number> = {
  ns: 1,
  us: 1e3,
  "µs": 1e3,
  "μs": 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's time.ParseDuration, in nanoseconds (a float; precision is not a concern here). */
export function parseGoDuration(s: string): number | undefined {
  let rest = s;
  let sign = 1;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    if (rest[0] === "-") sign = -1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") return undefined;
  let total = 0;
  while (rest !== "") {
    const m = /^([0-9]*)(\.[0-9]*)?/.exec(rest)!;
    if (m[0] === "" || m[0] === ".") return undefined;
    rest = rest.slice(m[0].length);
    const u = /^[^0-9.]+/.exec(rest);
    if (u === null) return undefined;
    const unit = UNIT_NS[u[0]];
    if (unit === undefined) return undefined;
    rest = rest.slice(u[0].length);
    total += Number(`${m[1] || "0"}${m[2] ?? ""}`) * unit;
  }
  return sign * total;
}
