/**
 * The remote BuildKit executor's session and RUN features against a real
 * buildkitd: registry credentials and secrets served over the session, cache and
 * tmpfs mounts, heredocs, and mutual TLS over tcp://.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGunzip } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { imageState } from "../../src/builder/base.js";
import { build } from "../../src/builder/build.js";
import type { BuildEvent } from "../../src/builder/events.js";
import { readTar } from "../../src/builder/fs/tar-reader.js";
import { BuildkitExecutor, type RemoteMount } from "../../src/builder/sandbox/buildkit.js";
import type { StageState } from "../../src/builder/stage-state.js";
import { buildkitCommand } from "../../src/cli/commands/buildkit.js";
import { OcibuildError } from "../../src/errors.js";
import { selectImage } from "../../src/oci/image.js";
import { OciLayout } from "../../src/oci/layout.js";
import { parseReference } from "../../src/oci/reference.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { hostPlatform } from "../../src/oci/platform.js";
import { openRegistry } from "../../src/oci/sources.js";
import { captureIO } from "../dockerfile/cli-io.js";
import { buildkitdMissing, makeClientCert, startBuildkitd, startBuildkitFixture, type BuildkitFixture, type TestBuildkitd } from "../helpers/buildkitd.js";
import { haveRegistry, type TestRegistry } from "../helpers/registry.js";
import { haveHtpasswd, haveOpenssl, makeCA, type TestCA } from "../helpers/registry-tls.js";

const missing = buildkitdMissing() ?? (!haveRegistry() ? "docker-registry is not installed" : undefined) ?? (!haveHtpasswd() ? "htpasswd is not installed" : undefined);

describe.skipIf(missing !== undefined)(`BuildKit executor: session, mounts, heredocs (${missing ?? "needs buildkitd, runc, root, docker-registry, htpasswd"})`, () => {
  let fx: BuildkitFixture;
  let work: string;
  let reg: TestRegistry;
  let bk: TestBuildkitd;
  let base: string;
  let staging: string;
  let authReg: TestRegistry;
  let authConfig: string;

  beforeAll(async () => {
    fx = await startBuildkitFixture();
    ({ work, reg, bk, base, staging, authReg, authConfig } = fx);
  }, 300_000);
  afterAll(async () => {
    await fx?.stop();
  });

  const executor = () => fx.executor();

  it("the daemon gets ocibuild's registry credentials over the session (a staging repo that needs a login)", async () => {
    const ctx = join(work, "ctx-auth");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo private > /private\n`);
    const stagingRepo = `${authReg.host}/ci/staging`;
    const ok = new BuildkitExecutor({ address: bk.address, stagingRepo, credentials: { authConfigPath: authConfig } });
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-auth"), executor: ok, registry: { authConfigPath: authConfig } });
      expect(r.steps[1]!.layer).toMatch(/^sha256:/);
    } finally {
      ok.close();
    }
    // The same build when the daemon is given no credentials: the daemon is refused, and says so.
    await writeFile(join(work, "auth", "empty.json"), "{}");
    const anon = new BuildkitExecutor({ address: bk.address, stagingRepo, credentials: { authConfigPath: join(work, "auth", "empty.json") } });
    let err: unknown;
    try {
      await build({ context: ctx, cacheDir: join(work, "cache-auth-anon"), executor: anon, registry: { authConfigPath: authConfig } });
    } catch (e) {
      err = e;
    } finally {
      anon.close();
    }
    expect((err as OcibuildError).code).toBe("BUILDKIT_SOLVE_FAILED");
    expect((err as OcibuildError).message).toMatch(/401|unauthori[sz]ed/i);
  }, 180_000);

  it("a RUN heredoc runs on the daemon; one with a #! line (a script mount) is refused by name", async () => {
    const ctx = join(work, "ctx-heredoc");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN <<EOT\necho "from a heredoc" > /heredoc\ncat /heredoc\nEOT\n`);
    const events: BuildEvent[] = [];
    const ex = executor();
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-heredoc"), executor: ex, onEvent: (e) => events.push(e) });
      expect(r.steps[1]!.layer).toMatch(/^sha256:/);
      await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN <<EOT\n#!/bin/sh\necho script\nEOT\n`);
      await expect(build({ context: ctx, cacheDir: join(work, "cache-heredoc"), executor: ex })).rejects.toMatchObject({ code: "BUILD_UNSUPPORTED", line: 2 });
    } finally {
      ex.close();
    }
    expect(events.filter((e) => e.type === "output").map((e) => (e as { text: string }).text).join("")).toContain("from a heredoc");
  }, 180_000);

  describe("RUN mounts on the daemon (secret over the session, cache, tmpfs)", () => {
    let content: OciLayout;
    let registry: RegistryClient;
    let state: StageState;
    beforeAll(async () => {
      content = await OciLayout.create(join(work, "mounts-content"));
      registry = new RegistryClient({});
      const ref = parseReference(base);
      state = await imageState(ref, await selectImage(await openRegistry(registry, ref, ref.familiar), hostPlatform(), ref.familiar));
    });
    afterAll(async () => {
      await registry?.close();
    });

    const mounts: RemoteMount[] = [
      { type: "secret", id: "token", target: "/run/secrets/token", required: true, mode: 0o400, uid: 0, gid: 0 },
      { type: "secret", id: "token", env: "TOKEN_ENV", required: true, mode: 0o400, uid: 0, gid: 0 },
      { type: "cache", target: "/var/cache/app", id: "app-cache", sharing: "locked", source: "/", mode: 0o755, uid: 0, gid: 0, readonly: false },
      { type: "tmpfs", target: "/scratch" },
    ];
    const script = [
      'echo "file=$(cat /run/secrets/token) env=$TOKEN_ENV"',
      'echo "runs=$(echo x >> /var/cache/app/runs && wc -l < /var/cache/app/runs)"',
      'echo "scratch=$(grep " /scratch " /proc/mounts | cut -d" " -f3)"',
      "echo kept > /kept && echo tmp > /scratch/tmp",
    ].join(" && ");
    const runStep = async (ex: BuildkitExecutor, secrets: Map<string, Buffer>, env: string[] = []) => {
      const out: string[] = [];
      const r = await ex.run({
        state, args: ["/bin/sh", "-c", script], env, cwd: "/", network: "default", privileged: false, description: "RUN --mount test",
        mounts, ctx: { content, registry, secrets, emit: () => {} }, onOutput: (_s, c) => out.push(c.toString()),
      });
      return { r, out: out.join("") };
    };

    it("gives the command the secret (file and env), a persistent cache and a tmpfs, and keeps all three out of the layer", async () => {
      const ex = executor();
      try {
        const secret = "s3cr3t-" + Math.random().toString(36).slice(2);
        const first = await runStep(ex, new Map([["token", Buffer.from(secret)]]));
        expect(first.r.exitCode).toBe(0);
        expect(first.out).toContain(`file=${secret} env=${secret}`);
        expect(first.out).toContain("runs=1");
        expect(first.out).toContain("scratch=tmpfs");
        // Another step (a different env) with the same cache id sees what the first left there.
        const second = await runStep(ex, new Map([["token", Buffer.from(secret)]]), ["ROUND=2"]);
        expect(second.out).toContain("runs=2");
        // The layer: /kept, and nothing of the mounts (nor their mount points).
        const layer = first.r.layer!;
        const paths: string[] = [];
        for await (const e of readTar(content.readBlob(layer.descriptor.digest).pipe(createGunzip()) as AsyncIterable<Buffer>)) {
          paths.push(e.header.name.replace(/\/$/, ""));
          for await (const chunk of e.body) expect(chunk.toString("latin1")).not.toContain(secret);
        }
        expect(paths).toContain("kept");
        expect(paths.filter((p) => /^(run|var|scratch)(\/|$)/.test(p))).toEqual([]);
      } finally {
        ex.close();
      }
    }, 180_000);

    it("a missing required secret fails before the daemon is asked; bind and ssh mounts are refused by name", async () => {
      const ex = executor();
      try {
        await expect(runStep(ex, new Map())).rejects.toMatchObject({ code: "BUILDKIT_SECRET_MISSING" });
        await expect(
          ex.run({ state, args: ["true"], env: [], cwd: "/", network: "default", privileged: false, description: "RUN", mounts: [{ type: "bind", target: "/src" }], ctx: { content, registry, secrets: new Map(), emit: () => {} } }),
        ).rejects.toMatchObject({ code: "BUILD_UNSUPPORTED" });
        expect(ex.calls).toBe(0);
      } finally {
        ex.close();
      }
    });
  });

  it("a Dockerfile's RUN --mount=type=secret/cache/tmpfs runs on the daemon; bind mounts and missing secrets fail at their line", async () => {
    const ctx = join(work, "ctx-dfmounts");
    await mkdir(ctx, { recursive: true });
    const secretFile = join(work, "secret.txt");
    const secret = "df-secret-" + Math.random().toString(36).slice(2);
    await writeFile(secretFile, secret);
    await writeFile(
      join(ctx, "Dockerfile"),
      `FROM ${base}\nRUN --mount=type=secret,id=token,required=true --mount=type=cache,target=/var/cache/x --mount=type=tmpfs,target=/t \\\n    test "$(cat /run/secrets/token)" = "${secret}" && echo secret-ok && echo made > /made\n`,
    );
    const events: BuildEvent[] = [];
    const ex = executor();
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex, secrets: [{ id: "token", src: secretFile }], onEvent: (e) => events.push(e) });
      expect(r.steps[1]!.layer).toMatch(/^sha256:/);
      expect(events.some((e) => e.type === "output" && e.text.includes("secret-ok"))).toBe(true);
      // --no-cache runs it on the daemon again, even with a cache mount (which keeps its content).
      const again: BuildEvent[] = [];
      await build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex, noCache: true, secrets: [{ id: "token", src: secretFile }], onEvent: (e) => again.push(e) });
      expect(again.some((e) => e.type === "output" && e.text.includes("secret-ok"))).toBe(true);
      // Without the secret: the step fails at its line, before the daemon runs anything.
      await expect(build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex, noCache: true })).rejects.toMatchObject({ code: "BUILDKIT_SECRET_MISSING", line: 2 });
      await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo one\nRUN --mount=type=bind,target=/src true\n`);
      await expect(build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex })).rejects.toMatchObject({ code: "BUILD_UNSUPPORTED", line: 3 });
    } finally {
      ex.close();
    }
  }, 180_000);

});

const tlsMissing = buildkitdMissing() ?? (haveOpenssl() ? undefined : "openssl is not installed");
describe.skipIf(tlsMissing !== undefined)(`BuildKit over tcp:// with mutual TLS (${tlsMissing ?? "needs buildkitd, runc, root, openssl"})`, () => {
  let bk: TestBuildkitd;
  let dir: string;
  let ca: TestCA;
  let client: { cert: string; key: string };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-bk-tls-"));
    ca = await makeCA(dir);
    client = await makeClientCert(dir, ca);
    bk = await startBuildkitd({
      insecureRegistries: [],
      tls: { cert: ca.serverCert, key: ca.serverKey, ca: ca.caCert },
      clientTls: { ca: ca.caCert, cert: client.cert, key: client.key },
    });
  }, 120_000);
  afterAll(async () => {
    await bk?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("`buildkit info` connects with --buildkit-ca/--buildkit-cert/--buildkit-key", async () => {
    const cap = captureIO();
    const code = await buildkitCommand(["info", "--buildkit-addr", bk.address, "--buildkit-ca", ca.caCert, "--buildkit-cert", client.cert, "--buildkit-key", client.key], cap.io, new AbortController().signal);
    expect(cap.stderr()).toBe("");
    expect(code).toBe(0);
    expect(cap.stdout()).toMatch(/platforms: .*linux\//);
  });

  it("without a client certificate the daemon refuses the connection, and the error says where", async () => {
    const ex = new BuildkitExecutor({ address: bk.address, ca: ca.caCert, stagingRepo: "127.0.0.1:1/x" });
    try {
      const err = await ex.info().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OcibuildError);
      expect((err as OcibuildError).code).toBe("BUILDKIT_TLS");
      expect((err as OcibuildError).message).toContain(bk.address);
    } finally {
      ex.close();
    }
  });
});

