/**
 * Build secrets (the secrets option) and ssh agents (the ssh option), resolved once per build.
 * Secret values stay in memory; nothing here logs them, and errors name only ids
 * and file paths. An ssh spec is an agent socket, or key files for which an
 * ssh-agent of our own is started (and stopped when the build ends).
 */
import type { ChildProcess } from "node:child_process";
import { childProcess } from "../builtins.js";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError, optionWords } from "../errors.js";
import { runProcess } from "../process.js";

export interface SecretSpec {
  id: string;
  /** A file with the secret's bytes. */
  src?: string;
  /** An environment variable holding it. */
  env?: string;
}

export interface SshSpec {
  id: string;
  /** Agent sockets or private key files; empty: $SSH_AUTH_SOCK. */
  paths: string[];
}

export async function resolveSecrets(specs: readonly SecretSpec[], env: Record<string, string | undefined>, cwd: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const s of specs) {
    if (s.src !== undefined) {
      const path = join(cwd, s.src);
      try {
        out.set(s.id, await readFile(s.src.startsWith("/") ? s.src : path));
      } catch (e) {
        throw new OcibuildError("BUILD_SECRET_UNREADABLE", `secret "${s.id}": cannot read ${s.src}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    } else {
      const value = env[s.env ?? s.id];
      if (value === undefined) throw new OcibuildError("BUILD_SECRET_UNREADABLE", `secret "${s.id}": the environment variable ${s.env ?? s.id} is not set`);
      out.set(s.id, Buffer.from(value, "utf8"));
    }
  }
  return out;
}

export interface SshAgents {
  sockets: Map<string, string>;
  stop(): Promise<void>;
}

async function isSocket(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null))?.isSocket() ?? false;
}

export async function startSshAgents(specs: readonly SshSpec[], env: Record<string, string | undefined>, dir: string): Promise<SshAgents> {
  const sockets = new Map<string, string>();
  const children: ChildProcess[] = [];
  const stop = async () => {
    for (const c of children) c.kill("SIGTERM");
  };
  try {
    for (const [n, s] of specs.entries()) {
      const paths = s.paths.length > 0 ? s.paths : [env.SSH_AUTH_SOCK ?? ""];
      if (paths.length === 1 && (await isSocket(paths[0]!))) {
        sockets.set(s.id, paths[0]!);
        continue;
      }
      if (paths[0] === "") throw new OcibuildError("BUILD_SSH_UNAVAILABLE", `${optionWords("ssh", s.id)}: SSH_AUTH_SOCK is not set; pass a socket or key files (${optionWords("ssh", `${s.id}=~/.ssh/id_ed25519`)})`);
      // Key files: an agent of our own holding them.
      const sock = join(dir, `ssh-agent-${n}.sock`);
      const agent = childProcess().spawn("ssh-agent", ["-D", "-a", sock], { stdio: ["ignore", "ignore", "pipe"] });
      children.push(agent);
      await new Promise<void>((resolve, reject) => {
        agent.on("error", (e) => reject(new OcibuildError("BUILD_SSH_UNAVAILABLE", `${optionWords("ssh", s.id)}: cannot start ssh-agent: ${e.message}`, { hint: "apt-get install openssh-client" })));
        const t = setInterval(async () => {
          if (await isSocket(sock)) {
            clearInterval(t);
            resolve();
          }
        }, 20);
        agent.on("exit", (code) => {
          clearInterval(t);
          reject(new OcibuildError("BUILD_SSH_UNAVAILABLE", `${optionWords("ssh", s.id)}: ssh-agent exited (${code})`));
        });
      });
      for (const key of paths) {
        const r = await runProcess("ssh-add", [key], { env: { ...process.env, SSH_AUTH_SOCK: sock } });
        if (r.code !== 0) throw new OcibuildError("BUILD_SSH_UNAVAILABLE", `${optionWords("ssh", s.id)}: ssh-add could not load ${key}: ${r.stderr.trim()}`);
      }
      sockets.set(s.id, sock);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { sockets, stop };
}
