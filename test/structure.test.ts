/**
 * The house's shape rules over src/, as scripts/structure.mjs checks them: no
 * function over 80 lines, no file over 400, no module-level mutable state (a
 * constant lookup table is typed ReadonlySet/ReadonlyMap, so the compiler keeps
 * it constant). A failure lists every place, with its line and length.
 */
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { MAX_FILE_LINES, MAX_FUNCTION_LINES, scan } from "../scripts/structure.mjs";

interface Place {
  file: string;
  line?: number;
  name?: string;
  lines?: number;
}

const where = (p: Place) => `${p.file}${p.line !== undefined ? `:${p.line}` : ""}${p.name !== undefined ? ` ${p.name}` : ""}${p.lines !== undefined ? ` (${p.lines} lines)` : ""}`;

describe("the source tree keeps the shape rules", () => {
  const found = scan(fileURLToPath(new URL("..", import.meta.url)));

  it(`no function is longer than ${MAX_FUNCTION_LINES} lines`, () => {
    expect(found.longFunctions.map(where)).toEqual([]);
  });

  it(`no file is longer than ${MAX_FILE_LINES} lines`, () => {
    expect(found.longFiles.map(where)).toEqual([]);
  });

  it("no module-level mutable state", () => {
    expect(found.mutableState.map(where)).toEqual([]);
  });
});

describe("the scan finds what breaks the rules", () => {
  let root: string | undefined;
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it("a long function, a long file, a let, a Map; not a ReadonlySet or a const array", async () => {
    root = await mkdtemp(join(tmpdir(), "ocibuild-structure-"));
    await mkdir(join(root, "src", "sub"), { recursive: true });
    const body = Array.from({ length: MAX_FUNCTION_LINES }, (_, i) => `  x += ${i};`).join("\n");
    await writeFile(join(root, "src", "sub", "long.ts"), `export function long(): number {\n  let x = 0;\n${body}\n  return x;\n}\n`);
    await writeFile(join(root, "src", "big.ts"), "export const a = 1;\n".repeat(MAX_FILE_LINES));
    const state = [
      "let counter = 0;",
      "const cache = new Map<string, number>();",
      'const KNOWN: ReadonlySet<string> = new Set(["a"]);',
      'const NAMES = ["a", "b"] as const;',
      "export const bump = () => counter++ + cache.size + KNOWN.size + NAMES.length;",
    ];
    await writeFile(join(root, "src", "state.ts"), `${state.join("\n")}\n`);
    const r = scan(root);
    expect(r.longFunctions.map(where)).toEqual([`src/sub/long.ts:1 long (${MAX_FUNCTION_LINES + 4} lines)`]);
    expect(r.longFiles.map(where)).toEqual([`src/big.ts (${MAX_FILE_LINES + 1} lines)`]);
    expect(r.mutableState.map(where)).toEqual(["src/state.ts:1 counter", "src/state.ts:2 cache"]);
  });
});
