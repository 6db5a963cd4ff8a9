/**
 * What goes into a step's cache key, and nothing else. One function computes a key
 * from its inputs, on lookup and on store alike; the inputs are kept with each
 * entry so that a miss can be explained against the nearest previous entry.
 *
 * Filesystem steps (RUN, COPY, ADD, WORKDIR) chain on the content of the layers
 * below them (their ChainID), like BuildKit's content-addressed graph: a metadata
 * change (ENV, LABEL...) does not invalidate a later COPY that does not use it, and
 * a rebuilt step that produces the same bytes lets the next steps hit again.
 * Metadata steps chain on the previous step's key (they cost nothing to redo; the
 * key only serves the report).
 */
import { createHash } from "node:crypto";
import { isSealed, secretArgName } from "./redact.js";

/** Bump when the recipe changes, or when a fix makes a step produce other bytes from the same inputs: old entries then simply never match. */
export const KEY_VERSION = 4;

export interface KeyInputs {
  v: number;
  /** "linux/amd64". */
  platform: string;
  /** Filesystem steps: ChainID of the layers below ("" for none). Metadata steps: the previous step's key or the base's identity. */
  parent: string;
  /** The base the stage started from ("scratch", "image@sha256:..."), for the report only: never part of the key (the parent carries the base's content, so the same base from another registry or name still hits). */
  base: string;
  /** The instruction after expansion (kind, flags, arguments). */
  instruction: string;
  /**
   * RUN: the shell, user, working directory, and every variable the command can see
   * (ENV and build args). A secret-looking variable's value is stored sealed (see
   * redact.ts), as is a secret build arg's value wherever it occurs in these inputs.
   */
  shell?: string[];
  user?: string;
  workdir?: string;
  env?: Record<string, string>;
  args?: Record<string, string>;
  network?: string;
  /** COPY/ADD from the context: path -> content hash (type, mode, link target, bytes; never mtime). */
  files?: Record<string, string>;
  /** COPY --from: the source stage's ChainID or the image's digest. */
  source?: string;
}

/** Canonical JSON: object keys sorted, so the same inputs always give the same bytes. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

export function cacheKey(inputs: KeyInputs): string {
  return createHash("sha256").update(canonicalJson({ ...inputs, base: undefined })).digest("hex");
}

function diffRecord(what: string, prev: Record<string, string> | undefined, cur: Record<string, string> | undefined): string | undefined {
  const a = prev ?? {};
  const b = cur ?? {};
  // A secret's value is never named, not even sealed (older entries may hold it in plain text).
  const hidden = (k: string) => secretArgName(k) || isSealed(a[k]) || isSealed(b[k]);
  for (const k of Object.keys(b).sort()) {
    if (!Object.hasOwn(a, k)) return hidden(k) ? `${what} ${k} added` : `${what} ${k} added (${JSON.stringify(b[k])})`;
    if (a[k] !== b[k]) return hidden(k) ? `${what} ${k} changed (value hidden)` : `${what} ${k} changed (${JSON.stringify(a[k])} -> ${JSON.stringify(b[k])})`;
  }
  for (const k of Object.keys(a).sort()) if (!Object.hasOwn(b, k)) return `${what} ${k} removed`;
  return undefined;
}

function diffFiles(prev: Record<string, string> | undefined, cur: Record<string, string> | undefined): string | undefined {
  const a = prev ?? {};
  const b = cur ?? {};
  const changed: string[] = [];
  for (const k of Object.keys(b).sort()) {
    if (!Object.hasOwn(a, k)) changed.push(`${k} added`);
    else if (a[k] !== b[k]) changed.push(`${k} changed`);
  }
  for (const k of Object.keys(a).sort()) if (!Object.hasOwn(b, k)) changed.push(`${k} removed`);
  if (changed.length === 0) return undefined;
  return changed.length <= 3 ? changed.join(", ") : `${changed.slice(0, 3).join(", ")} and ${changed.length - 3} more`;
}

/**
 * Why `cur` missed, in words, compared with the nearest previous entry for the
 * same step (`prev`), or undefined when no difference in the step's own inputs
 * explains it (the caller then says the parent changed).
 */
export function explainMiss(prev: KeyInputs, cur: KeyInputs): string {
  if (prev.v !== cur.v) return "cache format changed";
  if (prev.platform !== cur.platform) return `platform changed (${prev.platform} -> ${cur.platform})`;
  if (prev.instruction !== cur.instruction) return "instruction text changed";
  const own =
    diffFiles(prev.files, cur.files) ??
    diffRecord("build arg", prev.args, cur.args) ??
    diffRecord("ENV", prev.env, cur.env) ??
    (canonicalJson(prev.shell) !== canonicalJson(cur.shell) ? "SHELL changed" : undefined) ??
    (prev.user !== cur.user ? `USER changed (${prev.user ?? "root"} -> ${cur.user ?? "root"})` : undefined) ??
    (prev.workdir !== cur.workdir ? `WORKDIR changed (${prev.workdir} -> ${cur.workdir})` : undefined) ??
    (prev.network !== cur.network ? "network mode changed" : undefined) ??
    (prev.source !== cur.source ? "source stage or image changed" : undefined);
  if (own !== undefined) return own;
  if (prev.base !== cur.base) return `base image changed (${prev.base} -> ${cur.base})`;
  if (prev.parent !== cur.parent) return "parent step rebuilt";
  return "same inputs, entry unusable";
}
