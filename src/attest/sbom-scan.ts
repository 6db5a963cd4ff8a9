/**
 * The SBOM scanner: layers go through it in order, each read once as a tar
 * stream, and it keeps only what the final filesystem's package metadata says
 * (a record per file that holds some, never file contents). OCI's rules make
 * that final view: a layer's `.wh.NAME` deletes NAME and everything under it
 * from the layers below, `.wh..wh..opq` deletes everything below its directory,
 * and any entry replaces what lower layers had at its path (a file or link put
 * where a directory was hides the directory's contents). A layer's whiteouts never
 * touch that layer's own entries.
 *
 * A package is attributed to the layer that added it: when a layer rewrites a
 * file (apt rewrites /var/lib/dpkg/status on every install), a package that the
 * lower version of the file already listed, with the same version, keeps its
 * lower layer; a new or changed one belongs to the rewriting layer.
 */
import { OcibuildError } from "../errors.js";
import { readTar } from "../builder/fs/tar-reader.js";
import { splitEntryPath, WH_OPAQUE, WH_PREFIX } from "../builder/fs/path.js";
import { recordOf, type FileRecord } from "./sbom-files.js";
import { purlOf, type FoundPackage, type SbomPackage } from "./sbom-model.js";
import type { OsRelease } from "./sbom-os.js";

export interface ScanOptions {
  signal?: AbortSignal;
  onWarning?: (msg: string) => void;
}

/** What one layer changes: its own records, and what it removes from the layers below. */
interface LayerChanges {
  records: Map<string, FileRecord>;
  /** Paths removed with everything under them (whiteouts, a non-directory over a directory). */
  gone: Set<string>;
  /** Directories whose lower contents are removed (opaque whiteouts). */
  opaque: Set<string>;
  /** Lower records' paths that an entry of this layer replaced. */
  replaced: Set<string>;
}

const packageKey = (p: FoundPackage) => `${p.type}\0${p.name}\0${p.arch ?? ""}\0${p.version ?? ""}`;

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i === -1 ? "" : path.slice(0, i);
}

function childOf(dir: string, name: string): string {
  return dir === "" ? name : `${dir}/${name}`;
}

/** `path` and each directory above it, up to (not including) the root. */
function* selfAndAncestors(path: string): Generator<string> {
  for (let p = path; p !== ""; p = parentOf(p)) yield p;
}

export class SbomScanner {
  /** The final filesystem's records so far, by root-relative path. */
  private readonly files = new Map<string, FileRecord>();
  private layerCount = 0;

  constructor(private readonly opts: ScanOptions = {}) {}

  /** Apply the next layer, given as its uncompressed tar byte stream. */
  async addLayerTar(tar: AsyncIterable<Buffer>): Promise<void> {
    const layer = this.layerCount;
    const warn = this.opts.onWarning ?? (() => {});
    const lowerDirs = new Set<string>();
    for (const p of this.files.keys()) for (const d of selfAndAncestors(parentOf(p))) lowerDirs.add(d);
    const ch: LayerChanges = { records: new Map(), gone: new Set(), opaque: new Set(), replaced: new Set() };
    for await (const entry of readTar(tar)) {
      if (this.opts.signal?.aborted) throw aborted();
      const path = splitEntryPath(entry.header.name).join("/");
      if (path === "") continue;
      const base = path.slice(path.lastIndexOf("/") + 1);
      if (base === WH_OPAQUE) ch.opaque.add(parentOf(path));
      else if (base.startsWith(WH_PREFIX)) ch.gone.add(childOf(parentOf(path), base.slice(WH_PREFIX.length)));
      else {
        if (this.files.has(path)) ch.replaced.add(path);
        if (entry.header.type !== "directory" && lowerDirs.has(path)) ch.gone.add(path);
        ch.records.delete(path);
        const rec = entry.header.type === "link" ? this.relinked(ch, entry.header.linkname, path) : await recordOf(entry, path, { layer, warn });
        if (rec !== undefined) ch.records.set(path, rec);
      }
    }
    this.apply(ch);
    this.layerCount++;
  }

  /** A hardlink to a file of the same layer that had a record: the same record at the link's path. */
  private relinked(ch: LayerChanges, linkname: string, path: string): FileRecord | undefined {
    const target = ch.records.get(splitEntryPath(linkname, "hardlink target").join("/"));
    if (target?.kind !== "packages") return target;
    return { kind: "packages", packages: target.packages.map((p) => ({ ...p, path: `/${path}` })) };
  }

  private apply(ch: LayerChanges): void {
    for (const path of [...this.files.keys()]) {
      const removed = ch.gone.has(path) || [...selfAndAncestors(parentOf(path))].some((d) => ch.gone.has(d) || ch.opaque.has(d)) || ch.opaque.has("");
      if (removed || (ch.replaced.has(path) && !ch.records.has(path))) this.files.delete(path);
    }
    for (const [path, rec] of ch.records) this.files.set(path, carriedForward(rec, this.files.get(path)));
  }

  /** The packages of the filesystem as it stands after the layers added so far, in a stable order. */
  packages(): SbomPackage[] {
    const os = this.osRelease();
    const out: SbomPackage[] = [];
    for (const rec of this.files.values()) {
      if (rec.kind !== "packages") continue;
      for (const p of rec.packages) {
        const license = p.type === "deb" ? this.debLicense(p.name) : p.license;
        out.push({ ...p, license, purl: purlOf(p, os) });
      }
    }
    return out.sort((a, b) => compare(a.purl, b.purl) || compare(a.path, b.path));
  }

  /** The layers scanned so far. */
  get layers(): number {
    return this.layerCount;
  }

  osRelease(): OsRelease | undefined {
    for (const p of ["etc/os-release", "usr/lib/os-release"]) {
      const rec = this.files.get(p);
      if (rec?.kind === "os-release") return rec.os;
    }
    return undefined;
  }

  /** A Debian package's licence from its copyright file, following one `/usr/share/doc/NAME -> OTHER` link. */
  private debLicense(name: string): string | undefined {
    const link = this.files.get(`usr/share/doc/${name}`);
    const dir = link?.kind === "doc-link" && /^[^/.][^/]*$/.test(link.target) ? link.target : name;
    const rec = this.files.get(`usr/share/doc/${dir}/copyright`);
    return rec?.kind === "copyright" ? rec.license : undefined;
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `rec`'s packages that `lower` (the same path's record below) already listed keep their lower layer. */
function carriedForward(rec: FileRecord, lower: FileRecord | undefined): FileRecord {
  if (rec.kind !== "packages" || lower?.kind !== "packages") return rec;
  const before = new Map(lower.packages.map((p) => [packageKey(p), p.layer]));
  return { kind: "packages", packages: rec.packages.map((p) => ({ ...p, layer: before.get(packageKey(p)) ?? p.layer })) };
}

/** A layer stream that failed for another reason than its content, named. */
export function layerUnreadable(layer: string, e: unknown): OcibuildError {
  if (e instanceof OcibuildError) return e;
  return new OcibuildError("SBOM_LAYER_UNREADABLE", `cannot read layer ${layer} for the SBOM: ${(e as Error).message}`, { cause: e });
}

export function aborted(cause?: unknown): OcibuildError {
  return new OcibuildError("ABORTED", "SBOM generation was aborted", cause === undefined ? {} : { cause });
}
