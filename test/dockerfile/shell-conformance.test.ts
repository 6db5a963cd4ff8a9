import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import { expandWord, expandWords } from "../../src/dockerfile/shell-words.js";
import { conformanceBuildkitDir } from "./conformance-dir.js";

const dir = conformanceBuildkitDir();

function expectCodedFailure(fn: () => unknown): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown, "expected expansion to fail").toBeDefined();
  expect(isOcibuildError(thrown) && thrown.code).toBe("DOCKERFILE_EXPANSION");
}

describe.skipIf(dir === undefined)("BuildKit expansion conformance (needs ../shared/conformance)", () => {
  const base = dir ?? "";

  describe("envVarTest", () => {
    const env = { PWD: "/home", SHELL: "bash", KOREAN: "한국어", NULL: "" };
    const cases: { line: number; source: string; expected: string }[] = [];
    if (dir !== undefined) {
      readFileSync(join(base, "envVarTest"), "utf8")
        .split("\n")
        .forEach((raw, i) => {
          if (raw.startsWith("#")) return;
          const line = raw.trim();
          if (line === "") return;
          const parts = line.split("|");
          if (parts.length !== 3) throw new Error(`envVarTest line ${i + 1}: not 3 fields`);
          const platform = parts[0]!.trim();
          if (platform === "W") return;
          cases.push({ line: i + 1, source: parts[1]!.trim(), expected: parts[2]!.trim() });
        });
    }
    it("has cases", () => expect(cases.length).toBeGreaterThan(100));
    it.each(cases)("line $line: $source", ({ source, expected }) => {
      if (expected === "error") expectCodedFailure(() => expandWord(source, env));
      else expect(expandWord(source, env)).toBe(expected);
    });
  });

  describe("wordsTest", () => {
    const cases: { line: number; source: string; expected: string[]; env: Record<string, string> }[] = [];
    if (dir !== undefined) {
      const env: Record<string, string> = {};
      readFileSync(join(base, "wordsTest"), "utf8")
        .split("\n")
        .forEach((line, i) => {
          if (line.startsWith("#") || line === "") return;
          if (line.startsWith("ENV ")) {
            const def = line.slice(3).replace(/^ +/, "");
            const eq = def.indexOf("=");
            env[eq < 0 ? def : def.slice(0, eq)] = eq < 0 ? "" : def.slice(eq + 1);
            return;
          }
          const parts = line.split("|");
          if (parts.length !== 2) throw new Error(`wordsTest line ${i + 1}: not 2 fields`);
          cases.push({ line: i + 1, source: parts[0]!.trim(), expected: parts[1]!.replace(/^ +/, "").split(","), env: { ...env } });
        });
    }
    it("has cases", () => expect(cases.length).toBeGreaterThan(20));
    it.each(cases)("line $line: $source", ({ source, expected, env }) => {
      if (expected.length === 1 && expected[0] === "error") expectCodedFailure(() => expandWords(source, env));
      else expect(expandWords(source, env)).toEqual(expected);
    });
  });

  describe("process-word-cases.json", () => {
    const cases: { input: string; env: Record<string, string>; expected: string; error: boolean }[] =
      dir === undefined ? [] : JSON.parse(readFileSync(join(base, "process-word-cases.json"), "utf8"));
    it("has cases", () => expect(cases.length).toBeGreaterThan(20));
    it.each(cases.map((c, i) => ({ ...c, i })))("case $i: $input", ({ input, env, expected, error }) => {
      if (error) expectCodedFailure(() => expandWord(input, env));
      else expect(expandWord(input, env)).toBe(expected);
    });
  });
});
