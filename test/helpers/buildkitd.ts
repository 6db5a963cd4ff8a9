/**
 * Starts a real buildkitd for a test: OCI (runc) worker, its own root dir, a unix
 * socket in a temp dir, and the test registries marked http/insecure in its
 * config. Stopped (SIGTERM, then SIGKILL) and cleaned up by stop().
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BuildkitExecutor } from "../../src/builder/sandbox/buildkit.js";
import { BuildkitClient } from "../../src/builder/sandbox/buildkit/client.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { htpasswdConfig, makeHtpasswd, writeDockerConfig } from "./registry-tls.js";
import { freePort, startRegistry, type TestRegistry } from "./registry.js";
import { have, isRoot } from "./tools.js";

const pexec = promisify(execFile);

/** Why buildkitd tests cannot run here, or undefined when they can. */
export function buildkitdMissing(): string | undefined {
  if (!have("buildkitd")) return "buildkitd is not installed";
  if (!have("runc")) return "runc is not installed";
  if (!isRoot) return "buildkitd's OCI worker needs root here";
  return undefined;
}

export interface TestBuildkitd {
  /** unix:///.../buildkitd.sock */
  address: string;
  dir: string;
  logs(): string;
  stop(): Promise<void>;
}

export interface BuildkitdOptions {
  insecureRegistries: string[];
  /** Listen on tcp://127.0.0.1:PORT with TLS, requiring client certificates signed by `ca`. */
  tls?: { cert: string; key: string; ca: string };
  /** Client credentials the readiness probe uses with `tls`. */
  clientTls?: { cert: string; key: string; ca: string };
}

export async function startBuildkitd(opts: BuildkitdOptions): Promise<TestBuildkitd> {
  const dir = await mkdtemp(join(tmpdir(), "ocibuild-buildkitd-"));
  const address = opts.tls ? `tcp://127.0.0.1:${await freePort()}` : `unix://${join(dir, "buildkitd.sock")}`;
  const registries = opts.insecureRegistries.map((h) => `[registry."${h}"]\n  http = true\n  insecure = true\n`).join("\n");
  const tls = opts.tls ? `\n[grpc.tls]\n  cert = "${opts.tls.cert}"\n  key = "${opts.tls.key}"\n  ca = "${opts.tls.ca}"\n` : "";
  const config = `root = "${join(dir, "root")}"

[grpc]
  address = ["${address}"]
${tls}
[worker.oci]
  enabled = true
  gc = false

[worker.containerd]
  enabled = false

${registries}`;
  await writeFile(join(dir, "buildkitd.toml"), config);
  let log = "";
  const child: ChildProcess = spawn("buildkitd", ["--config", join(dir, "buildkitd.toml")], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.on("data", (d: Buffer) => (log += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (log += d.toString()));
  let exited = false;
  const exitP = new Promise<void>((r) => child.once("exit", () => ((exited = true), r())));
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exitP;
      clearTimeout(t);
    }
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  };
  // Ready when ListWorkers answers with a worker (polling; no fixed sleep decides the outcome).
  const client = await BuildkitClient.connect({ address, ...(opts.clientTls ?? {}) });
  try {
    for (let i = 0; i < 300; i++) {
      if (exited) throw new Error(`buildkitd exited during start-up:\n${log}`);
      const ok = await client.listWorkers().then((w) => w.length > 0, () => false);
      if (ok) return { address, dir, logs: () => log, stop };
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`buildkitd did not become ready:\n${log}`);
  } catch (e) {
    await stop();
    throw e;
  } finally {
    client.close();
  }
}

/** A client certificate signed by the test CA (for buildkitd's mutual TLS). */
export async function makeClientCert(dir: string, ca: { caCert: string; caKey: string }): Promise<{ cert: string; key: string }> {
  const key = join(dir, "client.key");
  const csr = join(dir, "client.csr");
  const cert = join(dir, "client.pem");
  const ext = join(dir, "client.ext");
  await pexec("openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=ocibuild-client"]);
  await writeFile(ext, "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n");
  await pexec("openssl", ["x509", "-req", "-in", csr, "-CA", ca.caCert, "-CAkey", ca.caKey, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext]);
  return { cert, key };
}

/**
 * What the BuildKit executor tests share: a registry with the busybox base, a
 * second registry that needs a login (and a docker config with its credentials),
 * and a buildkitd that treats both as plain-HTTP registries.
 */
export interface BuildkitFixture {
  work: string;
  reg: TestRegistry;
  authReg: TestRegistry;
  /** docker config.json with credentials for authReg. */
  authConfig: string;
  bk: TestBuildkitd;
  /** The busybox base image reference. */
  base: string;
  /** Staging repository on `reg`. */
  staging: string;
  executor(): BuildkitExecutor;
  stop(): Promise<void>;
}

export async function startBuildkitFixture(): Promise<BuildkitFixture> {
  const work = await mkdtemp(join(tmpdir(), "ocibuild-bk-"));
  const started: { stop(): Promise<void> }[] = [];
  const stop = async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    await rm(work, { recursive: true, force: true });
  };
  try {
    const reg = await startRegistry();
    started.push(reg);
    await mkdir(join(work, "auth"));
    const authReg = await startRegistry({ extraConfig: htpasswdConfig(await makeHtpasswd(join(work, "auth"), { ci: "s3cret" })) });
    started.push(authReg);
    const authConfig = await writeDockerConfig(join(work, "auth"), { [authReg.host]: { username: "ci", password: "s3cret" } });
    const bk = await startBuildkitd({ insecureRegistries: [reg.host, authReg.host] });
    started.push(bk);
    const base = `${reg.host}/base/busybox:latest`;
    const staging = `${reg.host}/ci/staging`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "base-cache") });
    return { work, reg, authReg, authConfig, bk, base, staging, executor: () => new BuildkitExecutor({ address: bk.address, stagingRepo: staging }), stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
