/**
 * Root filesystems: applying OCI layer tars to a directory, safely.
 *
 * extractLayer() applies one layer to `root`, in one of two forms:
 *  - "apply" (default): a flattened rootfs; whiteouts delete what lower layers made.
 *  - "overlay": the layer on its own, as an overlayfs lowerdir: `.wh.name` becomes a
 *    char 0/0 device and `.wh..wh..opq` the overlay "opaque" xattr on its directory.
 *
 * The layer is hostile until proven otherwise: entry names with `..` or a leading
 * "/", hardlinks whose target is outside, and writes through a symlink that leaves
 * the root are refused with ROOTFS_UNSAFE_PATH, and nothing is written outside.
 */
import { createHash } from "node:crypto";
import {
  closeSync, constants as fsc, fchmodSync, fchownSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync,
  chmodSync, readdirSync, rmSync, symlinkSync, writeFileSync, writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { DiffID } from "../../oci/digest.js";
import { OcibuildError } from "../../errors.js";
import { layerTooLarge } from "../../oci/layer-limit.js";
import { lstatOrNullSync as lstatOrNull } from "./util.js";
import { WH_OPAQUE, WH_PREFIX, resolveDirInRootSync, resolveNoFollow, splitEntryPath, unsafe } from "./path.js";
import { mknod, opaqueXattrName, type XattrOp } from "./native.js";
import { readTar, tarBytes, type TarHeader } from "./tar-reader.js";
import { applyDeferred, XattrQueue, type DeferredDir } from "./extract-deferred.js";

export type WhiteoutForm = "apply" | "overlay";

export interface ExtractOptions {
  signal?: AbortSignal;
  onWarning?: (msg: string) => void;
  /** The layer's media type; compression is also sniffed from the magic bytes. */
  mediaType?: string;
  /**
   * The layer's DiffID: the uncompressed tar is hashed as it is read and a
   * mismatch fails with ROOTFS_DIFFID_MISMATCH (after extraction: extract into a
   * temp dir, as LayerStore does, when the result must not be used).
   */
  diffId?: DiffID;
  /** "apply" (default) deletes whited-out paths; "overlay" keeps whiteouts in overlayfs form. */
  whiteouts?: WhiteoutForm;
  /**
   * Ignore the archive's root entry ("./"): `root` keeps its own mode, owner and times.
   * For ADD of a local archive into a directory, as Docker's untar does.
   */
  skipRootEntry?: boolean;
  /** Own every entry by this instead of the archive's owners (ADD --chown, as BuildKit does since v0.23). */
  owner?: { uid: number; gid: number };
  /** Fail with LAYER_TOO_LARGE once the layer has decompressed to more than this many bytes. */
  maxSize?: number;
  /** The layer's name in messages (its digest, and for a base layer its image). */
  layer?: string;
}


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

/**
 * Extract one layer tar stream (gzip or plain; zstd where supported) into `root`,
 * applying the OCI rules. See the module comment for the two whiteout forms.
 *
 * The loop uses synchronous fs calls on purpose: each entry costs a handful of
 * small metadata calls, and a thread-pool round trip for each (the async API)
 * is what made extraction slow; decompression still runs off the main thread and
 * file bodies are still written chunk by chunk as they arrive (memory flat).
 * (Creating files on the thread pool, several at a time, was measured too: on two
 * cores it cost more CPU than it saved, and where creating inodes is slow the
 * kernel's own work does not spread over threads.)
 */
export async function extractLayer(root: string, tarStream: NodeJS.ReadableStream, opts: ExtractOptions = {}): Promise<void> {
  const { signal } = opts;
  const form: WhiteoutForm = opts.whiteouts ?? "apply";
  const warn = opts.onWarning ?? (() => {});
  const isRoot = process.getuid?.() === 0;
  signal?.throwIfAborted();

  let tarStreamBytes: Readable;
  try {
    tarStreamBytes = await tarBytes(tarStream, opts.mediaType);
  } catch (e) {
    if (e instanceof OcibuildError) throw e;
    throw new OcibuildError("ROOTFS_EXTRACT_FAILED", `cannot read the layer: ${(e as Error).message}`, { cause: e });
  }
  const onAbort = () => tarStreamBytes.destroy(new OcibuildError("ROOTFS_ABORTED", "layer extraction was aborted"));
  signal?.addEventListener("abort", onAbort, { once: true });

  // Every tar byte passes through here: hashed for the DiffID check, and drained to
  // the end after the archive's end marker so a damaged gzip trailer is noticed.
  // Counted too, against maxSize: a small compressed layer can expand without end.
  const hash = opts.diffId !== undefined ? createHash("sha256") : undefined;
  const source = (tarStreamBytes as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let size = 0;
  const pull = async (): Promise<IteratorResult<Buffer>> => {
    const r = await source.next();
    if (r.done) return r;
    hash?.update(r.value);
    size += r.value.length;
    if (opts.maxSize !== undefined && size > opts.maxSize) throw layerTooLarge(opts.layer ?? opts.diffId ?? "(unnamed)", opts.maxSize);
    return r;
  };
  const tarInput: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next: pull }) };

  const created = new Set<string>();
  const dirs: DeferredDir[] = [];
  // Resolved root-relative paths seen to be plain directories during this extraction.
  // Anything that removes or replaces a path clears it (see remove()).
  const known = new Set<string>();
  const xattrs = new XattrQueue(root, known, { signal, warn });

  // A root that starts empty holds nothing but what this extraction makes. Then:
  //  - `fresh`: until the first removal, `known` (directories) and `madeOther`
  //    (everything else made, by resolved root-relative path) are exactly what is
  //    under the root, so whether an entry's path exists is answered from them
  //    instead of an lstat; the first removal ends this for the rest of the layer.
  //  - owners: a file or symlink made here already belongs to this process (no
  //    directory here is setgid before the deferred directory metadata, unless the
  //    root itself is), so chown is skipped when the entry names that owner.
  const startedEmpty = readdirSync(root).length === 0;
  let fresh = startedEmpty;
  const madeOther = new Set<string>();
  const ownerIsCreator =
    isRoot && startedEmpty && (lstatSync(root).mode & 0o2000) === 0 ? { uid: process.geteuid!(), gid: process.getegid!() } : undefined;
  const needsChown = (uid: number, gid: number) =>
    isRoot && (ownerIsCreator === undefined || uid !== ownerIsCreator.uid || gid !== ownerIsCreator.gid);

  const remove = (hostPath: string) => {
    rmSync(hostPath, { recursive: true, force: true });
    known.clear();
    fresh = false;
  };
  const removeIfPresent = (hostPath: string) => {
    if (lstatOrNull(hostPath) !== null) remove(hostPath);
  };
  /**
   * An opaque directory hides everything the lower layers put under it: remove
   * all of it except what this layer created (recursing into directories this layer
   * made or re-declared, whose lower content is hidden as well).
   */
  const clearLower = (hostDir: string, rel: string) => {
    for (const name of readdirSync(hostDir)) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const hostPath = join(hostDir, name);
      if (!created.has(childRel)) remove(hostPath);
      else if (lstatSync(hostPath).isDirectory()) clearLower(hostPath, childRel);
    }
  };
  const relOf = (dir: { comps: string[] }, base: string) => (dir.comps.length === 0 ? base : `${dir.comps.join("/")}/${base}`);

  try {
    for await (const entry of readTar(tarInput)) {
      signal?.throwIfAborted();
      const h = entry.header;
      const type = h.type;
      const comps = splitEntryPath(h.name, "layer entry");
      const rel = comps.join("/");
      const base = comps[comps.length - 1];
      const mode = h.mode & 0o7777;
      const { uid, gid } = opts.owner ?? h;
      const mtime = h.mtime;

      // Whiteouts.
      if (base !== undefined && base.startsWith(WH_PREFIX)) {
        const parentComps = comps.slice(0, -1);
        if (base === WH_OPAQUE) {
          if (form === "overlay") {
            const dir = resolveDirInRootSync(root, parentComps, known, { create: true })!;
            await xattrs.add({ path: dir.hostPath, rel: dir.comps.join("/"), name: opaqueXattrName(), value: Buffer.from("y") });
          } else {
            const dir = resolveDirInRootSync(root, parentComps, known);
            if (dir !== null) clearLower(dir.hostPath, parentComps.join("/"));
          }
          continue;
        }
        const target = base.slice(WH_PREFIX.length);
        if (target === "" || target === "." || target === ".." || target.startsWith(WH_PREFIX)) {
          throw unsafe(`whiteout "${h.name}" names "${target}"`, h.name);
        }
        const targetRel = [...parentComps, target].join("/");
        if (form === "overlay") {
          const dir = resolveDirInRootSync(root, parentComps, known, { create: true })!;
          const hostPath = join(dir.hostPath, target);
          removeIfPresent(hostPath);
          try {
            await mknod(hostPath, "char", 0, 0, 0, signal);
            madeOther.add(relOf(dir, target));
          } catch (e) {
            if (!(e instanceof OcibuildError) || e.code !== "ROOTFS_MKNOD_FAILED") throw e;
            // Unprivileged: keep the OCI marker; LowerView (copy mode) understands it.
            writeFileSync(join(dir.hostPath, base), "", { flag: "wx" });
            madeOther.add(relOf(dir, base));
            warn(`kept whiteout "${h.name}" as a marker file (cannot create whiteout devices here: overlay mode unavailable)`);
          }
        } else {
          if (created.has(targetRel)) {
            warn(`layer both adds and whites out "${targetRel}"; keeping the added entry`);
            continue;
          }
          const dir = resolveDirInRootSync(root, parentComps, known);
          if (dir !== null) removeIfPresent(join(dir.hostPath, target));
        }
        continue;
      }

      // The root directory itself ("./").
      if (comps.length === 0) {
        if (opts.skipRootEntry) continue;
        if (type !== "directory") throw unsafe(`entry "${h.name}" would replace the root with a ${type}`, h.name);
        dirs.push({ hostPath: root, rel: "", mode, uid, gid, mtime });
        continue;
      }

      const parent = resolveDirInRootSync(root, comps.slice(0, -1), known, { create: true })!;
      const hostPath = join(parent.hostPath, base!);
      const hostRel = relOf(parent, base!);
      // What is at the path now: null, a directory, or something else.
      let existing: "dir" | "other" | null;
      if (fresh) existing = known.has(hostRel) ? "dir" : madeOther.has(hostRel) ? "other" : null;
      else {
        const st = lstatOrNull(hostPath);
        existing = st === null ? null : st.isDirectory() ? "dir" : "other";
      }
      let prefix = "";
      for (const c of comps) {
        prefix = prefix === "" ? c : `${prefix}/${c}`;
        created.add(prefix);
      }

      if (type === "directory") {
        if (existing !== "dir") {
          if (existing !== null) remove(hostPath);
          mkdirSync(hostPath, { mode: 0o700 });
        }
        known.add(hostRel);
        dirs.push({ hostPath, rel: hostRel, mode, uid, gid, mtime });
        for (const x of xattrsOf(h, warn)) await xattrs.add({ ...x, path: hostPath, rel: hostRel });
        continue;
      }
      if (existing !== null) remove(hostPath);

      switch (type) {
        case "file": {
          const fd = openSync(hostPath, CREATE_FLAGS, 0o600);
          madeOther.add(hostRel);
          try {
            // A body that has already arrived whole (most small files) is written without the async iteration.
            const whole = entry.takeBuffered();
            if (whole !== undefined) writeAllSync(fd, whole);
            else {
              for await (const chunk of entry.body) {
                signal?.throwIfAborted();
                writeAllSync(fd, chunk);
              }
            }
            // Through the descriptor: the file just made, never whatever the path names now.
            if (needsChown(uid, gid)) fchownSync(fd, uid, gid);
            fchmodSync(fd, mode);
            futimesSync(fd, mtime, mtime);
          } finally {
            closeSync(fd);
          }
          break;
        }
        case "symlink": {
          symlinkSync(h.linkname, hostPath);
          madeOther.add(hostRel);
          if (needsChown(uid, gid)) lchownSync(hostPath, uid, gid);
          lutimesSync(hostPath, mtime, mtime);
          break;
        }
        case "link": {
          const targetComps = splitEntryPath(h.linkname, "hardlink target");
          if (targetComps.length === 0) throw unsafe(`hardlink "${h.name}" points at the root`, h.name);
          const target = await resolveNoFollow(root, targetComps);
          if (target === null) {
            throw new OcibuildError("ROOTFS_HARDLINK_TARGET_MISSING", `hardlink "${h.name}" points at "${h.linkname}", which is not in the layer before it`, {
              details: { path: h.name, linkname: h.linkname },
            });
          }
          if (target.stats.isDirectory()) throw unsafe(`hardlink "${h.name}" points at directory "${h.linkname}"`, h.name);
          linkSync(target.hostPath, hostPath);
          madeOther.add(hostRel);
          break;
        }
        case "character-device":
        case "block-device":
        case "fifo": {
          const kind = type === "fifo" ? "fifo" : type === "character-device" ? "char" : "block";
          try {
            await mknod(hostPath, kind, mode, h.devmajor, h.devminor, signal);
          } catch (e) {
            if (e instanceof OcibuildError && e.code === "ROOTFS_MKNOD_FAILED") {
              warn(`skipped ${kind === "fifo" ? "fifo" : "device node"} "${rel}": ${e.message}`);
              created.delete(rel);
              continue;
            }
            throw e;
          }
          madeOther.add(hostRel);
          if (isRoot) lchownSync(hostPath, uid, gid);
          chmodSync(hostPath, mode);
          lutimesSync(hostPath, mtime, mtime);
          break;
        }
        default:
          warn(`skipped "${rel}": unsupported tar entry type "${h.flag}"`);
          created.delete(rel);
          continue;
      }
      if (type !== "link") for (const x of xattrsOf(h, warn)) await xattrs.add({ ...x, path: hostPath, rel: hostRel });
    }
    while (!(await pull()).done) signal?.throwIfAborted();
  } catch (e) {
    signal?.removeEventListener("abort", onAbort);
    tarStreamBytes.destroy();
    if (signal?.aborted) throw new OcibuildError("ROOTFS_ABORTED", "layer extraction was aborted", { cause: signal.reason });
    if (e instanceof OcibuildError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new OcibuildError("ROOTFS_EXTRACT_FAILED", `cannot extract layer into ${root}: ${(e as Error).message}`, {
      cause: e,
      details: code ? { errno: code } : undefined,
    });
  }
  signal?.removeEventListener("abort", onAbort);
  if (hash !== undefined) {
    const got = `sha256:${hash.digest("hex")}`;
    if (got !== opts.diffId) {
      throw new OcibuildError("ROOTFS_DIFFID_MISMATCH", `the layer${opts.layer ? ` ${opts.layer}` : ""} decompresses to ${got}, but its DiffID says ${opts.diffId}`, {
        details: { expected: opts.diffId, actual: got, ...(opts.layer ? { layer: opts.layer } : {}) },
        hint: "the blob is corrupt or does not belong to this image",
      });
    }
  }

  await applyDeferred(root, known, xattrs, dirs, { isRoot, signal, warn });
}
