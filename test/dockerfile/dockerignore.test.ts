/**
 * .dockerignore goldens: testdata/dockerfile/dockerignore/<case>/{dockerignore,cases}.
 * `cases` lines: `ignored PATH`, `kept PATH`, `descend DIR` (mayMatchUnder true),
 * `skip DIR` (mayMatchUnder false).
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createIgnoreMatcher, parseDockerignore } from "../../src/dockerfile/index.js";
import { REPO_ROOT } from "./conformance-dir.js";

const base = join(REPO_ROOT, "testdata/dockerfile/dockerignore");
const cases = readdirSync(base).sort();

describe(".dockerignore goldens", () => {
  it("has cases", () => expect(cases.length).toBeGreaterThanOrEqual(4));
  describe.each(cases)("%s", (name) => {
    const matcher = createIgnoreMatcher(parseDockerignore(readFileSync(join(base, name, "dockerignore"), "utf8")));
    const lines = readFileSync(join(base, name, "cases"), "utf8")
      .split("\n")
      .filter((l) => l !== "" && !l.startsWith("#"))
      .map((l) => {
        const sp = l.indexOf(" ");
        return { verb: l.slice(0, sp), path: l.slice(sp + 1) };
      });
    it.each(lines)("$verb $path", ({ verb, path }) => {
      switch (verb) {
        case "ignored":
        case "kept":
          expect(matcher.ignores(path)).toBe(verb === "ignored");
          break;
        case "descend":
        case "skip":
          expect(matcher.mayMatchUnder(path)).toBe(verb === "descend");
          break;
        default:
          throw new Error(`bad verb ${verb}`);
      }
    });
  });
});

describe("parseDockerignore", () => {
  it("cleans patterns like Docker: leading / and ./, trailing /, .., CRLF, BOM; keeps order and lines", () => {
    expect(parseDockerignore("\ufeff/a/\r\n./b//c/../d\r\n\r\n# c\n!  /e\n")).toEqual([
      { pattern: "a", exclusion: false, line: 1 },
      { pattern: "b/d", exclusion: false, line: 2 },
      { pattern: "e", exclusion: true, line: 5 },
    ]);
  });

  it("rejects a lone ! and a bad pattern with a coded error naming the line", () => {
    expect(() => parseDockerignore("a\n!\n")).toThrow(expect.objectContaining({ code: "DOCKERIGNORE_BAD_PATTERN", line: 2 }));
    expect(() => parseDockerignore("ok\nfoo[\n")).toThrow(expect.objectContaining({ code: "DOCKERIGNORE_BAD_PATTERN", line: 2 }));
  });

  it("the last matching line wins", () => {
    const m = createIgnoreMatcher(parseDockerignore("a.txt\n!a.txt\n"));
    expect(m.ignores("a.txt")).toBe(false);
    const m2 = createIgnoreMatcher(parseDockerignore("!a.txt\na.txt\n"));
    expect(m2.ignores("a.txt")).toBe(true);
  });

  it("without exceptions an ignored directory can always be skipped", () => {
    const m = createIgnoreMatcher(parseDockerignore("dir\n"));
    expect(m.ignores("dir/deep/file")).toBe(true);
    expect(m.mayMatchUnder("dir")).toBe(false);
  });
});

/** Reference: patternmatcher's translation to a regular expression, run by JS's RegExp. */
function refMatches(pattern: string, path: string): boolean {
  const chars = Array.from(pattern);
  let re = "^";
  let type = "exact";
  for (let i = 0, k = 0; i < chars.length; k++) {
    const ch = chars[i++]!;
    if (ch === "*" && chars[i] === "*") {
      i++;
      if (chars[i] === "/") i++;
      if (i >= chars.length) {
        if (type === "exact") type = "prefix";
        else (re += "[^\\n]*"), (type = "regexp");
      } else (re += "(?:[^\\n]*/)?"), (type = "regexp");
      if (k === 0) type = "suffix";
    } else if (ch === "*") (re += "[^/]*"), (type = "regexp");
    else if (ch === "?") (re += "[^/]"), (type = "regexp");
    else if (ch === "[") {
      const close = chars.indexOf("]", i + 1);
      re += chars.slice(i - 1, close + 1).join("");
      i = close + 1;
      type = "regexp";
    } else re += ch === "." ? "\\." : ch;
  }
  const test = (p: string) => {
    if (type === "exact") return p === pattern;
    if (type === "prefix") return p.startsWith(pattern.slice(0, -2));
    if (type === "suffix" && !/[*?[]/.test(pattern.slice(2))) {
      const suffix = pattern.slice(2);
      return p.endsWith(suffix) || (suffix.startsWith("/") && p === suffix.slice(1));
    }
    return new RegExp(`${re}$`, "u").test(p);
  };
  if (test(path)) return true;
  const parts = path.split("/").slice(0, -1);
  for (let i = 0; i < parts.length; i++) if (test(parts.slice(0, i + 1).join("/"))) return true;
  return false;
}

describe("pattern matching", () => {
  it("agrees with a RegExp reference on 4000 random patterns and paths (seed 0xd1ce)", () => {
    let a = 0xd1ce;
    const rand = () => {
      a = (Math.imul(a, 1103515245) + 12345) >>> 0;
      return a / 4294967296;
    };
    const tokens = ["a", "b", "/", "*", "?", "**", "**/", "[ab]", "[^a]", "a.b"];
    const paths = ["a", "b", "ab", "a/b", "a/b/a", "b/a/ab", "aa/bb/a.b", "a.b", "ba/ab/b/a"];
    for (let n = 0; n < 4000; n++) {
      let p = "";
      const len = 1 + Math.floor(rand() * 5);
      for (let i = 0; i < len; i++) p += tokens[Math.floor(rand() * tokens.length)];
      let patterns;
      try {
        patterns = parseDockerignore(`${p}\n`);
      } catch {
        continue;
      }
      if (patterns.length !== 1) continue;
      const m = createIgnoreMatcher(patterns);
      const cleaned = patterns[0]!.pattern;
      for (const path of paths) expect(m.ignores(path), JSON.stringify({ cleaned, path })).toBe(refMatches(cleaned, path));
    }
  });

  it("pathological patterns finish (linear-time matcher)", () => {
    const m = createIgnoreMatcher(parseDockerignore(`${"*a".repeat(20)}*b\n${"**/".repeat(12)}x\n`));
    expect(m.ignores("a".repeat(200))).toBe(false);
    expect(m.ignores(`${"ab/".repeat(60)}y`)).toBe(false);
    expect(m.ignores(`${"ab/".repeat(60)}x`)).toBe(true);
  });
});

describe("ignoreFileCandidates", () => {
  it("prefers <Dockerfile>.dockerignore beside the Dockerfile, then the context's .dockerignore", async () => {
    const { ignoreFileCandidates } = await import("../../src/dockerfile/index.js");
    expect(ignoreFileCandidates("/src/build/app.Dockerfile", "/src")).toEqual(["/src/build/app.Dockerfile.dockerignore", "/src/.dockerignore"]);
  });
});

describe("path cleaning in ignores()", () => {
  it("treats ./a, a//b, a/./b, a/x/../b and a trailing slash like their clean forms", () => {
    const m = createIgnoreMatcher(parseDockerignore("a/b\n"));
    for (const p of ["a/b", "./a/b", "a//b", "a/./b", "a/x/../b", "a/b/"]) expect(m.ignores(p), p).toBe(true);
    for (const p of ["a", ".", "..", "b/a/b"]) expect(m.ignores(p), p).toBe(false);
  });
});
