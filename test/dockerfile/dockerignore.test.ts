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
