/**
 * ADD <git URL>#ref[:subdir]: the repository is fetched with the system git into a
 * cache keyed by URL (so later builds fetch only what changed), the ref resolved
 * to a commit (that commit is what the step's cache key uses), and the tree at
 * that commit checked out for copying; the .git directory only with --keep-git-dir.
 */
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError } from "../../errors.js";
import { runProcess } from "../../process.js";

export interface GitSource {
  url: string;
  ref?: string;
  subdir?: string;
}

/** Git URLs as BuildKit recognises them: *.git, git://, git@host:path, with an optional #ref[:subdir]. */
export function parseGitSource(s: string): GitSource | undefined {
  const hash = s.indexOf("#");
  const base = hash < 0 ? s : s.slice(0, hash);
  const frag = hash < 0 ? "" : s.slice(hash + 1);
  const isGit = /^git@[^:]+:/.test(base) || /^git:\/\//.test(base) || (/^(https?|ssh):\/\//.test(base) && /\.git\/?$/.test(base));
  if (!isGit) return undefined;
  const [ref, subdir] = frag === "" ? [undefined, undefined] : [frag.split(":")[0] || undefined, frag.split(":").slice(1).join(":") || undefined];
  return { url: base, ...(ref ? { ref } : {}), ...(subdir ? { subdir } : {}) };
}

async function git(args: string[], opts: { cwd?: string; signal?: AbortSignal; env?: Record<string, string> } = {}): Promise<string> {
  const env = { ...process.env, GIT_TERMINAL_PROMPT: "0", ...opts.env };
  const r = await runProcess("git", args, { cwd: opts.cwd, signal: opts.signal, env }).catch((e: Error) => {
    throw new OcibuildError("BUILD_GIT_UNAVAILABLE", `cannot run git: ${e.message}`, { hint: "apt-get install git" });
  });
  if (r.code !== 0) throw new OcibuildError("BUILD_GIT_FAILED", `git ${args[0]} failed: ${r.stderr.trim().split("\n").slice(-3).join(" ")}`);
  return r.stdout.trim();
}

export interface GitCheckout {
  /** The checked-out tree (or its subdir). */
  dir: string;
  commit: string;
}

/** Fetch `src` into the cache and check its commit out under `scratch`. */
/** `what` names the source in errors: `ADD URL` for a step, the context for a git build context. */
export async function checkoutGit(src: GitSource, cacheDir: string, scratch: string, keepGitDir: boolean, signal?: AbortSignal, what = `ADD ${src.url}`): Promise<GitCheckout> {
  const mirror = join(cacheDir, createHash("sha256").update(src.url).digest("hex").slice(0, 32));
  if (!(await stat(join(mirror, "HEAD")).catch(() => null))) {
    await mkdir(cacheDir, { recursive: true, mode: 0o700 });
    const tmp = await mkdtemp(`${mirror}.tmp-`);
    try {
      await git(["init", "--bare", "--quiet", tmp], { signal });
      await git(["--git-dir", tmp, "remote", "add", "origin", src.url], { signal });
      await rm(mirror, { recursive: true, force: true });
      await rename(tmp, mirror);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }
  await git(["--git-dir", mirror, "fetch", "--quiet", "--force", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"], { signal });
  const ref = src.ref ?? "HEAD";
  let commit = "";
  {
    const candidates = src.ref ? [`${ref}^{commit}`, `refs/remotes/origin/${ref}^{commit}`, `refs/tags/${ref}^{commit}`] : ["refs/remotes/origin/HEAD^{commit}", "refs/remotes/origin/main^{commit}", "refs/remotes/origin/master^{commit}"];
    for (const c of candidates) {
      commit = await git(["--git-dir", mirror, "rev-parse", "--verify", "--quiet", c], { signal }).catch(() => "");
      if (commit) break;
    }
    if (!commit && !src.ref) {
      // No ref named, and no usual default branch: whatever the remote's HEAD points to.
      // (Never for a named ref: a ref that is not there must fail, not build the default branch.)
      const head = await git(["ls-remote", "--symref", src.url, "HEAD"], { signal });
      const m = /ref: refs\/heads\/(\S+)\s+HEAD/.exec(head);
      if (m) commit = await git(["--git-dir", mirror, "rev-parse", "--verify", "--quiet", `refs/remotes/origin/${m[1]}^{commit}`], { signal }).catch(() => "");
    }
  }
  if (!commit) throw new OcibuildError("BUILD_GIT_REF_NOT_FOUND", `${what}: ref "${ref}" not found in the repository`);
  const work = await mkdtemp(join(scratch, "git-"));
  if (keepGitDir) {
    await git(["clone", "--quiet", "--no-checkout", mirror, work], { signal });
    await git(["-C", work, "checkout", "--quiet", "--detach", commit], { signal });
    await git(["-C", work, "remote", "set-url", "origin", src.url], { signal });
  } else {
    await git(["--git-dir", mirror, "--work-tree", work, "checkout", "--quiet", "--force", commit, "--", "."], { signal });
  }
  let dir = work;
  if (src.subdir) {
    dir = join(work, ...src.subdir.split("/").filter((c) => c !== "" && c !== "." && c !== ".."));
    if (!(await stat(dir).catch(() => null))?.isDirectory()) throw new OcibuildError("BUILD_GIT_SUBDIR_NOT_FOUND", `${what}: ${src.subdir} is not a directory at ${commit.slice(0, 12)}`);
  }
  return { dir, commit };
}
