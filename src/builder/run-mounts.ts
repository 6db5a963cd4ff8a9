/**
 * Preparing RUN --mount for one step: host paths to bind, tmpfs mounts, the
 * environment additions (secrets with env=, SSH_AUTH_SOCK), and what to release
 * afterwards. Nothing here ever lands in the layer: binds and secrets live
 * outside the root, and the sandbox reports the mount points it had to create.
 * Secret values are held in memory and written only to private temp files.
 */
import { chmod, chown, cp, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError, optionWords } from "../errors.js";
import { lowerDirs } from "./fs/step-root.js";
import { missingSecretHint, type MountSpec } from "./mounts.js";
import { mountRoot } from "./fs/overlay.js";
import { resolveFollow } from "./fs/path.js";
import type { RunMount } from "./sandbox/index.js";
import { cleanSourcePath, selectSources, type SourceTree } from "./sources.js";
import type { StageState } from "./stage-state.js";
import type { StepContext } from "./step-context.js";

export interface PreparedMounts {
  mounts: RunMount[];
  env: Record<string, string>;
  release(): Promise<void>;
}

type Mount<T extends MountSpec["type"]> = Extract<MountSpec, { type: T }>;

/** The mounts of one step as they are prepared: one method per mount type, and what to undo. */
class MountSetup {
  readonly mounts: RunMount[] = [];
  readonly env: Record<string, string> = {};
  private readonly releases: (() => Promise<void>)[] = [];
  private tmp?: string;

  constructor(
    private readonly state: StageState,
    private readonly ctx: StepContext,
  ) {}

  async add(m: MountSpec): Promise<void> {
    switch (m.type) {
      case "tmpfs":
        this.mounts.push(m.size !== undefined ? { type: "tmpfs", target: m.target, size: m.size } : { type: "tmpfs", target: m.target });
        return;
      case "bind":
        return this.bind(m);
      case "cache":
        return this.cache(m);
      case "secret":
        return this.secret(m);
      case "ssh":
        return this.ssh(m);
    }
  }

  /** Undo everything, the last step first; a failure to undo one thing does not stop the rest. */
  async release(): Promise<void> {
    for (const r of this.releases.reverse()) await r().catch(() => {});
    this.releases.length = 0;
  }

  private async bind(m: Mount<"bind">): Promise<void> {
    const tree = m.from === undefined ? this.ctx.context : this.ctx.localContext?.(m.from);
    let host = tree ? await this.treeSource(tree, m.source) : await this.stageSource(m.from!, m.source);
    if (!m.readonly) {
      // rw binds: writes are discarded after the step, so the step gets its own copy.
      const copy = join(await this.tmpDir(), `rw-${this.mounts.length}`);
      await cp(host, copy, { recursive: true, verbatimSymlinks: true });
      host = copy;
    }
    this.mounts.push({ type: "bind", source: host, target: m.target, readonly: m.readonly });
  }

  /** A bind's source in the build context (or a named local one); .dockerignore applies to what it shows, so a directory is a filtered copy. */
  private async treeSource(context: SourceTree, source: string): Promise<string> {
    const [match] = await selectSources(context, source);
    if (!match) throw notFound(`RUN --mount source "${source}" not found in ${context.label}`);
    const host = match.hostPath;
    if (!context.ignore || !match.stats.isDirectory()) return host;
    const copy = join(await this.tmpDir(), `bind-${this.mounts.length}`);
    await cp(host, copy, {
      recursive: true,
      verbatimSymlinks: true,
      filter: (src) => {
        // Where the files really are (a bind of a link to a directory: the directory's paths).
        const rel = [match.realRel, src.slice(host.length + 1)].filter(Boolean).join("/");
        return src === host || !context.ignore!.ignores(rel);
      },
    });
    return copy;
  }

  private async stageSource(from: string, source: string): Promise<string> {
    const r = await resolveFollow(await this.viewOf(from), cleanSourcePath(source));
    if (!r) throw notFound(`RUN --mount source "${source}" not found in ${from}`);
    return r.hostPath;
  }

  private async cache(m: Mount<"cache">): Promise<void> {
    const mounts = this.ctx.cacheMounts;
    let dir = mounts.dirFor(m.id, this.state.platform);
    if (m.sharing === "locked") this.releases.push(await mounts.lock(dir, this.ctx.signal));
    if (m.sharing === "private") {
      // A second concurrent user gets its own instance.
      const claim = mounts.claimPrivate(dir);
      this.releases.push(async () => claim.release());
      dir = claim.dir;
    }
    const fresh = !(await stat(dir).then(() => true, () => false));
    if (fresh) {
      await mkdir(dir, { recursive: true, mode: 0o700 }); // the mount's own mode is set below
      if (m.from !== undefined) {
        const r = await resolveFollow(await this.viewOf(m.from), cleanSourcePath(m.source));
        if (r?.stats.isDirectory()) await cp(r.hostPath, dir, { recursive: true, verbatimSymlinks: true });
      }
      await chown(dir, m.uid, m.gid);
      await chmod(dir, m.mode);
    }
    this.mounts.push({ type: "bind", source: dir, target: m.target, readonly: m.readonly });
  }

  private async secret(m: Mount<"secret">): Promise<void> {
    const value = this.ctx.secrets.get(m.id);
    if (value === undefined) {
      if (!m.required) return;
      throw new OcibuildError("BUILD_SECRET_MISSING", `secret "${m.id}" is required by RUN --mount=type=secret but was not provided`, {
        hint: missingSecretHint(m.id),
      });
    }
    if (m.env) this.env[m.env] = value.toString("utf8");
    if (!m.target) return;
    const file = join(await this.tmpDir(), `secret-${this.mounts.length}`);
    await writeFile(file, value, { mode: 0o600 });
    await chown(file, m.uid, m.gid);
    await chmod(file, m.mode);
    this.mounts.push({ type: "bind", source: file, target: m.target, readonly: true });
  }

  private async ssh(m: Mount<"ssh">): Promise<void> {
    const sock = this.ctx.sshAgents.get(m.id);
    if (sock === undefined) {
      if (!m.required) return;
      throw new OcibuildError("BUILD_SSH_MISSING", `ssh agent "${m.id}" is required by RUN --mount=type=ssh but was not provided`, {
        hint:
          m.id === "default"
            ? `pass ${optionWords("ssh", "default")} (forwards $SSH_AUTH_SOCK) or ${optionWords("ssh", "default=/path/to/key")}`
            : `pass ${optionWords("ssh", `${m.id}=SOCKET_OR_KEY`)}`,
      });
    }
    this.mounts.push({ type: "bind", source: sock, target: m.target, readonly: false });
    this.env.SSH_AUTH_SOCK ??= m.target;
  }

  /** The step's private temp directory (0700), made on first use and removed on release. */
  private async tmpDir(): Promise<string> {
    if (this.tmp) return this.tmp;
    await mkdir(this.ctx.scratchDir, { recursive: true });
    const tmp = await mkdtemp(join(this.ctx.scratchDir, "mounts-"));
    await chmod(tmp, 0o700);
    this.tmp = tmp;
    this.releases.unshift(() => rm(tmp, { recursive: true, force: true }));
    return tmp;
  }

  /** A read-only view of another stage or image, kept mounted until release. */
  private async viewOf(from: string): Promise<string> {
    const { ctx } = this;
    const local = ctx.localContext?.(from);
    if (local) return local.root;
    const stage = ctx.stage(from);
    const src = stage ? await stage : await ctx.image(from, this.state.platform);
    const lowers = await lowerDirs(src, ctx);
    const scratch = await mkdtemp(join(await this.tmpDir(), "view-"));
    if (lowers.length === 0) {
      await mkdir(join(scratch, "empty"));
      return join(scratch, "empty");
    }
    const mounted = await mountRoot(lowers, scratch, { signal: ctx.signal, forceCopy: ctx.forceCopySnapshots });
    this.releases.push(() => mounted.unmount());
    return mounted.merged;
  }
}

function notFound(what: string): OcibuildError {
  return new OcibuildError("BUILD_MOUNT_SOURCE_NOT_FOUND", what);
}

/** The step's RUN --mount specs made ready for a local sandbox; on failure, nothing is left behind. */
export async function prepareRunMounts(specs: readonly MountSpec[], state: StageState, ctx: StepContext): Promise<PreparedMounts> {
  const setup = new MountSetup(state, ctx);
  try {
    for (const m of specs) await setup.add(m);
  } catch (e) {
    await setup.release();
    throw e;
  }
  return { mounts: setup.mounts, env: setup.env, release: () => setup.release() };
}
