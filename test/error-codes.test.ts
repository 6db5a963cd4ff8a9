import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, type ErrorCode, errorCodeInfo } from "../src/error-codes.js";
import { OcibuildError } from "../src/errors.js";
import { renderError } from "../src/cli/errors.js";
import type { CliIO } from "../src/cli/io.js";

const ROOT = join(import.meta.dirname, "..");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sourceFiles(join(dir, d.name)) : d.name.endsWith(".ts") ? [join(dir, d.name)] : [],
  );
}

/** Every quoted code in src that is not only compared against (`=== "X"`, `!== "X"`), i.e. made somewhere. */
function codesMadeInSource(): Set<string> {
  const made = new Set<string>();
  for (const f of sourceFiles(join(ROOT, "src"))) {
    if (f.endsWith("error-codes.ts")) continue;
    const text = readFileSync(f, "utf8");
    for (const m of text.matchAll(/(===|!==)?\s*"([A-Z][A-Z0-9_]*)"/g)) if (m[1] === undefined) made.add(m[2]!);
  }
  return made;
}

const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

function exitStatusOf(e: unknown): { status: number; stderr: string } {
  let stderr = "";
  const io = { stderr: { write: (s: string) => ((stderr += s), true) } } as unknown as CliIO;
  return { status: renderError(e, io), stderr };
}

describe("the error-code table", () => {
  it("lists only codes that the source makes somewhere", () => {
    const made = codesMadeInSource();
    expect(CODES.filter((c) => !made.has(c))).toEqual([]);
  });

  it("lists every code the docs name", () => {
    // Upper-case names in the docs that are not ocibuild error codes: variables, capabilities, schemas, warnings.
    const notCodes = new Set(["BUILDKIT_HOST", "BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE", "COSIGN_PASSWORD", "NODE_EXTRA_CA_CERTS", "CAP_NET_RAW", "EVENT_SCHEMAS", "ERROR_CODES", "SOURCE_DATE_EPOCH", "XDG_CACHE_HOME", "DOCKERFILE_ARG_NAME_VARIABLE", "DOCKERFILE_JSON_TRAILING"]);
    const named = new Set<string>();
    for (const doc of ["README.md", "docs/cli.md", "docs/library.md"]) {
      const text = readFileSync(join(ROOT, doc), "utf8");
      for (const m of text.matchAll(/error\[([A-Z][A-Z0-9_]*)\]/g)) if (m[1] !== "CODE") named.add(m[1]!);
      for (const m of text.matchAll(/`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`/g)) if (!notCodes.has(m[1]!)) named.add(m[1]!);
    }
    expect(named.size).toBeGreaterThan(10);
    expect([...named].filter((c) => !(c in ERROR_CODES))).toEqual([]);
  });

  it("gives usage errors (USAGE, USAGE_*) exit status 2 and every other code 1, as the CLI always has", () => {
    for (const code of CODES) expect([code, ERROR_CODES[code].exit]).toEqual([code, code === "USAGE" || code.startsWith("USAGE_") ? 2 : 1]);
  });

  it("is what the CLI's exit status follows", () => {
    expect(exitStatusOf(new OcibuildError("USAGE", "bad")).status).toBe(2);
    expect(exitStatusOf(new OcibuildError("USAGE_UNKNOWN_FLAG", "flag --nope")).status).toBe(2);
    expect(exitStatusOf(new OcibuildError("USAGE_BAD_VALUE", "bad value")).status).toBe(2);
    expect(exitStatusOf(new OcibuildError("DOCKERFILE_SYNTAX", "Dockerfile:1: bad")).status).toBe(1);
    expect(exitStatusOf(new OcibuildError("REGISTRY_DENIED", "denied")).status).toBe(1);
    expect(exitStatusOf(new OcibuildError("ABORTED", "cancelled")).status).toBe(1);
    const bug = exitStatusOf(new Error("boom"));
    expect(bug.status).toBe(1);
    expect(bug.stderr).toContain("error[INTERNAL]");
    // A code from outside the table (a plain-JS caller) is an ordinary failure.
    expect(errorCodeInfo("NOT_A_CODE")).toEqual({ exit: 1, retryable: false });
  });

  it("gives each code its retryability unless the throw site says otherwise", () => {
    expect(new OcibuildError("REGISTRY_TOO_MANY_REQUESTS", "slow down").retryable).toBe(true);
    expect(new OcibuildError("REGISTRY_TIMEOUT", "timed out").retryable).toBe(true);
    expect(new OcibuildError("REGISTRY_SERVER_ERROR", "HTTP 501", { retryable: false }).retryable).toBe(false);
    expect(new OcibuildError("REGISTRY_DENIED", "denied").retryable).toBe(false);
    expect(new OcibuildError("DOCKERFILE_SYNTAX", "bad").retryable).toBe(false);
  });
});
