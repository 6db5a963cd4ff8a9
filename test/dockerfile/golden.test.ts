/**
 * ocibuild's own golden files (testdata/dockerfile/parse/<case>): the AST dump
 * must equal `result` byte for byte, and the typed instructions, directives and
 * warnings must match `expect.json` (a partial match per instruction, in order).
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { dumpAst, parseDockerfile } from "../../src/dockerfile/index.js";
import { REPO_ROOT } from "./conformance-dir.js";

const base = join(REPO_ROOT, "testdata/dockerfile/parse");
const cases = readdirSync(base).sort();

describe("ocibuild golden Dockerfiles", () => {
  it("has cases", () => expect(cases.length).toBeGreaterThanOrEqual(4));

  describe.each(cases)("%s", (name) => {
    const dir = join(base, name);
    const text = readFileSync(join(dir, "Dockerfile"), "utf8");
    const expected = JSON.parse(readFileSync(join(dir, "expect.json"), "utf8")) as {
      directives: Record<string, string>;
      warnings: { code: string; line?: number }[];
      instructions: Record<string, unknown>[];
    };

    it("dumps exactly like `result`", () => {
      const parsed = parseDockerfile(text);
      expect(`${dumpAst(parsed.ast)}\n`).toBe(readFileSync(join(dir, "result"), "utf8"));
    });

    it("yields the expected directives, warnings and instructions", () => {
      const parsed = parseDockerfile(text);
      expect(parsed.directives).toEqual(expected.directives);
      expect(parsed.warnings.map((w) => ({ code: w.code, line: w.line }))).toEqual(expected.warnings);
      expect(parsed.instructions).toHaveLength(expected.instructions.length);
      parsed.instructions.forEach((instr, i) => expect(instr).toMatchObject(expected.instructions[i]!));
    });

    it("keeps every instruction's range inside the file and in order", () => {
      const parsed = parseDockerfile(text);
      let last = 0;
      for (const instr of parsed.instructions) {
        expect(instr.range.startLine).toBeGreaterThan(last);
        expect(instr.range.endLine).toBeGreaterThanOrEqual(instr.range.startLine);
        expect(instr.range.endLine).toBeLessThanOrEqual(parsed.lines.length);
        last = instr.range.endLine;
      }
    });
  });
});
