/**
 * A git daemon on a free loopback port serving bare repositories under a temp
 * directory (git:// URLs): the remote a git build context or ADD fetches from.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../src/testing/registry.js";

export interface GitDaemon {
  /** git://127.0.0.1:PORT */
  url: string;
  /** Makes a bare repository NAME.git from the files given, one commit on `main`; returns that commit. */
  repo(name: string, files: Record<string, string>, opts?: { tag?: string }): string;
  stop(): Promise<void>;
}

function waitForPort(port: number, deadline: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve()));
      s.once("error", () => (Date.now() > deadline ? reject(new Error(`git daemon did not listen on ${port}`)) : setTimeout(attempt, 50)));
    };
    attempt();
  });
}

export async function startGitDaemon(): Promise<GitDaemon> {
  const base = await mkdtemp(join(tmpdir(), "ocibuild-gitd-"));
  const port = await freePort();
  const child: ChildProcess = spawn("git", ["daemon", `--base-path=${base}`, "--export-all", "--reuseaddr", "--listen=127.0.0.1", `--port=${port}`, base], { stdio: "ignore" });
  await waitForPort(port, Date.now() + 10_000);
  const git = (cwd: string, ...args: string[]) => execFileSync("git", args, { cwd, encoding: "utf8", env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" } }).trim();
  return {
    url: `git://127.0.0.1:${port}`,
    repo(name, files, opts = {}) {
      const work = join(base, `${name}-work`);
      execFileSync("mkdir", ["-p", work]);
      git(work, "init", "--quiet", "-b", "main");
      for (const [p, text] of Object.entries(files)) {
        execFileSync("mkdir", ["-p", join(work, p, "..")]);
        execFileSync("tee", [join(work, p)], { input: text, stdio: ["pipe", "ignore", "inherit"] });
      }
      git(work, "add", "-A");
      git(work, "commit", "--quiet", "-m", "c");
      if (opts.tag) git(work, "tag", opts.tag);
      execFileSync("rm", ["-rf", join(base, `${name}.git`)]);
      git(base, "clone", "--quiet", "--bare", work, `${name}.git`);
      return git(work, "rev-parse", "HEAD");
    },
    async stop() {
      child.kill();
      await rm(base, { recursive: true, force: true });
    },
  };
}
