/**
 * The library speaks of its options, the CLI of its flags: a library error that
 * names an option (`the cacheDir option`) is shown by the CLI with the flag
 * (`--cache-dir`) instead, and the library's own message never names a flag.
 */
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { PassThrough } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build, copy, run } from "../../src/api.js";
import type { BuildEvent } from "../../src/builder/events.js";
import { flagWording, formatError } from "../../src/cli/errors.js";
import { createRenderer } from "../../src/cli/progress.js";
import { OcibuildError, optionWords } from "../../src/errors.js";
import { cli } from "../helpers/tools.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-error-wording-"));
  await mkdir(join(work, "ctx"));
  await writeFile(join(work, "ctx", "Dockerfile"), "FROM scratch\nCOPY f /f\n");
  await writeFile(join(work, "ctx", "f"), "f\n");
  await writeFile(join(work, "file"), "a regular file\n");
  await writeFile(join(work, "empty.json"), "{}\n");
  await mkdir(join(work, "from-arg"));
  await writeFile(join(work, "from-arg", "Dockerfile"), "FROM $BASE\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("library errors name options, the CLI names flags", () => {
  it("copy's all and platform options together, and a RUN entitlement: options from the library, flags from the CLI", async () => {
    const err = await copy("127.0.0.1:1/a:b", `oci:${join(work, "out")}`, { all: true, platform: { os: "linux", architecture: "amd64" } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "USAGE_BAD_VALUE", message: "the all option and the platform option cannot be used together" });
    expect(formatError(err)).toContain("error[USAGE_BAD_VALUE]: --all and --platform cannot be used together");
    await writeFile(join(work, "ctx", "Dockerfile.insecure"), "FROM scratch\nRUN --security=insecure true\n");
    const denied = await build({ context: join(work, "ctx"), dockerfile: join(work, "ctx", "Dockerfile.insecure"), push: false, cacheDir: join(work, "cache") }).catch((e: unknown) => e);
    expect(denied).toMatchObject({ code: "BUILD_ENTITLEMENT_REQUIRED", hint: expect.stringContaining('the allow option ("security.insecure")') });
    expect(formatError(denied)).toContain("hint: allow it with --allow security.insecure if you trust this Dockerfile");
  });

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

  it("FROM $BASE with BASE unset: the buildArgs option from build(), --build-arg when the CLI shows it", async () => {
    const err = await build({ context: join(work, "from-arg"), push: false, cacheDir: join(work, "cache") }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "DOCKERFILE_FROM", hint: "declare BASE with ARG before the first FROM, or pass it with the buildArgs option" });
    expect(formatError(err)).toContain("hint: declare BASE with ARG before the first FROM, or pass it with --build-arg\n");
  });

  it("a failed push check: the skipPushPermissionCheck option from build(), --skip-push-permission-check from the CLI", async () => {
    const err = await build({ context: join(work, "ctx"), tags: ["127.0.0.1:1/app:v1"], cacheDir: join(work, "cache"), registry: { retry: { attempts: 1 } } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "REGISTRY_UNREACHABLE", message: expect.stringContaining("(checked before building; the skipPushPermissionCheck option skips the check)") });
    expect(formatError(err)).toContain("(checked before building; --skip-push-permission-check skips the check)");
  }, 30_000);

  it("a Docker Hub library tag: the push, outputs and tags options from build(), --no-push, -o and -t from the CLI", async () => {
    const err = await build({ context: join(work, "ctx"), tags: ["app:dev"], cacheDir: join(work, "cache"), registry: { retry: { attempts: 1 }, authConfigPath: join(work, "empty.json") } }).catch((e: unknown) => e);
    expect((err as OcibuildError).hint).toBe(
      "app:dev has no registry host, so it names docker.io/library/app:dev on Docker Hub. To keep the image here, add the push option (\"false\") and write a file: " +
        'the outputs option ("docker-archive:app.tar") (then docker load -i app.tar) or the outputs option ("oci:app-layout"); to push, name a registry: the tags option ("REGISTRY/app:dev")',
    );
    expect(formatError(err)).toContain(
      "hint: app:dev has no registry host, so it names docker.io/library/app:dev on Docker Hub. To keep the image here, add --no-push and write a file: " +
        "-o docker-archive:app.tar (then docker load -i app.tar) or -o oci:app-layout; to push, name a registry: -t REGISTRY/app:dev\n",
    );
  }, 30_000);

  it("run: an image ID not in the content store names the cacheDir option, and the CLI --cache-dir", async () => {
    const err = await run({ image: `sha256:${"0".repeat(64)}`, cacheDir: join(work, "cache") }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "RUN_IMAGE_NOT_FOUND", hint: expect.stringContaining("(the cacheDir option)") });
    expect(formatError(err)).toContain("with the same cache directory (--cache-dir); otherwise name the image by reference");
  });

  it("run: an image without a HEALTHCHECK names the healthcheck option, and the CLI --healthcheck", async () => {
    const cacheDir = join(work, "cache");
    const built = await build({ context: join(work, "ctx"), push: false, cacheDir });
    const err = await run({ image: built.image.config.digest, cacheDir, healthcheck: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "RUN_NO_HEALTHCHECK", hint: "add a HEALTHCHECK instruction to its Dockerfile, or run without the healthcheck option" });
    expect(formatError(err)).toContain("hint: add a HEALTHCHECK instruction to its Dockerfile, or run without --healthcheck\n");
  });

  it("a default cache directory that cannot be made: the warning event names the cacheDir option, the CLI's progress --cache-dir", async () => {
    const events: BuildEvent[] = [];
    const env = { HOME: join(work, "file"), PATH: process.env.PATH };
    await build({ context: join(work, "ctx"), push: false, env, onEvent: (e) => events.push(e) });
    const warning = events.find((e) => e.type === "log" && e.level === "warn" && e.message.startsWith("cannot create the cache directory"));
    expect(warning).toMatchObject({ message: expect.stringContaining("; set XDG_CACHE_HOME or the cacheDir option to keep the cache where you want it") });
    for (const mode of ["plain", "tty"] as const) {
      const out = Object.assign(new PassThrough(), { columns: 1000 });
      let text = "";
      out.on("data", (c: Buffer) => (text += c.toString("utf8")));
      const renderer = createRenderer(mode, out);
      renderer.onEvent(warning!);
      renderer.close();
      expect(text, mode).toContain("; set XDG_CACHE_HOME or --cache-dir to keep the cache where you want it\n");
    }
    const r = await cli(["--no-push", "--progress=plain", join(work, "ctx")], { env });
    expect(r.stderr).toContain("; set XDG_CACHE_HOME or --cache-dir to keep the cache where you want it\n");
  });
});
