/**
 * A FROM, COPY --from or RUN --mount from= image the registry will not give (not
 * found, unauthorized, unreachable) names the Dockerfile line, as every other build
 * error does; a --from naming neither a stage nor an image says there is no such
 * stage and suggests the one meant. Real registries (one plain, one with htpasswd);
 * builds FROM scratch, and --dry-run for RUN (keys only, nothing executed).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { haveHtpasswd, htpasswdConfig, makeHtpasswd } from "../helpers/registry-tls.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli } from "../helpers/tools.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-image-errors-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function build(dockerfile: string, args: string[] = []) {
  const dir = await mkdtemp(join(work, "ctx-"));
  await writeFile(join(dir, "Dockerfile"), dockerfile);
  return cli(["--no-push", "--cache-dir", join(work, "cache"), ...args, dir]);
}

/** The error is `code`, names Dockerfile:LINE and shows that line. */
function expectAtLine(r: { code: number; stderr: string }, code: RegExp, line: number, text: string) {
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(new RegExp(`^error\\[${code.source}\\]: Dockerfile:${line}: `, "m"));
  expect(r.stderr).toContain(`${String(line).padStart(4)} | ${text}\n`);
}

describe.skipIf(!haveRegistry())("registry errors name the Dockerfile line (needs docker-registry)", () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it("FROM an image that is not there", async () => {
    const r = await build(`# syntax check\nFROM ${reg.host}/no/such:v1\nLABEL a=b\n`);
    expectAtLine(r, /REGISTRY_NOT_FOUND/, 2, `FROM ${reg.host}/no/such:v1`);
    expect(r.stderr).toMatch(/MANIFEST_UNKNOWN|NAME_UNKNOWN/);
  });

  it("COPY --from an image that is not there", async () => {
    const r = await build(`FROM scratch\nCOPY --from=${reg.host}/no/such:v2 /x /x\n`);
    expectAtLine(r, /REGISTRY_NOT_FOUND/, 2, `COPY --from=${reg.host}/no/such:v2 /x /x`);
  });

  it("RUN --mount from= an image that is not there (--dry-run)", async () => {
    const r = await build(`FROM scratch\nRUN --mount=type=bind,from=${reg.host}/no/such:v3,target=/m true\n`, ["--dry-run"]);
    expectAtLine(r, /REGISTRY_NOT_FOUND/, 2, `RUN --mount=type=bind,from=${reg.host}/no/such:v3,target=/m true`);
  });

  it("FROM a registry nobody listens on", async () => {
    const r = await build("FROM scratch AS a\nFROM 127.0.0.1:1/img:v1\n");
    expectAtLine(r, /REGISTRY_UNREACHABLE/, 2, "FROM 127.0.0.1:1/img:v1");
  }, 30_000);

  it.skipIf(!haveHtpasswd())("FROM a registry that wants credentials (needs htpasswd)", async () => {
    const dir = await mkdtemp(join(work, "auth-"));
    const authReg = await startRegistry({ extraConfig: htpasswdConfig(await makeHtpasswd(dir, { ci: "s3cret" })) });
    try {
      await writeFile(join(dir, "empty.json"), "{}\n");
      const r = await build(`FROM ${authReg.host}/private/base:v1\n`, ["--authfile", join(dir, "empty.json")]);
      expectAtLine(r, /REGISTRY_UNAUTHORIZED/, 1, `FROM ${authReg.host}/private/base:v1`);
    } finally {
      await authReg.stop();
    }
  });
});

describe("COPY --from a name that is neither a stage nor an image", () => {
  it("says no stage has that name and suggests the stage meant", async () => {
    const r = await build("FROM scratch AS builder\nFROM scratch\nCOPY --from=buidler /out /out\n");
    expectAtLine(r, /REGISTRY_[A-Z_]+/, 3, "COPY --from=buidler /out /out");
    expect(r.stderr).toMatch(/--from=buidler: no stage is named "buidler", and it is not an image either: /);
    expect(r.stderr).toMatch(/^hint: did you mean the stage "builder"\?$/m);
  }, 30_000);
});
