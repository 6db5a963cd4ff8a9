/**
 * Preparing RUN --mount for one step: host paths to bind, tmpfs mounts, the
 * environment additions (secrets with env=, SSH_AUTH_SOCK), and what to release
 * afterwards. Nothing here ever lands in the layer: binds and secrets live
 * outside the root, and the sandbox reports the mount points it had to create.
 * Secret values are held in memory and written only to private temp files.
 */
import { chmod, chown, cp, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { OcibuildError } from "../errors.js";
import { formatPlatform } from "../oci/platform.js";
import { lowerDirs } from "./fs/step-root.js";
import type { MountSpec } from "./mounts.js";
import { mountRoot } from "./fs/overlay.js";
import { resolveFollow } from "./fs/path.js";
import type { RunMount } from "./sandbox/index.js";
import { cleanSourcePath, selectSources } from "./sources.js";
import type { StageState } from "./stage-state.js";
import type { StepContext } from "./step-context.js";

export interface PreparedMounts {
  mounts: RunMount[];
  env: Record<string, string>;
  release(): Promise<void>;
}

const inProcessLocks = new Map<string, Promise<void>>();

/** A lock on a cache mount: in this process by promise chain, across processes by an O_EXCL lock file. */
async function lockDir(dir: string, signal?: AbortSignal): Promise<() => Promise<void>> {
  const prev = inProcessLocks.get(dir) ?? Promise.resolve();
  let releaseLocal!: () => void;
  const mine = new Promise<void>((r) => (releaseLocal = r));
  inProcessLocks.set(dir, prev.then(() => mine));
  await prev;
  const lockFile = `${dir}.lock`;
  try {
    await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
    for (;;) {
      signal?.throwIfAborted();
      try {
        const fh = await open(lockFile, "wx");
        await fh.writeFile(String(process.pid));
        await fh.close();
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        // A lock left by a dead process is stale.
        const text = await readFile(lockFile, "utf8").catch(() => null);
        if (text === null) continue; // released meanwhile
        const pid = Number(text);
        // An empty file is a lock being written right now: its owner is alive.
        let alive = text === "" || pid > 0;
        try {
          if (alive && pid > 0) process.kill(pid, 0);
        } catch {
          alive = false;
        }
        if (!alive) await rm(lockFile, { force: true });
        else await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (e) {
    releaseLocal(); // never leave the in-process chain blocked
    throw e;
  }
  return async () => {
    await rm(lockFile, { force: true });
    releaseLocal();
  };
}

const privateUsers = new Map<string, number>();

function cacheMountDir(ctx: StepContext, m: Extract<MountSpec, { type: "cache" }>, state: StageState): string {
  const h = createHash("sha256").update(`${m.id}\n${formatPlatform(state.platform)}`).digest("hex").slice(0, 32);
  return join(ctx.mountCacheDir, h);
}

export async function prepareRunMounts(specs: readonly MountSpec[], state: StageState, ctx: StepContext): Promise<PreparedMounts> {
  const releases: (() => Promise<void>)[] = [];
  const mounts: RunMount[] = [];
  const env: Record<string, string> = {};
  const release = async () => {
    for (const r of releases.reverse()) await r().catch(() => {});
  };
  let tmp: string | undefined;
  const tmpDir = async () => {
    if (!tmp) {
      await mkdir(ctx.scratchDir, { recursive: true });
      tmp = await mkdtemp(join(ctx.scratchDir, "mounts-"));
      await chmod(tmp, 0o700);
      const t = tmp;
      releases.unshift(() => rm(t, { recursive: true, force: true }));
    }
    return tmp;
  };
  /** A read-only view of another stage or image, kept mounted until release. */
  const viewOf = async (from: string): Promise<string> => {
    const stage = ctx.stage(from);
    const src = stage ? await stage : await ctx.image(from, state.platform);
    const lowers = await lowerDirs(src, ctx);
    const scratch = await mkdtemp(join(await tmpDir(), "view-"));
    if (lowers.length === 0) {
      await mkdir(join(scratch, "empty"));
      return join(scratch, "empty");
    }
    const mounted = await mountRoot(lowers, scratch, { signal: ctx.signal, forceCopy: ctx.forceCopySnapshots });
    releases.push(() => mounted.unmount());
    return mounted.merged;
  };
  const notFound = (what: string) => new OcibuildError("BUILD_MOUNT_SOURCE_NOT_FOUND", what);
  try {
    for (const m of specs) {
      switch (m.type) {
        case "tmpfs":
          mounts.push(m.size !== undefined ? { type: "tmpfs", target: m.target, size: m.size } : { type: "tmpfs", target: m.target });
          break;
        case "bind": {
          let host: string;
          if (m.from === undefined) {
            const [match] = await selectSources(ctx.context, m.source);
            if (!match) throw notFound(`RUN --mount source "${m.source}" not found in the build context`);
            host = match.hostPath;
            // .dockerignore applies to what a bind shows of the context: bind a filtered copy.
            if (ctx.context.ignore && match.stats.isDirectory()) {
              const copy = join(await tmpDir(), `bind-${mounts.length}`);
              await cp(host, copy, {
                recursive: true,
                verbatimSymlinks: true,
                filter: (src) => {
                  // Where the files really are (a bind of a link to a directory: the directory's paths).
                  const rel = [match.realRel, src.slice(host.length + 1)].filter(Boolean).join("/");
                  return src === host || !ctx.context.ignore!.ignores(rel);
                },
              });
              host = copy;
            }
          } else {
            const root = await viewOf(m.from);
            const r = await resolveFollow(root, cleanSourcePath(m.source));
            if (!r) throw notFound(`RUN --mount source "${m.source}" not found in ${m.from}`);
            host = r.hostPath;
          }
          if (!m.readonly) {
            // rw binds: writes are discarded after the step, so the step gets its own copy.
            const copy = join(await tmpDir(), `rw-${mounts.length}`);
            await cp(host, copy, { recursive: true, verbatimSymlinks: true });
            host = copy;
          }
          mounts.push({ type: "bind", source: host, target: m.target, readonly: m.readonly });
          break;
        }
        case "cache": {
          let dir = cacheMountDir(ctx, m, state);
          if (m.sharing === "locked") releases.push(await lockDir(dir, ctx.signal));
          if (m.sharing === "private") {
            // A second concurrent user gets its own instance.
            const n = privateUsers.get(dir) ?? 0;
            privateUsers.set(dir, n + 1);
            const base = dir;
            releases.push(async () => {
              privateUsers.set(base, (privateUsers.get(base) ?? 1) - 1);
            });
            if (n > 0) dir = `${dir}-private-${n}`;
          }
          const fresh = !(await stat(dir).then(() => true, () => false));
          if (fresh) {
            await mkdir(dir, { recursive: true, mode: 0o700 }); // the mount's own mode is set below
            if (m.from !== undefined) {
              const root = await viewOf(m.from);
              const r = await resolveFollow(root, cleanSourcePath(m.source));
              if (r?.stats.isDirectory()) await cp(r.hostPath, dir, { recursive: true, verbatimSymlinks: true });
            }
            await chown(dir, m.uid, m.gid);
            await chmod(dir, m.mode);
          }
          mounts.push({ type: "bind", source: dir, target: m.target, readonly: m.readonly });
          break;
        }
        case "secret": {
          const value = ctx.secrets.get(m.id);
          if (value === undefined) {
            if (m.required) {
              throw new OcibuildError("BUILD_SECRET_MISSING", `secret "${m.id}" is required by RUN --mount=type=secret but was not provided`, {
                hint: `pass it with --secret id=${m.id},src=FILE or --secret id=${m.id},env=VARIABLE`,
              });
            }
            break;
          }
          if (m.env) env[m.env] = value.toString("utf8");
          if (m.target) {
            const file = join(await tmpDir(), `secret-${mounts.length}`);
            await writeFile(file, value, { mode: 0o600 });
            await chown(file, m.uid, m.gid);
            await chmod(file, m.mode);
            mounts.push({ type: "bind", source: file, target: m.target, readonly: true });
          }
          break;
        }
        case "ssh": {
          const sock = ctx.sshAgents.get(m.id);
          if (sock === undefined) {
            if (m.required) {
              throw new OcibuildError("BUILD_SSH_MISSING", `ssh agent "${m.id}" is required by RUN --mount=type=ssh but was not provided`, {
                hint: m.id === "default" ? "pass --ssh default (forwards $SSH_AUTH_SOCK) or --ssh default=/path/to/key" : `pass --ssh ${m.id}=SOCKET_OR_KEY`,
              });
            }
            break;
          }
          mounts.push({ type: "bind", source: sock, target: m.target, readonly: false });
          env.SSH_AUTH_SOCK ??= m.target;
          break;
        }
      }
    }
  } catch (e) {
    await release();
    throw e;
  }
  return { mounts, env, release };
}
