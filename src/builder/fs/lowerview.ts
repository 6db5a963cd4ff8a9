/**
 * A read-only view of a stack of overlay-form layer directories (bottom first),
 * resolved with overlayfs' rules without mounting anything: the topmost entry
 * wins, a char 0/0 device (or an OCI `.wh.name` marker file, the form used where
 * mknod is not permitted) hides the name in the layers below, and an opaque
 * directory (overlay xattr, or a `.wh..wh..opq` marker) hides everything below it.
 * Used to diff a changed root against what it started from, and to materialise a
 * merged tree where overlayfs cannot be mounted.
 */
import type { Stats } from "node:fs";
import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { areOpaque } from "./native.js";
import { lstatOrNullSync as lstatOrNull } from "./util.js";
import { WH_OPAQUE, WH_PREFIX } from "./path.js";


export interface LowerEntry {
  hostPath: string;
  stats: Stats;
}

interface Contributor {
  layer: number;
  hostPath: string;
}

export function isWhiteoutDevice(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/**
 * Metadata reads here are synchronous on purpose: a lookup is a handful of
 * lstat calls per layer on immutable local directories, a few microseconds each
 * when made directly and a hundred or more each when queued through libuv's
 * thread pool under load; the event loop is never held for long (one directory
 * listing at most).
 */

export class LowerView {
  private readonly contributors = new Map<string, Contributor[] | null>();
  private readonly entries = new Map<string, LowerEntry | null>();

  private constructor(
    /** Top first. */
    private readonly layers: string[],
    private readonly signal: AbortSignal | undefined,
  ) {}

  /**
   * `lowerDirs` bottom first, as given to mountRoot. Nothing is scanned up front:
   * whether a directory is opaque is asked (in one batch per directory level)
   * only for the directories a lookup passes through, so the cost follows what
   * is looked at, not the size or number of the layers.
   */
  static async open(lowerDirs: string[], signal?: AbortSignal): Promise<LowerView> {
    signal?.throwIfAborted();
    return new LowerView([...lowerDirs].reverse(), signal);
  }

  get empty(): boolean {
    return this.layers.length === 0;
  }

  /** How many of `dirs` (in order) show through before, and including, the first opaque one. */
  private async untilOpaque(dirs: string[]): Promise<number> {
    if (dirs.length === 0) return 0;
    const marked = await areOpaque(dirs, this.signal);
    for (let i = 0; i < dirs.length; i++) {
      if (marked[i] || (lstatOrNull(join(dirs[i]!, WH_OPAQUE))) !== null) return i + 1;
    }
    return dirs.length;
  }

  private isWhiteout(hostDir: string, name: string, st: Stats | null): boolean {
    if (st !== null) return isWhiteoutDevice(st);
    return (lstatOrNull(join(hostDir, WH_PREFIX + name))) !== null;
  }

  /** The layers (top first) in which `comps` is a directory that shows through; null if not a dir. */
  private async dirContributors(comps: readonly string[]): Promise<Contributor[] | null> {
    const key = comps.join("/");
    const cached = this.contributors.get(key);
    if (cached !== undefined) return cached;
    let result: Contributor[] | null;
    if (comps.length === 0) {
      const all = this.layers.map((hostPath, layer) => ({ layer, hostPath }));
      result = all.slice(0, await this.untilOpaque(this.layers));
    } else {
      const parent = await this.dirContributors(comps.slice(0, -1));
      result = null;
      if (parent !== null) {
        const name = comps[comps.length - 1]!;
        const found: Contributor[] = [];
        for (const c of parent) {
          const hp = join(c.hostPath, name);
          const st = lstatOrNull(hp);
          if (this.isWhiteout(c.hostPath, name, st)) break;
          if (st === null) continue;
          if (!st.isDirectory()) break;
          found.push({ layer: c.layer, hostPath: hp });
        }
        found.length = await this.untilOpaque(found.map((f) => f.hostPath));
        result = found.length > 0 ? found : null;
      }
    }
    this.contributors.set(key, result);
    return result;
  }

  /** The visible entry at `comps` (not following a final symlink), or null. */
  async lookup(comps: readonly string[]): Promise<LowerEntry | null> {
    const key = comps.join("/");
    let e = this.entries.get(key);
    if (e === undefined) {
      e = await this.find(comps);
      this.entries.set(key, e);
    }
    return e;
  }

  private async find(comps: readonly string[]): Promise<LowerEntry | null> {
    if (comps.length === 0) {
      const top = this.layers[0];
      return top === undefined ? null : { hostPath: top, stats: lstatSync(top) };
    }
    const parent = await this.dirContributors(comps.slice(0, -1));
    if (parent === null) return null;
    const name = comps[comps.length - 1]!;
    if (name.startsWith(WH_PREFIX)) return null;
    for (const c of parent) {
      const hp = join(c.hostPath, name);
      const st = lstatOrNull(hp);
      if (this.isWhiteout(c.hostPath, name, st)) return null;
      if (st !== null) return { hostPath: hp, stats: st };
    }
    return null;
  }

  /** Visible names in directory `comps` (unsorted), or null when it is not a directory. */
  async list(comps: readonly string[]): Promise<string[] | null> {
    const contributors = await this.dirContributors(comps);
    if (contributors === null) return null;
    const decided = new Map<string, boolean>();
    for (const c of contributors) {
      for (const d of readdirSync(c.hostPath, { withFileTypes: true })) {
        const name = d.name;
        if (name === WH_OPAQUE) continue;
        if (name.startsWith(WH_PREFIX)) {
          const hidden = name.slice(WH_PREFIX.length);
          if (!decided.has(hidden)) decided.set(hidden, false);
          continue;
        }
        if (decided.has(name)) continue;
        // Only a char device can be a whiteout; everything else shows without a stat.
        if (!d.isCharacterDevice()) {
          decided.set(name, true);
          continue;
        }
        const st = lstatOrNull(join(c.hostPath, name));
        decided.set(name, st !== null && !isWhiteoutDevice(st));
      }
    }
    return [...decided].filter(([, visible]) => visible).map(([n]) => n);
  }
}
