/**
 * The per-layer state of an extraction (extract.ts extractLayer): one method per
 * entry type, each writing with the rules of the module comment in extract.ts, and
 * finish() for what must wait until every entry is written (extract-deferred.ts).
 */
import {
  closeSync, constants as fsc, fchmodSync, fchownSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync,
  chmodSync, readdirSync, rmSync, symlinkSync, writeFileSync, writeSync,
} from "node:fs";
import { join } from "node:path";
import { OcibuildError } from "../../errors.js";
import { lstatOrNullSync as lstatOrNull } from "./util.js";
import { WH_OPAQUE, WH_PREFIX, resolveDirInRootSync, resolveNoFollow, splitEntryPath, unsafe, type ResolvedDir } from "./path.js";
import { mknod, opaqueXattrName, type XattrOp } from "./native.js";
import type { TarEntry, TarHeader } from "./tar-reader.js";
import { applyDeferred, XattrQueue, type DeferredDir } from "./extract-deferred.js";
import type { ExtractOptions, WhiteoutForm } from "./extract.js";

const CREATE_FLAGS = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;

function writeAllSync(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

function xattrsOf(header: TarHeader, warn: (msg: string) => void): XattrOp[] {
  const out: XattrOp[] = [];
  for (const [k, v] of header.pax) {
    const schily = k.startsWith("SCHILY.xattr.");
    const libarchive = k.startsWith("LIBARCHIVE.xattr.");
    if (!schily && !libarchive) continue;
    const name = schily ? k.slice("SCHILY.xattr.".length) : decodeURIComponent(k.slice("LIBARCHIVE.xattr.".length));
    if (/^(trusted|user)\.overlay\./.test(name)) {
      // Overlay's own bookkeeping (opaque, redirect, origin) is never taken from a layer.
      warn(`ignored overlay attribute ${k} on "${header.name}"`);
      continue;
    }
    out.push({ path: "", name, value: schily ? v : Buffer.from(v.toString("latin1"), "base64") });
  }
  return out;
}


/** Where a (non-root, non-whiteout) entry goes, and what is there now: nothing, a directory, or something else. */
interface Target {
  /** The entry's path as the layer names it. */
  rel: string;
  hostPath: string;
  /** Root-relative, through the resolved parent (symlinks inside the root followed). */
  hostRel: string;
  existing: "dir" | "other" | null;
}

/**
 * One layer's extraction into `root`: add() each entry in order (one method per
 * entry type), then finish() (extended attributes and directory metadata, see
 * extract-deferred.ts).
 */
export class Extractor {
  /** Entry paths this layer made (with their parents): an opaque directory keeps them; a whiteout never removes them. */
  private readonly created = new Set<string>();
  /** Directory metadata, applied last (children change a directory's mtime). */
  private readonly dirs: DeferredDir[] = [];
  /**
   * Resolved root-relative paths seen to be plain directories during this extraction.
   * Anything that removes or replaces a path clears it (see remove()).
   */
  private readonly known = new Set<string>();
  private readonly xattrs: XattrQueue;
  private readonly form: WhiteoutForm;
  private readonly warn: (msg: string) => void;
  private readonly isRoot = process.getuid?.() === 0;
  /**
   * A root that starts empty holds nothing but what this extraction makes. Then:
   *  - `fresh`: until the first removal, `known` (directories) and `madeOther`
   *    (everything else made, by resolved root-relative path) are exactly what is
   *    under the root, so whether an entry's path exists is answered from them
   *    instead of an lstat; the first removal ends this for the rest of the layer.
   *  - owners: a file or symlink made here already belongs to this process (no
   *    directory here is setgid before the deferred directory metadata, unless the
   *    root itself is), so chown is skipped when the entry names that owner.
   */
  private fresh: boolean;
  private readonly madeOther = new Set<string>();
  private readonly ownerIsCreator: { uid: number; gid: number } | undefined;

  constructor(
    private readonly root: string,
    private readonly opts: ExtractOptions,
  ) {
    this.form = opts.whiteouts ?? "apply";
    this.warn = opts.onWarning ?? (() => {});
    this.xattrs = new XattrQueue(root, this.known, { signal: opts.signal, warn: this.warn });
    const startedEmpty = readdirSync(root).length === 0;
    this.fresh = startedEmpty;
    this.ownerIsCreator =
      this.isRoot && startedEmpty && (lstatSync(root).mode & 0o2000) === 0 ? { uid: process.geteuid!(), gid: process.getegid!() } : undefined;
  }

  async add(entry: TarEntry): Promise<void> {
    const h = entry.header;
    const comps = splitEntryPath(h.name, "layer entry");
    const base = comps[comps.length - 1];
    if (base === undefined) return this.rootEntry(h);
    if (base.startsWith(WH_PREFIX)) return base === WH_OPAQUE ? this.opaque(comps.slice(0, -1)) : this.whiteout(h, comps.slice(0, -1), base);
    const to = this.target(comps, base);
    if (h.type === "directory") return this.directory(h, to);
    if (to.existing !== null) this.remove(to.hostPath);
    switch (h.type) {
      case "file":
        await this.file(entry, to);
        break;
      case "symlink":
        this.symlink(h, to);
        break;
      case "link":
        return this.hardlink(h, to);
      case "character-device":
      case "block-device":
      case "fifo":
        if (!(await this.device(h, to))) return;
        break;
      default:
        this.warn(`skipped "${to.rel}": unsupported tar entry type "${h.flag}"`);
        this.created.delete(to.rel);
        return;
    }
    await this.addXattrs(h, to);
  }

  /** The deferred extended attributes and directory metadata, once every entry is written. */
  finish(): Promise<void> {
    return applyDeferred(this.root, this.known, this.xattrs, this.dirs, { isRoot: this.isRoot, signal: this.opts.signal, warn: this.warn });
  }

  /** The root directory itself ("./"). */
  private rootEntry(h: TarHeader): void {
    if (this.opts.skipRootEntry) return;
    if (h.type !== "directory") throw unsafe(`entry "${h.name}" would replace the root with a ${h.type}`, h.name);
    this.dirs.push({ hostPath: this.root, rel: "", ...this.metadata(h) });
  }

  /** `.wh..wh..opq`: the overlay xattr on its directory, or (apply) the lower content under it removed. */
  private async opaque(parentComps: string[]): Promise<void> {
    if (this.form === "overlay") {
      const dir = resolveDirInRootSync(this.root, parentComps, this.known, { create: true })!;
      await this.xattrs.add({ path: dir.hostPath, rel: dir.comps.join("/"), name: opaqueXattrName(), value: Buffer.from("y") });
    } else {
      const dir = resolveDirInRootSync(this.root, parentComps, this.known);
      if (dir !== null) this.clearLower(dir.hostPath, parentComps.join("/"));
    }
  }

  /** `.wh.name`: a char 0/0 device (overlay), or (apply) the path removed. */
  private async whiteout(h: TarHeader, parentComps: string[], base: string): Promise<void> {
    const target = base.slice(WH_PREFIX.length);
    if (target === "" || target === "." || target === ".." || target.startsWith(WH_PREFIX)) {
      throw unsafe(`whiteout "${h.name}" names "${target}"`, h.name);
    }
    if (this.form === "overlay") {
      const dir = resolveDirInRootSync(this.root, parentComps, this.known, { create: true })!;
      return this.whiteoutDevice(h, dir, target, base);
    }
    const targetRel = [...parentComps, target].join("/");
    if (this.created.has(targetRel)) {
      this.warn(`layer both adds and whites out "${targetRel}"; keeping the added entry`);
      return;
    }
    const dir = resolveDirInRootSync(this.root, parentComps, this.known);
    if (dir !== null) this.removeIfPresent(join(dir.hostPath, target));
  }

  private async whiteoutDevice(h: TarHeader, dir: ResolvedDir, target: string, base: string): Promise<void> {
    const hostPath = join(dir.hostPath, target);
    this.removeIfPresent(hostPath);
    try {
      await mknod(hostPath, "char", 0, 0, 0, this.opts.signal);
      this.madeOther.add(relOf(dir, target));
    } catch (e) {
      if (!(e instanceof OcibuildError) || e.code !== "ROOTFS_MKNOD_FAILED") throw e;
      // Unprivileged: keep the OCI marker; LowerView (copy mode) understands it.
      writeFileSync(join(dir.hostPath, base), "", { flag: "wx" });
      this.madeOther.add(relOf(dir, base));
      this.warn(`kept whiteout "${h.name}" as a marker file (cannot create whiteout devices here: overlay mode unavailable)`);
    }
  }

  /** Resolves the entry's parent (made if missing) and records the entry and its parents as made by this layer. */
  private target(comps: string[], base: string): Target {
    const parent = resolveDirInRootSync(this.root, comps.slice(0, -1), this.known, { create: true })!;
    const hostPath = join(parent.hostPath, base);
    const hostRel = relOf(parent, base);
    let existing: Target["existing"];
    if (this.fresh) existing = this.known.has(hostRel) ? "dir" : this.madeOther.has(hostRel) ? "other" : null;
    else {
      const st = lstatOrNull(hostPath);
      existing = st === null ? null : st.isDirectory() ? "dir" : "other";
    }
    let prefix = "";
    for (const c of comps) {
      prefix = prefix === "" ? c : `${prefix}/${c}`;
      this.created.add(prefix);
    }
    return { rel: prefix, hostPath, hostRel, existing };
  }

  private async directory(h: TarHeader, to: Target): Promise<void> {
    if (to.existing !== "dir") {
      if (to.existing !== null) this.remove(to.hostPath);
      mkdirSync(to.hostPath, { mode: 0o700 });
    }
    this.known.add(to.hostRel);
    this.dirs.push({ hostPath: to.hostPath, rel: to.hostRel, ...this.metadata(h) });
    await this.addXattrs(h, to);
  }

  private async file(entry: TarEntry, to: Target): Promise<void> {
    const { mode, uid, gid, mtime } = this.metadata(entry.header);
    const fd = openSync(to.hostPath, CREATE_FLAGS, 0o600);
    this.madeOther.add(to.hostRel);
    try {
      // A body that has already arrived whole (most small files) is written without the async iteration.
      const whole = entry.takeBuffered();
      if (whole !== undefined) writeAllSync(fd, whole);
      else {
        for await (const chunk of entry.body) {
          this.opts.signal?.throwIfAborted();
          writeAllSync(fd, chunk);
        }
      }
      // Through the descriptor: the file just made, never whatever the path names now.
      if (this.needsChown(uid, gid)) fchownSync(fd, uid, gid);
      fchmodSync(fd, mode);
      futimesSync(fd, mtime, mtime);
    } finally {
      closeSync(fd);
    }
  }

  private symlink(h: TarHeader, to: Target): void {
    const { uid, gid, mtime } = this.metadata(h);
    symlinkSync(h.linkname, to.hostPath);
    this.madeOther.add(to.hostRel);
    if (this.needsChown(uid, gid)) lchownSync(to.hostPath, uid, gid);
    lutimesSync(to.hostPath, mtime, mtime);
  }

  /** A hardlink to an earlier entry of this layer (or a lower one, in apply form), never to a directory or outside. */
  private async hardlink(h: TarHeader, to: Target): Promise<void> {
    const targetComps = splitEntryPath(h.linkname, "hardlink target");
    if (targetComps.length === 0) throw unsafe(`hardlink "${h.name}" points at the root`, h.name);
    const target = await resolveNoFollow(this.root, targetComps);
    if (target === null) {
      throw new OcibuildError("ROOTFS_HARDLINK_TARGET_MISSING", `hardlink "${h.name}" points at "${h.linkname}", which is not in the layer before it`, {
        details: { path: h.name, linkname: h.linkname },
      });
    }
    if (target.stats.isDirectory()) throw unsafe(`hardlink "${h.name}" points at directory "${h.linkname}"`, h.name);
    linkSync(target.hostPath, to.hostPath);
    this.madeOther.add(to.hostRel);
  }

  /** A device node or fifo; false (with a warning) when this process may not make it. */
  private async device(h: TarHeader, to: Target): Promise<boolean> {
    const { mode, uid, gid, mtime } = this.metadata(h);
    const kind = h.type === "fifo" ? "fifo" : h.type === "character-device" ? "char" : "block";
    try {
      await mknod(to.hostPath, kind, mode, h.devmajor, h.devminor, this.opts.signal);
    } catch (e) {
      if (!(e instanceof OcibuildError) || e.code !== "ROOTFS_MKNOD_FAILED") throw e;
      this.warn(`skipped ${kind === "fifo" ? "fifo" : "device node"} "${to.rel}": ${e.message}`);
      this.created.delete(to.rel);
      return false;
    }
    this.madeOther.add(to.hostRel);
    if (this.isRoot) lchownSync(to.hostPath, uid, gid);
    chmodSync(to.hostPath, mode);
    lutimesSync(to.hostPath, mtime, mtime);
    return true;
  }

  private async addXattrs(h: TarHeader, to: Target): Promise<void> {
    for (const x of xattrsOf(h, this.warn)) await this.xattrs.add({ ...x, path: to.hostPath, rel: to.hostRel });
  }

  /** Mode, owner (the archive's, or opts.owner) and mtime of an entry. */
  private metadata(h: TarHeader): { mode: number; uid: number; gid: number; mtime: Date } {
    const { uid, gid } = this.opts.owner ?? h;
    return { mode: h.mode & 0o7777, uid, gid, mtime: h.mtime };
  }

  private needsChown(uid: number, gid: number): boolean {
    const creator = this.ownerIsCreator;
    return this.isRoot && (creator === undefined || uid !== creator.uid || gid !== creator.gid);
  }

  private remove(hostPath: string): void {
    rmSync(hostPath, { recursive: true, force: true });
    this.known.clear();
    this.fresh = false;
  }

  private removeIfPresent(hostPath: string): void {
    if (lstatOrNull(hostPath) !== null) this.remove(hostPath);
  }

  /**
   * An opaque directory hides everything the lower layers put under it: remove
   * all of it except what this layer created (recursing into directories this layer
   * made or re-declared, whose lower content is hidden as well).
   */
  private clearLower(hostDir: string, rel: string): void {
    for (const name of readdirSync(hostDir)) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const hostPath = join(hostDir, name);
      if (!this.created.has(childRel)) this.remove(hostPath);
      else if (lstatSync(hostPath).isDirectory()) this.clearLower(hostPath, childRel);
    }
  }
}

function relOf(dir: { comps: string[] }, base: string): string {
  return dir.comps.length === 0 ? base : `${dir.comps.join("/")}/${base}`;
}
