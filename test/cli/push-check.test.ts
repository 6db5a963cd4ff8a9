/**
 * A push that must fail fails before the build, as kaniko's CheckPushPermissions
 * makes it: no credentials, credentials that may only pull, a registry nobody
 * listens on; --skip-push-permission-check turns the check off; good credentials
 * pass it and the push works. `-t app:dev` (no registry host: Docker Hub's
 * library/) says how to write an archive instead. Real registries (htpasswd, and
 * token auth with anonymous pull); builds FROM scratch, --progress=plain so that
 * a step that ran shows.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { haveHtpasswd, haveOpenssl, htpasswdConfig, makeHtpasswd, makeSelfSigned, writeDockerConfig } from "../helpers/registry-tls.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { startTokenServer, type TokenServer } from "../helpers/token-server.js";
import { cli } from "../helpers/tools.js";

let work: string;
const p = (...names: string[]) => join(work, ...names);
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-push-check-"));
  await mkdir(p("ctx"));
  await writeFile(p("ctx", "Dockerfile"), "FROM scratch\nCOPY f /f\n");
  await writeFile(p("ctx", "f"), "f\n");
  await writeFile(p("empty.json"), "{}\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const build = (args: string[]) => cli(["--progress=plain", "--cache-dir", p("cache"), ...args, p("ctx")]);
const STEP = /\[0 1\/1\] COPY f \/f/;
// The step ran: its end line. The check starts at the first step that must run; a COPY of
// context files (this one) is made meanwhile, so a refused build may show the step start,
// but the step never ends (the refused builds below pass --no-cache, so that the step would run).
const STEP_DONE = /\[0 1\/1\] DONE/;

function expectRefusedBeforeBuilding(r: { code: number; stderr: string }, code: RegExp, ref: string) {
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(new RegExp(`^error\\[${code.source}\\]: cannot push to ${ref.replaceAll(".", "\\.")} \\(checked before building`, "m"));
  expect(r.stderr).not.toMatch(STEP_DONE);
}

describe.skipIf(!haveRegistry() || !haveHtpasswd())("a registry that wants credentials (needs docker-registry, htpasswd)", () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    await mkdir(p("basic"));
    reg = await startRegistry({ extraConfig: htpasswdConfig(await makeHtpasswd(p("basic"), { ci: "s3cret" })) });
    await writeDockerConfig(p("basic"), { [reg.host]: { username: "ci", password: "s3cret" } });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it("no credentials: refused before the first step", async () => {
    const r = await build(["--no-cache", "-t", `${reg.host}/app/x:v1`, "--authfile", p("empty.json")]);
    expectRefusedBeforeBuilding(r, /REGISTRY_UNAUTHORIZED/, `${reg.host}/app/x:v1`);
  });

  it("--skip-push-permission-check builds, and fails only at the push", async () => {
    const r = await build(["-t", `${reg.host}/app/x:v1`, "--authfile", p("empty.json"), "--skip-push-permission-check"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(STEP);
    expect(r.stderr).toMatch(/^error\[REGISTRY_UNAUTHORIZED\]/m);
    expect(r.stderr).not.toMatch(/checked before building/);
  });

  it("a fully cached rebuild is not checked first: its push is refused, and the check made then says why", async () => {
    expect((await build(["--no-push", "-t", `${reg.host}/app/x:v1`])).code).toBe(0);
    const r = await build(["-t", `${reg.host}/app/x:v1`, "--authfile", p("empty.json")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[0 1\/1\] CACHED/);
    expect(r.stderr).toMatch(new RegExp(`^error\\[REGISTRY_UNAUTHORIZED\\]: cannot push to ${reg.host.replaceAll(".", "\\.")}/app/x:v1: registry `, "m"));
    expect(r.stderr).not.toMatch(/checked before/);
  });


  it("a fully cached rebuild with provenance is checked after its last step, before the attestation is made", async () => {
    expect((await build(["--no-push", "-t", `${reg.host}/app/x:v1`])).code).toBe(0);
    const r = await build(["-t", `${reg.host}/app/x:v1`, "--provenance=true", "--authfile", p("empty.json")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[0 1\/1\] CACHED/);
    expect(r.stderr).toMatch(new RegExp(`^error\\[REGISTRY_UNAUTHORIZED\\]: cannot push to ${reg.host.replaceAll(".", "\\.")}/app/x:v1 \\(checked before pushing; --skip-push-permission-check skips the check\\)`, "m"));
  });

  it("good credentials pass the check and push", async () => {
    const r = await build(["-t", `${reg.host}/app/x:v2`, "--authfile", p("basic", "config.json")]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${reg.host}/app/x:v2`);
  });
});

describe.skipIf(!haveRegistry() || !haveOpenssl())("credentials that may pull but not push (needs docker-registry, openssl)", () => {
  let reg: TestRegistry;
  let ts: TokenServer;
  beforeAll(async () => {
    await mkdir(p("token"));
    const { cert, key } = await makeSelfSigned(p("token"), "issuer");
    ts = await startTokenServer({ certPath: cert, keyPath: key, issuer: "issuer", service: "registry", users: { ci: "s3cret" }, anonymousPull: ["app/pullonly", "app/pullonly2"] });
    reg = await startRegistry({ extraConfig: ts.registryConfig() });
    await mkdir(p("token", "ci"));
    await writeDockerConfig(p("token", "ci"), { [reg.host]: { username: "ci", password: "s3cret" } });
  });
  afterAll(async () => {
    await reg?.stop();
    await ts?.stop();
  });

  it("refused before the first step", async () => {
    const r = await build(["--no-cache", "-t", `${reg.host}/app/pullonly:v1`, "--authfile", p("empty.json")]);
    expectRefusedBeforeBuilding(r, /REGISTRY_(UNAUTHORIZED|DENIED)/, `${reg.host}/app/pullonly:v1`);
  });

  it("a fully cached rebuild pushed to two repositories is checked before the push writes to either", async () => {
    expect((await build(["--no-push", "-t", `${reg.host}/app/pullonly:v2`])).code).toBe(0);
    // Anonymous users may pull both: the push's questions are answered, and its first write waits for the check.
    const r = await build(["-t", `${reg.host}/app/pullonly:v2`, "-t", `${reg.host}/app/pullonly2:v2`, "--authfile", p("empty.json")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[0 1\/1\] CACHED/);
    expect(r.stderr).toMatch(new RegExp(`^error\\[REGISTRY_(UNAUTHORIZED|DENIED)\\]: cannot push to ${reg.host.replaceAll(".", "\\.")}/app/pullonly2?:v2 \\(checked before pushing; --skip-push-permission-check skips the check\\)`, "m"));
  });

  it("a rebuild whose tag already names its image writes nothing, so pulling is enough", async () => {
    const pushed = await build(["-t", `${reg.host}/app/pullonly:v1`, "--authfile", p("token", "ci", "config.json")]);
    expect(pushed.code).toBe(0);
    const r = await build(["-t", `${reg.host}/app/pullonly:v1`, "--authfile", p("empty.json")]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/\[0 1\/1\] CACHED/);
    expect(r.stdout).toContain(`${reg.host}/app/pullonly:v1@sha256:`);
  });
});

describe("registries that cannot be pushed to at all", () => {
  it("a registry nobody listens on: refused in seconds, before the first step", async () => {
    const started = Date.now();
    const r = await build(["--no-cache", "-t", "127.0.0.1:1/app:v1"]);
    expectRefusedBeforeBuilding(r, /REGISTRY_UNREACHABLE/, "127.0.0.1:1/app:v1");
    expect(Date.now() - started).toBeLessThan(20_000);
  }, 30_000);

  it("a COPY made while the check fails is not kept: the next build copies again", async () => {
    const cache = ["--progress=plain", "--cache-dir", p("cache-refused")];
    const refused = await cli([...cache, "-t", "127.0.0.1:1/app:v2", p("ctx")]);
    expectRefusedBeforeBuilding(refused, /REGISTRY_UNREACHABLE/, "127.0.0.1:1/app:v2");
    const local = await cli([...cache, "--no-push", "-t", "127.0.0.1:1/app:v2", p("ctx")]);
    expect(local.code).toBe(0);
    expect(local.stderr).toMatch(STEP_DONE);
    expect(local.stderr).not.toMatch(/\[0 1\/1\] CACHED/);
  }, 30_000);

  it("-t app:dev (no registry host) says how to write an archive instead", async () => {
    const r = await build(["--no-cache", "-t", "app:dev", "--authfile", p("empty.json")]);
    expectRefusedBeforeBuilding(r, /REGISTRY_[A-Z_]+/, "docker.io/library/app:dev");
    expect(r.stderr).toMatch(/^hint: app:dev has no registry host, so it names docker\.io\/library\/app:dev on Docker Hub\. To keep the image here, add --no-push and write a file: -o docker-archive:app\.tar/m);
  }, 30_000);
});
