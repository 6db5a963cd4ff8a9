/**
 * What ADD does beyond COPY: remote URLs are downloaded (Last-Modified as the
 * file's mtime, mode 0600, `--checksum=sha256:` verified; never extracted), and
 * local tar archives (plain, gzip, bzip2, xz) are extracted into the destination
 * with the same safety rules as image layers, as Docker's untar does: the archive's
 * root entry is not applied, and --chown owns every entry.
 */
import { childProcess, zlib } from "../../builtins.js";
import { createReadStream, createWriteStream } from "node:fs";
import { chmod, mkdtemp, open, stat, utimes } from "node:fs/promises";
import { join, posix } from "node:path";
import { PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isOcibuildError, OcibuildError } from "../../errors.js";
import { HashingStream } from "../../oci/digest.js";
import { extractLayer } from "../fs/extract.js";
import type { SourceMatch } from "../sources.js";
import { urlGet } from "./url-get.js";

export function isRemoteSource(s: string): boolean {
  return /^https?:\/\//i.test(s);
}


export interface Download {
  match: SourceMatch;
  url: string;
  sha256: string;
}

/** A failed download as BUILD_ADD_DOWNLOAD_FAILED (an abort stays ABORTED, an unreadable CA file its own code). */
function downloadFailed(url: string, e: unknown): unknown {
  if (isOcibuildError(e) && e.code !== "REGISTRY_TIMEOUT") return e;
  if ((e as Error).name === "AbortError") return e;
  return new OcibuildError("BUILD_ADD_DOWNLOAD_FAILED", `ADD cannot download ${url}: ${(e as Error).message}`, { cause: e, retryable: true });
}

/** Download `url` into `dir` (hashing while streaming); the match names the file by the URL's last path segment. */
export async function download(url: string, dir: string, checksum: string | undefined, opts: { env?: Record<string, string | undefined>; signal?: AbortSignal } = {}): Promise<Download> {
  const { signal } = opts;
  let res;
  try {
    res = await urlGet(url, opts);
  } catch (e) {
    throw downloadFailed(url, e);
  }
  if (res.statusCode < 200 || res.statusCode > 299) {
    await res.body.dump();
    throw new OcibuildError("BUILD_ADD_DOWNLOAD_FAILED", `ADD cannot download ${url}: HTTP ${res.statusCode}`, { retryable: res.statusCode >= 500 || res.statusCode === 429 });
  }
  const tmp = await mkdtemp(join(dir, "add-"));
  const name = posix.basename(new URL(url).pathname) || "download";
  const path = join(tmp, name);
  const h = new HashingStream();
  try {
    await pipeline(res.body, h, createWriteStream(path, { mode: 0o600 }), { signal });
  } catch (e) {
    throw downloadFailed(url, e);
  }
  const sha256 = h.hexDigest;
  if (checksum !== undefined) {
    const m = /^sha256:([a-f0-9]{64})$/.exec(checksum);
    if (!m) throw new OcibuildError("BUILD_ADD_CHECKSUM_INVALID", `--checksum must be sha256:<64 hex>, not "${checksum}"`);
    if (m[1] !== sha256) {
      throw new OcibuildError("BUILD_ADD_CHECKSUM_MISMATCH", `ADD ${url}: content has sha256:${sha256}, but --checksum says ${checksum}`);
    }
  }
  await chmod(path, 0o600);
  const lm = res.headers["last-modified"];
  const when = typeof lm === "string" ? new Date(lm) : undefined;
  if (when && !Number.isNaN(when.getTime())) await utimes(path, when, when);
  return { match: { rel: name, realRel: name, hostPath: path, stats: await stat(path) }, url, sha256 };
}

export type ArchiveKind = "tar" | "gzip" | "bzip2" | "xz";

/** Recognise a local tar archive by its first bytes (as Docker does, whatever the file name). */
export async function archiveKind(path: string): Promise<ArchiveKind | undefined> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    const b = buf.subarray(0, bytesRead);
    if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return "gzip";
    if (b.length >= 3 && b.toString("latin1", 0, 3) === "BZh") return "bzip2";
    if (b.length >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
    if (b.length >= 262 && b.toString("latin1", 257, 262) === "ustar") return "tar";
    return undefined;
  } finally {
    await fh.close();
  }
}

function decompressWith(cmd: string, path: string, signal?: AbortSignal): NodeJS.ReadableStream {
  const out = new PassThrough();
  const child = childProcess().spawn(cmd, ["-dc", path], { stdio: ["ignore", "pipe", "pipe"], signal });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  child.on("error", (e) =>
    out.destroy(new OcibuildError("BUILD_ADD_ARCHIVE_UNSUPPORTED", `cannot run ${cmd} to extract ${posix.basename(path)}: ${e.message}`, { hint: `install ${cmd} (Debian: apt-get install ${cmd === "xz" ? "xz-utils" : cmd})` })),
  );
  child.on("close", (code) => {
    if (code !== 0) out.destroy(new OcibuildError("BUILD_ADD_ARCHIVE_INVALID", `${cmd} failed on ${posix.basename(path)}: ${err.trim() || `exit ${code}`}`));
  });
  child.stdout.pipe(out);
  return out;
}

/** Extract a local archive into `destDir` (a host path inside the stage root), owned by `owner` when given (--chown). */
export async function extractArchive(
  path: string,
  kind: ArchiveKind,
  destDir: string,
  opts: { owner?: { uid: number; gid: number }; signal?: AbortSignal } = {},
): Promise<void> {
  const { signal } = opts;
  let stream: NodeJS.ReadableStream;
  if (kind === "bzip2") stream = decompressWith("bzip2", path, signal);
  else if (kind === "xz") stream = decompressWith("xz", path, signal);
  else if (kind === "gzip") stream = createReadStream(path, { signal }).pipe(zlib().createGunzip());
  else stream = createReadStream(path, { signal });
  // The archive's own "./" entry is not applied: the destination keeps its mode and owner (Docker's untar).
  await extractLayer(destDir, stream, { signal, skipRootEntry: true, owner: opts.owner });
}
