/**
 * Dockerfile errors: testdata/dockerfile/errors/<case>/{Dockerfile,expect.json}.
 * Every error is an OcibuildError with a stable code that names `Dockerfile:LINE`,
 * carries the offending lines as its snippet and, for typos, the nearest name.
 * The CLI renders it as `error[CODE]: ...` and exits 1.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { isOcibuildError } from "../../src/errors.js";
import { parseDockerfile } from "../../src/dockerfile/index.js";
import { captureIO } from "./cli-io.js";
import { REPO_ROOT } from "./conformance-dir.js";

const base = join(REPO_ROOT, "testdata/dockerfile/errors");
const cases = readdirSync(base).sort();

interface Expect {
  code: string;
  line?: number;
  endLine?: number;
  hint?: string;
  message?: string;
}

function parseError(text: string): unknown {
  try {
    parseDockerfile(text, { file: "Dockerfile" });
  } catch (e) {
    return e;
  }
  return undefined;
}

describe("Dockerfile error goldens", () => {
  it("has cases", () => expect(cases.length).toBeGreaterThanOrEqual(20));

  it.each(cases)("%s", (name) => {
    const text = readFileSync(join(base, name, "Dockerfile"), "utf8");
    const exp = JSON.parse(readFileSync(join(base, name, "expect.json"), "utf8")) as Expect;
    const e = parseError(text);
    expect(isOcibuildError(e), `expected an OcibuildError, got ${String(e)}`).toBe(true);
    if (!isOcibuildError(e)) return;
    expect(e.code).toBe(exp.code);
    expect(e.code).toMatch(/^DOCKERFILE_[A-Z_]+$/);
    expect(e.file).toBe("Dockerfile");
    if (exp.line !== undefined) {
      expect(e.line).toBe(exp.line);
      expect(e.message.startsWith(`Dockerfile:${exp.line}: `)).toBe(true);
      const lines = text.split("\n");
      expect(e.snippet).toBe(lines.slice(exp.line - 1, exp.endLine ?? exp.line).join("\n"));
    }
    if (exp.hint !== undefined) expect(e.hint).toBe(exp.hint);
    if (exp.message !== undefined) expect(e.message).toContain(exp.message);
  });
});

describe("line length", () => {
  it("a line over Go's 64 KiB scanner limit is an error naming it; one just under is fine", () => {
    const long = `FROM alpine\nRUN echo ${"x".repeat(70_000)}\n`;
    expect(parseError(long)).toMatchObject({ code: "DOCKERFILE_LINE_TOO_LONG", line: 2 });
    const ok = `FROM alpine\nRUN echo ${"é".repeat(30_000)}\n`;
    expect(parseError(ok)).toBeUndefined();
  });
});

describe("`ocibuild parse` on a bad Dockerfile", () => {
  const tmp = mkdtempSync(join(tmpdir(), "ocibuild-parse-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("AST-level errors exit 1 with error[CODE], the location and the line", async () => {
    writeFileSync(join(tmp, "Dockerfile"), "FROM alpine\nRUN <<EOF\necho\n");
    const cap = captureIO({ cwd: tmp });
    expect(await main(["parse", "Dockerfile"], cap.io)).toBe(1);
    expect(cap.stdout()).toBe("");
    expect(cap.stderr()).toMatch(/^error\[DOCKERFILE_HEREDOC\]: Dockerfile:2: unterminated heredoc/);
    expect(cap.stderr()).toContain("   2 | RUN <<EOF\n");
  });

  it("--check also validates instructions and suggests the nearest name", async () => {
    writeFileSync(join(tmp, "Dockerfile"), "FROM alpine\nCOPPY a b\n");
    const plain = captureIO({ cwd: tmp });
    expect(await main(["parse", "Dockerfile"], plain.io)).toBe(0);
    expect(plain.stdout()).toBe('(from "alpine")\n(coppy "")\n');
    const cap = captureIO({ cwd: tmp });
    expect(await main(["parse", "--check", "Dockerfile"], cap.io)).toBe(1);
    expect(cap.stderr()).toContain("error[DOCKERFILE_UNKNOWN_INSTRUCTION]: Dockerfile:2: unknown instruction: COPPY");
    expect(cap.stderr()).toContain("hint: did you mean COPY?");
  });

  it("a missing file is a coded error, and no argument is a usage error (exit 2)", async () => {
    const cap = captureIO({ cwd: tmp });
    expect(await main(["parse", "nope.Dockerfile"], cap.io)).toBe(1);
    expect(cap.stderr()).toMatch(/^error\[DOCKERFILE_NOT_FOUND\]/);
    const usage = captureIO({ cwd: tmp });
    expect(await main(["parse"], usage.io)).toBe(2);
  });

  it("prints warnings once each to stderr and the dump to stdout", async () => {
    writeFileSync(join(tmp, "Dockerfile"), "# syntax=example.com/fe\nFROM a\nMAINTAINER me\nRUN a \\\n\n  b\n");
    const cap = captureIO({ cwd: tmp });
    expect(await main(["parse", "--check", "Dockerfile"], cap.io)).toBe(0);
    expect(cap.stdout()).toBe('(from "a")\n(maintainer "me")\n(run "a   b")\n');
    const warnings = cap.stderr().trimEnd().split("\n");
    expect(warnings.map((w) => /^warning\[([A-Z_]+)\]/.exec(w)?.[1])).toEqual([
      "DOCKERFILE_EMPTY_CONTINUATION",
      "DOCKERFILE_SYNTAX_IGNORED",
      "DOCKERFILE_MAINTAINER_DEPRECATED",
    ]);
  });
});
