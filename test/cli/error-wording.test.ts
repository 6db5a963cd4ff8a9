/**
 * The library speaks of its options, the CLI of its flags: a library error that
 * names an option (`the cacheDir option`) is shown by the CLI with the flag
 * (`--cache-dir`) instead, and the library's own message never names a flag.
 */
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/api.js";
import { flagWording, formatError } from "../../src/cli/errors.js";
import { OcibuildError, optionWords } from "../../src/errors.js";
import { cli } from "../helpers/tools.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-error-wording-"));
  await mkdir(join(work, "ctx"));
  await writeFile(join(work, "ctx", "Dockerfile"), "FROM scratch\nCOPY f /f\n");
  await writeFile(join(work, "ctx", "f"), "f\n");
  await writeFile(join(work, "file"), "a regular file\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("library errors name options, the CLI names flags", () => {
  it("an unwritable cache directory: the cacheDir option from build(), --cache-dir from the CLI", async () => {
    const cacheDir = join(work, "file", "cache");
    const err = await build({ context: join(work, "ctx"), cacheDir, push: false }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "CACHE_DIR_UNWRITABLE", hint: expect.stringContaining("the cacheDir option") });
    expect((err as OcibuildError).hint).not.toContain("--cache-dir");
    const r = await cli(["--no-push", "--progress=plain", "--cache-dir", cacheDir, join(work, "ctx")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/hint: .*choose a writable one with --cache-dir\n/);
    expect(r.stderr).not.toContain("cacheDir option");
  });

  it("network host without the entitlement: the allow option from build(), --allow network.host when the CLI shows it", async () => {
    const err = await build({ context: join(work, "ctx"), network: "host", push: false }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "BUILD_ENTITLEMENT_REQUIRED", hint: expect.stringContaining('the allow option ("network.host")') });
    expect((err as OcibuildError).hint).not.toContain("--allow");
    expect(formatError(err)).toContain("hint: allow it with --allow network.host if you trust");
  });

  it("leaves words about options the CLI has no flag for as they are", () => {
    expect(flagWording(`set ${optionWords("onEvent")} and ${optionWords("maxLayerSize")}`)).toBe("set the onEvent option and --max-layer-size");
    expect(flagWording(`needs ${optionWords("registry.timeoutSeconds")}`)).toBe("needs --registry-timeout");
  });
});
