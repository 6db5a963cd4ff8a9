/**
 * Starts a real buildkitd for a test: OCI (runc) worker, its own root dir, a unix
 * socket in a temp dir, and the test registries marked http/insecure in its
 * config. Stopped (SIGTERM, then SIGKILL) and cleaned up by stop().
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BuildkitClient } from "../../src/builder/sandbox/buildkit/client.js";
import { have, isRoot } from "./tools.js";

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

export async function startBuildkitd(opts: { insecureRegistries: string[] }): Promise<TestBuildkitd> {
  const dir = await mkdtemp(join(tmpdir(), "ocibuild-buildkitd-"));
  const sock = join(dir, "buildkitd.sock");
  const address = `unix://${sock}`;
  const registries = opts.insecureRegistries.map((h) => `[registry."${h}"]\n  http = true\n  insecure = true\n`).join("\n");
  const config = `root = "${join(dir, "root")}"

[grpc]
  address = ["${address}"]

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
  const client = await BuildkitClient.connect({ address });
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
