/**
 * Build args whose names look like secrets (PASSWORD, TOKEN, SECRET or KEY in any
 * case) are not shown or stored in plain text: everything a build shows (events,
 * step reports, miss reasons, errors, the metadata file) has their values masked as
 * `****`, and cache records hold them sealed as `[secret sha256:…]`, a hash of the
 * value, so that a key still changes with the value and a hit can put the value
 * back where the image history has it (as Docker keeps it there).
 *
 * In free text a value is replaced wherever it occurs, if it has at least 4
 * characters (a shorter one would garble every line that contains it); in the
 * key's variables (build args, ENV) a value under a secret-looking name is sealed
 * whatever its length or origin.
 */
import { createHash } from "node:crypto";
import { OcibuildError } from "../errors.js";

const SECRET_NAME = /PASSWORD|TOKEN|SECRET|KEY/i;
const MIN_MASKED_LENGTH = 4;
const MASK = "****";
const SEALED = /\[secret sha256:[0-9a-f]{16}\]/;

/** True for a variable name that looks like it holds a secret. */
export function secretArgName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/** True when `value` holds a sealed secret (as stored in a cache record). */
export function isSealed(value: string | undefined): boolean {
  return value !== undefined && SEALED.test(value);
}

function sealValue(value: string): string {
  return `[secret sha256:${createHash("sha256").update(value).digest("hex").slice(0, 16)}]`;
}

function replaceAll(text: string, pairs: readonly (readonly [string, string])[]): string {
  let out = text;
  for (const [from, to] of pairs) if (out.includes(from)) out = out.split(from).join(to);
  return out;
}

export class Redactor {
  /** Names of the secret-looking build args that have a value, sorted. */
  readonly names: readonly string[];
  /** [value, sealed form], longest value first (a secret that contains another is replaced whole). */
  private readonly values: readonly (readonly [string, string])[];

  constructor(buildArgs: Readonly<Record<string, string>> = {}) {
    const secret = Object.entries(buildArgs).filter(([k]) => secretArgName(k));
    this.names = secret.map(([k]) => k).sort();
    const values = [...new Set(secret.map(([, v]) => v).filter((v) => v.length >= MIN_MASKED_LENGTH))];
    this.values = values.sort((a, b) => b.length - a.length).map((v) => [v, sealValue(v)] as const);
  }

  /** `text` as it may be shown: every secret value replaced by ****. */
  mask(text: string): string {
    return replaceAll(text, this.values.map(([v]) => [v, MASK] as const));
  }

  /** `text` as it may be stored: every secret value replaced by its sealed form. */
  seal(text: string): string {
    return replaceAll(text, this.values);
  }

  /** The inverse of seal() for the values of this build. */
  unseal(text: string): string {
    return replaceAll(text, this.values.map(([v, s]) => [s, v] as const));
  }

  /** Variables as stored: a secret-looking name's value sealed whole, any other value sealed where it contains a secret. */
  sealVariables(vars: Readonly<Record<string, string>> | undefined): Record<string, string> | undefined {
    if (vars === undefined) return undefined;
    return Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, secretArgName(k) ? sealValue(v) : this.seal(v)]));
  }

  /** An error as it may be shown: an OcibuildError whose message, hint or snippet held a secret is re-made masked. */
  maskError(e: unknown): unknown {
    if (!(e instanceof Error) || this.values.length === 0) return e;
    const message = this.mask(e.message);
    if (!(e instanceof OcibuildError)) {
      if (message !== e.message) e.message = message;
      return e;
    }
    const hint = e.hint === undefined ? undefined : this.mask(e.hint);
    const snippet = e.snippet === undefined ? undefined : this.mask(e.snippet);
    if (message === e.message && hint === e.hint && snippet === e.snippet) return e;
    const { retryable, file, line, column, details, cause } = e;
    return new OcibuildError(e.code, message, { retryable, hint, file, line, column, snippet, details, cause });
  }

  /** A flat event or report object with every string (and string list) field masked. */
  maskFields<T extends object>(o: T): T {
    if (this.values.length === 0) return o;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) {
      out[k] = typeof v === "string" ? this.mask(v) : Array.isArray(v) ? v.map((x) => (typeof x === "string" ? this.mask(x) : x)) : v;
    }
    return out as T;
  }
}
