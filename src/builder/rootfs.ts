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
import { constants as fsc } from "node:fs";
import { chmod, lchown, link, lstat, lutimes, mkdir, open, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { isAbsolute, join, relative, sep } from "node:path";
import { pipeline as pipelineCb, Readable } from "node:stream";
import * as zlib from "node:zlib";
import type { DiffID } from "../oci/digest.js";
import { OcibuildError } from "../errors.js";
import { resolveDirInRoot, resolveNoFollow, splitEntryPath, unsafe } from "./rootfs-path.js";
import { mknod, opaqueXattrName, setXattrs, type XattrOp } from "./rootfs-native.js";
import { readTar, type TarHeader } from "./rootfs-tar.js";

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
}

const WH_PREFIX = ".wh.";
const WH_OPAQUE = ".wh..wh..opq";

interface DeferredDir {
  hostPath: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

function decompressorFor(head: Buffer, mediaType: string | undefined): NodeJS.ReadWriteStream | null {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return zlib.createGunzip();
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) {
    const z = zlib as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream };
    if (typeof z.createZstdDecompress === "function") return z.createZstdDecompress();
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", `the layer is zstd-compressed${mediaType ? ` (${mediaType})` : ""}, which this Node.js (${process.version}) cannot decompress`, {
      hint: "use Node.js 22.15 or newer for zstd layers, or a gzip variant of the image",
    });
  }
  if (head.length >= 3 && head.toString("latin1", 0, 3) === "BZh") {
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", "the layer is bzip2-compressed, which OCI layers may not be");
  }
  if (head.length >= 6 && head[0] === 0xfd && head.toString("latin1", 1, 6) === "7zXZ\0") {
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", "the layer is xz-compressed, which OCI layers may not be");
  }
  return null;
}

/** Read the first bytes, pick a decompressor, and return the tar bytes as a stream. */
async function tarBytes(input: NodeJS.ReadableStream, mediaType: string | undefined): Promise<Readable> {
  const src = input instanceof Readable ? input : new Readable().wrap(input);
  const it = (src as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  let done = false;
  while (head.length < 6) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    head = Buffer.concat([head, Buffer.from(r.value)]);
  }
  const decompressor = decompressorFor(head, mediaType);
  async function* rest(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield Buffer.from(r.value);
    }
  }
  const source = Readable.from(rest());
  if (decompressor === null) return source;
  // Callback form: an error anywhere destroys the chain, so iterating the output throws it.
  return pipelineCb(source, decompressor, () => {}) as unknown as Readable;
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
 * Whether `hostPath` (under `root`) is reached through real directories only and
 * is not itself a symlink (and is a directory, with `dir`).
 */
async function isPlainPath(root: string, hostPath: string, dir = false): Promise<boolean> {
  const rel = relative(root, hostPath);
  if (rel.startsWith("..") || isAbsolute(rel)) return false;
  const comps = rel === "" ? [] : rel.split(sep);
  let cur = root;
  for (let i = 0; i < comps.length; i++) {
    cur = join(cur, comps[i]!);
    const st = await lstat(cur).catch(() => null);
    if (st === null || st.isSymbolicLink()) return false;
    if (i < comps.length - 1 && !st.isDirectory()) return false;
    if (i === comps.length - 1 && dir && !st.isDirectory()) return false;
  }
  return true;
}

async function removeExisting(hostPath: string): Promise<void> {
  await rm(hostPath, { recursive: true, force: true });
}

/**
 * An opaque directory hides everything the lower layers put under it: remove
 * all of it except what this layer created (recursing into directories this layer
 * made or re-declared, whose lower content is hidden as well).
 */
async function clearLower(hostDir: string, rel: string, created: Set<string>): Promise<void> {
  for (const name of await readdir(hostDir)) {
    const childRel = rel === "" ? name : `${rel}/${name}`;
    const hostPath = join(hostDir, name);
    if (!created.has(childRel)) await removeExisting(hostPath);
    else if ((await lstat(hostPath)).isDirectory()) await clearLower(hostPath, childRel, created);
  }
}

/**
 * Extract one layer tar stream (gzip or plain; zstd where supported) into `root`,
 * applying the OCI rules. See the module comment for the two whiteout forms.
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
  const hash = opts.diffId !== undefined ? createHash("sha256") : undefined;
  const source = (tarStreamBytes as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  const pull = async (): Promise<IteratorResult<Buffer>> => {
    const r = await source.next();
    if (!r.done) hash?.update(r.value);
    return r;
  };
  const tarInput: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next: pull }) };

  const created = new Set<string>();
  const dirs: DeferredDir[] = [];
  const xattrs: XattrOp[] = [];

  const applyOwner = async (hostPath: string, uid: number, gid: number) => {
    if (isRoot) await lchown(hostPath, uid, gid);
  };

  try {
    for await (const entry of readTar(tarInput)) {
      signal?.throwIfAborted();
      const h = entry.header;
      const type = h.type;
      const comps = splitEntryPath(h.name, "layer entry");
      const rel = comps.join("/");
      const base = comps[comps.length - 1];
      const mode = h.mode & 0o7777;
      const { uid, gid, mtime } = h;

      // Whiteouts.
      if (base !== undefined && base.startsWith(WH_PREFIX)) {
        const parentComps = comps.slice(0, -1);
        if (base === WH_OPAQUE) {
          if (form === "overlay") {
            const dir = await resolveDirInRoot(root, parentComps, { create: true });
            xattrs.push({ path: dir!.hostPath, name: opaqueXattrName(), value: Buffer.from("y") });
          } else {
            const dir = await resolveDirInRoot(root, parentComps);
            if (dir !== null) await clearLower(dir.hostPath, parentComps.join("/"), created);
          }
          continue;
        }
        const target = base.slice(WH_PREFIX.length);
        if (target === "" || target === "." || target === ".." || target.startsWith(WH_PREFIX)) {
          throw unsafe(`whiteout "${h.name}" names "${target}"`, h.name);
        }
        const targetRel = [...parentComps, target].join("/");
        if (form === "overlay") {
          const dir = await resolveDirInRoot(root, parentComps, { create: true });
          const hostPath = join(dir!.hostPath, target);
          await removeExisting(hostPath);
          try {
            await mknod(hostPath, "char", 0, 0, 0, signal);
          } catch (e) {
            if (!(e instanceof OcibuildError) || e.code !== "ROOTFS_MKNOD_FAILED") throw e;
            // Unprivileged: keep the OCI marker; LowerView (copy mode) understands it.
            await writeFile(join(dir!.hostPath, base), "", { flag: "wx" });
            warn(`kept whiteout "${h.name}" as a marker file (cannot create whiteout devices here: overlay mode unavailable)`);
          }
        } else {
          if (created.has(targetRel)) {
            warn(`layer both adds and whites out "${targetRel}"; keeping the added entry`);
            continue;
          }
          const dir = await resolveDirInRoot(root, parentComps);
          if (dir !== null) await removeExisting(join(dir.hostPath, target));
        }
        continue;
      }

      // The root directory itself ("./").
      if (comps.length === 0) {
        if (type !== "directory") throw unsafe(`entry "${h.name}" would replace the root with a ${type}`, h.name);
        dirs.push({ hostPath: root, mode, uid, gid, mtime });
        continue;
      }

      const parent = await resolveDirInRoot(root, comps.slice(0, -1), { create: true });
      const hostPath = join(parent!.hostPath, base!);
      const existing = await lstat(hostPath).catch(() => null);
      for (let i = 1; i <= comps.length; i++) created.add(comps.slice(0, i).join("/"));

      if (type === "directory") {
        if (existing === null || !existing.isDirectory()) {
          if (existing !== null) await removeExisting(hostPath);
          await mkdir(hostPath, { mode: 0o700 });
        }
        dirs.push({ hostPath, mode, uid, gid, mtime });
        for (const x of xattrsOf(h, warn)) xattrs.push({ ...x, path: hostPath });
        continue;
      }
      if (existing !== null) await removeExisting(hostPath);

      switch (type) {
        case "file": {
          const fh = await open(hostPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
          try {
            for await (const chunk of entry.body) {
              signal?.throwIfAborted();
              let off = 0;
              while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
            }
          } finally {
            await fh.close();
          }
          await applyOwner(hostPath, uid, gid);
          await chmod(hostPath, mode);
          await lutimes(hostPath, mtime, mtime);
          break;
        }
        case "symlink": {
          await symlink(h.linkname, hostPath);
          await applyOwner(hostPath, uid, gid);
          await lutimes(hostPath, mtime, mtime);
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
          await link(target.hostPath, hostPath);
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
          await applyOwner(hostPath, uid, gid);
          await chmod(hostPath, mode);
          await lutimes(hostPath, mtime, mtime);
          break;
        }
        default:
          warn(`skipped "${rel}": unsupported tar entry type "${h.flag}"`);
          created.delete(rel);
          continue;
      }
      if (type !== "link") for (const x of xattrsOf(h, warn)) xattrs.push({ ...x, path: hostPath });
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
      throw new OcibuildError("ROOTFS_DIFFID_MISMATCH", `the layer's uncompressed content is ${got}, but its DiffID says ${opts.diffId}`, {
        details: { expected: opts.diffId, actual: got },
        hint: "the blob is corrupt or does not belong to this image",
      });
    }
  }

  // Deferred work re-checks its paths: a later entry may have replaced a directory
  // (or one of its parents) by a symlink, and chmod/setxattr must not follow it.
  const safeXattrs: XattrOp[] = [];
  for (const x of xattrs) if (await isPlainPath(root, x.path)) safeXattrs.push(x);
  for (const msg of await setXattrs(safeXattrs, signal)) warn(msg);
  // Directory metadata last: creating children changes a directory's mtime.
  for (let i = dirs.length - 1; i >= 0; i--) {
    const d = dirs[i]!;
    if (!(await isPlainPath(root, d.hostPath, true))) continue;
    await applyOwner(d.hostPath, d.uid, d.gid);
    await chmod(d.hostPath, d.mode);
    await lutimes(d.hostPath, d.mtime, d.mtime);
  }
}
