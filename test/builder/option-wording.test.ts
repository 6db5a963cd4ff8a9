/**
 * The executors, RUN --mount and the build's secrets speak of the library's options
 * (`the stagingRepo option`); the CLI renders its flags for the same words
 * (`--buildkit-staging-repo`), as every library error does.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/api.js";
import { BuildkitExecutor } from "../../src/builder/sandbox/buildkit.js";
import { BuildkitClient } from "../../src/builder/sandbox/buildkit/client.js";
import { BwrapExecutor } from "../../src/builder/sandbox/bwrap.js";
import { NAMESPACE_HINT } from "../../src/builder/sandbox/index.js";
import { startSshAgents } from "../../src/builder/secrets.js";
import { flagWording, formatError } from "../../src/cli/errors.js";
import { have, isRoot } from "../helpers/tools.js";

/** The library's error, and the CLI's rendering of it. */
async function both(p: Promise<unknown>): Promise<{ message: string; hint?: string; cli: string }> {
  const e = (await p.then(() => undefined, (err: unknown) => err)) as { message: string; hint?: string } | undefined;
  if (e === undefined) throw new Error("expected a failure");
  return { message: e.message, hint: e.hint, cli: formatError(e) };
}

describe("library errors name options; the CLI names flags", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-option-wording-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("BuildkitExecutor: the stagingRepo option, the cert and key options", async () => {
    const staging = await both((async () => new BuildkitExecutor({ address: "unix:///x.sock", stagingRepo: "r.example/s:tag" }))());
    expect(staging.message).toBe('the stagingRepo option ("r.example/s:tag") must name a repository without a tag or digest');
    expect(staging.cli).toContain("error[BUILDKIT_STAGING_REPO_INVALID]: --buildkit-staging-repo r.example/s:tag must name a repository without a tag or digest");
    const tls = await both(BuildkitClient.connect({ address: "tcp://127.0.0.1:1", cert: join(dir, "c.pem") }));
    expect(tls.message).toBe("the cert option and the key option must be given together");
    expect(tls.cli).toContain("--buildkit-cert and --buildkit-key must be given together");
  });

  it("the ways out of a host without namespaces name the executor option", () => {
    expect(NAMESPACE_HINT).toMatch(/^use the executor option \("buildkit"\) with a BuildKit daemon/);
    expect(flagWording(NAMESPACE_HINT)).toMatch(/^use --executor buildkit with a BuildKit daemon/);
  });

  it("ssh agents: the ssh option", async () => {
    const r = await both(startSshAgents([{ id: "default", paths: [] }], {}, dir));
    expect(r.message).toBe('the ssh option ("default"): SSH_AUTH_SOCK is not set; pass a socket or key files (the ssh option ("default=~/.ssh/id_ed25519"))');
    expect(r.cli).toContain("--ssh default: SSH_AUTH_SOCK is not set; pass a socket or key files (--ssh default=~/.ssh/id_ed25519)");
  });

  it.skipIf(!isRoot || !have("bwrap"))("a missing secret names the secrets option; ulimits without prlimit name the sandbox.ulimits option (needs root and bwrap)", async () => {
    await writeFile(join(dir, "Dockerfile"), "FROM scratch\nRUN --mount=type=secret,id=tok,required=true true\n");
    const secret = await both(build({ context: dir, push: false, cacheDir: join(dir, "cache") }));
    expect(secret.hint).toBe('pass it with the secrets option ("id=tok,src=FILE") or the secrets option ("id=tok,env=VARIABLE")');
    expect(secret.cli).toContain("hint: pass it with --secret id=tok,src=FILE or --secret id=tok,env=VARIABLE");

    const ex = new BwrapExecutor({ ulimits: [{ name: "nofile", soft: "64", hard: "64" }], prlimit: join(dir, "no-prlimit") });
    const root = await mkdtemp(join(dir, "root-"));
    const ulimit = await both(ex.runInRoot({ root, args: ["/bin/true"], env: [], cwd: "/", uid: 0, gid: 0, additionalGids: [], network: "none" }));
    expect(ulimit.message).toBe("the sandbox.ulimits option needs prlimit (util-linux) on the PATH");
    expect(ulimit.cli).toContain("error[SANDBOX_UNAVAILABLE]: --ulimit needs prlimit (util-linux) on the PATH\nhint: install util-linux, or leave out --ulimit");
  });
});
