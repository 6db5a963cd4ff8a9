/**
 * BuildKit's parser golden files (../shared/conformance/buildkit/parser/<case>):
 * our AST dump, and `ocibuild parse FILE`, must print `result` byte for byte.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { dumpAst, parseAst } from "../../src/dockerfile/index.js";
import { captureIO } from "./cli-io.js";
import { conformanceBuildkitDir } from "./conformance-dir.js";

const dir = conformanceBuildkitDir();
const cases = dir === undefined ? [] : readdirSync(join(dir, "parser")).sort();

describe.skipIf(dir === undefined)("BuildKit parser conformance (needs ../shared/conformance)", () => {
  it("has all the cases", () => expect(cases.length).toBeGreaterThanOrEqual(30));

  describe.each(cases)("%s", (name) => {
    const caseDir = join(dir ?? "", "parser", name);
    const expected = () => readFileSync(join(caseDir, "result"), "utf8");

    it("parseAst + dumpAst equals result", () => {
      const text = readFileSync(join(caseDir, "Dockerfile"), "utf8");
      expect(`${dumpAst(parseAst(text).ast)}\n`).toBe(expected());
    });

    it("`ocibuild parse FILE` prints result", async () => {
      const cap = captureIO({ cwd: caseDir });
      const code = await main(["parse", "Dockerfile"], cap.io);
      expect(cap.stderr()).not.toMatch(/^error/m);
      expect(code).toBe(0);
      expect(cap.stdout()).toBe(expected());
    });
  });

  it("`ocibuild parse -` reads stdin", async () => {
    const caseDir = join(dir ?? "", "parser", cases[0]!);
    const cap = captureIO({ stdin: readFileSync(join(caseDir, "Dockerfile")) });
    expect(await main(["parse", "-"], cap.io)).toBe(0);
    expect(cap.stdout()).toBe(readFileSync(join(caseDir, "result"), "utf8"));
  });
});

describe("dumps of invalid UTF-8 (Go prints raw bytes as \\xNN)", () => {
  it("keeps bytes in values, turns them into U+FFFD inside JSON, and reads flags byte-wise like BuildKit", async () => {
    const bytes = Buffer.concat([
      Buffer.from("FROM a\nLABEL a="),
      Buffer.from([0xe9, 0x74, 0xe9]),
      Buffer.from('\nCMD ["'),
      Buffer.from([0xff]),
      Buffer.from('"]\nCOPY --chown='),
      Buffer.from([0xe9]),
      Buffer.from(" a b\n"),
    ]);
    const cap = captureIO({ stdin: bytes });
    expect(await main(["parse", "-"], cap.io)).toBe(0);
    expect(cap.stdout()).toBe('(from "a")\n(label "a" "\\xe9t\\xe9" "=")\n(cmd "\ufffd")\n(copy ["--chown=\u00e9"] "a" "b")\n');
  });
});

