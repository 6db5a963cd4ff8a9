/**
 * Test and demo support (not part of the build path).
 * Starts a real CNCF Distribution registry (Debian's docker-registry) on a free
 * loopback port for a test, and stops it. Never a fixed port.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { existsSync } from "node:fs";

export const REGISTRY_BIN = "/usr/bin/docker-registry";

export function haveRegistry(): boolean {
  return existsSync(REGISTRY_BIN);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface RegistryOptions {
  /** Extra YAML appended under the top level (e.g. an `auth:` section). */
  extraConfig?: string;
  /** TLS certificate and key paths: the registry then serves HTTPS; with clientCAs it asks for a client certificate they signed (mutual TLS). */
  tls?: { certificate: string; key: string; clientCAs?: string[] };
}

export interface TestRegistry {
  /** host:port, e.g. 127.0.0.1:39123 */
  host: string;
  port: number;
  url: string;
  dir: string;
  logs(): string;
  stop(): Promise<void>;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "ocibuild-registry-"));
  let lastErr: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const clientCAs = (opts.tls?.clientCAs ?? []).map((c) => `\n      - ${c}`).join("");
    const tls = opts.tls ? `\n  tls:\n    certificate: ${opts.tls.certificate}\n    key: ${opts.tls.key}${clientCAs ? `\n    clientcas:${clientCAs}` : ""}` : "";
    const config = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
  secret: ocibuild-test-secret${tls}
${opts.extraConfig ?? ""}
`;
    const cfgPath = join(dir, "config.yml");
    await writeFile(cfgPath, config);
    let out = "";
    const child: ChildProcess = spawn(REGISTRY_BIN, ["serve", cfgPath], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.on("data", (d) => (out += d));
    child.stderr?.on("data", (d) => (out += d));
    const scheme = opts.tls ? "https" : "http";
    try {
      await waitReady(child, port, () => out);
    } catch (e) {
      lastErr = e;
      child.kill("SIGKILL");
      continue;
    }
    return {
      host: `127.0.0.1:${port}`,
      port,
      url: `${scheme}://127.0.0.1:${port}`,
      dir,
      logs: () => out,
      stop: async () => {
        if (child.exitCode === null) {
          const exited = new Promise((r) => child.once("exit", r));
          child.kill("SIGTERM");
          await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
          if (child.exitCode === null) child.kill("SIGKILL");
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error(`could not start docker-registry: ${String(lastErr)}`);
}

async function waitReady(child: ChildProcess, port: number, logs: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}: ${logs()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(true)); // port taken: the registry is listening
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(false)));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`docker-registry did not listen on ${port} in time: ${logs()}`);
}
