/**
 * RUN --mount=type=cache directories of one build: where each persists (by id and
 * platform, under the cache directory), and who uses it right now. The build owns
 * one `CacheMounts` (StepContext.cacheMounts); across builds and processes a locked
 * mount is held by an O_EXCL lock file beside its directory.
 */
import { createHash } from "node:crypto";
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { formatPlatform, type Platform } from "../oci/platform.js";

export class CacheMounts {
  /** sharing=locked: the tail of the chain of steps waiting for each directory in this build. */
  private readonly locks = new Map<string, Promise<void>>();
  /** sharing=private: how many steps of this build use each directory now. */
  private readonly users = new Map<string, number>();

  /** `dir`: where the directories persist (the cache directory's `mounts/`). */
  constructor(readonly dir: string) {}

  /** The directory of a cache mount id on a platform. */
  dirFor(id: string, platform: Platform): string {
    const h = createHash("sha256").update(`${id}\n${formatPlatform(platform)}`).digest("hex").slice(0, 32);
    return join(this.dir, h);
  }

  /** Take the lock on `dir`: in this build by promise chain, across builds and processes by a lock file. Resolves to its release. */
  async lock(dir: string, signal?: AbortSignal): Promise<() => Promise<void>> {
    const prev = this.locks.get(dir) ?? Promise.resolve();
    let releaseLocal!: () => void;
    const mine = new Promise<void>((r) => (releaseLocal = r));
    this.locks.set(dir, prev.then(() => mine));
    await prev;
    const lockFile = `${dir}.lock`;
    try {
      await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
      await acquireLockFile(lockFile, signal);
    } catch (e) {
      releaseLocal(); // never leave the chain blocked
      throw e;
    }
    return async () => {
      await rm(lockFile, { force: true });
      releaseLocal();
    };
  }

  /** Use `dir` privately: the first user gets it, a second concurrent one `dir-private-1`, and so on. */
  claimPrivate(dir: string): { dir: string; release(): void } {
    const n = this.users.get(dir) ?? 0;
    this.users.set(dir, n + 1);
    return {
      dir: n > 0 ? `${dir}-private-${n}` : dir,
      release: () => this.users.set(dir, (this.users.get(dir) ?? 1) - 1),
    };
  }
}

/** Create `lockFile` exclusively, holding our pid; wait while a live process holds it, take over from a dead one. */
async function acquireLockFile(lockFile: string, signal?: AbortSignal): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    try {
      const fh = await open(lockFile, "wx");
      await fh.writeFile(String(process.pid));
      await fh.close();
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const text = await readFile(lockFile, "utf8").catch(() => null);
      if (text === null) continue; // released meanwhile
      if (holderAlive(text)) await new Promise((r) => setTimeout(r, 100));
      else await rm(lockFile, { force: true }); // a lock left by a dead process is stale
    }
  }
}

/** Whether the process named in a lock file is alive; an empty file is a lock being written right now. */
function holderAlive(text: string): boolean {
  if (text === "") return true;
  const pid = Number(text);
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
