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
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import { findOpaqueDirs } from "./rootfs-native.js";

const WH_PREFIX = ".wh.";
const WH_OPAQUE = ".wh..wh..opq";

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

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw e;
  }
}

export class LowerView {
  private readonly contributors = new Map<string, Contributor[] | null>();

  private constructor(
    /** Top first. */
    private readonly layers: string[],
    private readonly opaque: Set<string>[],
  ) {}

  /** `lowerDirs` bottom first, as given to mountRoot. */
  static async open(lowerDirs: string[], signal?: AbortSignal): Promise<LowerView> {
    const top = [...lowerDirs].reverse();
    const opaque = await Promise.all(top.map((d) => findOpaqueDirs(d, signal)));
    return new LowerView(top, opaque);
  }

  get empty(): boolean {
    return this.layers.length === 0;
  }

  private async isOpaque(layer: number, hostDir: string, rel: string): Promise<boolean> {
    if (this.opaque[layer]!.has(rel)) return true;
    return (await lstatOrNull(join(hostDir, WH_OPAQUE))) !== null;
  }

  private async isWhiteout(hostDir: string, name: string, st: Stats | null): Promise<boolean> {
    if (st !== null) return isWhiteoutDevice(st);
    return (await lstatOrNull(join(hostDir, WH_PREFIX + name))) !== null;
  }

  /** The layers (top first) in which `comps` is a directory that shows through; null if not a dir. */
  private async dirContributors(comps: readonly string[]): Promise<Contributor[] | null> {
    const key = comps.join("/");
    const cached = this.contributors.get(key);
    if (cached !== undefined) return cached;
    let result: Contributor[] | null;
    if (comps.length === 0) {
      result = [];
      for (let i = 0; i < this.layers.length; i++) {
        result.push({ layer: i, hostPath: this.layers[i]! });
        if (await this.isOpaque(i, this.layers[i]!, "")) break;
      }
    } else {
      const parent = await this.dirContributors(comps.slice(0, -1));
      result = null;
      if (parent !== null) {
        const name = comps[comps.length - 1]!;
        const found: Contributor[] = [];
        for (const c of parent) {
          const hp = join(c.hostPath, name);
          const st = await lstatOrNull(hp);
          if (await this.isWhiteout(c.hostPath, name, st)) break;
          if (st === null) continue;
          if (!st.isDirectory()) break;
          found.push({ layer: c.layer, hostPath: hp });
          if (await this.isOpaque(c.layer, hp, key)) break;
        }
        result = found.length > 0 ? found : null;
      }
    }
    this.contributors.set(key, result);
    return result;
  }

  /** The visible entry at `comps` (not following a final symlink), or null. */
  async lookup(comps: readonly string[]): Promise<LowerEntry | null> {
    if (comps.length === 0) {
      const top = this.layers[0];
      return top === undefined ? null : { hostPath: top, stats: await lstat(top) };
    }
    const parent = await this.dirContributors(comps.slice(0, -1));
    if (parent === null) return null;
    const name = comps[comps.length - 1]!;
    if (name.startsWith(WH_PREFIX)) return null;
    for (const c of parent) {
      const hp = join(c.hostPath, name);
      const st = await lstatOrNull(hp);
      if (await this.isWhiteout(c.hostPath, name, st)) return null;
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
      for (const name of await readdir(c.hostPath)) {
        if (name === WH_OPAQUE) continue;
        if (name.startsWith(WH_PREFIX)) {
          const hidden = name.slice(WH_PREFIX.length);
          if (!decided.has(hidden)) decided.set(hidden, false);
          continue;
        }
        if (decided.has(name)) continue;
        const st = await lstatOrNull(join(c.hostPath, name));
        decided.set(name, st !== null && !isWhiteoutDevice(st));
      }
    }
    return [...decided].filter(([, visible]) => visible).map(([n]) => n);
  }
}
