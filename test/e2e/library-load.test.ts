/**
 * Importing the library loads only what a local build needs: the BuildKit executor's
 * gRPC client (@grpc/grpc-js) is loaded when a BuildkitExecutor first talks to a daemon.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "../..");

describe("importing ocibuild", () => {
  it("does not load @grpc/grpc-js, though BuildkitExecutor is exported", async () => {
    const index = join(root, "dist/index.js");
    if (!existsSync(index)) throw new Error(`${index} is missing: run \`npm run build\` (npm test builds it through scripts/setup.sh)`);
    const script = `
      import { createRequire } from "node:module";
      const lib = await import(${JSON.stringify(index)});
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes("@grpc"));
      process.stdout.write(JSON.stringify({ executor: typeof lib.BuildkitExecutor, build: typeof lib.build, loaded }));`;
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { cwd: root });
    expect(JSON.parse(stdout)).toEqual({ executor: "function", build: "function", loaded: [] });
  });
});
