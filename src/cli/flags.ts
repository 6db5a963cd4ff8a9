/**
 * A small declarative flag parser shared by every command. Supports `--name value`,
 * `--name=value`, `-n value`, `-nvalue` for short flags, booleans (`--flag`,
 * `--flag=false`), repeatable flags, and `--` to end flags. Unknown flags fail
 * with USAGE_UNKNOWN_FLAG naming the flag: nothing is silently ignored.
 */
import { OcibuildError } from "../errors.js";

export interface FlagSpec {
  /** Long names without dashes; the first is the canonical key. */
  names: string[];
  /** Short single-letter aliases without the dash. */
  short?: string[];
  type: "string" | "boolean";
  repeatable?: boolean;
  description?: string;
  /** Shown in --help for string flags. */
  valueName?: string;
}

export interface ParsedFlags {
  /** Canonical name -> value(s). Repeatable flags are arrays. */
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function parseFlags(args: string[], specs: FlagSpec[]): ParsedFlags {
  const byLong = new Map<string, FlagSpec>();
  const byShort = new Map<string, FlagSpec>();
  for (const s of specs) {
    for (const n of s.names) byLong.set(n, s);
    for (const n of s.short ?? []) byShort.set(n, s);
  }
  const values: ParsedFlags["values"] = {};
  const positionals: string[] = [];
  const set = (spec: FlagSpec, v: string | boolean, shown: string) => {
    const key = spec.names[0]!;
    if (spec.repeatable) {
      const arr = (values[key] as string[] | undefined) ?? [];
      arr.push(String(v));
      values[key] = arr;
    } else {
      if (values[key] !== undefined && spec.type === "string" && values[key] !== v) {
        // Last one wins, as with docker's CLI, but we keep it simple and explicit.
      }
      values[key] = v;
    }
    void shown;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      const spec = byLong.get(name);
      if (!spec) throw new OcibuildError("USAGE_UNKNOWN_FLAG", `unknown flag: --${name}`, { hint: "run with --help to list the supported flags" });
      if (spec.type === "boolean") {
        if (eq >= 0) {
          const v = a.slice(eq + 1).toLowerCase();
          if (!["true", "false", "1", "0"].includes(v)) throw new OcibuildError("USAGE_BAD_VALUE", `flag --${name} takes true or false, not "${a.slice(eq + 1)}"`);
          set(spec, v === "true" || v === "1", a);
        } else set(spec, true, a);
        continue;
      }
      let v: string | undefined;
      if (eq >= 0) v = a.slice(eq + 1);
      else {
        v = args[++i];
        if (v === undefined) throw new OcibuildError("USAGE_MISSING_VALUE", `flag --${name} needs a value`);
      }
      set(spec, v, a);
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      const letter = a[1]!;
      const spec = byShort.get(letter);
      if (!spec) throw new OcibuildError("USAGE_UNKNOWN_FLAG", `unknown flag: -${letter}`, { hint: "run with --help to list the supported flags" });
      if (spec.type === "boolean") {
        if (a.length > 2) throw new OcibuildError("USAGE_BAD_VALUE", `flag -${letter} takes no value`);
        set(spec, true, a);
        continue;
      }
      let v: string | undefined = a.length > 2 ? a.slice(2).replace(/^=/, "") : args[++i];
      if (v === undefined) throw new OcibuildError("USAGE_MISSING_VALUE", `flag -${letter} needs a value`);
      set(spec, v, a);
      continue;
    }
    positionals.push(a);
  }
  return { values, positionals };
}

export function str(p: ParsedFlags, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}
export function bool(p: ParsedFlags, name: string): boolean {
  return p.values[name] === true;
}
export function list(p: ParsedFlags, name: string): string[] {
  const v = p.values[name];
  return Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
}

/** One line per flag: its spellings, its value and its description. */
export function flagLines(specs: FlagSpec[]): string[] {
  return specs.map((s) => {
    const names = [...(s.short ?? []).map((n) => `-${n}`), ...s.names.map((n) => `--${n}`)].join(", ");
    const val = s.type === "string" ? ` ${s.valueName ?? "VALUE"}` : "";
    return `  ${(names + val).padEnd(40)} ${s.description ?? ""}${s.repeatable ? " (repeatable)" : ""}`;
  });
}

/** A command's help: usage, flags (more titled sections after them), examples. */
export function helpText(usage: string, specs: FlagSpec[], examples: string[] = [], sections: [string, FlagSpec[]][] = []): string {
  const lines = [usage, "", "Flags:", ...flagLines(specs)];
  for (const [title, more] of sections) lines.push("", `${title}:`, ...flagLines(more));
  if (examples.length) lines.push("", "Examples:", ...examples.map((e) => `  ${e}`));
  return lines.join("\n") + "\n";
}

const DURATION_UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };

/** Go-style durations as kaniko takes them ("336h", "1h30m", "90s"), plus d and w; whole seconds. */
export function parseDuration(v: string, flag: string): number {
  const parts = [...v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== v) {
    throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} takes a duration like 336h, 1h30m or 7d, not "${v}"`);
  }
  return Math.round(parts.reduce((sum, p) => sum + Number(p[1]) * DURATION_UNITS[p[2]!]!, 0));
}

const SIZE_UNITS: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** A byte count as docker's --memory and --shm-size take it: 1073741824, 512m, 4g, 4GiB, 4gb (binary units). */
export function parseSize(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?) ?([kmgt]?)(?:i?b)?$/i.exec(v);
  const n = m ? Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!(n > 0) || !Number.isSafeInteger(n)) {
    throw new OcibuildError("USAGE_BAD_VALUE", `--${flag} takes a size like 4g, 512m or 1073741824, not "${v}"`, { details: { flag: `--${flag}` } });
  }
  return n;
}
