/**
 * The RUN step asks the executor whether it can run before it runs anything, and says
 * why not at the RUN's line, with the executor's own hint (the bubblewrap executor's
 * names the ways out of a host without namespaces; the BuildKit executor has none).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/api.js";
import { BuildkitExecutor } from "../../src/builder/sandbox/buildkit.js";
import { BwrapExecutor } from "../../src/builder/sandbox/bwrap.js";
import { NAMESPACE_HINT } from "../../src/builder/sandbox/index.js";

describe("a RUN step whose executor cannot run", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-run-step-"));
    await writeFile(join(dir, "Dockerfile"), "FROM scratch\nENV A=1\nRUN true\n");
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("bubblewrap missing: SANDBOX_UNAVAILABLE at the RUN's line, with the ways out", async () => {
    const executor = new BwrapExecutor({ bwrap: join(dir, "no-bwrap") });
    await expect(build({ context: dir, push: false, cacheDir: join(dir, "cache"), executor })).rejects.toMatchObject({
      code: "SANDBOX_UNAVAILABLE",
      line: 3,
      message: expect.stringContaining("cannot run RUN steps: bwrap (bubblewrap) is not installed"),
      hint: NAMESPACE_HINT,
    });
  });

  it("the BuildKit daemon unreachable: SANDBOX_UNAVAILABLE at the RUN's line, naming the address, without the namespace hint", async () => {
    const address = `unix://${join(dir, "none.sock")}`;
    const executor = new BuildkitExecutor({ address, stagingRepo: "127.0.0.1:1/staging" });
    try {
      const err = await build({ context: dir, push: false, cacheDir: join(dir, "cache"), executor }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "SANDBOX_UNAVAILABLE", line: 3, message: expect.stringContaining(address) });
      expect((err as { hint?: string }).hint).toBeUndefined();
    } finally {
      executor.close();
    }
  });
});
